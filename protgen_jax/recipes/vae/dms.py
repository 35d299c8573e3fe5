"""Deep mutational scans on a VAE run's alignment: the mutated sequences a score is computed on.

Mutation effect (DeepSequence): ``score(mutant) = E[ELBO(mutant)] - E[ELBO(wild type)]``; row 0 of
:attr:`DMSSet.sequences` is the wild type, so ``delta(values) = values[1:] - values[0]``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protgen_jax.data import Alignment, map_mutants, mutant_tokens, read_dms
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
            f"(not scored): {_listed(self.skip_reasons)}"
        )


def _listed(reasons: dict[str, int], shown: int = 3) -> str:
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
            + (f" ({_listed(reasons)})" if reasons else "")
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
