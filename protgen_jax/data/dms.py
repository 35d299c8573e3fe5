"""Deep mutational scanning (DMS) tables and their mapping onto alignment columns.

A DMS CSV has one row per variant: a mutant column holding `H24A` or `H24A:G50D` (wild-type letter,
residue number in the focus's numbering, i.e. UniProt position, mutant letter; several substitutions joined
by ":") and one or more numeric score columns. `map_mutants` places each substitution on a match column of
an `Alignment` through `Alignment.column_positions`, checks the wild-type letter against the focus, and
reports which variants cannot be scored (a substitution outside the match columns, or a mutant letter that
is not one of the 20 amino acids).
"""

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import NamedTuple

import chex
import numpy as np

from protgen_jax.alphabet import AMINO_ACIDS
from protgen_jax.data.alignment import Alignment
from protgen_jax.data.text import read_text_file
from protgen_jax.errors import DataError

__all__ = ["MutantMap", "map_mutants", "mutant_tokens", "parse_mutant", "read_dms", "read_table"]

_SUBSTITUTION = re.compile(r"^([A-Z])(\d+)([A-Z*])$")
_MAX_LISTED = 10


def read_dms(
    path: str | os.PathLike,
    column: str,
    *,
    mutant_column: str = "mutant",
    skip_missing: bool = False,
    keep_missing: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Read the mutant strings and one score column of a DMS CSV file.

    Args:
      path: CSV file with a header row.
      column: name of the score column (for BLAT_ECOLX_Stiffler2015: "2500").
      mutant_column: name of the column holding the mutant strings.
      skip_missing: drop rows whose score is empty or NaN instead of raising.
      keep_missing: return rows whose score is empty or NaN with a NaN score (so a caller can count
        them) instead of raising.

    Returns:
      (mutants, scores): M mutant strings and np.float64 [M] scores, in file order.

    Raises:
      DataError: missing / empty / binary or compressed file, a missing or repeated column (listing the
        available ones), an empty mutant cell, or a score that is not a finite number (naming the line
        and the column).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text = read_text_file(path, "CSV")
    mutants: list[str] = []
    scores: list[float] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file (no header row)")
        header = [name.strip() for name in header]
        for wanted in (mutant_column, column):
            if wanted not in header:
                raise DataError(
                    f"{path}: no column {wanted!r}; available columns: {', '.join(header)}"
                )
            if header.count(wanted) > 1:
                raise DataError(f"{path}: line 1: column {wanted!r} appears more than once")
        mutant_at, score_at = header.index(mutant_column), header.index(column)
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}: line {line} has {len(row)} fields but the header has {len(header)}"
                )
            mutant, cell = row[mutant_at].strip(), row[score_at].strip()
            if not mutant:
                raise DataError(f"{path}: line {line}: empty {mutant_column!r} cell")
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                if (skip_missing or keep_missing) and (value is not None or cell == ""):
                    if keep_missing:
                        mutants.append(mutant)
                        scores.append(math.nan)
                    continue
                raise DataError(
                    f"{path}: line {line} ({mutant}): {column!r} value {cell!r} is not a finite "
                    "number"
                )
            mutants.append(mutant)
            scores.append(value)
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from err
    if not mutants:
        raise DataError(f"{path}: no data rows")
    return mutants, np.asarray(scores, dtype=np.float64)


def read_table(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """The header (names stripped) and every non-blank row of a CSV file, as text cells.

    Raises:
      DataError: missing / empty / binary or compressed file, a repeated column name, or a row whose
        field count differs from the header's (naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    reader = csv.reader(io.StringIO(read_text_file(path, "CSV"), newline=""))
    try:
        header = [name.strip() for name in next(reader, None) or []]
        if not header:
            raise DataError(f"{path}: empty file (no header row)")
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise DataError(f"{path}: line 1: column {repeated[0]!r} appears more than once")
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}: line {reader.line_num} has {len(row)} fields but the header has "
                    f"{len(header)}"
                )
            rows.append(row)
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from err
    return header, rows


def parse_mutant(mutant: str) -> list[tuple[str, int, str]]:
    """Parse "H24A:G50D" into [("H", 24, "A"), ("G", 50, "D")].

    Each substitution is wild-type letter, residue number, mutant letter ("*" allowed for a stop, which
    `map_mutants` then skips). Substitutions are joined by ":".

    Raises:
      DataError: a malformed substitution, or one position given twice.
    """
    out = []
    for part in mutant.strip().split(":"):
        found = _SUBSTITUTION.match(part.strip())
        if found is None:
            raise DataError(
                f"mutant {mutant!r}: {part!r} is not a substitution like 'H24A' "
                "(wild-type letter, position, mutant letter; several joined by ':')"
            )
        out.append((found[1], int(found[2]), found[3]))
    positions = [position for _, position, _ in out]
    if len(set(positions)) != len(positions):
        raise DataError(f"mutant {mutant!r}: a position is substituted twice")
    return out


class MutantMap(NamedTuple):
    """Mutants placed on alignment columns; M mutants, S = most substitutions in one mutant.

    Attributes:
      column_idx: np.int32 [M, S] match column of each substitution.
      mt_token: np.int32 [M, S] mutant token of each substitution.
      kept: np.bool_ [M], True where every substitution lies on a match column with a standard mutant
        letter.
      skip_reasons: M strings, "" for kept mutants, else why the mutant is skipped.

    Padding (mutants with fewer than S substitutions) and skipped rows hold no-op substitutions: padding
    repeats the mutant's first substitution, and a skipped row sets column 0 to the focus's own token, so
    `mutant_tokens` can apply every row without a mask.
    """

    column_idx: np.ndarray
    mt_token: np.ndarray
    kept: np.ndarray
    skip_reasons: list[str]


def map_mutants(mutants: list[str], aln: Alignment) -> MutantMap:
    """Map mutant strings onto the match columns of an alignment.

    Position p lands on column l where `aln.column_positions[l] == p`. A mutant is skipped (not an error)
    when one of its positions is not a match column (an insertion of the focus, a filtered column, or
    outside the aligned range) or its mutant letter is not one of the 20 amino acids. The wild-type letter
    of every substitution that lands on a column must equal the focus's letter there.

    Args:
      mutants: M mutant strings such as "H24A" or "H24A:G50D".
      aln: the alignment whose focus the positions refer to.

    Returns:
      A `MutantMap` with column_idx / mt_token np.int32 [M, S], kept np.bool_ [M] and M skip reasons.

    Raises:
      DataError: a malformed mutant string, or wild-type letters that disagree with the focus (listing
        up to 10 offenders and the total).
    """
    column_of = {int(p): l for l, p in enumerate(aln.column_positions.tolist()) if p >= 0}
    parsed = [parse_mutant(mutant) for mutant in mutants]
    width = max((len(subs) for subs in parsed), default=1)
    count = len(mutants)
    column_idx = np.zeros((count, width), np.int32)
    mt_token = np.full((count, width), aln.focus_tokens[0], np.int32)
    kept = np.zeros(count, bool)
    reasons: list[str] = []
    mismatches: list[str] = []
    for m, (mutant, subs) in enumerate(zip(mutants, parsed, strict=True)):
        reason = ""
        row = []
        for wt, position, mt in subs:
            column = column_of.get(position)
            if column is None:
                reason = reason or f"position {position} is not a match column"
                continue
            if aln.focus_sequence[column] != wt:
                mismatches.append(
                    f"{mutant} (focus has {aln.focus_sequence[column]!r} at {position})"
                )
            if mt not in AMINO_ACIDS:
                reason = reason or f"mutant letter {mt!r} is not one of the 20 amino acids"
                continue
            row.append((column, AMINO_ACIDS.index(mt)))
        reasons.append(reason)
        if not reason:
            kept[m] = True
            padded = row + [row[0]] * (width - len(row))
            column_idx[m] = [column for column, _ in padded]
            mt_token[m] = [token for _, token in padded]
    if mismatches:
        listed = "; ".join(mismatches[:_MAX_LISTED])
        raise DataError(
            f"{len(mismatches)} mutants name a wild-type letter that differs from the focus "
            f"{aln.focus_name!r} ({aln.path}): {listed}"
            + (" ..." if len(mismatches) > _MAX_LISTED else "")
        )
    return MutantMap(column_idx, mt_token, kept, reasons)


def mutant_tokens(aln: Alignment, mapping: MutantMap) -> np.ndarray:
    """Focus sequences carrying each mutant: x[m] = focus with x[m, column_idx[m, s]] = mt_token[m, s].

    Args:
      aln: the alignment (focus tokens [L]).
      mapping: `map_mutants` output for M mutants.

    Returns:
      np.int32 [M, L]; rows of skipped mutants equal the focus.
    """
    count, width = mapping.column_idx.shape
    chex.assert_shape(mapping.mt_token, (count, width))
    out = np.tile(aln.focus_tokens, (count, 1))
    rows = np.repeat(np.arange(count), width)
    out[rows, mapping.column_idx.reshape(-1)] = mapping.mt_token.reshape(-1)
    return out
