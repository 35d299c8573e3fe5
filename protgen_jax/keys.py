"""One key tree: every random draw of a command comes from one root key, split by name.

``named(root, "train")`` is ``jax.random.fold_in(root, crc32("train"))``: a fixed, documented constant
per name, so two names never share a stream, adding a new name never shifts the others, and seed
``s`` never reproduces a stream of seed ``s + 1`` (which adding numbers to seeds did). Nested names
give sub-trees: ``named(root, "evaluate", "samples")``.

Example:
    >>> root = jax.random.key(0)
    >>> init_key, train_key = named(root, "init"), named(root, "train")
"""

from __future__ import annotations

import zlib

import jax
import numpy as np


def name_constant(name: str) -> int:
    """The ``fold_in`` constant of ``name``: its CRC-32, a 32-bit unsigned integer."""
    return zlib.crc32(name.encode("utf-8")) & 0xFFFFFFFF


def named(key: jax.Array, *names: str) -> jax.Array:
    """``fold_in(... fold_in(key, crc32(names[0])) ..., crc32(names[-1]))``: the sub-key of a path."""
    if not names:
        raise ValueError("named() needs at least one name")
    for name in names:
        key = jax.random.fold_in(key, name_constant(name))
    return key


def root_key(seed: int) -> jax.Array:
    """The root key of a run or command: ``jax.random.key(seed)`` for ``seed >= 0``."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return jax.random.key(seed)


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from ``key`` (host-side draws such as lengths or subsets)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
