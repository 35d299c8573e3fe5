"""Sequence properties anyone can recompute, and property tables read from a CSV keyed by sequence id.

Built-in properties (of the residues a sequence has; tokens 0..19 of ``protgen_jax.alphabet``, any other
token, such as the fixed-width END, is not a residue and counts for nothing):

- ``net_charge = #K + #R - #D - #E``: the formal charge at pH 7 with histidine counted as neutral (H is
  not in either set) and the termini left out;
- ``hydrophobic_fraction = #{A, I, L, M, F, V, W} / L``: the fraction of residues in the hydrophobic
  set AILMFVW (0 for an empty sequence).

Both are linear in per-letter weights (:data:`LETTER_WEIGHTS`), so :func:`builtin_properties` computes
them on NumPy or JAX token arrays ``[..., W]`` alike (used on the device for random training windows).

Property CSV (:func:`read_property_csv`): a header row with an ``id`` column (the FASTA header's first
word) and one or more numeric columns; every other value must parse as a finite float.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from protgen_jax.alphabet import AMINO_ACIDS
from protgen_jax.errors import DataError

__all__ = [
    "BUILTIN",
    "HYDROPHOBIC",
    "LETTER_WEIGHTS",
    "builtin_properties",
    "parse_builtin",
    "read_property_csv",
]

BUILTIN = ("net_charge", "hydrophobic_fraction")
"""Names of the built-in properties, as written after ``builtin:`` in a config."""

HYDROPHOBIC = "AILMFVW"
"""The hydrophobic set of ``hydrophobic_fraction``."""


def _weights(letters: dict[str, float]) -> np.ndarray:
    """Per-token weights ``[32]`` (tokens >= 20 weigh 0)."""
    out = np.zeros(32, np.float32)
    for letter, value in letters.items():
        out[AMINO_ACIDS.index(letter)] = value
    return out


LETTER_WEIGHTS = {
    "net_charge": _weights({"K": 1.0, "R": 1.0, "D": -1.0, "E": -1.0}),
    "hydrophobic_fraction": _weights({c: 1.0 for c in HYDROPHOBIC}),
}
"""Per-token weights of each built-in property (the numerator for ``hydrophobic_fraction``)."""

_RESIDUE = _weights({c: 1.0 for c in AMINO_ACIDS})


def parse_builtin(spec: str) -> tuple[str, ...]:
    """``"builtin:net_charge,hydrophobic_fraction"`` -> the names; DataError for an unknown one."""
    names = tuple(n.strip() for n in spec.split(":", 1)[1].split(",") if n.strip())
    if not names:
        raise DataError(f"properties {spec!r}: name at least one of {', '.join(BUILTIN)}")
    for name in names:
        if name not in BUILTIN:
            raise DataError(
                f"properties {spec!r}: unknown built-in {name!r}; choose from {', '.join(BUILTIN)}"
            )
    if len(set(names)) != len(names):
        raise DataError(f"properties {spec!r}: a property is named twice")
    return names


def builtin_properties(tokens: Any, names: tuple[str, ...]) -> Any:
    """Tokens ``[..., W]`` (NumPy or JAX ints) -> ``[..., P]`` float32 properties ``names``.

    ``net_charge = sum_l w_charge[x_l]``; ``hydrophobic_fraction = sum_l h[x_l] / max(1, #residues)``.
    """
    xp = np if isinstance(tokens, np.ndarray | list) else _jnp()
    tokens = xp.asarray(tokens)
    residues = xp.asarray(_RESIDUE)[tokens].sum(-1)
    columns = []
    for name in names:
        value = xp.asarray(LETTER_WEIGHTS[name])[tokens].sum(-1)
        if name == "hydrophobic_fraction":
            value = value / xp.maximum(residues, 1.0)
        columns.append(value)
    return xp.stack(columns, -1).astype(xp.float32)


def _jnp():
    import jax.numpy as jnp

    return jnp


def read_property_csv(path: str | Path, ids: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """The property columns of ``path`` for the records ``ids`` -> ``(names, values [N, P] float32)``.

    Raises:
      DataError: naming the file (and the row and column where it applies): missing file, no ``id``
        column, no property column, a non-numeric or non-finite value, an id given twice, or a record of
        ``ids`` without a row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: property CSV not found")
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable property CSV ({err})") from err
    if not rows or "id" not in [c.strip() for c in rows[0]]:
        raise DataError(f"{path}: row 1 (header) needs an 'id' column")
    header = [c.strip() for c in rows[0]]
    id_col = header.index("id")
    names = tuple(c for i, c in enumerate(header) if i != id_col)
    if not names or any(not n for n in names):
        raise DataError(f"{path}: row 1 (header) needs named property columns besides 'id'")
    table: dict[str, np.ndarray] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {number} has {len(row)} fields, the header has {len(header)}"
            )
        key = row[id_col].strip()
        if key in table:
            raise DataError(f"{path}: row {number}: id {key!r} appears twice")
        values = []
        for i, cell in enumerate(row):
            if i == id_col:
                continue
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise DataError(
                    f"{path}: row {number} (id {key!r}) column {header[i]!r}: "
                    f"non-numeric value {cell!r}"
                )
            values.append(value)
        table[key] = np.asarray(values, np.float32)
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(
            f"{path}: no row for record id {missing[0]!r} ({len(missing)} of {len(ids)} records "
            "missing); every training record needs its properties"
        )
    return names, np.stack([table[i] for i in ids]) if ids else np.zeros((0, len(names)))
