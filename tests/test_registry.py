"""Dataset registry: resolution order, downloads against a local HTTP server, fetch and listing."""

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from protgen_jax.data import registry
from protgen_jax.data.registry import (
    DATASETS,
    UPSTREAM,
    Dataset,
    RemoteFile,
    fetch,
    list_datasets,
    resolve,
    sha256_of,
)
from protgen_jax.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b">seq1\nACDEFGHIKLMNPQRSTVWY\n" * 50


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        del args

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def server(tmp_path: Path):
    """A threaded HTTP server on 127.0.0.1 (port 0) serving tmp_path/served; yields (base URL, log)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "a.txt").write_bytes(PAYLOAD)
    log: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": log})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Register dataset "toy" (a.txt, b.txt) and isolate env dir, working dir and cache in tmp_path."""
    monkeypatch.setitem(DATASETS, "toy", Dataset("toy", "test dataset", ("a.txt", "b.txt")))
    folders = {key: tmp_path / key for key in ("env", "work", "cache")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.setenv("PROTGEN_CACHE_DIR", str(folders["cache"]))
    monkeypatch.delenv("PROTGEN_DATA_DIR", raising=False)
    monkeypatch.chdir(folders["work"])
    return folders


def _put(folder: Path, name: str, data: bytes = b"x") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_resolution_order_env_then_shared_then_cache(toy, monkeypatch):
    env_copy = _put(toy["env"] / "toy", "a.txt")
    shared_copy = _put(toy["work"] / "shared" / "data" / "toy", "a.txt")
    cache_copy = _put(toy["cache"] / "toy", "a.txt")
    monkeypatch.setenv("PROTGEN_DATA_DIR", str(toy["env"]))
    assert resolve("toy", "a.txt") == env_copy
    monkeypatch.delenv("PROTGEN_DATA_DIR")
    assert resolve("toy", "a.txt") == shared_copy
    # shared/data found by walking up from a sub-folder of the working directory
    sub = toy["work"] / "deep" / "er"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert resolve("toy", "a.txt") == shared_copy
    shared_copy.unlink()
    assert resolve("toy", "a.txt") == cache_copy


def test_env_dir_without_the_file_falls_through(toy, monkeypatch):
    (toy["env"] / "toy").mkdir()
    cache_copy = _put(toy["cache"] / "toy", "b.txt")
    monkeypatch.setenv("PROTGEN_DATA_DIR", str(toy["env"]))
    assert resolve("toy", "b.txt") == cache_copy


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("PROTGEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert registry.cache_dir("toy") == tmp_path / "protgen_jax" / "toy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.cache_dir("toy") == tmp_path / "home" / ".cache" / "protgen_jax" / "toy"


def test_shared_data_found_from_package_location(monkeypatch, tmp_path):
    shared = REPO_ROOT.parent / "shared" / "data" / "blat_ecolx"
    if not (shared / "BLAT_ECOLX.a2m").is_file():
        pytest.skip("no shared/data beside the checkout")
    monkeypatch.delenv("PROTGEN_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert (
        resolve("blat_ecolx", "BLAT_ECOLX.a2m").resolve() == (shared / "BLAT_ECOLX.a2m").resolve()
    )
    assert resolve("blat_ecolx").resolve() == shared.resolve()


def test_download_good_hash_lands_in_cache(toy, server, monkeypatch):
    base, log = server
    monkeypatch.setitem(
        UPSTREAM, ("toy", "a.txt"), RemoteFile(f"{base}/a.txt", hashlib.sha256(PAYLOAD).hexdigest())
    )
    path = resolve("toy", "a.txt")
    assert path == toy["cache"] / "toy" / "a.txt"
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(toy["cache"]) == ["a.txt", "toy"]
    assert resolve("toy", "a.txt") == path  # second call: found in the cache, no new request
    assert log == ["/a.txt"]


def test_download_bad_hash_raises_and_leaves_nothing(toy, server, monkeypatch):
    base, _ = server
    expected = "0" * 64
    monkeypatch.setitem(UPSTREAM, ("toy", "a.txt"), RemoteFile(f"{base}/a.txt", expected))
    with pytest.raises(DataError) as info:
        resolve("toy", "a.txt")
    message = str(info.value)
    assert f"{base}/a.txt" in message
    assert expected in message
    assert hashlib.sha256(PAYLOAD).hexdigest() in message
    assert _leftovers(toy["cache"] / "toy") == []


def test_download_http_error_raises_and_leaves_nothing(toy, server, monkeypatch):
    base, _ = server
    monkeypatch.setitem(UPSTREAM, ("toy", "a.txt"), RemoteFile(f"{base}/nope.txt", "0" * 64))
    with pytest.raises(DataError, match="nope.txt.*failed"):
        resolve("toy", "a.txt")
    assert _leftovers(toy["cache"] / "toy") == []


def test_missing_file_without_url_says_where_to_put_it(toy):
    with pytest.raises(DataError, match=r"cannot be downloaded.*PROTGEN_DATA_DIR/toy/"):
        resolve("toy", "b.txt")


def test_unknown_names(toy):
    with pytest.raises(DataError, match="known datasets: .*blat_ecolx"):
        resolve("nope")
    with pytest.raises(DataError, match="its files: a.txt, b.txt"):
        resolve("toy", "c.txt")


def test_fetch_downloads_missing_and_replaces_corrupt_cache(toy, server, monkeypatch):
    base, log = server
    monkeypatch.setitem(
        UPSTREAM, ("toy", "a.txt"), RemoteFile(f"{base}/a.txt", hashlib.sha256(PAYLOAD).hexdigest())
    )
    shared_b = _put(toy["work"] / "shared" / "data" / "toy", "b.txt")
    corrupt = _put(toy["cache"] / "toy", "a.txt", b"truncated")
    paths = fetch("toy")
    assert paths == {"a.txt": corrupt, "b.txt": shared_b}
    assert corrupt.read_bytes() == PAYLOAD
    assert fetch("toy") == paths  # everything present with the right hash: no second download
    assert log == ["/a.txt"]


def test_fetch_lists_files_that_cannot_be_downloaded(toy, server, monkeypatch):
    base, _ = server
    monkeypatch.setitem(
        UPSTREAM, ("toy", "a.txt"), RemoteFile(f"{base}/a.txt", hashlib.sha256(PAYLOAD).hexdigest())
    )
    with pytest.raises(DataError, match=r"b.txt cannot be downloaded"):
        fetch("toy")
    assert (toy["cache"] / "toy" / "a.txt").read_bytes() == PAYLOAD


def test_resolve_folder_and_list_datasets(toy):
    rows = {name: (description, where) for name, description, where in list_datasets()}
    assert set(DATASETS) <= set(rows)
    assert rows["toy"] == ("test dataset", "missing")
    folder = toy["work"] / "shared" / "data" / "toy"
    _put(folder, "a.txt")
    assert dict((n, w) for n, _, w in list_datasets())["toy"] == "missing"  # incomplete
    _put(folder, "b.txt")
    assert dict((n, w) for n, _, w in list_datasets())["toy"] == str(folder)
    assert resolve("toy") == folder


def test_upstream_hashes_match_shared_files(shared_data):
    for (name, filename), remote in UPSTREAM.items():
        path = shared_data / name / filename
        assert path.is_file(), path
        assert sha256_of(path) == remote.sha256, filename
    for dataset in DATASETS.values():
        for filename in dataset.files:
            assert (shared_data / dataset.name / filename).exists(), (dataset.name, filename)


def test_registry_and_cli_data_list_do_not_import_jax():
    """`protgen data list` stays instant: the package namespaces import their modules on first use."""
    import subprocess
    import sys

    code = (
        "import sys; from protgen_jax.cli import main; main(['data', 'list']); "
        "assert 'jax' not in sys.modules, 'jax was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_lazy_namespaces_resolve_every_public_name():
    import protgen_jax
    import protgen_jax.data

    for module in (protgen_jax, protgen_jax.data):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
    assert protgen_jax.data.read_alignment.__module__ == "protgen_jax.data.alignment"
    with pytest.raises(AttributeError, match="no_such_name"):
        protgen_jax.data.no_such_name  # noqa: B018
