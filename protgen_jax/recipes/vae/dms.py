"""Deep mutational scans on a VAE run's alignment: the mutated sequences a score is computed on.

Mutation effect (DeepSequence): ``score(mutant) = E[ELBO(mutant)] - E[ELBO(wild type)]``; row 0 of
:attr:`DMSSet.sequences` (and of :attr:`Placed.sequences`) is the wild type, so
``delta(values) = values[1:] - values[0]``.

``score`` (:func:`prepare_dms`) keeps the labelled mutants of a DMS file; ``predict``
(:func:`place_mutants`) keeps every row of its input and says why a row is not scored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protgen_jax.alphabet import AMINO_ACIDS
from protgen_jax.data import Alignment, map_mutants, mutant_tokens, parse_mutant, read_dms
from protgen_jax.data.dms import read_table
from protgen_jax.errors import DataError


@dataclass(frozen=True)
class DMSSet:
    """The usable mutants of a DMS file on an alignment: row 0 of ``sequences`` is the wild type."""

    mutants: list[str]
    fitness: np.ndarray  # [n_used]
    sequences: np.ndarray  # [n_used + 1, L]
    skip_reasons: dict[str, int]
    n_total: int

    def delta(self, values: np.ndarray) -> np.ndarray:
        """Per-mutant difference to the wild type of per-sequence ``values [n_used + 1]``."""
        return np.asarray(values[1:]) - values[0]

    @property
    def n_skipped(self) -> int:
        """Mutants of the file that are not scored."""
        return self.n_total - len(self.mutants)

    def skipped_warning(self, path: Path | str) -> str | None:
        """One line saying how many mutants of ``path`` are skipped and the commonest reasons (None
        when every mutant is used)."""
        if not self.n_skipped:
            return None
        return (
            f"warning: {path}: {self.n_skipped} of {self.n_total} mutants skipped "
            f"(not scored): {listed_reasons(self.skip_reasons)}"
        )


def listed_reasons(reasons: dict[str, int], shown: int = 3) -> str:
    """``reason (count), ...`` for the ``shown`` commonest reasons, then how many more there are."""
    ordered = sorted(reasons.items(), key=lambda item: -item[1])
    text = ", ".join(f"{reason} ({count})" for reason, count in ordered[:shown])
    more = len(ordered) - shown
    return text + (f" and {more} more reason{'s' if more > 1 else ''}" if more > 0 else "")


def prepare_dms(aln: Alignment, path: Path, column: str, mutant_column: str = "mutant") -> DMSSet:
    """Read a DMS CSV, map mutants onto ``aln``'s match columns and build the mutated sequences.

    Mutants with a missing fitness value or outside the match columns are skipped and counted by reason;
    a wild-type letter that disagrees with the focus sequence raises :class:`DataError`.
    """
    mutants, fitness = read_dms(path, column, mutant_column=mutant_column, keep_missing=True)
    mapping = map_mutants(mutants, aln)
    keep = mapping.kept & np.isfinite(fitness)
    reasons = Counter(
        r.split(":")[0] for r, k in zip(mapping.skip_reasons, mapping.kept, strict=True) if not k
    )
    n_nan = int((mapping.kept & ~np.isfinite(fitness)).sum())
    if n_nan:
        reasons["missing fitness value"] += n_nan
    if not keep.any() and not mapping.kept.any():
        raise DataError(
            f"{path}: no mutant of column {column!r} falls on the alignment's match columns"
            + (f" ({listed_reasons(reasons)})" if reasons else "")
        )
    if not keep.any():
        raise DataError(f"{path}: column {column!r} has no fitness value on a mappable mutant")
    seqs = mutant_tokens(aln, mapping)[keep]
    return DMSSet(
        mutants=[m for m, k in zip(mutants, keep, strict=True) if k],
        fitness=np.asarray(fitness, np.float64)[keep],
        sequences=np.concatenate([aln.focus_tokens[None], seqs]).astype(np.int32),
        skip_reasons=dict(reasons),
        n_total=len(mutants),
    )


def all_singles(aln: Alignment) -> list[str]:
    """Every single substitution of the focus at every match column holding a residue: 19 per column,
    ``A24C`` in the alignment's residue numbering, position-major, mutant letters in token order."""
    return [
        f"{wt}{position}{mt}"
        for wt, position in zip(aln.focus_sequence, aln.column_positions.tolist(), strict=True)
        if position >= 0 and wt in AMINO_ACIDS
        for mt in AMINO_ACIDS
        if mt != wt
    ]


@dataclass(frozen=True)
class Placed:
    """``R`` mutants placed on an alignment, every row kept.

    ``substitutions[r]``: row ``r``'s ``(column, mutant token)`` pairs (empty when skipped);
    ``reasons[r]``: ``""`` for a scored row, else ``"kind: detail"``; ``sequences [n_scored + 1, L]``:
    the wild type, then the scored rows in input order.
    """

    substitutions: list[list[tuple[int, int]]]
    reasons: list[str]
    sequences: np.ndarray

    @property
    def scored(self) -> np.ndarray:
        """``[R]`` bool: the rows that have a sequence (row ``i + 1`` of ``sequences``)."""
        return np.array([not r for r in self.reasons], bool)

    def skip_counts(self) -> dict[str, int]:
        """How many rows are skipped, by kind of reason."""
        return dict(Counter(r.split(":")[0] for r in self.reasons if r))


def _place(
    mutant: str, column_of: dict[int, int], focus: str, offset: int
) -> tuple[list[tuple[int, int]], str]:
    """One mutant's ``(column, token)`` pairs and ``""``, or ``[]`` and the reason it is skipped."""
    if not mutant.strip():
        return [], "empty mutant"
    try:
        parsed = parse_mutant(mutant)
    except DataError as err:
        return [], f"malformed: {err}"
    placed = []
    for wt, position, mt in parsed:
        where = f"residue {position}" + (f" + offset {offset}" if offset else "")
        column = column_of.get(position + offset)
        if column is None:
            return [], f"not a match column: {where}"
        if focus[column] != wt:
            return [], f"wild-type mismatch: the focus has {focus[column]}, not {wt}, at {where}"
        if mt not in AMINO_ACIDS:
            return [], f"not an amino acid: {mt!r} at {where}"
        placed.append((column, AMINO_ACIDS.index(mt)))
    return placed, ""


def place_mutants(aln: Alignment, mutants: list[str], offset: int = 0) -> Placed:
    """Place each mutant (``A24C`` or ``A24C:G50D``, residue ``p`` landing on the match column numbered
    ``p + offset``) on ``aln``; a row is skipped, with its reason, when it is empty or malformed, a
    residue is off the match columns, a wild-type letter differs from the focus, or a mutant letter is
    not one of the 20 amino acids."""
    column_of = {int(p): l for l, p in enumerate(aln.column_positions.tolist()) if p >= 0}
    placed = [_place(m, column_of, aln.focus_sequence, offset) for m in mutants]
    substitutions = [subs for subs, _ in placed]
    sequences = np.tile(aln.focus_tokens, (1 + sum(1 for _, r in placed if not r), 1))
    row = 1
    for subs, reason in placed:
        if not reason:
            for column, token in subs:
                sequences[row, column] = token
            row += 1
    return Placed(substitutions, [r for _, r in placed], sequences.astype(np.int32))


def best_offset(aln: Alignment, mutants: list[str], given: int = 0) -> tuple[int, int, int, int]:
    """The offset ``k`` that puts the most wild-type letters of ``mutants`` on the focus.

    For every ``k`` that can put a residue on a match column, ``hits(k)`` counts the substitutions
    ``W p M`` (of the well-formed mutants) whose column numbered ``p + k`` holds ``W``. Returns
    ``(k*, hits(k*), hits(given), substitutions)``; ties go to the ``k`` nearest ``given``.
    """
    pairs: Counter[tuple[int, str]] = Counter()
    for mutant in mutants:
        try:
            pairs.update((p, wt) for wt, p, _ in parse_mutant(mutant))
        except DataError:
            continue
    kept = aln.column_positions >= 0
    residues = aln.column_positions[kept]
    if not pairs or not len(residues):
        return given, 0, 0, 0
    lo, hi = int(residues.min()), int(residues.max())
    letter = np.full(hi - lo + 1, "", "U1")  # focus letter by residue number - lo
    letter[residues - lo] = np.array(list(aln.focus_sequence))[kept]
    positions = np.array([p for p, _ in pairs])
    letters = np.array([wt for _, wt in pairs])
    counts = np.array(list(pairs.values()))
    offsets = np.arange(lo - positions.max(), hi - positions.min() + 1)
    index = positions[None] + offsets[:, None] - lo  # [K, P]
    inside = (index >= 0) & (index <= hi - lo)
    hits = (inside & (letter[np.clip(index, 0, hi - lo)] == letters[None])) @ counts  # [K]
    best = offsets[hits == hits.max()]
    best = int(best[np.argmin(np.abs(best - given))])
    at_given = int(hits[offsets == given].sum())
    return best, int(hits.max()), at_given, int(counts.sum())


def read_mutant_table(
    path: Path, mutant_column: str = "mutant", label_column: str | None = None
) -> tuple[list[str], list[list[str]], list[str], np.ndarray | None, str | None]:
    """A ``predict`` input: ``(header, rows, mutants [R], labels [R] | None, label column | None)``.

    Labels come from ``label_column`` (an error when absent), else from ``DMS_score`` when the file
    has it; a cell that is not a finite number is a missing label (NaN).
    """
    header, rows = read_table(path)
    for name in (mutant_column, label_column):
        if name is not None and name not in header:
            raise DataError(f"{path}: no column {name!r}; available columns: {', '.join(header)}")
    label = label_column or ("DMS_score" if "DMS_score" in header else None)
    mutants = [row[header.index(mutant_column)].strip() for row in rows]
    if label is None:
        return header, rows, mutants, None, None
    labels = np.array([_number(row[header.index(label)]) for row in rows], np.float64)
    return header, rows, mutants, labels, label


def _number(cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def single_effects(
    aln: Alignment, placed: Placed, scores: np.ndarray
) -> tuple[np.ndarray, str, np.ndarray] | None:
    """The scored single substitutions on a grid: residue numbers ``[P]`` of the match columns that
    hold a residue, the focus letters there, and ``[P, 20]`` scores (``scores [n_scored]`` in row
    order; NaN where no single is scored, 0 at the wild type). None when no single is scored."""
    columns = np.flatnonzero(
        (aln.column_positions >= 0) & np.isin(list(aln.focus_sequence), list(AMINO_ACIDS))
    )
    row_of = {int(c): i for i, c in enumerate(columns)}
    grid = np.full((len(columns), len(AMINO_ACIDS)), np.nan)
    found = False
    scored = [subs for subs, reason in zip(placed.substitutions, placed.reasons, strict=True)
              if not reason]  # fmt: skip
    for subs, score in zip(scored, scores, strict=True):
        if len(subs) == 1 and subs[0][0] in row_of:
            grid[row_of[subs[0][0]], subs[0][1]] = score
            found = True
    if not found:
        return None
    wild = "".join(aln.focus_sequence[c] for c in columns)
    grid[np.arange(len(columns)), [AMINO_ACIDS.index(a) for a in wild]] = 0.0
    return aln.column_positions[columns], wild, grid
