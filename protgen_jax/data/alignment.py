"""Multiple sequence alignments (A2M, A3M, aligned FASTA) as fixed-width token matrices.

Format rule (A2M / A3M, and aligned FASTA as the special case with no lower case): within each record,
upper-case letters and "-" are *match columns*; lower-case letters and "." are *insertions* relative to
the focus (query) sequence and are dropped. Every record must then have the same number of match columns
L. Match letters are encoded with `protgen_jax.alphabet` (non-standard letters X B Z J U O count as
gap). Stockholm files are not read (biotite, our parser dependency, has no Stockholm reader); the reader
says so and suggests `esl-reformat a2m`.

Residue numbering: a focus id of the form `NAME/start-end` (e.g. `BLAT_ECOLX/24-286`) says that the
focus's full sequence, every letter upper or lower case, is residues start..end. Match column l then has
residue number `column_positions[l]`; focus lower-case letters are residues that are not match columns
(for BLAT_ECOLX: H24-L28, E56, R238, K284-W286, leaving 253 match columns). Without a range the numbering
starts at 1.
"""

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import chex
import numpy as np

from protgen_jax.alphabet import ASCII_TO_TOKEN, GAP
from protgen_jax.data.fasta import FastaRecord, read_records
from protgen_jax.errors import DataError

__all__ = ["Alignment", "filter_alignment", "read_alignment"]

logger = logging.getLogger(__name__)

_RANGE = re.compile(r"^(?P<name>.+)/(?P<start>\d+)-(?P<end>\d+)$")


@dataclass(frozen=True, eq=False)
class Alignment:
    """A fixed-width alignment: N sequences over L match columns.

    Attributes:
      ids: N record ids (header first words).
      tokens: np.int32 [N, L], values in 0..20 (20 = gap / non-standard letter).
      focus_index: row of the focus (query / wild-type) sequence.
      focus_name: focus id without its `/start-end` suffix.
      focus_start: residue number of the focus's first letter (1 when the id has no range).
      column_positions: np.int32 [L], residue number of the focus at each match column; -1 where the
        focus has a gap in that column.
      focus_sequence: the focus's match-column characters (upper case or "-"), length L.
      path: the file it was read from, or None.
    """

    ids: list[str]
    tokens: np.ndarray
    focus_index: int
    focus_name: str
    focus_start: int
    column_positions: np.ndarray
    focus_sequence: str
    path: Path | None = None

    def __post_init__(self) -> None:
        n, length = len(self.ids), len(self.focus_sequence)
        chex.assert_shape(self.tokens, (n, length))
        chex.assert_shape(self.column_positions, (length,))
        chex.assert_type([self.tokens, self.column_positions], np.int32)
        if not 0 <= self.focus_index < n:
            raise ValueError(f"focus_index {self.focus_index} outside 0..{n - 1}")

    @property
    def num_sequences(self) -> int:
        """N, the number of rows."""
        return len(self.ids)

    @property
    def num_columns(self) -> int:
        """L, the number of match columns."""
        return len(self.focus_sequence)

    @property
    def focus_tokens(self) -> np.ndarray:
        """The focus row, np.int32 [L]."""
        return self.tokens[self.focus_index]

    def select(
        self, rows: np.ndarray | None = None, columns: np.ndarray | None = None
    ) -> "Alignment":
        """A sub-alignment keeping `rows` [N] and `columns` [L] (boolean masks); the focus row must stay."""
        rows = np.ones(self.num_sequences, bool) if rows is None else np.asarray(rows, bool)
        columns = np.ones(self.num_columns, bool) if columns is None else np.asarray(columns, bool)
        chex.assert_shape(rows, (self.num_sequences,))
        chex.assert_shape(columns, (self.num_columns,))
        if not rows[self.focus_index]:
            raise ValueError("select() would drop the focus sequence")
        kept = np.flatnonzero(rows)
        return Alignment(
            ids=[self.ids[i] for i in kept],
            tokens=np.ascontiguousarray(self.tokens[kept][:, columns]),
            focus_index=int(np.searchsorted(kept, self.focus_index)),
            focus_name=self.focus_name,
            focus_start=self.focus_start,
            column_positions=self.column_positions[columns],
            focus_sequence="".join(np.array(list(self.focus_sequence), dtype="U1")[columns]),
            path=self.path,
        )


def _find_focus(path: Path, records: list[FastaRecord], focus: str | None) -> int:
    if focus is None:
        return 0
    for index, record in enumerate(records):
        if record.id == focus:
            return index
    for index, record in enumerate(records):
        if record.id.startswith(focus):
            return index
    first = ", ".join(repr(r.id) for r in records[:3])
    raise DataError(f"{path}: focus sequence {focus!r} not found (ids start {first}, ...)")


def _record_at(offsets: np.ndarray, flat_index: int) -> tuple[int, int]:
    """(record index, offset within the record) of a position in the concatenated sequences."""
    record = int(np.searchsorted(offsets, flat_index, side="right")) - 1
    return record, flat_index - int(offsets[record])


def read_alignment(path: str | os.PathLike, focus: str | None = None) -> Alignment:
    """Read an A2M / A3M / aligned FASTA file into a token matrix.

    Match columns are the upper-case letters and "-" of each record; lower-case letters and "." are
    insertions and are dropped (see the module docstring). The focus is the first record, or with `focus`
    given the record whose id equals it, else the first whose id starts with it.

    Args:
      path: alignment file.
      focus: id (or id prefix) of the focus sequence.

    Returns:
      An `Alignment` with tokens np.int32 [N, L] and column_positions np.int32 [L].

    Raises:
      DataError (naming the file, and the record id / line where one is at fault): not a FASTA-like text
      file, no records, a record with no sequence, a character that is neither a letter nor "-" / "."
      (with its record, line and column), the focus not found, a focus with no match columns, a record
      whose match-column count differs from the focus's (first offender, both counts), or a focus
      `/start-end` range that disagrees with its number of letters.
    """
    path = Path(path)
    records = read_records(path)
    for record in records:
        if not record.sequence:
            raise DataError(f"{path}: record {record.id!r} (line {record.line}) has no sequence")
    joined = "".join(record.sequence for record in records)
    lengths = np.array([len(record.sequence) for record in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if not joined.isascii():
        flat = next(i for i, char in enumerate(joined) if not char.isascii())
        _raise_bad_char(path, records, offsets, flat, joined[flat])
    chars = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)

    upper = (chars >= ord("A")) & (chars <= ord("Z"))
    lower = (chars >= ord("a")) & (chars <= ord("z"))
    match = upper | (chars == ord("-"))
    insert = lower | (chars == ord("."))
    bad = np.flatnonzero(~(match | insert))
    if bad.size:
        _raise_bad_char(path, records, offsets, int(bad[0]), joined[bad[0]])

    match_counts = np.add.reduceat(match.astype(np.int64), offsets[:-1])
    focus_index = _find_focus(path, records, focus)
    focus_record = records[focus_index]
    length = int(match_counts[focus_index])
    if length == 0:
        raise DataError(
            f"{path}: empty alignment: the focus {focus_record.id!r} (line {focus_record.line}) has no "
            "match columns (all lower case / '.')"
        )
    wrong = np.flatnonzero(match_counts != length)
    if wrong.size:
        other = records[int(wrong[0])]
        raise DataError(
            f"{path}: record {other.id!r} (line {other.line}) has {int(match_counts[wrong[0]])} match "
            f"columns but the focus {focus_record.id!r} has {length}; rows of an alignment must agree "
            "(upper case and '-' are match columns, lower case and '.' insertions)"
        )
    tokens = ASCII_TO_TOKEN[chars[match]].reshape(len(records), length).astype(np.int32)

    focus_slice = slice(int(offsets[focus_index]), int(offsets[focus_index + 1]))
    name, start, end = _parse_range(focus_record.id)
    is_letter = (upper | lower)[focus_slice]
    if end is not None and int(is_letter.sum()) != end - start + 1:
        raise DataError(
            f"{path}: focus {focus_record.id!r} (line {focus_record.line}) has {int(is_letter.sum())} "
            f"residues but its range {start}-{end} spans {end - start + 1}"
        )
    residue_numbers = start + np.cumsum(is_letter) - 1
    focus_match = match[focus_slice]
    positions = np.where(upper[focus_slice], residue_numbers, -1)[focus_match].astype(np.int32)
    focus_sequence = chars[focus_slice][focus_match].tobytes().decode("ascii")
    return Alignment(
        ids=[record.id for record in records],
        tokens=tokens,
        focus_index=focus_index,
        focus_name=name,
        focus_start=start,
        column_positions=positions,
        focus_sequence=focus_sequence,
        path=path,
    )


def _parse_range(identifier: str) -> tuple[str, int, int | None]:
    """`NAME/start-end` -> (NAME, start, end); an id without a range -> (id, 1, None)."""
    found = _RANGE.match(identifier)
    if found is None:
        return identifier, 1, None
    return found["name"], int(found["start"]), int(found["end"])


def _raise_bad_char(
    path: Path, records: list[FastaRecord], offsets: np.ndarray, flat: int, char: str
) -> None:
    index, position = _record_at(offsets, flat)
    record = records[index]
    line, column = record.locate(position)
    raise DataError(
        f"{path}: record {record.id!r} line {line} column {column}: unexpected character {char!r} "
        "(expected letters, '-' or '.')"
    )


def filter_alignment(
    aln: Alignment,
    max_column_gap_fraction: float = 0.3,
    drop_focus_gap_columns: bool = True,
    max_sequence_gap_fraction: float = 0.5,
) -> Alignment:
    """Drop gappy sequences and columns, EVE / DeepSequence-style.

    Gaps are token 20 (non-standard letters included). In order:

    1. if `drop_focus_gap_columns`, drop columns where the focus has a gap;
    2. drop sequences whose gap fraction over the remaining columns exceeds `max_sequence_gap_fraction`
       (fragments); the focus is always kept;
    3. drop columns whose gap fraction over the kept sequences exceeds `max_column_gap_fraction`.

    Thresholds are inclusive (a fraction equal to the threshold is kept), as in EVE's `preprocess_msa`.
    `column_positions` and `focus_sequence` follow the kept columns. The counts dropped at each step are
    logged at INFO level on the `protgen_jax.data.alignment` logger.

    Args:
      aln: alignment with tokens [N, L].
      max_column_gap_fraction: largest gap fraction a kept column may have, in [0, 1].
      drop_focus_gap_columns: drop the columns where the focus sequence has a gap.
      max_sequence_gap_fraction: largest gap fraction a kept sequence may have, in [0, 1].

    Returns:
      The filtered `Alignment` with tokens [N', L'].

    Raises:
      DataError: a threshold outside [0, 1], or no column left.
    """
    for label, value in (
        ("max_column_gap_fraction", max_column_gap_fraction),
        ("max_sequence_gap_fraction", max_sequence_gap_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise DataError(f"filter_alignment: {label} must lie in [0, 1], got {value}")
    gaps = aln.tokens == GAP
    columns = np.ones(aln.num_columns, bool)
    if drop_focus_gap_columns:
        columns &= ~gaps[aln.focus_index]
    n_focus_gap = int(aln.num_columns - columns.sum())
    if not columns.any():
        raise DataError(f"{aln.path}: no column left after dropping the focus gap columns")

    rows = gaps[:, columns].mean(axis=1) <= max_sequence_gap_fraction
    rows[aln.focus_index] = True
    column_gaps = gaps[rows].mean(axis=0)
    gappy = columns & (column_gaps > max_column_gap_fraction)
    columns &= ~gappy
    if not columns.any():
        raise DataError(
            f"{aln.path}: no column left with a gap fraction <= {max_column_gap_fraction}"
        )
    logger.info(
        "filter_alignment %s: kept %d of %d sequences (%d with gap fraction > %g), %d of %d columns "
        "(%d focus gaps, %d with gap fraction > %g)",
        aln.path,
        int(rows.sum()),
        aln.num_sequences,
        int((~rows).sum()),
        max_sequence_gap_fraction,
        int(columns.sum()),
        aln.num_columns,
        n_focus_gap,
        int(gappy.sum()),
        max_column_gap_fraction,
    )
    return aln.select(rows, columns)
