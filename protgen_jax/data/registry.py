"""Named datasets: where their files are found, and downloading the ones that have an upstream copy.

`resolve(name, filename)` looks for a dataset file in this order and returns the first hit:

1. `$PROTGEN_DATA_DIR/<name>/`;
2. `shared/data/<name>/` in the current working directory or any of its parents, then in the folder of
   this package or any of its parents (a checkout lives beside `shared/`, i.e. `<repo>/../shared/data`);
3. the user cache `$PROTGEN_CACHE_DIR/<name>/`, else `$XDG_CACHE_HOME/protgen_jax/<name>/`, else
   `~/.cache/protgen_jax/<name>/`;
4. a download into that cache, for files listed in `UPSTREAM` (URL + sha256). Files without an upstream
   copy raise a `DataError` that says where to put them.

Downloads stream into a `.part` file in the cache folder while hashing, and are moved into place with
`os.replace` only when the sha256 matches; on a mismatch or a network error the partial file is deleted.
Pure standard library (no JAX).
"""

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from protgen_jax.errors import DataError

__all__ = [
    "DATASETS",
    "UPSTREAM",
    "Dataset",
    "RemoteFile",
    "cache_dir",
    "fetch",
    "list_datasets",
    "resolve",
    "search_path",
    "sha256_of",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Dataset:
    """A named dataset: a folder holding `files` (plain files, or sub-folders such as "pdb")."""

    name: str
    description: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class RemoteFile:
    """An upstream copy of a dataset file, byte-identical to the shared one."""

    url: str
    sha256: str


DATASETS: dict[str, Dataset] = {
    "blat_ecolx": Dataset(
        "blat_ecolx",
        "TEM-1 beta-lactamase family alignment (8,403 sequences) + Stiffler 2015 DMS (4,997 mutants)",
        ("BLAT_ECOLX.a2m", "BLAT_ECOLX_Stiffler2015_dms.csv", "BLAT_ECOLX_wt.fasta"),
    ),
    "structures": Dataset(
        "structures",
        "263 single protein chains (PDB files, 40-256 residues) + manifest.csv",
        ("pdb", "manifest.csv"),
    ),
    "sequences": Dataset(
        "sequences",
        "91,281 unaligned domain sequences + UniRef50 amino-acid composition",
        ("family_domains_train.fasta", "uniref50_aa_composition.csv"),
    ),
}
"""The known datasets, by name. Tests may add entries (e.g. with pytest's monkeypatch.setitem)."""

# Upstream URLs and sha256 sums copied from shared/data/blat_ecolx/PROVENANCE.md (its "Upstream copies"
# table); the commits are pinned, so the files are byte-identical to the shared copies. The other files
# have no public byte-identical copy and must be placed by hand.
UPSTREAM: dict[tuple[str, str], RemoteFile] = {
    ("blat_ecolx", "BLAT_ECOLX.a2m"): RemoteFile(
        "https://raw.githubusercontent.com/chloechsu/combining-evolutionary-and-assay-labelled-data/"
        "fdaa5bba8ffbb8ab25de57736fed8f9126838ae3/alignments/BLAT_ECOLX.a2m",
        "68e0c67d86159e6e6363aa3131d6275634d9c7c80decba32cbf055a6a0218320",
    ),
    ("blat_ecolx", "BLAT_ECOLX_Stiffler2015_dms.csv"): RemoteFile(
        "https://raw.githubusercontent.com/debbiemarkslab/DeepSequence/"
        "fd5c272b273385c0b87fce9dec410a9d74463393/examples/mutations/BLAT_ECOLX_Ranganathan2015.csv",
        "ca17d79b57a0624a2e4189d1912c32d4d80fd67ee0835549573223f9f90d5336",
    ),
}
"""(dataset, file) -> upstream copy. Tests may override entries (e.g. with monkeypatch.setitem)."""


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def cache_dir(name: str) -> Path:
    """The user cache folder of dataset `name` (created on download, not here)."""
    if os.environ.get("PROTGEN_CACHE_DIR"):
        root = Path(os.environ["PROTGEN_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "protgen_jax"
    else:
        root = Path.home() / ".cache" / "protgen_jax"
    return root.expanduser() / name


def _shared_dirs(name: str) -> list[Path]:
    found = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data" / name
            if candidate.is_dir() and candidate not in found:
                found.append(candidate)
    return found


def search_path(name: str) -> list[Path]:
    """The folders searched for dataset `name`, in order (existing ones only, cache last, even if absent).

    Returns:
      [$PROTGEN_DATA_DIR/<name>] if that folder exists, then every existing `shared/data/<name>` above the
      working directory and above the package, then `cache_dir(name)`.
    """
    _dataset(name)
    folders = []
    if os.environ.get("PROTGEN_DATA_DIR"):
        env_dir = Path(os.environ["PROTGEN_DATA_DIR"]).expanduser() / name
        if env_dir.is_dir():
            folders.append(env_dir)
    folders.extend(d for d in _shared_dirs(name) if d not in folders)
    folders.append(cache_dir(name))
    return folders


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _where_to_put(name: str) -> str:
    return (
        f"place it in $PROTGEN_DATA_DIR/{name}/, in shared/data/{name}/ beside the checkout, or in "
        f"{cache_dir(name)}/"
    )


def _download(name: str, filename: str, remote: RemoteFile) -> Path:
    """Stream `remote` into the cache, check its sha256, and move it into place."""
    folder = cache_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    handle, part_name = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    part = Path(part_name)
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(remote.url, timeout=60) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=filename, disable=None, leave=False
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != remote.sha256:
            raise DataError(
                f"{remote.url}: sha256 mismatch for {name}/{filename}: expected {remote.sha256}, "
                f"got {actual}; the download was discarded"
            )
        os.replace(part, target)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"{remote.url}: download of {name}/{filename} failed: {err}") from err
    finally:
        part.unlink(missing_ok=True)
    return target


def resolve(name: str, filename: str | None = None) -> Path:
    """Find a dataset file (or, with `filename=None`, the dataset folder), downloading it if needed.

    Args:
      name: dataset name, a key of `DATASETS`.
      filename: one of the dataset's files; None asks for the folder that holds all of them.

    Returns:
      Path of the first hit along `search_path(name)`; for a folder, the first one holding every file
      (after downloading what is missing into the cache, when there is none).

    Raises:
      DataError: unknown dataset or file, a file that is nowhere and has no upstream copy (saying where to
        put it), a failed / corrupt download, or (folder form) files spread over several folders.
    """
    dataset = _dataset(name)
    if filename is None:
        for folder in search_path(name):
            if all((folder / f).exists() for f in dataset.files):
                return folder
        folders = sorted({str(path.parent) for path in fetch(name).values()})
        if len(folders) != 1:
            raise DataError(
                f"dataset {name!r}: its files are spread over {', '.join(folders)}; gather them in "
                "one folder or resolve them one file at a time"
            )
        return Path(folders[0])
    if filename not in dataset.files:
        raise DataError(
            f"dataset {name!r} has no file {filename!r}; its files: {', '.join(dataset.files)}"
        )
    for folder in search_path(name):
        if (folder / filename).exists():
            return folder / filename
    remote = UPSTREAM.get((name, filename))
    if remote is None:
        searched = ", ".join(str(folder) for folder in search_path(name))
        raise DataError(
            f"{name}/{filename} not found (searched {searched}) and it cannot be downloaded (no "
            f"upstream copy); {_where_to_put(name)}"
        )
    return _download(name, filename, remote)


def fetch(name: str) -> dict[str, Path]:
    """Make every file of dataset `name` available, downloading missing ones into the cache.

    A file counts as present when some folder on `search_path(name)` holds it and, if it has an upstream
    sha256, its content matches that hash; otherwise it is downloaded (a cached copy with a wrong hash is
    replaced). Files that are missing and have no upstream copy are reported together at the end.

    Returns:
      {filename: path} for every file of the dataset.

    Raises:
      DataError: unknown dataset, a failed / corrupt download, or files that cannot be downloaded (listed,
        with where to put them).
    """
    dataset = _dataset(name)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for filename in dataset.files:
        remote = UPSTREAM.get((name, filename))
        for folder in search_path(name):
            candidate = folder / filename
            if candidate.exists() and (
                remote is None or (candidate.is_file() and sha256_of(candidate) == remote.sha256)
            ):
                found[filename] = candidate
                break
        else:
            if remote is None:
                missing.append(filename)
            else:
                found[filename] = _download(name, filename, remote)
    if missing:
        raise DataError(
            f"dataset {name!r}: {', '.join(missing)} cannot be downloaded (no upstream copy); "
            f"{_where_to_put(name)}"
        )
    return found


def list_datasets() -> list[tuple[str, str, str]]:
    """(name, description, where) for every dataset; where = the folder holding all its files, or
    "missing"."""
    rows = []
    for name in sorted(DATASETS):
        dataset = DATASETS[name]
        where = next(
            (
                str(folder)
                for folder in search_path(name)
                if all((folder / f).exists() for f in dataset.files)
            ),
            "missing",
        )
        rows.append((name, dataset.description, where))
    return rows
