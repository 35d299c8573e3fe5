"""Batches of the sequence-diffusion recipe, and the broad unlabelled data it can train on.

Batches (:meth:`SeqDiffRecipe.batches`): the training sequences, cropped to ``max_len`` ``M``, fall
in the smallest bucket length ``L_b >= min(len, M)``; bucket ``b`` (``n_b`` members) is one
:class:`~protgen_jax.recipes.base.BatchGroup` with batch size ``B_b = tokens_per_batch // L_b`` and
weight ``n_b / B_b`` (every sequence equally likely per step whatever its length). A draw takes
``B_b`` members with replacement, a uniform window of ``M`` residues of a longer sequence
(``start ~ U{0, ..., len - M}``), pads to ``L_b`` (``mask [B_b, L_b]``) and replaces the family label
by the null label ``F`` (``num_families``) with probability ``cfg_drop`` or when it is unknown (< 0).

Broad unlabelled data (``extra_data``, e.g. ``@cath_s40``: 21,090 CATH domains): its sequences train
the null label and are drawn in a fixed share ``f = extra_fraction`` of the training sequences. Row
``i`` of a bucket is drawn with weight ``w_i = (1 - f) / N_main`` (a training sequence) or ``f /
N_extra`` (an extra one), so every sequence of one source is equally likely; the bucket's weight
becomes ``sum_i w_i / B_b``. Extra sequences that repeat a validation sequence, or (with
``unseen_families``) share more than ``extra_max_overlap`` of their 6-mers with a left-out family
(:func:`~protgen_jax.data.sequences.drop_near_copies`), are dropped before training; none is ever
validated on.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import alphabet as vocab
from protgen_jax import keys
from protgen_jax.data import resolve
from protgen_jax.data.registry import DATASETS
from protgen_jax.data.sequences import (
    SequenceSet,
    bucket_index,
    concatenate,
    drop_near_copies,
    read_sequences,
)
from protgen_jax.errors import DataError
from protgen_jax.fit import BatchGroup

__all__ = ["bucket_groups", "draw_bucket", "extra_data_path", "read_extra"]


def extra_data_path(spec: str) -> Path:
    """``extra_data`` as a file: "@NAME" -> the one file of registry dataset NAME, else a path."""
    if not spec.startswith("@"):
        return Path(spec)
    files = DATASETS[spec[1:]].files if spec[1:] in DATASETS else ()
    if len(files) != 1:
        raise DataError(f"extra_data {spec!r}: not a one-file dataset of the registry")
    return resolve(spec[1:], files[0])


def draw_bucket(
    arrays: dict[str, jax.Array],
    key: jax.Array,
    step: jax.Array,
    *,
    batch_size: int,
    length: int,
    max_len: int,
    cfg_drop: float,
    null_label: int,
) -> dict[str, jax.Array]:
    """One batch of a bucket, on the device (pure, static shapes).

    ``arrays``: ``tokens [n, W]`` (PAD after each end, ``W >= length``), ``lengths [n]``,
    ``labels [n]`` and optionally ``cumulative [n]`` float32, the normalized cumulative row weights.
    With ``B = batch_size`` rows ``r ~ U{0..n-1}`` (with replacement; with ``cumulative``, ``r`` =
    the first row whose cumulative weight exceeds ``u ~ U[0, 1)``), crop start
    ``s ~ U{0..max(len_r - max_len, 0)}`` and ``l = min(len_r, max_len)``:

        tokens[i, j] = arrays.tokens[r_i, s_i + j]   for j < l_i, PAD after     [B, length] int32
        mask[i, j]   = j < l_i                                                  [B, length] bool
        cond[i]      = null_label if labels[r_i] < 0 or u_i < cfg_drop else labels[r_i]   [B] int32
    """
    del step
    n, width = arrays["tokens"].shape
    if "cumulative" in arrays:
        u = jax.random.uniform(keys.named(key, "rows"), (batch_size,))
        rows = jnp.minimum(jnp.searchsorted(arrays["cumulative"], u, side="right"), n - 1)
    else:
        rows = jax.random.randint(keys.named(key, "rows"), (batch_size,), 0, n)
    full = arrays["lengths"][rows]
    start = jax.random.randint(
        keys.named(key, "crop"), (batch_size,), 0, jnp.maximum(full - max_len, 0) + 1
    )
    kept = jnp.minimum(full, max_len)
    positions = jnp.arange(length)[None, :]
    columns = jnp.minimum(start[:, None] + positions, width - 1)
    gathered = arrays["tokens"][rows[:, None], columns].astype(jnp.int32)
    mask = positions < kept[:, None]
    labels = arrays["labels"][rows]
    drop = jax.random.uniform(keys.named(key, "drop"), (batch_size,)) < cfg_drop
    cond = jnp.where((labels < 0) | drop, null_label, labels).astype(jnp.int32)
    return {"tokens": jnp.where(mask, gathered, vocab.PAD), "mask": mask, "cond": cond}


def bucket_groups(
    data: SequenceSet,
    config: Any,
    null_label: int,
    cfg_drop: float,
    extra: SequenceSet | None = None,
) -> list[BatchGroup]:
    """One :class:`BatchGroup` per non-empty bucket of ``data`` and ``extra`` (drawn in the share
    ``config.extra_fraction``, unlabelled; see the module docstring)."""
    if len(data) == 0:
        raise DataError("no sequences to batch")
    row_weight = None
    if extra is not None and len(extra):
        f = config.extra_fraction
        row_weight = np.r_[
            np.full(len(data), (1 - f) / len(data)), np.full(len(extra), f / len(extra))
        ]
        unlabelled = dataclasses.replace(extra, labels=np.full(len(extra), -1, np.int32))
        data = concatenate(data, unlabelled)
    buckets = tuple(config.buckets)
    lengths = data.lengths
    which = bucket_index(np.minimum(lengths, config.max_len), buckets)
    groups = []
    for b, length in enumerate(buckets):
        members = np.flatnonzero(which == b)
        if len(members) == 0:
            continue
        width = max(int(length), int(lengths[members].max()))
        tokens = np.full((len(members), width), vocab.PAD, np.int8)
        for row, index in enumerate(members):
            tokens[row, : lengths[index]] = data.tokens[
                data.offsets[index] : data.offsets[index + 1]
            ]
        batch_size = max(1, config.tokens_per_batch // int(length))
        arrays = {
            "tokens": tokens,
            "lengths": lengths[members].astype(np.int32),
            "labels": data.labels[members].astype(np.int32),
        }
        weight = len(members) / batch_size
        if row_weight is not None:
            w = row_weight[members]
            arrays["cumulative"] = (np.cumsum(w) / w.sum()).astype(np.float32)
            weight = float(w.sum()) / batch_size
        draw = functools.partial(
            draw_bucket, batch_size=batch_size, length=int(length), max_len=config.max_len,
            cfg_drop=float(cfg_drop), null_label=int(null_label),
        )  # fmt: skip
        groups.append(BatchGroup(arrays, draw, batch_size, weight, f"L{length}"))
    return groups


def read_extra(
    config: Any, validation: SequenceSet, unseen: SequenceSet | None
) -> tuple[SequenceSet, int]:
    """``config.extra_data`` read without labels, minus exact copies of ``validation`` sequences and
    (with ``unseen``, the left-out families) the near-copies :func:`drop_near_copies` finds with
    ``config.extra_max_overlap``: ``(kept, number dropped)``.

    Raises:
      DataError: an unreadable file, an unknown ``@NAME``, or no record left.
    """
    path = extra_data_path(config.extra_data)
    extra = read_sequences(path, family_names=())
    held = {validation.sequence(i).tobytes() for i in range(len(validation))}
    copies = np.array([extra.sequence(i).tobytes() in held for i in range(len(extra))])
    kept = extra.subset(np.flatnonzero(~copies))
    dropped = int(copies.sum())
    if unseen is not None:
        kept, near = drop_near_copies(kept, unseen, config.extra_max_overlap)
        dropped += near
    if len(kept) == 0:
        raise DataError(f"{path}: extra_data: no sequence left after dropping {dropped} copies")
    print(
        f"extra_data {path}: {len(kept)} sequences ({extra.num_skipped} skipped for ambiguous "
        f"letters, {dropped} dropped as copies of validation or left-out sequences), "
        f"{config.extra_fraction:.0%} of the training draws",
        file=sys.stderr,
    )
    return kept, dropped
