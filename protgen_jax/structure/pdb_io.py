"""Writing backbones (C-alpha traces, N-CA-C(-O) backbones, sampling trajectories) as PDB files, via biotite.

Files are written atomically: to a temporary file in the destination folder, then `os.replace`d over the
target, so a reader never sees a half-written file and an interrupted run leaves the old file intact.
"""

from pathlib import Path

import biotite.structure as struc
import numpy as np
from biotite.sequence import ProteinSequence
from biotite.structure.io import pdb

from protgen_jax.atomic import atomic_write
from protgen_jax.errors import DataError

__all__ = ["write_backbone_pdb", "write_ca_pdb", "write_trajectory_pdb"]

_BACKBONE_NAMES = ("N", "CA", "C", "O")

# PDB's fixed-width coordinate field (%8.3f) holds -999.999 .. 9999.999.
_PDB_COORD_MIN = -999.999
_PDB_COORD_MAX = 9999.999
_LETTERS = "ACDEFGHIKLMNPQRSTVWYX"


def _residue_names(length: int, sequence: str | None, path: Path) -> np.ndarray:
    if sequence is None:
        return np.full(length, "GLY")
    if len(sequence) != length:
        raise DataError(f"{path}: sequence has {len(sequence)} letters for {length} residues")
    names = []
    for i, letter in enumerate(sequence.upper()):
        if letter not in _LETTERS:
            raise DataError(f"{path}: residue {i + 1} has letter {letter!r}, not one of {_LETTERS}")
        names.append(ProteinSequence.convert_letter_1to3(letter))
    return np.array(names)


def _ca_template(length: int, sequence: str | None, path: Path) -> struc.AtomArray:
    atoms = struc.AtomArray(length)
    atoms.chain_id[:] = "A"
    atoms.res_id[:] = np.arange(1, length + 1)
    atoms.res_name[:] = _residue_names(length, sequence, path)
    atoms.atom_name[:] = "CA"
    atoms.element[:] = "C"
    atoms.hetero[:] = False
    return atoms


def _check_coords(coords: np.ndarray, path: Path) -> None:
    if not np.isfinite(coords).all():
        raise DataError(f"{path}: coordinates contain NaN or inf")
    if coords.min() < _PDB_COORD_MIN or coords.max() > _PDB_COORD_MAX:
        raise DataError(
            f"{path}: coordinates span [{coords.min():.1f}, {coords.max():.1f}] Å, outside the PDB "
            f"field range [{_PDB_COORD_MIN}, {_PDB_COORD_MAX}]"
        )


def _write_atomic(path: Path, atoms: struc.AtomArray | struc.AtomArrayStack) -> None:
    pdb_file = pdb.PDBFile()
    pdb_file.set_structure(atoms)
    with atomic_write(path) as handle:
        pdb_file.write(handle)


def write_ca_pdb(path: str | Path, ca: np.ndarray, sequence: str | None = None) -> None:
    """Write one C-alpha-only chain (chain A, residues numbered 1..L) as a PDB file.

    Args:
      path: destination file; parent folders are created.
      ca: [L, 3] CA coordinates in Å.
      sequence: optional length-L one-letter sequence (20 amino acids or X -> UNK) naming the residues;
        default GLY.

    Raises:
      DataError: wrong shape, non-finite coordinates, coordinates outside the PDB field range, or a
        sequence of the wrong length / with unknown letters.
    """
    path = Path(path)
    ca = np.asarray(ca, dtype=np.float32)
    if ca.ndim != 2 or ca.shape[-1] != 3:
        raise DataError(f"{path}: expected [L, 3] coordinates, got shape {ca.shape}")
    _check_coords(ca, path)
    atoms = _ca_template(ca.shape[0], sequence, path)
    atoms.coord = ca
    _write_atomic(path, atoms)


def write_backbone_pdb(path: str | Path, atoms: np.ndarray, sequence: str | None = None) -> None:
    """Write one full backbone (chain A, residues 1..L, atoms N, CA, C and O when given) as a PDB file.

    Args:
      path: destination file; parent folders are created.
      atoms: [L, 3, 3] N, CA, C or [L, 4, 3] N, CA, C, O coordinates in Å
        (`structure.atoms.with_oxygen` adds the O).
      sequence: optional length-L one-letter sequence naming the residues; default GLY.

    Raises:
      DataError: as `write_ca_pdb`.
    """
    path = Path(path)
    atoms = np.asarray(atoms, dtype=np.float32)
    if atoms.ndim != 3 or atoms.shape[1] not in (3, 4) or atoms.shape[2] != 3:
        raise DataError(
            f"{path}: expected [L, 3 or 4, 3] N-CA-C(-O) coordinates, got {atoms.shape}"
        )
    _check_coords(atoms, path)
    length, per_residue = atoms.shape[:2]
    array = struc.AtomArray(length * per_residue)
    array.chain_id[:] = "A"
    array.res_id[:] = np.repeat(np.arange(1, length + 1), per_residue)
    array.res_name[:] = np.repeat(_residue_names(length, sequence, path), per_residue)
    array.atom_name[:] = np.tile(_BACKBONE_NAMES[:per_residue], length)
    array.element[:] = np.tile([name[0] for name in _BACKBONE_NAMES[:per_residue]], length)
    array.hetero[:] = False
    array.coord = atoms.reshape(-1, 3)
    _write_atomic(path, array)


def write_trajectory_pdb(path: str | Path, frames: np.ndarray, sequence: str | None = None) -> None:
    """Write a sequence of C-alpha backbones (e.g. a reverse-diffusion trajectory) as a multi-model PDB.

    Model f + 1 holds frames[f]; viewers such as PyMOL or ChimeraX play the models as a movie.

    Args:
      path: destination file; parent folders are created.
      frames: [F, L, 3] CA coordinates in Å.
      sequence: optional length-L one-letter sequence for the residue names; default GLY.

    Raises:
      DataError: as `write_ca_pdb`.
    """
    path = Path(path)
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise DataError(f"{path}: expected [F, L, 3] frames with F >= 1, got shape {frames.shape}")
    _check_coords(frames, path)
    stack = struc.stack([_ca_template(frames.shape[1], sequence, path)] * frames.shape[0])
    stack.coord = frames
    _write_atomic(path, stack)
