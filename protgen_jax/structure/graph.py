"""Residue graphs of a backbone for message passing (ProteinMPNN, Dauparas et al. 2022): which atoms each
residue carries, its k nearest neighbours, and the distance features of every edge.

Two atom sets (``ATOM_SETS``):

- ``full``: N, CA, C, the carbonyl O and the virtual C-beta (`structure.atoms`), from N, CA, C;
- ``ca``: CA_i, CA_{i-1}, CA_{i+1} and a virtual C-beta built from those three (the C-beta formula with
  CA_{i-1} for N and CA_{i+1} for C), from the C-alpha trace alone. A missing chain neighbour (a
  terminus, or padding) is extrapolated: CA_{i-1} := 2 CA_i - CA_{i+1}, CA_{i+1} := 2 CA_i - CA_{i-1}.

Edge (i, j) features: the A x A inter-atomic distances between residue i's and residue j's atoms, each
expanded in ``num_rbf`` Gaussians on [2, 22] Å (ProteinMPNN's 16 on the same range), and the clipped chain
offset p_j - p_i. All functions are `jax.numpy`, batched over leading axes, jit- and vmap-friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from protgen_jax.structure.atoms import place_oxygen, virtual_cb

__all__ = [
    "ATOM_SETS",
    "RBF_RANGE",
    "edge_distances",
    "gather_neighbours",
    "knn_graph",
    "relative_offsets",
    "residue_atoms",
]

ATOM_SETS = {"full": 5, "ca": 4}
"""Atoms per residue of each atom set."""

RBF_RANGE = (2.0, 22.0)
"""Å, the first and last centre of the distance expansion."""

_FAR = 1e6


def _ca_neighbours(ca: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(previous, next) CA of every residue [..., L, 3], extrapolated where the neighbour is missing."""
    prev = jnp.concatenate([ca[..., :1, :], ca[..., :-1, :]], axis=-2)
    nxt = jnp.concatenate([ca[..., 1:, :], ca[..., -1:, :]], axis=-2)
    has_prev = jnp.concatenate([jnp.zeros_like(mask[..., :1]), mask[..., :-1]], axis=-1)
    has_next = jnp.concatenate([mask[..., 1:], jnp.zeros_like(mask[..., :1])], axis=-1)
    # a lone residue (no neighbour on either side) gets a unit step along x on both sides
    step = jnp.where(
        has_next[..., None],
        nxt - ca,
        jnp.where(has_prev[..., None], ca - prev, jnp.array([3.8, 0, 0])),
    )
    prev = jnp.where(has_prev[..., None], prev, ca - step)
    back = jnp.where(has_prev[..., None], ca - prev, step)
    nxt = jnp.where(has_next[..., None], nxt, ca + back)
    return prev, nxt


def residue_atoms(coords: jax.Array, mask: jax.Array, atom_set: str) -> jax.Array:
    """The atoms each residue carries (module docstring).

    Args:
      coords: ``full``: [..., L, 3, 3] N, CA, C in Å; ``ca``: [..., L, 3] CA in Å.
      mask: [..., L] bool, True at real residues.
      atom_set: ``"full"`` or ``"ca"``.

    Returns:
      [..., L, A, 3] with A = ``ATOM_SETS[atom_set]``; zero at padded residues.
    """
    if atom_set == "full":
        atoms = jnp.concatenate(
            [coords, place_oxygen(coords)[..., None, :], virtual_cb(coords)[..., None, :]], axis=-2
        )
    elif atom_set == "ca":
        ca = coords
        prev, nxt = _ca_neighbours(ca, mask)
        cb = virtual_cb(jnp.stack([prev, ca, nxt], axis=-2))
        atoms = jnp.stack([ca, prev, nxt, cb], axis=-2)
    else:
        raise ValueError(f"atom_set must be one of {tuple(ATOM_SETS)}, got {atom_set!r}")
    return jnp.where(mask[..., None, None], atoms, 0.0)


def knn_graph(ca: jax.Array, mask: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k nearest residues of every residue by CA distance (itself first, at distance 0).

    Args:
      ca: [..., L, 3] CA coordinates; mask: [..., L] bool.
      k: neighbours per residue (at most L; fewer real residues leave masked slots).

    Returns:
      (neighbours [..., L, k] int32 indices, edge_mask [..., L, k] bool: both ends are real residues).
    """
    d = jnp.linalg.norm(ca[..., :, None, :] - ca[..., None, :, :] + 1e-9, axis=-1)
    pair = mask[..., :, None] & mask[..., None, :]
    d = jnp.where(pair, d, _FAR)
    neg, idx = jax.lax.top_k(-d, k)
    return idx.astype(jnp.int32), (neg > -_FAR / 2) & mask[..., None]


def gather_neighbours(values: jax.Array, neighbours: jax.Array) -> jax.Array:
    """values [..., L, *F] gathered at neighbours [..., L, k] -> [..., L, k, *F]."""
    lead = neighbours.shape[:-2]
    flat = neighbours.reshape(*lead, -1)
    expand = flat.reshape(flat.shape + (1,) * (values.ndim - len(lead) - 1))
    taken = jnp.take_along_axis(values, expand, axis=len(lead))
    return taken.reshape(*neighbours.shape, *values.shape[len(lead) + 1 :])


def edge_distances(atoms: jax.Array, neighbours: jax.Array) -> jax.Array:
    """|a_i - b_j| for every atom a of residue i and atom b of its neighbour j.

    Args:
      atoms: [..., L, A, 3]; neighbours: [..., L, k].

    Returns:
      [..., L, k, A * A] distances in Å.
    """
    other = gather_neighbours(atoms, neighbours)  # [..., L, k, A, 3]
    diff = atoms[..., :, None, :, None, :] - other[..., :, :, None, :, :]
    d = jnp.sqrt(jnp.sum(diff**2, axis=-1) + 1e-6)
    return d.reshape(*d.shape[:-2], -1)


def relative_offsets(positions: jax.Array, neighbours: jax.Array, max_offset: int) -> jax.Array:
    """clip(p_j - p_i, -max_offset, max_offset) + max_offset in [0, 2 max_offset]: [..., L, k] int32."""
    other = gather_neighbours(positions, neighbours)
    offset = other - positions[..., None]
    return (jnp.clip(offset, -max_offset, max_offset) + max_offset).astype(jnp.int32)
