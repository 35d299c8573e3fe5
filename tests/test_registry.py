"""Dataset registry: resolution order, downloads against a local HTTP server, fetch and listing."""

import csv
import functools
import hashlib
import http.server
import io
import logging
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from protgen_jax.data import cgdms_build, downloads, pdb_chains, registry
from protgen_jax.data.downloads import sha256_of
from protgen_jax.data.pdb_chains import ChainRecord
from protgen_jax.data.registry import DATASETS, Dataset, fetch, file_status, list_datasets, resolve
from protgen_jax.data.sources import (
    SOURCES,
    UPSTREAM,
    ArchiveBuild,
    BuiltFile,
    ChainManifest,
    PdbChains,
    Rebuild,
    RemoteFile,
    source_of,
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
    """A threaded HTTP server on 127.0.0.1 (port 0) serving tmp_path/served (a.txt, and whatever a
    test writes there); yields (base URL, log of request paths)."""
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


def test_resolve_folder_and_list_datasets(toy, monkeypatch):
    monkeypatch.setitem(
        UPSTREAM, ("toy", "a.txt"), RemoteFile("https://example.org/a.txt", "0" * 64)
    )
    rows = {name: (description, where) for name, description, where in list_datasets()}
    assert set(DATASETS) <= set(rows)
    description, where = rows["toy"]
    assert where == "missing"
    assert description == (
        "test dataset [fetch: a.txt: download from example.org, sha256-checked; "
        "b.txt: no upstream copy: place it by hand]"
    )
    folder = toy["work"] / "shared" / "data" / "toy"
    _put(folder, "a.txt")
    assert dict((n, w) for n, _, w in list_datasets())["toy"] == "incomplete: b.txt missing"
    assert [(s.filename, s.path, s.fetchable) for s in file_status("toy")] == [
        ("a.txt", folder / "a.txt", True),
        ("b.txt", None, False),
    ]
    _put(folder, "b.txt")
    assert dict((n, w) for n, _, w in list_datasets())["toy"] == str(folder)
    assert resolve("toy") == folder


def test_upstream_hashes_match_shared_files(shared_data):
    for (name, filename), remote in UPSTREAM.items():
        if not DATASETS[name].in_shared:
            continue  # obtained into the cache on first use; its download checks the sha256
        path = shared_data / name / filename
        assert path.is_file(), path
        assert sha256_of(path) == remote.sha256, filename
    for dataset in (d for d in DATASETS.values() if d.in_shared):
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


# --- offline, built files, every registered file obtainable ------------------------------------------


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_host_is_one_line_saying_what_to_do(toy, monkeypatch, capsys):
    url = f"{_closed_port_url()}/files/upstream_a.txt"
    monkeypatch.setitem(UPSTREAM, ("toy", "a.txt"), RemoteFile(url, "0" * 64))
    with pytest.raises(DataError) as info:
        resolve("toy", "a.txt")
    message = str(info.value)
    host = url.split("/")[2]
    assert "\n" not in message
    assert message.startswith(f"cannot reach {host}: ")
    assert f"download {url} by hand and place it in {toy['cache'] / 'toy'}/ as a.txt" in message
    assert message.endswith("or set PROTGEN_DATA_DIR to a folder holding toy/a.txt")
    assert _leftovers(toy["cache"] / "toy") == []
    # the command line prints exactly that line and exits with 2
    from protgen_jax.cli import main

    assert main(["data", "fetch", "toy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach {host}: ") and err.count("\n") == 1


def test_built_file_is_made_from_its_source_and_checked(toy, server, monkeypatch):
    base, log = server
    monkeypatch.setitem(
        UPSTREAM, ("toy", "a.txt"), RemoteFile(f"{base}/a.txt", hashlib.sha256(PAYLOAD).hexdigest())
    )
    built = PAYLOAD.lower()
    source = BuiltFile("a.txt", bytes.lower, hashlib.sha256(built).hexdigest(), "lower-cased")
    monkeypatch.setitem(SOURCES, ("toy", "b.txt"), source)
    assert file_status("toy")[1].how == "built from a.txt (lower-cased), sha256-checked"
    paths = fetch("toy")
    assert paths["b.txt"].read_bytes() == built
    assert log == ["/a.txt"]
    # a build that does not reproduce the recorded sha256 writes nothing
    paths["b.txt"].unlink()
    monkeypatch.setitem(SOURCES, ("toy", "b.txt"), BuiltFile("a.txt", bytes.upper, "1" * 64, "x"))
    with pytest.raises(
        DataError, match=r"toy/b.txt built from .* expected 1{64}; nothing was written"
    ):
        resolve("toy", "b.txt")
    assert _leftovers(toy["cache"] / "toy") == ["a.txt"]


def test_rebuild_only_file_names_its_upstream_and_steps(toy, monkeypatch):
    monkeypatch.setitem(
        SOURCES, ("toy", "b.txt"), Rebuild("the U alignments (MIT)", "strip gaps, dedupe")
    )
    with pytest.raises(DataError) as info:
        resolve("toy", "b.txt")
    message = str(info.value)
    assert (
        "toy/b.txt cannot be downloaded as-is: it was built from the U alignments (MIT)" in message
    )
    assert "To rebuild it: strip gaps, dedupe. Then place it in $PROTGEN_DATA_DIR/toy/" in message


def test_every_registered_file_has_a_way_to_be_obtained():
    for dataset in DATASETS.values():
        for filename in dataset.files:
            source = source_of(dataset.name, filename)
            assert source is not None, (dataset.name, filename)
            assert source.how()
            if isinstance(source, Rebuild):
                assert source.upstream and source.steps
    # only the domain FASTA has no public copy of all its inputs
    rebuild = [k for k in SOURCES if isinstance(SOURCES[k], Rebuild)]
    assert rebuild == [("sequences", "family_domains_train.fasta")]


def test_registered_builds_reproduce_the_shared_files(shared_data):
    """The recorded checks hold for the shared copies: the wild type is the alignment's first record,
    the chain table is the structures manifest, the cgdms digests are those of the shared folder."""
    blat = shared_data / "blat_ecolx"
    wt = SOURCES[("blat_ecolx", "BLAT_ECOLX_wt.fasta")]
    built = wt.build((blat / "BLAT_ECOLX.a2m").read_bytes())
    assert built == (blat / "BLAT_ECOLX_wt.fasta").read_bytes()
    assert hashlib.sha256(built).hexdigest() == wt.sha256

    chains = SOURCES[("structures", "pdb")].chains
    with open(shared_data / "structures" / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert [c.name for c in chains] == [row["name"] for row in manifest]
    for record, row in zip(chains, manifest, strict=True):
        assert record.n_res == int(row["n_res"]), record.name
        assert record.seq_sha == hashlib.sha256(row["seq"].encode()).hexdigest()[:8], record.name
        assert bool(record.url) == row["source"].startswith("kcov/"), record.name
    for record in chains[:3]:  # the check a fetched chain must pass, on the shared copies
        path = shared_data / "structures" / "pdb" / f"{record.name}.pdb"
        assert pdb_chains._check_chain(path, record) is None

    for filename in ("pdb", "manifest.csv"):
        source = SOURCES[("structures_cgdms", filename)]
        assert downloads._digest(shared_data / "structures_cgdms" / filename) == source.sha256


# --- PDB chains by id --------------------------------------------------------------------------------


def _atom(serial: int, name: str, res: str, chain: str, number: int, x: float, altloc=" ") -> str:
    record = "HETATM" if res == "MSE" else "ATOM  "
    return (
        f"{record}{serial:5d}  {name:<3s}{altloc}{res} {chain}{number:4d}    "
        f"{x:8.3f}{0.0:8.3f}{0.0:8.3f}{1:6.2f}{0:6.2f}          {name[0]:>2s}  "
    )


def _entry(chains: dict[str, list[str]], model_2: bool = False) -> str:
    """A PDB entry: every chain a straight CA trace (3.8 Å steps) with N and C, an altloc B copy of
    the first residue's CA, a water, and optionally a second NMR model (which must be ignored)."""
    lines = ["HEADER    TEST ENTRY", "MODEL        1"]
    for chain, residues in chains.items():
        for number, res in enumerate(residues, 1):
            x = 3.8 * number
            for atom, dx in (("N", -1.0), ("CA", 0.0), ("C", 1.0)):
                lines.append(
                    _atom(
                        len(lines), atom, res, chain, number, x + dx, "A" if atom == "CA" else " "
                    )
                )
            if number == 1:
                lines.append(_atom(len(lines), "CA", res, chain, number, x + 0.3, "B"))
        lines.append("TER")
    lines += [_atom(len(lines), "O", "HOH", "A", 900, 99.0).replace("ATOM  ", "HETATM"), "ENDMDL"]
    if model_2:
        lines += ["MODEL        2", _atom(1, "CA", "GLY", "A", 99, 0.0), "ENDMDL"]
    return "\n".join([*lines, "END"]) + "\n"


def _seq_sha(sequence: str) -> str:
    return hashlib.sha256(sequence.encode()).hexdigest()[:8]


@pytest.fixture()
def chains_dataset(toy, server, monkeypatch):
    """Dataset "toypdb" (pdb/ + manifest.csv) whose chains come from the local server's pdb/ folder
    (PROTGEN_PDB_URL), plus one chain from a direct URL; yields (base URL, request log, served folder)."""
    base, log = server
    served = toy["work"].parent / "served"
    archive = served / "pdb"
    archive.mkdir()
    (archive / "1ABC.pdb").write_text(
        _entry({"A": ["ALA", "MSE", "SER", "LYS"], "B": ["GLY", "GLY", "TRP"]}, model_2=True)
    )
    from biotite.structure.io import pdb, pdbx

    atoms = pdb.PDBFile.read(io.StringIO(_entry({"C": ["VAL", "ILE", "LEU"]}))).get_structure(
        model=1
    )
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    cif.write(str(archive / "2XYZ.cif"))  # no PDB-format file: fetched as mmCIF
    (served / "domains").mkdir()
    (served / "domains" / "9DOM_A.pdb").write_text(_entry({"A": ["ASP", "GLU"]}))
    records = (
        ChainRecord("1ABC_A", 4, _seq_sha("AMSK")),
        ChainRecord("1ABC_B", 3, _seq_sha("GGG")),  # recorded wrongly: the entry has GGW
        ChainRecord("2XYZ_C", 3, _seq_sha("VIL")),
        ChainRecord("3NOP_A", 5, _seq_sha("AAAAA")),  # not in the archive (404)
        ChainRecord("9DOM_A", 2, _seq_sha("DE"), f"{base}/domains/9DOM_A.pdb"),
    )
    monkeypatch.setitem(DATASETS, "toypdb", Dataset("toypdb", "chains", ("pdb", "manifest.csv")))
    monkeypatch.setitem(SOURCES, ("toypdb", "pdb"), PdbChains(records))
    monkeypatch.setitem(SOURCES, ("toypdb", "manifest.csv"), ChainManifest("pdb"))
    monkeypatch.setenv("PROTGEN_PDB_URL", f"{base}/pdb/")
    return base, log, served


def test_pdb_chains_fetched_by_id_checked_and_listed(chains_dataset, toy, caplog):
    base, log, _ = chains_dataset
    with caplog.at_level(logging.WARNING, logger="protgen_jax.data.pdb_chains"):
        paths = fetch("toypdb")
    folder = toy["cache"] / "toypdb" / "pdb"
    assert paths == {"pdb": folder, "manifest.csv": toy["cache"] / "toypdb" / "manifest.csv"}
    assert sorted(p.name for p in folder.iterdir()) == ["1ABC_A.pdb", "2XYZ_C.pdb", "9DOM_A.pdb"]
    assert sorted(log) == sorted(
        ["/pdb/1ABC.pdb", "/pdb/2XYZ.pdb", "/pdb/2XYZ.cif", "/pdb/3NOP.pdb", "/pdb/3NOP.cif",
         "/domains/9DOM_A.pdb"]
    )  # fmt: skip
    # the chain file: one chain, first model, altloc A, MSE kept, no water; it names its source
    text = (folder / "1ABC_A.pdb").read_text().splitlines()
    assert text[0] == f"REMARK   1 EXTRACTED CHAIN A FROM {base}/pdb/1ABC.pdb"
    assert len(text) == 1 + 4 * 3 + 2 and text[-2:] == ["TER", "END"]
    assert sum(line.startswith("HETATM") for line in text) == 3
    # left out and reported, not written: the wrongly recorded chain and the entry that is missing
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "toypdb/pdb: 3 of 5 chains fetched and checked; 2 left out" in warning
    assert (
        f"1ABC_B: 3 residues, sequence digest {_seq_sha('GGW')} (recorded: 3, {_seq_sha('GGG')})"
        in warning
    )
    assert f"3NOP_A: {base}/pdb/3NOP.pdb could not be downloaded" in warning
    with open(paths["manifest.csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["name"], r["chain"], r["n_res"], r["chain_breaks"], r["seq"]) for r in rows] == [
        ("1ABC_A", "A", "4", "0", "AMSK"),
        ("2XYZ_C", "C", "3", "0", "VIL"),
        ("9DOM_A", "A", "2", "0", "DE"),
    ]
    assert rows[1]["source"] == f"{base}/pdb/2XYZ.cif"
    assert resolve("toypdb") == toy["cache"] / "toypdb"
    assert _leftovers(toy["cache"] / "toypdb") == sorted(
        ["pdb", "manifest.csv", "1ABC_A.pdb", "2XYZ_C.pdb", "9DOM_A.pdb"]
    )  # no staging folder, no partial file
    # a second fetch asks only for what is still missing
    log.clear()
    fetch("toypdb")
    assert sorted(log) == ["/pdb/1ABC.pdb", "/pdb/3NOP.cif", "/pdb/3NOP.pdb"]


def test_pdb_archive_unreachable_is_one_line(chains_dataset, toy, monkeypatch):
    closed = _closed_port_url()
    monkeypatch.setenv("PROTGEN_PDB_URL", closed)
    with pytest.raises(DataError) as info:
        fetch("toypdb")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach {closed.split('/')[2]}: ")
    assert f"download the entries by hand ({closed}/<ID>.pdb)" in message
    assert "or set PROTGEN_DATA_DIR" in message
    # no staging folder and no chain from the archive (the chain from another host may be there)
    assert set(_leftovers(toy["cache"] / "toypdb")) <= {"pdb", "9DOM_A.pdb"}


# --- archives ----------------------------------------------------------------------------------------


def _cgdms_txt(pdb_text: str, ss3: str) -> str:
    """A cgdms train_val record (sequence, 3-state string, N/CA/C/centroid xyz per residue) holding the
    N, CA, C coordinates of a backbone PDB file as written for structures_cgdms."""
    three = {v: k for k, v in cgdms_build._THREE_LETTER.items()}
    rows, sequence, current = [], [], []
    for line in pdb_text.splitlines():
        current.append(" ".join(line[c : c + 8].strip() for c in (30, 38, 46)))
        if line[12:16].strip() == "C":
            sequence.append(three[line[17:20]])
            rows.append(" ".join(current) + " 0 0 0")
            current = []
    return "\n".join(["".join(sequence), ss3, *rows]) + "\n"


def _wheel(path: Path, members: dict[str, str]) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path.read_bytes()


def test_archive_build_reproduces_the_shared_cgdms_files(toy, server, monkeypatch, shared_data):
    """The cgdms conversion, on records rebuilt from three shared chains, writes those chains' files
    byte for byte; the archive goes once everything built from it exists."""
    base, log = server
    shared = shared_data / "structures_cgdms"
    with open(shared / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:3]
    members = {
        f"cgdms/protein_data/train_val/{row['name']}.txt": _cgdms_txt(
            (shared / "pdb" / f"{row['name']}.pdb").read_text(), row["ss3"]
        )
        for row in rows
    }
    members["cgdms/protein_data/train_val/1LPB_A.txt"] = "AA\nCC\n" + "0 " * 12 + "\n" + "0 " * 12
    members["cgdms/datasets/train.txt"] = "\n".join(
        r["name"] for r in rows if r["split"] == "train"
    )
    members["cgdms/datasets/val.txt"] = "\n".join(r["name"] for r in rows if r["split"] == "val")
    data = _wheel(toy["work"].parent / "served" / "cg.whl", members)
    archive = RemoteFile(f"{base}/cg.whl", hashlib.sha256(data).hexdigest())
    expected_pdb = downloads._digest_listing(
        {f"{r['name']}.pdb": sha256_of(shared / "pdb" / f"{r['name']}.pdb") for r in rows}
    )
    lines = (shared / "manifest.csv").read_bytes().split(b"\r\n")
    expected_manifest = hashlib.sha256(b"\r\n".join(lines[:4]) + b"\r\n").hexdigest()
    monkeypatch.setitem(DATASETS, "toycg", Dataset("toycg", "cg", ("pdb", "manifest.csv")))
    for filename, build, digest in (
        ("pdb", cgdms_build._build_cgdms_pdb, expected_pdb),
        ("manifest.csv", cgdms_build._build_cgdms_manifest, expected_manifest),
    ):
        monkeypatch.setitem(SOURCES, ("toycg", filename), ArchiveBuild(archive, build, digest, "x"))
    paths = fetch("toycg")
    for row in rows:
        assert (paths["pdb"] / f"{row['name']}.pdb").read_bytes() == (
            shared / "pdb" / f"{row['name']}.pdb"
        ).read_bytes()
    assert sorted(p.name for p in paths["pdb"].iterdir()) == sorted(
        f"{r['name']}.pdb" for r in rows
    )
    assert log == ["/cg.whl"]  # downloaded once for both files
    assert _leftovers(toy["cache"] / "toycg") == sorted(
        ["manifest.csv", "pdb", *(f"{r['name']}.pdb" for r in rows)]
    )  # the archive is gone


def test_archive_build_with_a_wrong_result_writes_nothing(toy, server, monkeypatch):
    base, _ = server
    data = _wheel(toy["work"].parent / "served" / "w.whl", {"x.txt": "hello\n"})
    archive = RemoteFile(f"{base}/w.whl", hashlib.sha256(data).hexdigest())

    def build(opened: zipfile.ZipFile, target: Path) -> None:
        target.write_bytes(opened.read("x.txt"))

    monkeypatch.setitem(SOURCES, ("toy", "b.txt"), ArchiveBuild(archive, build, "2" * 64, "x"))
    with pytest.raises(
        DataError, match=r"toy/b.txt built from .*w.whl has sha256 .* expected 2{64}"
    ):
        resolve("toy", "b.txt")
    assert _leftovers(toy["cache"] / "toy") == ["w.whl"]  # kept for the next try, nothing else
