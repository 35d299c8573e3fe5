"""The forward process q(x_t | x_0), its posterior q(x_{t-1} | x_t, x_0), and prediction conversions.

All functions are deterministic: noise is an argument. ``x`` has shape ``[B, ...]`` (e.g. ``[B, L, 3]``
coordinates or ``[B, C]`` vectors) and ``t`` is ``[B]`` int. Lecture: sections 6 and 7.
"""

from __future__ import annotations

import chex
import jax

from protgen_jax.diffusion.schedules import Schedule


def extract(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """Gather ``values[t]`` (``[B]``) and reshape to ``[B, 1, ..., 1]`` for broadcasting against rank ``ndim``."""
    chex.assert_rank(t, 1)
    return values[t].reshape(t.shape + (1,) * (ndim - 1))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Sample ``x_t ~ q(x_t | x_0)`` in closed form: ``sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise``.

    Args:
      schedule: the noise schedule.
      x0: ``[B, ...]`` clean data.
      t: ``[B]`` int timesteps.
      noise: standard-normal noise shaped like ``x0``.
    """
    chex.assert_equal_shape([x0, noise])
    return (
        extract(schedule.sqrt_alpha_bars, t, x0.ndim) * x0
        + extract(schedule.sqrt_one_minus_alpha_bars, t, x0.ndim) * noise
    )


def q_mean_variance(schedule: Schedule, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean ``[B, ...]`` and variance ``[B, 1, ...]`` of ``q(x_t | x_0)``."""
    return (
        extract(schedule.sqrt_alpha_bars, t, x0.ndim) * x0,
        1.0 - extract(schedule.alpha_bars, t, x0.ndim),
    )


def q_posterior(
    schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The Gaussian posterior ``q(x_{t-1} | x_t, x_0)`` (Ho et al. 2020, eqs. 6-7).

    Returns:
      ``(mean [B, ...], variance [B, 1, ...], clipped log-variance [B, 1, ...])``. At ``t = 0`` the posterior
      is the point mass at ``x_0`` (variance 0).
    """
    chex.assert_equal_shape([x0, x_t])
    mean = (
        extract(schedule.posterior_mean_coef1, t, x_t.ndim) * x0
        + extract(schedule.posterior_mean_coef2, t, x_t.ndim) * x_t
    )
    return (
        mean,
        extract(schedule.posterior_variance, t, x_t.ndim),
        extract(schedule.posterior_log_variance_clipped, t, x_t.ndim),
    )


def x0_from_eps(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """``x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)``."""
    return (x_t - extract(schedule.sqrt_one_minus_alpha_bars, t, x_t.ndim) * eps) / extract(
        schedule.sqrt_alpha_bars, t, x_t.ndim
    )


def eps_from_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
    """``eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)``."""
    return (x_t - extract(schedule.sqrt_alpha_bars, t, x_t.ndim) * x0) / extract(
        schedule.sqrt_one_minus_alpha_bars, t, x_t.ndim
    )


def v_from_x0_eps(schedule: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """Velocity target (Salimans & Ho 2022): ``v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0``."""
    return (
        extract(schedule.sqrt_alpha_bars, t, x0.ndim) * eps
        - extract(schedule.sqrt_one_minus_alpha_bars, t, x0.ndim) * x0
    )


def x0_from_v(schedule: Schedule, x_t: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """``x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v``."""
    return (
        extract(schedule.sqrt_alpha_bars, t, x_t.ndim) * x_t
        - extract(schedule.sqrt_one_minus_alpha_bars, t, x_t.ndim) * v
    )


def eps_from_v(schedule: Schedule, x_t: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """``eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v``."""
    return (
        extract(schedule.sqrt_one_minus_alpha_bars, t, x_t.ndim) * x_t
        + extract(schedule.sqrt_alpha_bars, t, x_t.ndim) * v
    )


def score_from_eps(schedule: Schedule, t: jax.Array, eps: jax.Array) -> jax.Array:
    """Score of the noised marginal: ``grad_x log q_t(x_t) = -eps / sqrt(1 - alpha_bar_t)``."""
    return -eps / extract(schedule.sqrt_one_minus_alpha_bars, t, eps.ndim)


def eps_from_score(schedule: Schedule, t: jax.Array, score: jax.Array) -> jax.Array:
    """Inverse of :func:`score_from_eps`: ``eps = -sqrt(1 - alpha_bar_t) * score``."""
    return -extract(schedule.sqrt_one_minus_alpha_bars, t, score.ndim) * score


PREDICTIONS = ("eps", "x0", "v")


def to_x0_eps(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, prediction: jax.Array, kind: str
) -> tuple[jax.Array, jax.Array]:
    """Convert a network output of ``kind`` (``"eps"``, ``"x0"`` or ``"v"``) into ``(x0_hat, eps_hat)``."""
    if kind == "eps":
        return x0_from_eps(schedule, x_t, t, prediction), prediction
    if kind == "x0":
        return prediction, eps_from_x0(schedule, x_t, t, prediction)
    if kind == "v":
        return x0_from_v(schedule, x_t, t, prediction), eps_from_v(schedule, x_t, t, prediction)
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")


def regression_target(
    schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array, kind: str
) -> jax.Array:
    """What a network of prediction ``kind`` should output for ``x_t = q_sample(x0, t, noise)``."""
    if kind == "eps":
        return noise
    if kind == "x0":
        return x0
    if kind == "v":
        return v_from_x0_eps(schedule, x0, t, noise)
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")
