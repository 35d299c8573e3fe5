"""Diffusion on the torus (angles), as in FoldingDiff (Wu et al. 2022): wrapped-normal forward process,
noise prediction scored on the wrapped difference, and a wrapped DDPM sampler.

Angles live in ``[-pi, pi)``; ``wrap(x) = (x + pi) mod 2 pi - pi``. With the usual schedule quantities:

    forward:  x_t = wrap(sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps),     eps ~ N(0, I)
    loss:     smooth_L1_beta(wrap(eps_hat(x_t, t) - eps))           (masked mean per example, [B])
    reverse:  x_{t-1} = wrap((x_t - beta_t / sqrt(1 - ab_t) eps_hat) / sqrt(alpha_t) + sigma_t z)
              sigma_t^2 = beta_t (no noise at t = 0);  x_{T-1} = wrap(eps)

so every state of the chain is a point on the torus (a wrapped normal around the scaled data in the forward
direction, which tends to the uniform distribution as ``ab_t -> 0``). The wrap of the loss's difference is
FoldingDiff's: a prediction off by a whole turn is not penalised. Pure functions: networks enter as
``denoise_fn(x_t, t, mask, cond) -> eps_hat``.

Energy guidance (:func:`torus_energy_guidance`, a ``denoise_fn`` transformer like
:mod:`protgen_jax.diffusion.guidance`) steers the sampler away from high values of an energy ``E`` of
the clean angles, e.g. a structure potential of the reconstructed backbone.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from protgen_jax.diffusion.forward import extract
from protgen_jax.diffusion.samplers import as_partial
from protgen_jax.diffusion.schedules import Schedule

__all__ = [
    "torus_ddpm_sample",
    "torus_energy_guidance",
    "wrap",
    "wrapped_noise_loss",
    "wrapped_q_sample",
]

SMOOTH_L1_BETA = 0.1 * jnp.pi
"""FoldingDiff's smooth-L1 transition point (radians of wrapped noise difference)."""


def wrap(x: jax.Array) -> jax.Array:
    """``(x + pi) mod 2 pi - pi``, elementwise: ``[-pi, pi)``."""
    return jnp.mod(x + jnp.pi, 2 * jnp.pi) - jnp.pi


def wrapped_q_sample(
    schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
    """``x_t = wrap(sqrt(ab_t) x_0 + sqrt(1 - ab_t) noise)`` for ``x0, noise [B, ...]``, ``t [B]`` int."""
    chex.assert_equal_shape([x0, noise])
    return wrap(
        extract(schedule.sqrt_alpha_bars, t, x0.ndim) * x0
        + extract(schedule.sqrt_one_minus_alpha_bars, t, x0.ndim) * noise
    )


def wrapped_noise_loss(
    pred: jax.Array, noise: jax.Array, mask: jax.Array, beta: float = SMOOTH_L1_BETA
) -> jax.Array:
    """Per-example masked mean of ``smooth_L1_beta(wrap(pred - noise))``.

    ``smooth_L1_beta(d) = 0.5 d^2 / beta`` for ``|d| < beta``, else ``|d| - 0.5 beta``.

    Args:
      pred, noise: ``[B, ...]`` predicted and true noise.
      mask: ``[B, ...]`` bool (same shape), True where the element counts.
      beta: transition point (> 0).

    Returns:
      ``[B]`` float32 (0 for an example without a counted element).
    """
    chex.assert_equal_shape([pred, noise, mask])
    d = jnp.abs(wrap(pred.astype(jnp.float32) - noise.astype(jnp.float32)))
    values = jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    weights = mask.astype(jnp.float32).reshape(mask.shape[0], -1)
    total = jnp.sum(values.reshape(values.shape[0], -1) * weights, axis=-1)
    return total / jnp.maximum(jnp.sum(weights, axis=-1), 1.0)


def _torus_ddpm(key, denoise_fn, schedule, mask, cond, noise_scale, *, shape):
    start_key, loop_key = jax.random.split(key)
    x = wrap(jax.random.normal(start_key, shape))
    weights = jnp.ones(shape) if mask is None else jnp.broadcast_to(mask[..., None], shape)

    def step(x, inputs):
        t, k = inputs
        tb = jnp.full((shape[0],), t)
        eps = denoise_fn(x, tb, mask, cond)
        beta, alpha = schedule.betas[t], schedule.alphas[t]
        mean = (x - beta / schedule.sqrt_one_minus_alpha_bars[t] * eps) / jnp.sqrt(alpha)
        sigma = noise_scale * jnp.sqrt(beta) * (t > 0)
        x = wrap(mean + sigma * jax.random.normal(k, shape)) * weights
        return x, None

    ts = jnp.arange(schedule.num_steps - 1, -1, -1)
    x, _ = jax.lax.scan(step, x, (ts, jax.random.split(loop_key, schedule.num_steps)))
    return x


_torus_ddpm_jit = jax.jit(_torus_ddpm, static_argnames=("shape",))


def torus_ddpm_sample(
    key: jax.Array,
    denoise_fn: Any,
    schedule: Schedule,
    shape: tuple[int, ...],
    *,
    mask: jax.Array | None = None,
    cond: Any = None,
    noise_scale: float = 1.0,
) -> jax.Array:
    """Wrapped ancestral sampling on the torus (module docstring), one jitted ``lax.scan`` over T steps.

    Args:
      key: PRNG key (split once into the start noise and one key per step).
      denoise_fn: ``(x_t [B, L, C], t [B], mask, cond) -> eps_hat [B, L, C]``; a ``Partial``.
      schedule: the noise schedule (T steps).
      shape: ``(B, L, C)``, static.
      mask: optional ``[B, L]`` residue mask; padded positions are returned as 0.
      cond: passed to ``denoise_fn``.
      noise_scale: multiplies sigma_t of every reverse step (traced: no recompile).

    Returns:
      ``[B, L, C]`` angles in ``[-pi, pi)``.
    """
    if mask is not None:
        chex.assert_shape(mask, shape[:-1])
    return _torus_ddpm_jit(
        key, as_partial(denoise_fn), schedule, mask, cond,
        jnp.asarray(noise_scale, jnp.float32), shape=tuple(shape),
    )  # fmt: skip


def _energy_guided(
    denoise_fn, energy_fn, sqrt_ab, sqrt_1mab, scale, last_step, max_shift, x_t, t, mask, cond
):
    eps = denoise_fn(x_t, t, mask, cond)
    active = (scale > 0) & (t <= last_step)  # [B]

    def push(eps):
        a, s = extract(sqrt_ab, t, x_t.ndim), extract(sqrt_1mab, t, x_t.ndim)
        x0 = jax.lax.stop_gradient(wrap((x_t - s * eps) / a))  # the denoiser is not differentiated
        grad = jax.grad(lambda x: jnp.sum(energy_fn(x, mask)))(x0)
        shift = scale * s / a * grad
        norm = jnp.sqrt(jnp.sum(shift * shift, axis=-1, keepdims=True))
        shift = shift * jnp.minimum(1.0, max_shift / jnp.maximum(norm, 1e-12))
        if mask is not None:
            shift = shift * mask[..., None]
        where = active.reshape(t.shape + (1,) * (x_t.ndim - 1))
        return jnp.where(where, eps + shift, eps)

    return jax.lax.cond(jnp.any(active), push, lambda e: e, eps)


def torus_energy_guidance(
    denoise_fn: Any,
    energy_fn: Any,
    schedule: Schedule,
    scale: float = 1.0,
    guide_from: float = 1.0,
    max_shift: float = 1.0,
) -> Any:
    """Guide a torus ``denoise_fn`` down the gradient of an energy of the clean angles (RFdiffusion's
    auxiliary potentials in the form of classifier guidance).

    With ``p(y | x_t) ∝ exp(-E(x0_hat(x_t)))``, classifier guidance (Dhariwal & Nichol 2021) reads
    ``eps_hat = eps - s sqrt(1 - ab_t) grad_{x_t} log p = eps + s sqrt(1 - ab_t) grad_{x_t} E``. The
    gradient is taken at the model's clean estimate

        x0_hat = wrap((x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t))

    and, as RFdiffusion's potentials do, without differentiating the denoiser: holding ``eps`` fixed,
    ``d x0_hat / d x_t = I / sqrt(ab_t)`` (the wrap has derivative 1 almost everywhere), so
    ``grad_{x_t} E ≈ g / sqrt(ab_t)`` with ``g = grad E(x0_hat)`` and

        eps_hat = eps + clip_r(s sqrt(1 - ab_t) / sqrt(ab_t) g),

    i.e. ``x0_hat`` moves by ``-s (1 - ab_t) / ab_t g`` (a gradient step on ``E``) and the reverse
    mean of the sampler by ``-s beta_t / (sqrt(alpha_t) sqrt(ab_t)) g``. ``clip_r`` scales each residue's
    shift ``[C]`` to Euclidean norm at most ``max_shift`` (units of the unit-variance noise), which bounds
    the push where ``ab_t -> 0``; padded residues get no shift. Guidance acts at the steps
    ``t <= guide_from * (T - 1)`` only (``guide_from = 1``: every step; ``0.5``: the late half); elsewhere,
    and for ``s = 0``, ``eps`` is returned unchanged (the unguided sampler's numbers exactly).

    Args:
      denoise_fn: ``(x_t [B, L, C], t [B], mask [B, L] | None, cond) -> eps [B, L, C]``.
      energy_fn: ``(x0 [B, L, C], mask [B, L] | None) -> [B]`` energies, differentiable in ``x0``
        (e.g. :func:`protgen_jax.structure.potentials.angle_energy`).
      schedule: the schedule the model was trained with.
      scale: ``s`` (>= 0).
      guide_from: fraction of the chain (from the end) that is guided, in ``[0, 1]``.
      max_shift: per-residue bound on the norm of the added term (> 0).

    Returns:
      a ``denoise_fn`` (a ``Partial``: changing the scalars does not recompile the sampler).
    """
    if not 0.0 <= guide_from <= 1.0 or max_shift <= 0 or scale < 0:
        raise ValueError(
            f"need scale >= 0, guide_from in [0, 1], max_shift > 0; got {scale}, {guide_from}, "
            f"{max_shift}"
        )
    return Partial(
        _energy_guided,
        as_partial(denoise_fn),
        as_partial(energy_fn),
        schedule.sqrt_alpha_bars,
        schedule.sqrt_one_minus_alpha_bars,
        jnp.float32(scale),
        jnp.int32(round(guide_from * (schedule.num_steps - 1))),
        jnp.float32(max_shift),
    )
