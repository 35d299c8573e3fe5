"""Reading a user's text file (CSV, PDB, mmCIF) with one clear error for what is not text.

A compressed file (gzip, zip, bzip2, xz, zstd, known by its magic bytes), an unreadable file and binary
data (a NUL byte or invalid UTF-8, reported with its line) are ``DataError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from protgen_jax.errors import DataError

__all__ = ["read_text_file"]

COMPRESSED = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "zip"),
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
)


def read_text_file(path: Path, kind: str, *, allow_empty: bool = True) -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped); ``kind`` names the expected format in errors
    (e.g. ``"CSV"``). ``allow_empty=False`` also refuses a file of only whitespace."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    for magic, compression in COMPRESSED:
        if raw.startswith(magic):
            raise DataError(f"{path}: is a {compression} file, not a {kind}; decompress it first")
    if not allow_empty and not raw.strip():
        raise DataError(f"{path}: empty file")
    bad = raw.find(b"\x00")
    if bad < 0:
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            bad = err.start
    line = raw[:bad].count(b"\n") + 1
    raise DataError(
        f"{path}: line {line}: binary data (byte {raw[bad]:#04x}), not a UTF-8 {kind} text file"
    )
