"""Classifier guidance and classifier-free guidance as ``denoise_fn`` transformers.

Each function takes a ``denoise_fn(x_t, t, mask, cond) -> eps`` and returns another one (a
``jax.tree_util.Partial``, so samplers do not recompile when params or the guidance scale change).
Both assume eps-prediction. Lecture: section 11 (conditional generation).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from protgen_jax.diffusion.forward import extract
from protgen_jax.diffusion.losses import DenoiseFn
from protgen_jax.diffusion.samplers import as_partial
from protgen_jax.diffusion.schedules import Schedule


def _cfg(denoise_fn, scale, null_cond, x_t, t, mask, cond):
    both = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731
    null = jnp.broadcast_to(null_cond, jnp.shape(cond)).astype(jnp.asarray(cond).dtype)
    eps = denoise_fn(
        both(x_t, x_t), both(t, t), None if mask is None else both(mask, mask), both(cond, null)
    )
    eps_cond, eps_uncond = jnp.split(eps, 2, axis=0)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def classifier_free_guidance(denoise_fn: DenoiseFn, scale: float, null_cond: Any) -> Partial:
    """Ho & Salimans (2022): ``eps = eps(x_t, t, null) + s * (eps(x_t, t, c) - eps(x_t, t, null))``.

    The conditional and unconditional passes run as one batch of ``2B``. ``s = 1`` is plain conditional
    sampling, ``s = 0`` unconditional, ``s > 1`` amplifies the condition. ``cond`` must be an array
    (e.g. ``[B]`` class labels); ``null_cond`` is the label the model was trained with when the condition was
    dropped (a scalar broadcast to ``cond``'s shape).
    """
    return Partial(_cfg, as_partial(denoise_fn), jnp.float32(scale), jnp.asarray(null_cond))


def _classifier_guided(
    denoise_fn, log_prob_fn, sqrt_one_minus_ab, scale, target, x_t, t, mask, cond
):
    def total_log_prob(x):
        return jnp.sum(log_prob_fn(x, t, mask, target))

    grad = jax.grad(total_log_prob)(x_t)
    eps = denoise_fn(x_t, t, mask, cond)
    return eps - scale * extract(sqrt_one_minus_ab, t, x_t.ndim) * grad


def classifier_guidance(
    denoise_fn: DenoiseFn,
    log_prob_fn: Any,
    schedule: Schedule,
    target: jax.Array,
    scale: float,
) -> Partial:
    """Dhariwal & Nichol (2021): ``eps_hat = eps - s * sqrt(1 - ab_t) * grad_x log p(y | x_t)``.

    Args:
      denoise_fn: the unconditional ``(x_t, t, mask, cond) -> eps``.
      log_prob_fn: ``(x_t, t, mask, y) -> [B]`` log-probability of class ``y`` under a classifier trained on
        noisy inputs (the lecture's ``log_softmax(classifier(x_t, t))[:, y]``).
      schedule: the schedule the model was trained with.
      target: ``[B]`` target classes ``y``.
      scale: guidance scale ``s``.
    """
    return Partial(
        _classifier_guided,
        as_partial(denoise_fn),
        as_partial(log_prob_fn),
        schedule.sqrt_one_minus_alpha_bars,
        jnp.float32(scale),
        jnp.asarray(target),
    )
