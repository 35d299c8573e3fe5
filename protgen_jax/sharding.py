"""Data-parallel sharding helpers over a 1-D device mesh (`jax.jit` + `NamedSharding`; no `pmap`).

A training script builds `mesh = make_mesh()`, places the state with `replicated(mesh)` and each
batch with `shard_batch(batch, mesh)` (leading axis `B` split over the mesh axis); `jax.jit` then
partitions the step and inserts the gradient all-reduce itself.

Example:
    >>> mesh = make_mesh()
    >>> batch = shard_batch({"tokens": np.zeros((8 * mesh.size, 16), np.int32)}, mesh)
    >>> state = jax.device_put(state, replicated(mesh))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from protgen_jax.errors import DataError

PyTree = Any


def make_mesh(num_devices: int | None = None, axis_name: str = "data") -> Mesh:
    """A 1-D mesh over the first `num_devices` of `jax.devices()` (all of them by default).

    Args:
        num_devices: number of devices, 1 <= num_devices <= len(jax.devices()); None for all.
        axis_name: the mesh axis name.

    Returns:
        A `Mesh` of shape `{axis_name: num_devices}`.
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices must lie in [1, {len(devices)}], got {num_devices}")
    return Mesh(np.asarray(devices[:n]), (axis_name,))


def _single_axis(mesh: Mesh) -> str:
    """The name of a 1-D mesh's only axis."""
    if len(mesh.axis_names) != 1:
        raise ValueError(f"expected a 1-D mesh, got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def data_sharding(mesh: Mesh) -> NamedSharding:
    """`NamedSharding(mesh, PartitionSpec(axis))`: leading axis split over the mesh, rest whole."""
    return NamedSharding(mesh, PartitionSpec(_single_axis(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    """`NamedSharding(mesh, PartitionSpec())`: a full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of `batch` with its leading axis `B` split evenly over the mesh devices.

    Each device receives `B / n` consecutive examples (`n = mesh.size`). Single-process only:
    `batch` is the global batch held by this host.

    Args:
        batch: a pytree of arrays, every leaf of shape `[B, ...]` with the same `B`.
        mesh: a 1-D mesh from `make_mesh`.

    Returns:
        The batch as `jax.Array`s with sharding `data_sharding(mesh)`.

    Raises:
        DataError: a leaf is a scalar, the leaves disagree on `B`, or `B` is not divisible by `n`.
    """
    sharding = data_sharding(mesh)
    n = mesh.size
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    sizes = set()
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path) or "<batch>"
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise DataError(
                f"batch leaf {name} is a scalar; every leaf needs a leading batch axis B"
            )
        if shape[0] % n != 0:
            raise DataError(
                f"batch leaf {name} has batch size B={shape[0]}, not divisible by the {n} devices "
                f"of the mesh; choose a batch size that is a multiple of {n}"
            )
        sizes.add(shape[0])
    if len(sizes) > 1:
        raise DataError(f"batch leaves disagree on the batch size B: {sorted(sizes)}")
    return jax.device_put(batch, sharding)
