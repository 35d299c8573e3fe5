"""Named datasets: where their files are found, and how each file is obtained where it is missing.

`resolve(name, filename)` looks for a dataset file in this order and returns the first hit:

1. `$PROTGEN_DATA_DIR/<name>/`;
2. `shared/data/<name>/` in the current working directory or any of its parents, then in the folder of
   this package or any of its parents (a checkout lives beside `shared/`, i.e. `<repo>/../shared/data`);
3. the user cache `$PROTGEN_CACHE_DIR/<name>/`, else `$XDG_CACHE_HOME/protgen_jax/<name>/`, else
   `~/.cache/protgen_jax/<name>/`;
4. otherwise the file is obtained into that cache, the way its source (`sources.source_of`) says:

   - `RemoteFile` (the table `UPSTREAM`): a byte-identical upstream copy, downloaded and checked
     against its sha256;
   - `BuiltFile`: built from another file of the dataset by a fixed step and checked against the sha256
     of the shared copy (the BLAT_ECOLX wild type, the first record of the alignment);
   - `PdbChains`: a folder of single chains, each cut from its structure file fetched by id (the PDB
     archive at `pdb_chains.pdb_url()`, `$PROTGEN_PDB_URL` to change it) and checked against its
     recorded residue count and sequence digest (no checksums exist for these files; a chain that
     differs is left out and reported), with `ChainManifest` (manifest.csv) written from the chains;
   - `ArchiveBuild`: converted from a downloaded archive (sha256-checked) and checked against the sha256
     of the shared copy (for a folder: of its `sha256sum` listing);
   - `Rebuild`: made by a processing step from upstream data that cannot be downloaded as-is; a
     `DataError` names the upstream sources and the steps.

Downloads stream into a temporary file in the cache folder and are moved into place with `os.replace`
only when they check out; on a mismatch or a network error nothing is left behind. A host that cannot be
reached gives one line: `cannot reach HOST: reason; download URL by hand and place it in DIR ...`.
`protgen data list` shows what is present and how the rest is obtained, `protgen data fetch NAME`
obtains it. Standard library only (no JAX; biotite checks fetched PDB chains).

This module holds the dataset table, the lookup and the obtaining of each kind of source into the
cache; the sources and their tables are in `protgen_jax.data.sources`, streamed checked downloads in
`downloads`, chains fetched by id in `pdb_chains`, the cgdms conversion in `cgdms_build`.
"""

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from protgen_jax.data.downloads import _digest, _download, sha256_of
from protgen_jax.data.pdb_chains import _fetch_chains, _manifest_csv
from protgen_jax.data.sources import (
    ArchiveBuild,
    BuiltFile,
    ChainManifest,
    PdbChains,
    Rebuild,
    RemoteFile,
    Source,
    source_of,
)
from protgen_jax.errors import DataError

__all__ = [
    "DATASETS",
    "Dataset",
    "FileStatus",
    "cache_dir",
    "fetch",
    "file_status",
    "list_datasets",
    "resolve",
    "search_path",
]


@dataclass(frozen=True)
class Dataset:
    """A named dataset: a folder holding `files` (plain files, or sub-folders such as "pdb")."""

    name: str
    description: str
    files: tuple[str, ...]
    upstream: str = ""  # where the data come from, and their licence
    in_shared: bool = True  # False: not in shared/data; obtained into the cache on first use


DATASETS: dict[str, Dataset] = {
    "blat_ecolx": Dataset(
        "blat_ecolx",
        "TEM-1 beta-lactamase family alignment (8,403 sequences) + Stiffler 2015 DMS (4,997 mutants)",
        ("BLAT_ECOLX.a2m", "BLAT_ECOLX_Stiffler2015_dms.csv", "BLAT_ECOLX_wt.fasta"),
        "alignment: Hsu et al. 2022 (chloechsu/combining-evolutionary-and-assay-labelled-data, MIT); "
        "DMS: Stiffler et al. 2015 via debbiemarkslab/DeepSequence (MIT); focus UniProt P62593 24-286",
    ),
    "structures": Dataset(
        "structures",
        "263 single protein chains (PDB files, 40-256 residues) + manifest.csv",
        ("pdb", "manifest.csv"),
        "wwPDB entries (CC0), chains of protein-stability benchmark sets (PROSTATA, S2648, S669, "
        "Varibench) and Kortemme-Lab ddg / covariation (MIT), one per cluster of similar sequences",
    ),
    "structures_cgdms": Dataset(
        "structures_cgdms",
        "2,202 single-chain N/CA/C backbones (20-100 residues) + manifest.csv (split, sequence, "
        "3-state secondary structure)",
        ("pdb", "manifest.csv"),
        "train/val chains of Greener & Jones 2021 as shipped in the cgdms 1.0 package (MIT); "
        "coordinates from wwPDB entries (CC0)",
    ),
    "sequences": Dataset(
        "sequences",
        "91,281 unaligned domain sequences (40 families) + UniRef50 amino-acid composition",
        ("family_domains_train.fasta", "uniref50_aa_composition.csv"),
        "Pfam alignments of Kortemme-Lab/covariation (MIT), WW / Kunitz of jertubiana/PGM (BSD-3), "
        "BLAT_ECOLX and SCN5A alignment rows (MIT); composition: microsoft/evodiff (MIT)",
    ),
    "cath_s40": Dataset(
        "cath_s40",
        "21,090 CATH v4.1 domain sequences, non-redundant at 40% identity (broad unlabelled training "
        "data for sequence models; not in shared/: downloaded into the cache)",
        ("cath-dataset-nonredundant-S40.fa",),
        "CATH v4.1.0 non-redundant S40 set (Sillitoe et al. 2015; CC BY 4.0), from a byte copy "
        "pinned on GitHub (shouldsee/blosum)",
        in_shared=False,
    ),
}
"""The known datasets, by name. Tests may add entries (e.g. with pytest's monkeypatch.setitem)."""


# ---------------------------------------------------------------------------------------------------
# Where files are looked for


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


def _where_to_put(name: str) -> str:
    return (
        f"place it in $PROTGEN_DATA_DIR/{name}/, in shared/data/{name}/ beside the checkout, or in "
        f"{cache_dir(name)}/"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# Obtaining files into the cache


def _obtain_remote(name: str, filename: str, remote: RemoteFile) -> Path:
    return _download(remote.url, remote.sha256, cache_dir(name) / filename, f"{name}/{filename}")


def _write_checked(name: str, filename: str, data: bytes, sha256: str | None, origin: str) -> Path:
    """Write `data` to the cache as `filename` (atomically), if its sha256 is `sha256` (None: any)."""
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise DataError(
            f"{name}/{filename} built from {origin} has sha256 {actual}, expected {sha256}; "
            "nothing was written"
        )
    folder = cache_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    handle, part_name = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(part_name, folder / filename)
    finally:
        Path(part_name).unlink(missing_ok=True)
    return folder / filename


def _obtain_built(name: str, filename: str, source: BuiltFile) -> Path:
    origin = resolve(name, source.source)
    try:
        data = source.build(origin.read_bytes())
    except (ValueError, IndexError) as err:
        raise DataError(f"{origin}: cannot build {name}/{filename} from it: {err}") from err
    return _write_checked(name, filename, data, source.sha256, str(origin))


def _obtain_manifest(name: str, filename: str, source: ChainManifest) -> Path:
    folder = resolve(name, source.folder)
    chains = source_of(name, source.folder)
    if isinstance(chains, PdbChains):
        names = [r.name for r in chains.chains]
    else:
        names = sorted(p.stem for p in folder.glob("*.pdb"))
    return _write_checked(name, filename, _manifest_csv(folder, names), None, str(folder))


# Archives --------------------------------------------------------------------------------------------


def _archive_path(name: str, remote: RemoteFile) -> Path:
    return cache_dir(name) / Path(urllib.parse.urlsplit(remote.url).path).name


def _obtain_from_archive(name: str, filename: str, source: ArchiveBuild) -> Path:
    folder = cache_dir(name)
    archive = _archive_path(name, source.archive)
    if not (archive.is_file() and sha256_of(archive) == source.archive.sha256):
        _download(source.archive.url, source.archive.sha256, archive, f"the archive of {name}")
    target = folder / filename
    with tempfile.TemporaryDirectory(dir=folder, prefix=".staging-") as staging:
        staged = Path(staging) / filename
        try:
            with zipfile.ZipFile(archive) as opened:
                source.build(opened, staged)
        except (zipfile.BadZipFile, KeyError, ValueError, IndexError) as err:
            raise DataError(f"{archive}: cannot build {name}/{filename} from it: {err}") from err
        actual = _digest(staged)
        if actual != source.sha256:
            raise DataError(
                f"{name}/{filename} built from {source.archive.url} has sha256 {actual}, expected "
                f"{source.sha256}; nothing was written"
            )
        _remove(target)
        os.replace(staged, target)
    return target


# ---------------------------------------------------------------------------------------------------
# Public API


def _rebuild_message(name: str, filename: str, source: Rebuild | None) -> str:
    if source is None:
        return f"{name}/{filename} cannot be downloaded (no upstream copy); {_where_to_put(name)}"
    return (
        f"{name}/{filename} cannot be downloaded as-is: it was built from {source.upstream}. To "
        f"rebuild it: {source.steps}. Then {_where_to_put(name)}"
    )


def _obtain(name: str, filename: str, source: Source | None) -> Path:
    if isinstance(source, RemoteFile):
        return _obtain_remote(name, filename, source)
    if isinstance(source, BuiltFile):
        return _obtain_built(name, filename, source)
    if isinstance(source, PdbChains):
        return _fetch_chains(cache_dir(name), name, filename, source.chains)
    if isinstance(source, ChainManifest):
        return _obtain_manifest(name, filename, source)
    if isinstance(source, ArchiveBuild):
        return _obtain_from_archive(name, filename, source)
    raise DataError(_rebuild_message(name, filename, source))


def _is_current(path: Path, source: Source | None) -> bool:
    """Whether `path` is a usable copy: present, with the right sha256 where one is known, and for a
    chain folder holding every chain."""
    if isinstance(source, RemoteFile | BuiltFile):
        return path.is_file() and sha256_of(path) == source.sha256
    if isinstance(source, PdbChains):
        return path.is_dir() and all((path / f"{r.name}.pdb").is_file() for r in source.chains)
    return path.exists()


def resolve(name: str, filename: str | None = None) -> Path:
    """Find a dataset file (or, with `filename=None`, the dataset folder), obtaining it if needed.

    Args:
      name: dataset name, a key of `DATASETS`.
      filename: one of the dataset's files; None asks for the folder that holds all of them.

    Returns:
      Path of the first hit along `search_path(name)`; for a folder, the first one holding every file
      (after obtaining what is missing into the cache, when there is none).

    Raises:
      DataError: unknown dataset or file, a file that is nowhere and cannot be obtained (saying where it
        comes from and where to put it), a failed / corrupt download, or (folder form) files spread over
        several folders.
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
    source = source_of(name, filename)
    if source is None or isinstance(source, Rebuild):
        searched = ", ".join(str(folder) for folder in search_path(name))
        raise DataError(f"{_rebuild_message(name, filename, source)} (searched {searched})")
    return _obtain(name, filename, source)


def fetch(name: str) -> dict[str, Path]:
    """Make every file of dataset `name` available, obtaining missing ones into the cache.

    A file counts as present when some folder on `search_path(name)` holds a current copy (`_is_current`:
    the right sha256 where one is known, every chain of a chain folder); otherwise it is obtained as
    `source_of` says (a cached copy with a wrong hash is replaced, a partial chain folder completed).
    Files that cannot be obtained are reported together at the end, with their upstream and rebuild steps.

    Returns:
      {filename: path} for every file of the dataset.

    Raises:
      DataError: unknown dataset, a failed / corrupt download or build, an unreachable host (one line), or
        files that cannot be downloaded (listed, with where they come from and where to put them).
    """
    dataset = _dataset(name)
    found: dict[str, Path] = {}
    obtained: set[str] = set()
    missing: list[str] = []
    for filename in dataset.files:
        source = source_of(name, filename)
        hit = next(
            (
                folder / filename
                for folder in search_path(name)
                if _is_current(folder / filename, source)
            ),
            None,
        )
        if isinstance(source, ChainManifest) and source.folder in obtained:
            hit = None  # its chain folder changed: write it again
        if hit is not None:
            found[filename] = hit
        elif source is None or isinstance(source, Rebuild):
            missing.append(filename)
        else:
            found[filename] = _obtain(name, filename, source)
            obtained.add(filename)
    for filename in dataset.files:  # archives are kept only until everything built from them exists
        source = source_of(name, filename)
        if isinstance(source, ArchiveBuild) and len(found) == len(dataset.files):
            _archive_path(name, source.archive).unlink(missing_ok=True)
    if missing:
        messages = [_rebuild_message(name, f, source_of(name, f)) for f in missing]
        raise DataError(
            messages[0] if len(messages) == 1 else f"dataset {name!r}: " + "; ".join(messages)
        )
    return found


@dataclass(frozen=True)
class FileStatus:
    """Where a dataset file is, and how it is obtained where it is missing."""

    filename: str
    path: Path | None  # the first hit along search_path, None when missing
    how: str  # how `fetch` obtains it, or why it cannot
    fetchable: bool  # `protgen data fetch` can obtain it


def file_status(name: str) -> list[FileStatus]:
    """The status of every file of dataset `name` (no download, no hashing)."""
    dataset = _dataset(name)
    folders = search_path(name)
    rows = []
    for filename in dataset.files:
        source = source_of(name, filename)
        path = next((f / filename for f in folders if (f / filename).exists()), None)
        how = "no upstream copy: place it by hand" if source is None else source.how()
        rows.append(
            FileStatus(filename, path, how, not (source is None or isinstance(source, Rebuild)))
        )
    return rows


def list_datasets() -> list[tuple[str, str, str]]:
    """(name, description, where) for every dataset.

    where: the folder holding all its files; "missing" when none is found; "incomplete: F, ... missing"
    otherwise. description: what it is, and how `fetch` obtains each file ("[fetch: ...]").
    """
    rows = []
    for name in sorted(DATASETS):
        dataset = DATASETS[name]
        statuses = file_status(name)
        where = next(
            (
                str(folder)
                for folder in search_path(name)
                if all((folder / f).exists() for f in dataset.files)
            ),
            None,
        )
        if where is None:
            absent = [s.filename for s in statuses if s.path is None]
            where = (
                "missing"
                if len(absent) == len(statuses)
                else f"incomplete: {', '.join(absent)} missing"
            )
        ways: dict[str, list[str]] = {}
        for status in statuses:
            ways.setdefault(status.how, []).append(status.filename)
        how = "; ".join(f"{', '.join(files)}: {way}" for way, files in ways.items())
        rows.append((name, f"{dataset.description} [fetch: {how}]", where))
    return rows
