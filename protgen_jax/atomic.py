"""Atomic file writes: a reader sees the previous file or the complete new one, never a half-written file.

Every writer goes through :func:`atomic_write`: a temporary file in the destination folder (same file
system), ``fsync``, then ``os.replace`` over the destination; on any error the temporary file is deleted
and the destination is untouched. Files get the usual permissions (0666 minus the umask), not the 0600 of
a temporary file. No JAX here: the data readers import this module too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "save_json_atomic", "save_npz_atomic", "strict_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO[Any]]:
    """``with atomic_write(path) as handle: ...`` writes ``path`` atomically (see the module docstring).

    The destination folder is created if missing. ``binary`` opens the handle in ``"wb"`` mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None and NumPy scalars by Python ones,
    so it serialises as strict JSON (which has no NaN)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` (NumPy scalars allowed) as strict JSON to ``path`` atomically; non-finite floats
    become null. The object is serialised before anything is opened, so a bad object leaves no trace.

    Returns the destination path.
    """
    text = json.dumps(strict_json(obj), indent=indent, sort_keys=False, allow_nan=False)
    with atomic_write(path) as handle:
        handle.write(text + "\n")
    return Path(path)


def save_npz_atomic(
    path: str | os.PathLike[str], compressed: bool = True, /, **arrays: Any
) -> Path:
    """``np.savez(_compressed)(path, **arrays)`` atomically; ``path`` is used as given (no ``.npz``
    appended); an array may be named ``path`` (the arguments before it are positional-only)."""
    with atomic_write(path, binary=True) as handle:
        (np.savez_compressed if compressed else np.savez)(handle, **arrays)
    return Path(path)
