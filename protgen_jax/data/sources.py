"""How each dataset file is obtained where it is missing: the kinds of source and their tables.

`source_of(name, filename)` looks in `UPSTREAM` (byte-identical upstream copies, `RemoteFile`), then in
`SOURCES` (`BuiltFile`, `PdbChains`, `ChainManifest`, `ArchiveBuild`, `Rebuild`); each source says in
words how it is obtained (`how()`, shown by `protgen data list`). `protgen_jax.data.registry` obtains the
files as their sources say (its docstring describes each kind); the chain table lives in `pdb_chains`,
the cgdms conversion in `cgdms_build`.
"""

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protgen_jax.data.cgdms_build import _build_cgdms_manifest, _build_cgdms_pdb
from protgen_jax.data.downloads import _host
from protgen_jax.data.pdb_chains import _STRUCTURE_CHAINS, ChainRecord, _chain_records, pdb_url

__all__ = [
    "SOURCES",
    "UPSTREAM",
    "ArchiveBuild",
    "BuiltFile",
    "ChainManifest",
    "PdbChains",
    "Rebuild",
    "RemoteFile",
    "source_of",
]


@dataclass(frozen=True)
class RemoteFile:
    """An upstream copy of a dataset file, byte-identical to the shared one."""

    url: str
    sha256: str

    def how(self) -> str:
        return f"download from {_host(self.url)}, sha256-checked"


@dataclass(frozen=True)
class BuiltFile:
    """A file built from another file of the same dataset by `build` (bytes -> bytes), sha256-checked."""

    source: str
    build: Callable[[bytes], bytes]
    sha256: str
    step: str  # what `build` does, in words

    def how(self) -> str:
        return f"built from {self.source} ({self.step}), sha256-checked"


@dataclass(frozen=True)
class PdbChains:
    """A folder of single chains, each cut from its structure file, fetched by id (`ChainRecord`)."""

    chains: tuple[ChainRecord, ...]
    note: str = ""

    def how(self) -> str:
        return (
            f"{len(self.chains)} chains cut from PDB entries fetched by id from {_host(pdb_url())}"
            f"{self.note}, each checked against its recorded length and sequence"
        )


@dataclass(frozen=True)
class ChainManifest:
    """A manifest (name, source, chain, n_res, chain_breaks, seq) written from the chain folder `folder`
    of the same dataset; the `source` column names where each chain was cut from."""

    folder: str = "pdb"

    def how(self) -> str:
        return f"written from the chains in {self.folder}/"


@dataclass(frozen=True)
class ArchiveBuild:
    """A file or folder converted from a downloaded archive (`build(zip, target)`), sha256-checked.

    `sha256` is the file's, or for a folder the sha256 of its `sha256sum`-style listing
    (`<sha256>  <file name>` lines sorted by name)."""

    archive: RemoteFile
    build: Callable[[zipfile.ZipFile, Path], None]
    sha256: str
    step: str

    def how(self) -> str:
        return f"{self.step} ({_host(self.archive.url)}), sha256-checked"


@dataclass(frozen=True)
class Rebuild:
    """A file made by a processing step from upstream data that cannot be downloaded as-is."""

    upstream: str
    steps: str

    def how(self) -> str:
        return "not downloadable as-is (the fetch error says how to rebuild it)"


Source = RemoteFile | BuiltFile | PdbChains | ChainManifest | ArchiveBuild | Rebuild

# ---------------------------------------------------------------------------------------------------
# The sources of the registered files

UPSTREAM: dict[tuple[str, str], RemoteFile] = {
    # Copied from shared/data/blat_ecolx/PROVENANCE.md ("Upstream copies"); pinned commits.
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
    # shared/data/sequences/PROVENANCE.md: "amino-acid counts of EvoDiff's UniRef50 test split
    # (microsoft/evodiff, MIT)"; that repository ships the file as data/uniref50_aa_ref_test.csv.
    ("sequences", "uniref50_aa_composition.csv"): RemoteFile(
        "https://raw.githubusercontent.com/microsoft/evodiff/"
        "33206e99446f799ec11cf6e57d66ffaec837be91/data/uniref50_aa_ref_test.csv",
        "225620cad646c368148c83663953bc8f38f7b7f11500a6982666dd0842c60dc8",
    ),
    # CATH v4.1.0 non-redundant-data-sets/cath-dataset-nonredundant-S40.fa (CC BY 4.0); the copy
    # committed to shouldsee/blosum at the pinned commit (21,090 records, headers cath|4_1_0|DOMAIN/RANGE).
    ("cath_s40", "cath-dataset-nonredundant-S40.fa"): RemoteFile(
        "https://raw.githubusercontent.com/shouldsee/blosum/"
        "3995d53eadb559f508ed7d7bc331310d4346177c/cath-dataset-nonredundant-S40.fa",
        "bfaceaf89739cb5fa15ed432c8555c31e0b6dc308557592307a78d224e25909e",
    ),
}
"""(dataset, file) -> byte-identical upstream copy. Tests may override entries (monkeypatch.setitem)."""


def _focus_fasta(a2m: bytes) -> bytes:
    """The first (focus) record of an A2M file, upper-cased, with its gaps ('-', '.') removed."""
    first = a2m.decode("ascii").lstrip().split(">")[1]
    header, _, body = first.partition("\n")
    sequence = "".join(body.split()).upper().replace("-", "").replace(".", "")
    return f">{header.strip()}\n{sequence}".encode("ascii")


_CGDMS_WHEEL = RemoteFile(
    "https://files.pythonhosted.org/packages/py3/c/cgdms/cgdms-1.0-py3-none-any.whl",
    "8a7a9ea86df276acc7063b1c162cfbb20a8dd380cef345294f85817558798ca0",
)

SOURCES: dict[tuple[str, str], Source] = {
    ("blat_ecolx", "BLAT_ECOLX_wt.fasta"): BuiltFile(
        "BLAT_ECOLX.a2m",
        _focus_fasta,
        "a7e0607e79fce5f7b5f62a3db59d09e20355c7c6658f1e616e91e2a96e4a2f6f",
        "the first record, gaps removed",
    ),
    ("structures", "pdb"): PdbChains(
        _chain_records(_STRUCTURE_CHAINS),
        " (36 domain files from Kortemme-Lab/covariation on GitHub)",
    ),
    ("structures", "manifest.csv"): ChainManifest("pdb"),
    ("structures_cgdms", "pdb"): ArchiveBuild(
        _CGDMS_WHEEL,
        _build_cgdms_pdb,
        "b62d3888560de98c83d648d1f4f17d7399adf71d405ccfe6c25619cd63e211ce",
        "converted from the cgdms 1.0 wheel",
    ),
    ("structures_cgdms", "manifest.csv"): ArchiveBuild(
        _CGDMS_WHEEL,
        _build_cgdms_manifest,
        "a2e4b469d98d36f5c7bb28313fe29203e5cf9a11911073565c364ec9320610ee",
        "converted from the cgdms 1.0 wheel",
    ),
    ("sequences", "family_domains_train.fasta"): Rebuild(
        "the natural alignments of github.com/Kortemme-Lab/covariation (MIT), the WW and Kunitz "
        "alignments of github.com/jertubiana/PGM (BSD-3), BLAT_ECOLX.a2m and an SCN5A_HUMAN "
        "alignment (MIT source; no public copy identified)",
        "for the 36 files analysis/natural_alignments/PF*.align.80 of Kortemme-Lab/covariation "
        "(commit e806290; all but PF00018, PF00085, PF00240, PF00595; in name order), then "
        "data/WW/WW_domain_MSA.fasta and data/Kunitz/Kunitz_domain_MSA.fasta of jertubiana/PGM "
        "(commit f68dfe3), BLAT_ECOLX.a2m (`protgen data fetch blat_ecolx`) and the SCN5A alignment: "
        "remove '-' and '.', upper-case, drop sequences shorter than 20 residues and repeats within "
        "the file, and write '>FAMILY|id' records (FAMILY = the PF id, WW, Kunitz, BLAT_ECOLX, "
        "SCN5A) in 80-column lines",
    ),
}
"""(dataset, file) -> how a file without a byte-identical upstream copy is obtained (`source_of`)."""


def source_of(name: str, filename: str) -> Source | None:
    """How `name/filename` is obtained when it is missing: `UPSTREAM`, else `SOURCES`, else None."""
    return UPSTREAM.get((name, filename)) or SOURCES.get((name, filename))
