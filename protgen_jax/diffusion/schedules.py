"""Noise schedules for Gaussian diffusion, computed in float64 NumPy and stored as float32.

Timesteps are integers ``t in {0, ..., T-1}`` with ``alpha_bars[t] = prod_{s<=t} (1 - betas[s])`` (the
lecture's indexing), so the data itself sits "before" ``t = 0`` and ``alpha_bars[-1]`` is close to 0.

Lecture: section 6 (the linear DDPM schedule, T = 1000, betas from 1e-4 to 0.02, and the closed form
``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial


class Schedule(NamedTuple):
    """Every per-step quantity the forward process, the posterior and the samplers need; each ``[T]``.

    The posterior ``q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, posterior_variance_t)`` with
    ``coef1_t = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)``,
    ``coef2_t = (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)`` and
    ``posterior_variance_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)`` (``alpha_bar_{-1} = 1``).
    ``posterior_variance_0 = 0``, so its log is clipped to ``log posterior_variance_1`` (Nichol & Dhariwal).
    """

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array
    alpha_bars_prev: jax.Array
    sqrt_alpha_bars: jax.Array
    sqrt_one_minus_alpha_bars: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def num_steps(self) -> int:
        """``T``, static under ``jit`` (it is a shape)."""
        return self.betas.shape[0]


def schedule_from_betas(betas: np.ndarray) -> Schedule:
    """Build a :class:`Schedule` from ``betas [T]``, computing every derived quantity in float64."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 2:
        raise ValueError(f"betas must be a 1-D array of length >= 2, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError("betas must lie strictly between 0 and 1")
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])
    posterior_variance = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
    posterior_log_variance_clipped = np.log(
        np.concatenate([[posterior_variance[1]], posterior_variance[1:]])
    )
    values = dict(
        betas=betas,
        alphas=alphas,
        alpha_bars=alpha_bars,
        alpha_bars_prev=alpha_bars_prev,
        sqrt_alpha_bars=np.sqrt(alpha_bars),
        sqrt_one_minus_alpha_bars=np.sqrt(1.0 - alpha_bars),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=posterior_log_variance_clipped,
        posterior_mean_coef1=betas * np.sqrt(alpha_bars_prev) / (1.0 - alpha_bars),
        posterior_mean_coef2=(1.0 - alpha_bars_prev) * np.sqrt(alphas) / (1.0 - alpha_bars),
    )
    return Schedule(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in values.items()})


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Ho et al. (2020) linear schedule: ``betas = linspace(beta_start, beta_end, T)``.

    The defaults are the lecture's (T = 1000, 1e-4 to 0.02). For other ``T`` the endpoints are kept as given;
    callers that want the same total noise at smaller ``T`` should scale them by ``1000 / T``.
    """
    return schedule_from_betas(np.linspace(beta_start, beta_end, T, dtype=np.float64))


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """``f(u) = cos^2(((u + s) / (1 + s)) * pi / 2)`` for ``u in [0, 1]`` (Nichol & Dhariwal 2021, eq. 17)."""
    return np.cos((u + s) / (1.0 + s) * np.pi / 2.0) ** 2


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal (2021) cosine schedule.

    ``alpha_bar(u) = f(u) / f(0)`` with :func:`cosine_alpha_bar`; ``beta_t = 1 - alpha_bar((t+1)/T) /
    alpha_bar(t/T)`` clipped at ``max_beta`` (0.999) to avoid the singularity at ``u = 1``.
    """
    u = np.arange(T + 1, dtype=np.float64) / T
    f = cosine_alpha_bar(u, s)
    betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
    return schedule_from_betas(betas)


def get_schedule(name: str, T: int = 1000) -> Schedule:
    """Schedule by name (``"linear"`` or ``"cosine"``), for configs and the command line."""
    if name == "linear":
        return linear_schedule(T)
    if name == "cosine":
        return cosine_schedule(T)
    raise ValueError(f"unknown schedule {name!r}; expected 'linear' or 'cosine'")


def sqrt_snr(schedule: Schedule) -> jax.Array:
    """``sqrt(SNR_t) = sqrt(alpha_bar_t / (1 - alpha_bar_t))`` for every step: ``[T]`` float32.

    Computed in float64 NumPy from the stored ``alpha_bars``, so ``schedule`` must be concrete (build the
    table outside ``jit``, or close over the schedule rather than passing it as a traced argument).
    """
    ab = np.asarray(schedule.alpha_bars, np.float64)
    return jnp.asarray(np.sqrt(ab / (1.0 - ab)), jnp.float32)


def _apply_with_noise_level(
    apply_fn: Callable[..., jax.Array],
    table: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    mask: jax.Array | None = None,
    cond: Any = None,
    **kwargs: Any,
) -> jax.Array:
    return apply_fn(x_t, t, mask, cond, noise_level=table[t], **kwargs)


def with_noise_level(apply_fn: Callable[..., jax.Array], schedule: Schedule) -> Partial:
    """Turn a network that takes its noise level as an input into a ``denoise_fn(x_t, t, mask, cond)``.

        denoise_fn(x_t, t, mask, cond) = apply_fn(x_t, t, mask, cond, noise_level=sqrt_snr(schedule)[t])

    (other keywords, such as ``self_cond``, are passed through)

    with ``t [B]`` integer timesteps, so ``noise_level [B]`` float32 is ``sqrt(alpha_bar_t / (1 -
    alpha_bar_t))``. The schedule is the loss's or sampler's business; the network only sees the level.

    Args:
      apply_fn: ``(x_t, t, mask, cond, *, noise_level) -> prediction``, e.g.
        ``Partial(BackboneDenoiser().apply, params)``.
      schedule: a concrete :class:`Schedule` (see :func:`sqrt_snr`).

    Returns:
      A ``Partial`` (a pytree whose leaves are ``apply_fn``'s leaves and the ``[T]`` table), so jitted
      samplers and losses take it as data and do not recompile for new params.
    """
    fn = apply_fn if isinstance(apply_fn, Partial) else Partial(apply_fn)
    return Partial(_apply_with_noise_level, fn, sqrt_snr(schedule))
