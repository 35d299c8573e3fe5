"""What ``protgen design`` reads: backbones from structure files, and the options that constrain designs.

- :func:`load_backbones`: a structure file or a folder of them (natural chains or the ``sample_*.pdb`` of
  a backbone run), checked against the run's atom set; :func:`as_design_set` pads them.
- :func:`parse_fixed` (``--fixed 1-10,25``: 1-based residues in file order), :func:`letter_values`
  (``--bias A=0.5,W=-1``), :func:`read_position_bias` (``--position-bias`` JSON
  ``{"12": {"W": -2.0, "C": "omit"}}``) and :func:`bias_array`, which adds them up, with ``--omit``, into
  the [N, W, 20] logit bias of :func:`~protgen_jax.recipes.design.sampling.design_sequences`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from protgen_jax import alphabet
from protgen_jax.data.structures import STRUCTURE_SUFFIXES, Chain, load_chain, load_folder
from protgen_jax.errors import DataError
from protgen_jax.recipes.design.recipe import DesignSet
from protgen_jax.recipes.design.sampling import omit_bias

MAX_DESIGN_LENGTH = 2000


def structure_files(given: str) -> list[Path]:
    path = Path(given)
    if path.is_file():
        return [path]
    if path.is_dir():
        return [p for p in sorted(path.iterdir()) if p.suffix.lower() in STRUCTURE_SUFFIXES]
    raise DataError(f"--pdb {given}: no such file or folder")


def load_backbones(
    given: str, chain: str | None, atom_set: str, progress: bool
) -> tuple[list[Chain], list[tuple[str, str]]]:
    """The chains of a structure file or folder, checked against the run's atom set.

    A ``full`` run needs N, CA and C at every residue: a C-alpha-only file (e.g. a C-alpha DDPM sample)
    is skipped with a reason naming a ``ca`` run as the way to design it. A folder's unreadable files
    are skipped too; DataError when nothing is left.
    """
    path = Path(given)
    if path.is_dir():
        chains, skipped = load_folder(path, chain, 1, MAX_DESIGN_LENGTH, progress=progress)
    elif path.is_file():
        chains, skipped = [load_chain(path, chain, 1, MAX_DESIGN_LENGTH)], []
    else:
        raise DataError(f"--pdb {given}: no such file or folder")
    usable = []
    for item in chains:
        complete = np.isfinite(item.backbone).all(axis=(1, 2))
        if atom_set == "full" and not complete.any():
            skipped.append((item.name, f"{item.name}: C-alpha atoms only; this run reads N, CA and C "
                            "(train a C-alpha run: protgen train design --set atom_set=ca)"))  # fmt: skip
        else:
            usable.append(item)
    if not usable:
        reasons = "; ".join(reason for _, reason in skipped[:3])
        raise DataError(f"--pdb {given}: no backbone to design ({reasons or 'no structure files'})")
    return usable, skipped


def as_design_set(chains: list[Chain], atom_set: str, width: int) -> DesignSet:
    if atom_set == "ca":  # every residue with a CA counts; N and C are not read
        chains = [
            Chain(c.name, c.ca, c.sequence, c.residue_ids, c.chain_id, c.breaks, c.n_missing_ca,
                  np.repeat(c.ca[:, None], 3, axis=1))
            for c in chains
        ]  # fmt: skip
    return DesignSet.of(chains, width)


def parse_fixed(spec: str, length: int, name: str) -> np.ndarray:
    """``"1-10,25"`` -> [length] bool (1-based residues in file order)."""
    fixed = np.zeros(length, bool)
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            low, _, high = part.partition("-")
            start, end = int(low), int(high or low)
        except ValueError:
            raise DataError(
                f"--fixed {spec!r}: {part!r} is not a residue or a range like 1-10"
            ) from None
        if not 1 <= start <= end <= length:
            raise DataError(f"--fixed {spec!r}: {part} lies outside residues 1-{length} of {name}")
        fixed[start - 1 : end] = True
    return fixed


def letter_values(spec: str, flag: str) -> dict[str, float]:
    out = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        letter, sep, value = part.partition("=")
        letter = letter.strip().upper()
        if not sep or letter not in alphabet.AMINO_ACIDS:
            raise DataError(f"{flag} {spec!r}: {part!r} is not AMINO_ACID=VALUE (e.g. A=0.5)")
        try:
            out[letter] = float(value)
        except ValueError:
            raise DataError(f"{flag} {spec!r}: {value!r} is not a number") from None
    return out


def read_position_bias(path: str, length: int, name: str) -> list[tuple[int, int, float]]:
    """The ``--position-bias`` JSON as (residue index, amino-acid index, bias) entries ("omit" -> -1e9),
    checked against a backbone of ``length`` residues named ``name``."""
    try:
        given = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"--position-bias {path}: unreadable JSON ({err})") from err
    if not isinstance(given, dict):
        raise DataError(f"--position-bias {path}: expected an object {{residue: {{AA: bias}}}}")
    entries = []
    for residue, row in given.items():
        where = f"--position-bias {path}: residue {residue}"
        if not str(residue).isdigit() or not 1 <= int(residue) <= length:
            raise DataError(f"{where} is not in 1-{length} of {name}")
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected {{AA: bias}}")
        for letter, value in row.items():
            if letter not in alphabet.AMINO_ACIDS:
                raise DataError(f"{where}: {letter!r} is not an amino acid")
            if value == "omit":
                value = -1e9
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DataError(f'{where}: {letter}: {value!r} is not a number or "omit"')
            entries.append((int(residue) - 1, alphabet.AMINO_ACIDS.index(letter), float(value)))
    return entries


def bias_array(opts: SimpleNamespace, designs: DesignSet) -> np.ndarray:
    n, width = designs.mask.shape
    bias = np.zeros((n, width, alphabet.K_AA), np.float32)
    if opts.omit:  # letters checked by Design.check_command
        bias += np.asarray(omit_bias(opts.omit.upper(), ()))
    for letter, value in letter_values(opts.bias or "", "--bias").items():
        bias[..., alphabet.AMINO_ACIDS.index(letter)] += value
    if opts.position_bias:
        for i, length in enumerate(designs.lengths):
            bias[i, :length] += read_position_bias(
                opts.position_bias, int(length), designs.names[i]
            )
    return bias


def check_design_options(opts: SimpleNamespace) -> None:
    """``--pdb`` names structure files and ``--fixed`` / ``--omit`` / ``--bias`` / ``--position-bias``
    parse (DataError otherwise); residue ranges are checked per backbone once it is read."""
    if not structure_files(opts.pdb):
        raise DataError(f"--pdb {opts.pdb}: no structure files ({', '.join(STRUCTURE_SUFFIXES)})")
    if opts.fixed:
        parse_fixed(opts.fixed, 10**9, "the backbone")
    letter_values(opts.bias or "", "--bias")
    unknown = sorted(set((opts.omit or "").upper()) - set(alphabet.AMINO_ACIDS))
    if unknown:
        raise DataError(f"--omit {opts.omit!r}: {''.join(unknown)} not amino-acid letters")
    if len(set((opts.omit or "").upper())) >= alphabet.K_AA:
        raise DataError(f"--omit {opts.omit!r} forbids every amino acid")
    if opts.position_bias:
        read_position_bias(opts.position_bias, 10**6, "the backbone")
