"""Reverse-process samplers: ancestral DDPM and DDIM, each one ``lax.scan`` inside ``jit``.

Both take ``denoise_fn(x_t, t, mask, cond)`` as an ordinary argument. Pass a
``jax.tree_util.Partial(model.apply, params)``: its leaves (the params) are traced as data, so new params,
an EMA copy or new keys reuse the compiled program; only a new shape, step count or option recompiles.
A plain function is wrapped in a ``Partial`` automatically (it then compiles once per function object).

Lecture: section 8 (the denoising loop). Inpainting/motif scaffolding follows the replacement method of
Song et al. 2021 / RePaint without resampling: after every step the known part of the sample is overwritten
by the forward-noised known values at the new noise level.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from protgen_jax.diffusion.forward import extract, q_posterior, q_sample, to_x0_eps
from protgen_jax.diffusion.losses import (
    DenoiseFn,
    NoiseTransform,
    _element_mask,
    model_log_variance,
    standard_normal,
)
from protgen_jax.diffusion.schedules import Schedule


def as_partial(fn: Any) -> Partial | None:
    """Wrap a callable as a ``jax.tree_util.Partial`` (a pytree) so it can be a traced ``jit`` argument."""
    if fn is None or isinstance(fn, Partial):
        return fn
    return Partial(fn)


def _noise(key, shape, weights, noise_transform, mask):
    z = standard_normal(key, shape)
    if noise_transform is not None:
        z = noise_transform(z, mask)
    return z * weights


def _replace_known(schedule, x, level, known, known_mask, key, noise_transform, mask, weights):
    """Overwrite the known part of ``x`` with ``known`` noised to ``level`` (``level < 0``: clean)."""
    if known is None:
        return x
    noise = _noise(key, x.shape, weights, noise_transform, mask)
    levels = jnp.full((x.shape[0],), jnp.maximum(level, 0))
    noised = jnp.where(level >= 0, q_sample(schedule, known, levels, noise), known)
    return jnp.where(known_mask, noised, x)


def _check(shape, mask, known, known_mask):
    if mask is not None:
        chex.assert_shape(mask, shape[: mask.ndim])
    if (known is None) != (known_mask is None):
        raise ValueError("inpainting needs both `known` and `known_mask`")
    if known is not None:
        chex.assert_shape(known, shape)


def _scan_with_trajectory(step, x, inputs, stride, unroll):
    """Run ``step`` over ``inputs``; with ``stride > 0`` also return ``x`` after every ``stride`` steps."""
    if stride <= 0:
        x, _ = jax.lax.scan(step, x, inputs, unroll=unroll)
        return x, None
    n = inputs[0].shape[0]
    if n % stride:
        raise ValueError(f"trajectory_stride {stride} must divide the number of steps {n}")
    chunks = jax.tree_util.tree_map(
        lambda a: a.reshape((n // stride, stride) + a.shape[1:]), inputs
    )

    def outer(x, chunk):
        x, _ = jax.lax.scan(step, x, chunk, unroll=unroll)
        return x, x

    return jax.lax.scan(outer, x, chunks)


_STATIC = ("shape", "prediction", "variance", "clip_x0", "trajectory_stride", "unroll",
           "self_condition")  # fmt: skip


def _predict(denoise_fn, x, tb, mask, cond, estimate, self_condition):
    """The network's prediction; a self-conditioned network also gets the previous ``x0_hat``."""
    if self_condition:
        return denoise_fn(x, tb, mask, cond, self_cond=estimate)
    return denoise_fn(x, tb, mask, cond)


def _run(step, x, inputs, trajectory_stride, unroll, self_condition):
    """Scan ``step`` over ``inputs`` with carry ``(x, x0_hat of the previous step or None)``."""
    estimate = jnp.zeros_like(x) if self_condition else None
    (x, _), traj = _scan_with_trajectory(step, (x, estimate), inputs, trajectory_stride, unroll)
    return x, None if traj is None else traj[0]


def _ddpm(key, denoise_fn, schedule, mask, cond, known, known_mask, noise_transform, noise_scale, *,
          shape, prediction, variance, clip_x0, trajectory_stride, unroll, self_condition):  # fmt: skip
    weights = _element_mask(mask, jnp.zeros(shape))
    T = schedule.num_steps
    init_key, start_key, loop_key = jax.random.split(key, 3)
    x = _noise(init_key, shape, weights, noise_transform, mask)
    x = _replace_known(
        schedule, x, T - 1, known, known_mask, start_key, noise_transform, mask, weights
    )

    def step(carry, inputs):
        x, estimate = carry
        t, k = inputs
        noise_key, known_key = jax.random.split(k)
        tb = jnp.full((shape[0],), t)
        out = _predict(denoise_fn, x, tb, mask, cond, estimate, self_condition)
        x0_hat, _ = to_x0_eps(schedule, x, tb, out, prediction)
        if clip_x0 is not None:
            x0_hat = jnp.clip(x0_hat, -clip_x0, clip_x0)
        mean, _, _ = q_posterior(schedule, x0_hat, x, tb)
        sigma = noise_scale * jnp.exp(0.5 * model_log_variance(schedule, tb, len(shape), variance))
        z = _noise(noise_key, shape, weights, noise_transform, mask)
        x = (mean + jnp.where(t > 0, sigma, 0.0) * z) * weights
        x = _replace_known(
            schedule, x, t - 1, known, known_mask, known_key, noise_transform, mask, weights
        )
        return (x, x0_hat if self_condition else None), None

    ts = jnp.arange(T - 1, -1, -1)
    inputs = (ts, jax.random.split(loop_key, T))
    return _run(step, x, inputs, trajectory_stride, unroll, self_condition)


_ddpm_jit = jax.jit(_ddpm, static_argnames=_STATIC)


def ddpm_sample(
    key: jax.Array,
    denoise_fn: DenoiseFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    *,
    mask: jax.Array | None = None,
    cond: Any = None,
    prediction: str = "eps",
    variance: str = "beta",
    clip_x0: float | None = None,
    trajectory_stride: int = 0,
    known: jax.Array | None = None,
    known_mask: jax.Array | None = None,
    noise_transform: NoiseTransform | None = None,
    noise_scale: float = 1.0,
    unroll: int = 1,
    self_condition: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Ancestral sampling ``x_{T-1} -> ... -> x_0 -> data`` (Ho et al. 2020, Algorithm 2).

    Each step: ``x0_hat`` from the network's prediction, ``mean = coef1_t x0_hat + coef2_t x_t`` (equal to
    the lecture's ``(x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)`` for eps-prediction without
    clipping), ``x_{t-1} = mean + sigma_t z`` with ``sigma_t^2 = beta_t`` (``variance="beta"``, the lecture)
    or the posterior variance (``"posterior"``), and no noise at the last step.

    Args:
      key: PRNG key (split once into the start noise and one key per step).
      denoise_fn: ``(x_t [B, ...], t [B], mask, cond) -> prediction``; a ``Partial`` to avoid recompiles.
      schedule: noise schedule (``T`` steps).
      shape: output shape ``(B, ...)``; static.
      mask: optional ``[B, L]`` residue mask; padding stays exactly zero.
      cond: any pytree passed to ``denoise_fn`` (class labels, ...).
      prediction: ``"eps"``, ``"x0"`` or ``"v"``.
      variance: ``"beta"`` or ``"posterior"``.
      clip_x0: clip ``x0_hat`` to ``[-clip_x0, clip_x0]`` (None = off).
      trajectory_stride: if > 0, also return ``x`` after every ``stride`` steps, ``[T / stride, *shape]``.
      known, known_mask: inpainting. ``known`` is shaped like the output; where ``known_mask`` (broadcastable
        to ``shape``) is True the sample is replaced by ``q_sample(known, t-1)`` after every step and equals
        ``known`` exactly at the end.
      noise_transform: optional ``(noise, mask) -> noise`` applied to every Gaussian draw (e.g. zero centre of
        mass); a ``Partial`` or plain function.
      noise_scale: multiplies ``sigma_t`` of every reverse step (not the start noise): 1 is the sampler
        above; values below 1 ("reduced noise", as in RFdiffusion / Genie / Chroma's low temperature) trade
        diversity for samples nearer the modes. A traced scalar: changing it does not recompile.
      unroll: ``lax.scan`` unroll factor.
      self_condition: call ``denoise_fn(..., self_cond=x0_hat)`` with the previous step's (clipped)
        ``x0_hat`` (zeros at the first step), for networks trained with
        :func:`~protgen_jax.diffusion.diffusion_loss`'s ``self_condition``; static.

    Returns:
      Samples ``[*shape]``, or ``(samples, trajectory)`` when ``trajectory_stride > 0``.
    """
    _check(shape, mask, known, known_mask)
    if isinstance(noise_scale, int | float) and not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
    x, traj = _ddpm_jit(
        key, as_partial(denoise_fn), schedule, mask, cond, known,
        None if known_mask is None else jnp.broadcast_to(known_mask, shape),
        as_partial(noise_transform), jnp.asarray(noise_scale, jnp.float32), shape=tuple(shape),
        prediction=prediction, variance=variance, clip_x0=clip_x0,
        trajectory_stride=trajectory_stride, unroll=unroll, self_condition=self_condition,
    )  # fmt: skip
    return x if traj is None else (x, traj)


def ddim_timesteps(T: int, num_steps: int) -> np.ndarray:
    """``num_steps`` evenly spaced timesteps in ``[0, T-1]``, descending, always including 0 and ``T-1``."""
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, {T}], got {num_steps}")
    ts = np.unique(np.round(np.linspace(0, T - 1, num_steps)).astype(np.int32))
    return ts[::-1].copy()


def _ddim(key, denoise_fn, schedule, mask, cond, known, known_mask, noise_transform, eta, *, shape,
          prediction, num_steps, clip_x0, trajectory_stride, unroll, self_condition):  # fmt: skip
    weights = _element_mask(mask, jnp.zeros(shape))
    ts = ddim_timesteps(schedule.num_steps, num_steps)
    prev = np.concatenate([ts[1:], [-1]]).astype(np.int32)
    init_key, start_key, loop_key = jax.random.split(key, 3)
    x = _noise(init_key, shape, weights, noise_transform, mask)
    x = _replace_known(
        schedule, x, int(ts[0]), known, known_mask, start_key, noise_transform, mask, weights
    )
    nd = len(shape)

    def step(carry, inputs):
        x, estimate = carry
        t, t_prev, k = inputs
        noise_key, known_key = jax.random.split(k)
        tb = jnp.full((shape[0],), t)
        out = _predict(denoise_fn, x, tb, mask, cond, estimate, self_condition)
        x0_hat, eps = to_x0_eps(schedule, x, tb, out, prediction)
        if clip_x0 is not None:
            x0_hat = jnp.clip(x0_hat, -clip_x0, clip_x0)
            eps = (x - extract(schedule.sqrt_alpha_bars, tb, nd) * x0_hat) / extract(
                schedule.sqrt_one_minus_alpha_bars, tb, nd
            )
        ab = schedule.alpha_bars[t]
        ab_prev = jnp.where(t_prev >= 0, schedule.alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
        sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
        z = _noise(noise_key, shape, weights, noise_transform, mask)
        direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma**2, 0.0))
        x = (jnp.sqrt(ab_prev) * x0_hat + direction * eps + sigma * z) * weights
        x = _replace_known(
            schedule, x, t_prev, known, known_mask, known_key, noise_transform, mask, weights
        )
        return (x, x0_hat if self_condition else None), None

    inputs = (jnp.asarray(ts), jnp.asarray(prev), jax.random.split(loop_key, len(ts)))
    return _run(step, x, inputs, trajectory_stride, unroll, self_condition)


_ddim_jit = jax.jit(_ddim, static_argnames=_STATIC[:2] + ("num_steps",) + _STATIC[3:])


def ddim_sample(
    key: jax.Array,
    denoise_fn: DenoiseFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    num_steps: int = 50,
    eta: float = 0.0,
    *,
    mask: jax.Array | None = None,
    cond: Any = None,
    prediction: str = "eps",
    clip_x0: float | None = None,
    trajectory_stride: int = 0,
    known: jax.Array | None = None,
    known_mask: jax.Array | None = None,
    noise_transform: NoiseTransform | None = None,
    unroll: int = 1,
    self_condition: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """DDIM sampling over a subsequence of ``num_steps`` timesteps (Song et al. 2021, eq. 12).

    ``x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z`` with
    ``sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)``: ``eta = 0`` is deterministic
    given the start noise, ``eta = 1`` matches DDPM's posterior-variance sampler when ``num_steps = T``.
    ``eta`` is traced (changing it does not recompile). Other arguments as in :func:`ddpm_sample`.
    """
    _check(shape, mask, known, known_mask)
    x, traj = _ddim_jit(
        key, as_partial(denoise_fn), schedule, mask, cond, known,
        None if known_mask is None else jnp.broadcast_to(known_mask, shape),
        as_partial(noise_transform), jnp.float32(eta), shape=tuple(shape), prediction=prediction,
        num_steps=num_steps, clip_x0=clip_x0, trajectory_stride=trajectory_stride, unroll=unroll,
        self_condition=self_condition,
    )  # fmt: skip
    return x if traj is None else (x, traj)
