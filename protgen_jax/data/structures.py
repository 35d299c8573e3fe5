"""Host-side loading of C-alpha backbones from PDB / mmCIF files, holdout splits and padded batches.

Parsing is done by biotite (`biotite.structure.io.pdb.PDBFile`, `biotite.structure.io.pdbx.CIFFile`); this
module only selects a chain and its C-alpha atoms and checks them. Everything here is NumPy; coordinates
stay in Å until the caller divides by `COORD_SCALE`.

Residue policy: a residue of the selected chain without a CA atom (e.g. a terminal residue with only N or
only C resolved) is skipped, not an error; the count of such residues is kept in `Chain.n_missing_ca`. This
matches how the shared data's manifest counts residues (`n_res` = CA count). The gap it leaves, like any
missing segment, shows up in `Chain.breaks` when the neighbouring CA atoms are more than `BREAK_DISTANCE`
apart.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import biotite.structure as struc
import biotite.structure.info as struc_info
import numpy as np
from biotite.structure.io import pdb, pdbx
from tqdm.auto import tqdm

from protgen_jax.data.text import read_text_file
from protgen_jax.errors import DataError

__all__ = [
    "BACKBONE_ATOMS",
    "BREAK_DISTANCE",
    "COORD_SCALE",
    "STRUCTURE_SUFFIXES",
    "Chain",
    "center",
    "load_chain",
    "load_folder",
    "ChainSet",
    "bucket_for",
    "chain_positions",
    "pad_examples",
    "rows_by_bucket",
    "split_holdout",
]

BREAK_DISTANCE = 4.2
"""Å; consecutive CA atoms farther apart than this mark a chain break (ideal trans CA-CA is 3.80 Å)."""

COORD_SCALE = 10.0
"""Å per model unit: models see `ca / COORD_SCALE`.

Diffusion models assume data of roughly unit scale per coordinate, matching the N(0, I) prior. Centred CA
coordinates of the shared 263 chains (40-256 residues) have a per-axis standard deviation of about 8 Å
(radius of gyration Rg ~ 2.1 L^0.40 Å, so Rg / sqrt(3) runs from ~5.5 Å at L=40 to ~11 Å at L=256), and
dividing by 10 puts them at 0.5-1.1 with extremes near 5. A fixed constant (rather than per-protein Rg
normalisation) keeps the length-size relation in the data, so the model learns how big a chain of length L is.
"""

BACKBONE_ATOMS = ("N", "CA", "C")
"""The atoms of `Chain.backbone`, in its order along axis 1."""

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
"""File suffixes `load_chain` reads (case-insensitive): PDB for the first two, mmCIF for the rest."""

_STANDARD_AMINO_ACIDS = frozenset(
    "ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL".split()
)
_ONE_LETTER = frozenset("ACDEFGHIKLMNPQRSTVWY")


@dataclass(frozen=True, eq=False)
class Chain:
    """One protein chain reduced to its C-alpha trace.

    Attributes:
      name: identifier, `<file stem>` if the stem already ends in `_<chain_id>`, else `<stem>_<chain_id>`.
      ca: [L, 3] float32 CA coordinates in Å.
      sequence: length-L one-letter sequence (modified residues map to their parent, e.g. MSE -> M;
        anything else outside the 20 standard amino acids -> X).
      residue_ids: [L] int author residue numbers.
      chain_id: the chain identifier in the file.
      breaks: [N_breaks] int indices i with |ca[i + 1] - ca[i]| > BREAK_DISTANCE.
      n_missing_ca: residues of the chain skipped because they have no CA atom.
      backbone: [L, 3, 3] float32 N, CA, C coordinates in Å (``BACKBONE_ATOMS`` order), NaN for an N or
        C atom the file does not have; None for a chain built from a CA trace alone.
    """

    name: str
    ca: np.ndarray
    sequence: str
    residue_ids: np.ndarray
    chain_id: str
    breaks: np.ndarray
    n_missing_ca: int = 0
    backbone: np.ndarray | None = None

    @property
    def length(self) -> int:
        """Number of residues L."""
        return int(self.ca.shape[0])


@cache
def _one_letter(res_name: str) -> str:
    code = struc_info.one_letter_code(res_name)
    if code is None or code.upper() not in _ONE_LETTER:
        return "X"
    return code.upper()


_COORDINATE_RECORDS = ("ATOM", "HETATM")
_PDB_RECORDS = ("ATOM", "HETATM", "ANISOU", "TER", "END", "ENDMDL", "MODEL", "CONECT", "MASTER")


def _check_complete(path: Path, text: str, is_pdb: bool) -> None:
    """DataError when the file visibly stops early (a truncated download or copy).

    PDB: the last line is a coordinate record cut before its coordinates end (column 54), or, in a file
    without a final newline, a fragment of a record name or a coordinate record. mmCIF: a file whose
    categories are closed by ``#`` lines (as the PDB archive and biotite write them) does not end with one.
    """
    lines = text.rstrip("\r\n").splitlines()
    last, number = (lines[-1], len(lines)) if lines else ("", 0)
    ends_mid_line = not text.endswith(("\n", "\r"))
    if is_pdb:
        record = last[:6].strip()
        if record in _COORDINATE_RECORDS and len(last.rstrip()) < 54:
            raise DataError(
                f"{path}: line {number}: truncated {record} record (the file ends before its "
                "coordinates)"
            )
        fragment = (
            bool(record)
            and record not in _PDB_RECORDS
            and any(name.startswith(record) for name in _PDB_RECORDS)
        )
        if ends_mid_line and (fragment or record in _COORDINATE_RECORDS):
            raise DataError(f"{path}: line {number}: the file ends in the middle of a record")
    elif any(line.strip() == "#" for line in lines) and not last.startswith("#"):
        raise DataError(
            f"{path}: line {number}: truncated (the last category is not closed by a '#' line)"
        )


def _read_first_model(path: Path) -> struc.AtomArray:
    suffix = path.suffix.lower()
    if suffix not in STRUCTURE_SUFFIXES:
        raise DataError(
            f"{path}: unknown structure suffix {suffix!r} (expected {STRUCTURE_SUFFIXES})"
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    is_pdb = suffix in (".pdb", ".ent")
    text = read_text_file(path, "structure", allow_empty=False)
    _check_complete(path, text, is_pdb)
    try:
        if is_pdb:
            return pdb.PDBFile.read(io.StringIO(text)).get_structure(model=1)
        return pdbx.get_structure(pdbx.CIFFile.read(io.StringIO(text)), model=1)
    except Exception as err:  # biotite raises many types on malformed files; all mean "unusable"
        kind = "PDB" if is_pdb else "mmCIF"
        reason = " ".join(str(err).split())[:200]
        raise DataError(
            f"{path}: cannot parse {kind} structure ({type(err).__name__}: {reason})"
        ) from err


def _protein_atoms(atoms: struc.AtomArray) -> struc.AtomArray:
    """Amino-acid residues, without free standard amino acids recorded as HETATM ligands."""
    keep = struc.filter_amino_acids(atoms)
    keep &= ~(atoms.hetero & np.isin(atoms.res_name, list(_STANDARD_AMINO_ACIDS)))
    return atoms[keep]


def _chain_name(path: Path, chain_id: str) -> str:
    return path.stem if path.stem.endswith(f"_{chain_id}") else f"{path.stem}_{chain_id}"


def load_chain(
    path: str | Path,
    chain: str | None = None,
    min_length: int = 40,
    max_length: int = 256,
) -> Chain:
    """Read one chain's CA trace from the first model of a PDB or mmCIF file.

    Args:
      path: a `.pdb` / `.ent` (PDB) or `.cif` / `.mmcif` (PDBx/mmCIF) file.
      chain: chain identifier (author chain id); default the first chain holding amino acids.
      min_length: fewest CA residues accepted.
      max_length: most CA residues accepted.

    Returns:
      A `Chain` with L CA positions, min_length <= L <= max_length. Residues without a CA are skipped and
      counted in `n_missing_ca` (see the module docstring).

    Raises:
      DataError: unreadable, empty, binary, truncated or malformed file, no protein chain, absent chain id (the message lists the available ones),
        non-finite CA coordinates, or a length outside [min_length, max_length].
    """
    path = Path(path)
    protein = _protein_atoms(_read_first_model(path))
    available = list(dict.fromkeys(protein.chain_id.tolist()))
    if not available:
        raise DataError(f"{path}: no protein chain (no amino-acid residues in the first model)")
    chain_id = available[0] if chain is None else chain
    if chain_id not in available:
        raise DataError(
            f"{path}: chain {chain_id!r} not found; protein chains: {', '.join(available)}"
        )
    atoms = protein[protein.chain_id == chain_id]

    residue_starts = struc.get_residue_starts(atoms)
    ca_index = np.nonzero(atoms.atom_name == "CA")[0]
    residue_of_ca = np.searchsorted(residue_starts, ca_index, side="right") - 1
    _, first = np.unique(residue_of_ca, return_index=True)  # one CA per residue
    ca_atoms = atoms[ca_index[first]]
    n_missing = len(residue_starts) - len(ca_atoms)

    where = f"{path}: chain {chain_id}"
    length = len(ca_atoms)
    if length < min_length:
        raise DataError(f"{where}: {length} residues with CA, fewer than min_length={min_length}")
    if length > max_length:
        raise DataError(f"{where}: {length} residues with CA, more than max_length={max_length}")
    ca = np.asarray(ca_atoms.coord, dtype=np.float32)
    finite = np.isfinite(ca).all(axis=-1)
    if not finite.all():
        bad = ca_atoms.res_id[~finite][:5].tolist()
        raise DataError(f"{where}: non-finite CA coordinates at residues {bad}")

    bond = np.linalg.norm(np.diff(ca.astype(np.float64), axis=0), axis=-1)
    residue_of_atom = np.searchsorted(residue_starts, np.arange(len(atoms)), side="right") - 1
    row_of_residue = np.full(len(residue_starts), -1)
    row_of_residue[residue_of_ca[first]] = np.arange(length)
    backbone = np.full((length, len(BACKBONE_ATOMS), 3), np.nan, np.float32)
    for column, atom_name in enumerate(BACKBONE_ATOMS):
        for atom in np.nonzero(atoms.atom_name == atom_name)[0][::-1]:  # first atom of a name wins
            row = row_of_residue[residue_of_atom[atom]]
            if row >= 0:
                backbone[row, column] = atoms.coord[atom]
    backbone[:, 1] = ca
    return Chain(
        name=_chain_name(path, chain_id),
        ca=ca,
        sequence="".join(_one_letter(str(name)) for name in ca_atoms.res_name),
        residue_ids=np.asarray(ca_atoms.res_id, dtype=np.int64),
        chain_id=str(chain_id),
        breaks=np.nonzero(bond > BREAK_DISTANCE)[0],
        n_missing_ca=int(n_missing),
        backbone=backbone,
    )


def load_folder(
    folder: str | Path,
    chain: str | None = None,
    min_length: int = 40,
    max_length: int = 256,
    progress: bool = True,
) -> tuple[list[Chain], list[tuple[str, str]]]:
    """Load every structure file in a folder, skipping (not raising on) the files `load_chain` rejects.

    Files are those directly in `folder` whose suffix is in `STRUCTURE_SUFFIXES`, in sorted name order.

    Args:
      folder: the folder to scan.
      chain, min_length, max_length: passed to `load_chain` for every file.
      progress: show a tqdm progress bar (with the running count of skipped files).

    Returns:
      (chains, skipped): the loaded chains, and (file name, reason) for each skipped file.

    Raises:
      DataError: `folder` is not a directory or holds no structure file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in STRUCTURE_SUFFIXES
    )
    if not files:
        raise DataError(f"{folder}: no structure files ({', '.join(STRUCTURE_SUFFIXES)})")
    chains: list[Chain] = []
    skipped: list[tuple[str, str]] = []
    bar = tqdm(files, desc=f"loading {folder.name}", unit="file", disable=not progress)
    for path in bar:
        try:
            chains.append(load_chain(path, chain, min_length, max_length))
        except DataError as err:
            skipped.append((path.name, str(err)))
            bar.set_postfix(skipped=len(skipped))
    return chains, skipped


def _unit_hash(name: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_holdout(
    chains: Sequence[Chain], fraction: float = 0.1, seed: int = 0
) -> tuple[list[Chain], list[Chain]]:
    """Split chains into (train, holdout) by a hash of their names.

    u(name) = SHA-256("<seed>:<name>") read as a number in [0, 1); a chain is held out iff u < fraction.
    Membership depends only on a chain's name and the seed, so the split is identical across runs, input
    orders and folders that gain or lose other files; the holdout size is Binomial(N, fraction).

    Args:
      chains: the chains to split.
      fraction: expected held-out fraction, in [0, 1].
      seed: changes the split.

    Returns:
      (train, holdout), each in input order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"holdout fraction must be in [0, 1], got {fraction}")
    train: list[Chain] = []
    holdout: list[Chain] = []
    for chain in chains:
        (holdout if _unit_hash(chain.name, seed) < fraction else train).append(chain)
    return train, holdout


def center(ca: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Move the masked centre of mass to the origin and zero the padded positions.

    x'_l = m_l (x_l - sum_k m_k x_k / sum_k m_k).

    Args:
      ca: [..., L, 3] coordinates (e.g. [L, 3] or [B, L, 3]).
      mask: [..., L] bool, True where a residue exists; default all True.

    Returns:
      float32 array shaped like `ca`.
    """
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim < 2 or ca.shape[-1] != 3:
        raise ValueError(f"center expects [..., L, 3] coordinates, got shape {ca.shape}")
    mask = np.ones(ca.shape[:-1], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != ca.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} does not match coordinates {ca.shape}")
    weight = mask[..., None].astype(np.float64)
    count = np.maximum(weight.sum(axis=-2, keepdims=True), 1.0)
    mean = (ca * weight).sum(axis=-2, keepdims=True) / count
    return ((ca - mean) * weight).astype(np.float32)


def chain_positions(chain: Chain) -> np.ndarray:
    """Chain positions p [L] int32: p_0 = 0, p_{i+1} = p_i + 1, or at a break (CA-CA > 4.2 Å)
    p_i + max(2, r_{i+1} - r_i) with r the author residue numbers, so a gap is never read as a bond."""
    steps = np.ones(max(chain.length - 1, 0), dtype=np.int64)
    if len(chain.breaks):
        jumps = np.diff(chain.residue_ids.astype(np.int64))[chain.breaks]
        steps[chain.breaks] = np.maximum(2, jumps)
    return np.concatenate([[0], np.cumsum(steps)]).astype(np.int32)


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket >= length."""
    return min(b for b in buckets if b >= length)


def rows_by_bucket(lengths: np.ndarray, buckets: tuple[int, ...]) -> dict[int, np.ndarray]:
    """``{bucket: row indices}`` (rows in order) of the buckets that hold a row of ``lengths`` [N]."""
    found: dict[int, list[int]] = {}
    for row, length in enumerate(lengths):
        found.setdefault(bucket_for(int(length), buckets), []).append(row)
    return {b: np.asarray(rows, np.int64) for b, rows in sorted(found.items())}


def pad_examples(chains: list[Chain], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x0 [B, length, 3] centred / COORD_SCALE, mask [B, length], positions [B, length] int32)."""
    x0 = np.zeros((len(chains), length, 3), np.float32)
    mask = np.zeros((len(chains), length), bool)
    positions = np.zeros((len(chains), length), np.int32)
    for i, chain in enumerate(chains):
        x0[i, : chain.length] = center(chain.ca) / COORD_SCALE
        mask[i, : chain.length] = True
        positions[i, : chain.length] = chain_positions(chain)
    return x0, mask, positions


@dataclass(frozen=True)
class ChainSet:
    """Chains padded to one width W: what a run keeps of its structures (no source file is re-read).

    ``names`` [N] str; ``x0`` [N, W, 3] float32, each chain centred and divided by ``COORD_SCALE``;
    ``mask`` [N, W] bool; ``positions`` [N, W] int32 (:func:`chain_positions`, 0 on padding).
    """

    names: np.ndarray
    x0: np.ndarray
    mask: np.ndarray
    positions: np.ndarray

    FIELDS = ("names", "x0", "mask", "positions")

    @classmethod
    def of(cls, chains: list[Chain], width: int) -> ChainSet:
        """``chains`` padded to ``width`` (:func:`pad_examples`)."""
        x0, mask, positions = pad_examples(chains, width)
        return cls(np.array([c.name for c in chains], dtype=str), x0, mask, positions)

    @property
    def lengths(self) -> np.ndarray:
        """[N] residues per chain."""
        return self.mask.sum(axis=1).astype(np.int64)

    def padded(self, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x0, mask, positions) of ``rows``, cut to ``width`` (>= their longest length)."""
        return self.x0[rows, :width], self.mask[rows, :width], self.positions[rows, :width]

    def by_bucket(self, buckets: tuple[int, ...]) -> dict[int, np.ndarray]:
        """``{bucket: row indices}`` in row order, for the buckets that hold a chain."""
        return rows_by_bucket(self.lengths, buckets)

    def traces(self) -> list[SimpleNamespace]:
        """Per chain ``.ca`` [L, 3] in Å (centred) and ``.breaks`` (where ``p_{i+1} - p_i > 1``):
        the backbones ``structure.geometry`` measures."""
        out = []
        for x0, length, pos in zip(self.x0, self.lengths, self.positions, strict=True):
            breaks = np.flatnonzero(np.diff(pos[:length]) > 1)
            out.append(SimpleNamespace(ca=x0[:length] * COORD_SCALE, breaks=breaks))
        return out

    def __len__(self) -> int:
        return len(self.names)
