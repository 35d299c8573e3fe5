"""Auxiliary structure potentials on C-alpha traces (jax.numpy, differentiable), for guidance at sampling time.

In the spirit of RFdiffusion's external potentials: energies that are zero for a protein-like trace and
grow when it is not. For a trace ``x [B, L, 3]`` (Å) with residue mask ``m [B, L]`` and ``n = sum_l m_l``:

    clash:  E_clash = sum_{i < j, j - i >= 3, m_i m_j} relu(d0 - |x_i - x_j|)^2          [B], Å^2
    Rg:     E_rg    = relu(Rg - a n^nu)^2,  Rg = sqrt(1/n sum_l m_l |x_l - xbar|^2)      [B], Å^2

``d0`` (``CLASH_MARGIN``, 4.0 Å) is a margin over the 3.0 Å clash criterion of the geometry report
(:mod:`protgen_jax.structure.geometry`); pairs with ``|i - j| <= 2`` are fixed by the bond geometry and
excluded, as there. The Rg term only penalises chains more extended than ``a n^nu``: the exponent is
the usual protein scaling ``nu = 0.38`` (``RG_EXPONENT``) and ``a`` (``RG_PREFACTOR``) is the geometric-mean
fit with ``nu`` fixed, ``a = exp(mean(log Rg - nu log n))``, on the FoldingDiff training chains (the
cgdms backbones; see experiments/foldingdiff/README.md for the fit).

:func:`angle_energy` composes them with the NeRF reconstruction
(:func:`protgen_jax.structure.internal.backbone_from_internal`): an energy of the six internal coordinates
per residue, ``[B, L, 6] -> [B]``, the form the torus sampler's guidance takes
(:func:`protgen_jax.diffusion.torus.torus_energy_guidance`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from protgen_jax.structure.internal import backbone_from_internal

__all__ = [
    "CLASH_MARGIN",
    "CLASH_MIN_SEPARATION",
    "RG_EXPONENT",
    "RG_PREFACTOR",
    "angle_energy",
    "clash_energy",
    "rg_energy",
    "rg_target",
    "trace_energy",
]

CLASH_MARGIN = 4.0
"""Å, ``d0`` of the clash energy: non-adjacent CA pairs closer than this are pushed apart."""
CLASH_MIN_SEPARATION = 3
"""Smallest sequence separation ``|i - j|`` of a pair in the clash energy (as the geometry report)."""
RG_EXPONENT = 0.38
"""``nu`` of the Rg target ``a n^nu``."""
RG_PREFACTOR = 2.88
"""Å, ``a`` of the Rg target, fitted with ``nu = RG_EXPONENT`` on the training chains (module docstring)."""


def _mask(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    return jnp.ones(x.shape[:-1], jnp.float32) if mask is None else mask.astype(jnp.float32)


def clash_energy(
    ca: jax.Array,
    mask: jax.Array | None = None,
    margin: float = CLASH_MARGIN,
    min_separation: int = CLASH_MIN_SEPARATION,
) -> jax.Array:
    """``sum_{i < j, j - i >= min_separation} relu(margin - d_ij)^2`` over real residues.

    Args:
      ca: ``[B, L, 3]`` C-alpha coordinates (Å).
      mask: optional ``[B, L]`` bool, True for real residues.
      margin: ``d0`` in Å.
      min_separation: smallest ``j - i`` counted.

    Returns:
      ``[B]`` float32, Å^2.
    """
    m = _mask(ca, mask)
    length = ca.shape[-2]
    diff = ca[:, :, None, :] - ca[:, None, :, :]
    dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1) + 1e-8)  # finite gradient at d = 0
    idx = jnp.arange(length)
    pairs = (idx[None, :] - idx[:, None]) >= min_separation  # i < j only: each pair once
    weight = pairs[None] * m[:, :, None] * m[:, None, :]
    return jnp.sum(weight * jax.nn.relu(margin - dist) ** 2, axis=(-2, -1))


def rg_target(n: jax.Array, prefactor: float = RG_PREFACTOR, exponent: float = RG_EXPONENT):
    """``a n^nu`` Å for chain lengths ``n`` (any shape)."""
    return prefactor * jnp.asarray(n, jnp.float32) ** exponent


def rg_energy(
    ca: jax.Array,
    mask: jax.Array | None = None,
    prefactor: float = RG_PREFACTOR,
    exponent: float = RG_EXPONENT,
) -> jax.Array:
    """``relu(Rg - a n^nu)^2`` of each masked trace ``ca [B, L, 3]`` (mask ``[B, L]``); ``[B]`` Å^2."""
    m = _mask(ca, mask)
    n = jnp.maximum(jnp.sum(m, axis=-1), 1.0)
    centre = jnp.sum(ca * m[:, :, None], axis=-2) / n[:, None]
    sq = jnp.sum(jnp.sum((ca - centre[:, None, :]) ** 2, axis=-1) * m, axis=-1) / n
    rg = jnp.sqrt(sq + 1e-8)
    return jax.nn.relu(rg - rg_target(n, prefactor, exponent)) ** 2


def trace_energy(
    ca: jax.Array, mask: jax.Array | None, clash_weight: float, rg_weight: float
) -> jax.Array:
    """``w_clash E_clash + w_rg E_rg`` (module docstring) of ``ca [B, L, 3]``; ``[B]``."""
    return clash_weight * clash_energy(ca, mask) + rg_weight * rg_energy(ca, mask)


def _angle_energy(offset, channels, clash_weight, rg_weight, angles, mask):
    angles = angles + offset[None, None]
    angles = jnp.where(channels[None, None], angles, jax.lax.stop_gradient(angles))
    ca = backbone_from_internal(angles)[..., 1, :]
    return trace_energy(ca, mask, clash_weight, rg_weight)


def angle_energy(
    offset: jax.Array,
    clash_weight: float,
    rg_weight: float,
    channels: jax.Array | None = None,
) -> Partial:
    """The trace energy as a function of internal coordinates: ``(angles [B, L, 6], mask [B, L] | None) -> [B]``
    with ``E(angles) = trace_energy(CA(NeRF(angles + offset)), mask)``.

    Args:
      offset: ``[6]`` radians added before the reconstruction (a FoldingDiff run's centring offset).
      clash_weight, rg_weight: ``w_clash``, ``w_rg``.
      channels: optional ``[6]`` bool, the angles the energy is differentiable in (the others are held
        by ``stop_gradient``); default all six.
    """
    channels = jnp.ones(6, bool) if channels is None else jnp.asarray(channels, bool)
    return Partial(
        _angle_energy,
        jnp.asarray(offset, jnp.float32),
        channels,
        jnp.float32(clash_weight),
        jnp.float32(rg_weight),
    )
