"""FASTA reading and writing, and the record splitter shared with the A2M/A3M reader.

`read_records` splits any FASTA-family text file (FASTA, aligned FASTA, A2M, A3M) into raw records and
checks that the file is one; `read_fasta` turns those records into unaligned sequences; `write_fasta`
writes records atomically (temporary file in the same folder, then `os.replace`), so a reader never sees
half a file.
"""

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from protgen_jax.atomic import atomic_write
from protgen_jax.errors import DataError

__all__ = ["FastaRecord", "read_fasta", "read_records", "write_fasta"]

_SNIFF_BYTES = 8192
_NOT_SEQUENCE = re.compile(r"[^A-Za-z.\-]")


@dataclass(frozen=True)
class FastaRecord:
    """One raw record of a FASTA-family file.

    Attributes:
      id: the header's first whitespace-separated word, without ">".
      description: the rest of the header line (may be empty).
      sequence: the sequence lines concatenated, each stripped of surrounding whitespace, nothing else
        changed (case, gaps and insert characters are kept).
      line: 1-based line number of the header.
      line_starts: for each sequence line, (1-based line number, offset of its first character in
        `sequence`); used to point error messages at a line and column.
    """

    id: str
    description: str
    sequence: str
    line: int
    line_starts: tuple[tuple[int, int], ...]

    def locate(self, position: int) -> tuple[int, int]:
        """Map a 0-based offset into `sequence` to (line number, 1-based column) in the file."""
        line, start = self.line, 0
        for line_number, offset in self.line_starts:
            if offset > position:
                break
            line, start = line_number, offset
        return line, position - start + 1


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    data = path.read_bytes()
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise DataError(f"{path}: binary content (NUL bytes); expected a FASTA/A2M/A3M text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not a UTF-8 text file (byte {err.start}); expected a FASTA/A2M/A3M text file"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text


def read_records(path: str | os.PathLike) -> list[FastaRecord]:
    """Split a FASTA-family file into raw records.

    Blank lines are skipped anywhere; lines starting with "#" before the first header are skipped (A3M
    files written by ColabFold / hhblits start with such a line). Every other line before the first ">"
    header means the file is not FASTA-like.

    Args:
      path: a FASTA, aligned FASTA, A2M or A3M file.

    Returns:
      The records in file order (at least one). A record may have an empty `sequence`; callers decide
      whether that is an error.

    Raises:
      DataError: missing file, binary / non-UTF-8 content, empty file, Stockholm input, text before the
        first header, or a header with no id; the message names the file and line.
    """
    path = Path(path)
    text = _read_text(path)
    records: list[FastaRecord] = []
    header: tuple[str, str, int] | None = None
    chunks: list[str] = []
    starts: list[tuple[int, int]] = []
    length = 0

    def close() -> None:
        if header is not None:
            identifier, description, line_number = header
            records.append(
                FastaRecord(identifier, description, "".join(chunks), line_number, tuple(starts))
            )

    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(">"):
            close()
            fields = line[1:].split(maxsplit=1)
            if not fields:
                raise DataError(f"{path}: line {line_number}: header '>' has no sequence id")
            header = (fields[0], fields[1] if len(fields) > 1 else "", line_number)
            chunks, starts, length = [], [], 0
        elif header is None:
            if line.upper().startswith("# STOCKHOLM"):
                raise DataError(
                    f"{path}: Stockholm format is not supported; convert it to A2M first "
                    "(e.g. `esl-reformat a2m FILE`)"
                )
            if line.startswith("#"):
                continue
            raise DataError(
                f"{path}: line {line_number}: expected a '>' header, found {line[:40]!r}; "
                "not a FASTA/A2M/A3M file"
            )
        else:
            starts.append((line_number, length))
            chunks.append(line)
            length += len(line)
    close()
    if not records:
        raise DataError(f"{path}: no '>' records found")
    return records


def read_fasta(path: str | os.PathLike, *, uppercase: bool = False) -> list[tuple[str, str]]:
    """Read unaligned sequences from a FASTA file.

    Each record's sequence lines are concatenated and the gap characters "-" and "." are removed, so an
    aligned FASTA or A2M file also reads as its raw sequences. Letters are kept as written unless
    `uppercase` is set (in A2M, lower case marks insertions, which are still residues).

    Args:
      path: FASTA file.
      uppercase: upper-case every sequence.

    Returns:
      list of (id, sequence) in file order; the id is the header's first word.

    Raises:
      DataError: empty / non-FASTA file (see `read_records`), a record with no residues, or a character
        that is not a letter (naming the record, line and column).
    """
    path = Path(path)
    out = []
    for record in read_records(path):
        bad = _NOT_SEQUENCE.search(record.sequence)
        if bad is not None:
            line, column = record.locate(bad.start())
            raise DataError(
                f"{path}: record {record.id!r} line {line} column {column}: unexpected "
                f"character {bad.group()!r}"
            )
        sequence = record.sequence.replace("-", "").replace(".", "")
        if not sequence:
            raise DataError(f"{path}: record {record.id!r} (line {record.line}) has no sequence")
        out.append((record.id, sequence.upper() if uppercase else sequence))
    return out


def write_fasta(
    path: str | os.PathLike, records: Iterable[tuple[str, str]], *, line_width: int | None = None
) -> None:
    """Write (id, sequence) records as FASTA, atomically.

    The text goes to a temporary file in the destination folder which then replaces `path` with
    `os.replace`, so an interrupted write leaves either the old file or the new one, never a partial one.

    Args:
      path: destination file; its folder must exist.
      records: (header, sequence) pairs; the header is written after ">" as given (it may hold an id
        followed by a description).
      line_width: wrap sequences at this many characters; None writes each sequence on one line.

    Raises:
      DataError: a header that is empty or holds a line break, or a sequence holding whitespace.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(f"{path}: folder {path.parent} does not exist")
    if line_width is not None and line_width < 1:
        raise DataError(f"{path}: line_width must be positive, got {line_width}")
    lines = []
    for index, (header, sequence) in enumerate(records):
        if not header.strip() or "\n" in header or "\r" in header:
            raise DataError(f"{path}: record {index}: header {header!r} is empty or spans lines")
        if any(char.isspace() for char in sequence):
            raise DataError(f"{path}: record {index} ({header!r}): sequence contains whitespace")
        lines.append(f">{header}\n")
        width = line_width or max(len(sequence), 1)
        lines.extend(sequence[i : i + width] + "\n" for i in range(0, len(sequence), width))
    with atomic_write(path) as stream:
        stream.writelines(lines)
