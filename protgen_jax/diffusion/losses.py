"""Training losses and the variational bound for Gaussian diffusion, one value per example.

``denoise_fn(x_t, t, mask, cond) -> prediction`` is any callable with the networks' signature (for a Flax
module: ``jax.tree_util.Partial(model.apply, params)``). Lecture: section 7 (``L_simple``) and the
"hierarchical VAE" view of diffusion (the full variational bound).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from protgen_jax.diffusion.forward import (
    PREDICTIONS,
    extract,
    q_posterior,
    q_sample,
    regression_target,
    to_x0_eps,
)
from protgen_jax.diffusion.schedules import Schedule

DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array | None, Any], jax.Array]
NoiseTransform = Callable[[jax.Array, jax.Array | None], jax.Array]


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``jax.random.normal(key, shape)`` (float32), drawn as ``[shape[0], prod(shape[1:])]`` and reshaped.

    The values are the same (the generator fills the array in row-major order whatever its rank), but
    on XLA:CPU a draw whose last axis is short, such as ``[B, L, 3]`` coordinates, runs several times
    slower than the flat draw (measured: a T=1000 DDPM sampling of 256 x 128 x 3 took 1.5x the time of
    the same sampling of 256 x 384).
    """
    if len(shape) <= 2:
        return jax.random.normal(key, shape, jnp.float32)
    return jax.random.normal(key, (shape[0], math.prod(shape[1:])), jnp.float32).reshape(shape)


def _element_mask(mask: jax.Array | None, x: jax.Array) -> jax.Array:
    """Broadcast a ``[B, L]`` residue mask (or None) to a float mask shaped like ``x [B, L, ...]``."""
    if mask is None:
        return jnp.ones(x.shape, jnp.float32)
    chex.assert_equal_shape_prefix([mask, x], mask.ndim)
    return jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape).astype(
        jnp.float32
    )


def _per_example_sum(values: jax.Array) -> jax.Array:
    return jnp.sum(values.reshape(values.shape[0], -1), axis=-1)


def noise_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error per example over the unmasked elements: ``||target - pred||^2 / n``.

    This is the lecture's ``L_simple`` when ``target`` is the noise ``eps``; the same function serves x0 and
    v targets.

    Args:
      pred, target: ``[B, ...]``.
      mask: optional ``[B, L]`` bool over the leading non-batch axis (padding excluded from sum and count).

    Returns:
      ``[B]`` float32.
    """
    chex.assert_equal_shape([pred, target])
    weights = _element_mask(mask, pred)
    sq = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)) * weights
    return _per_example_sum(sq) / jnp.maximum(_per_example_sum(weights), 1.0)


def diffusion_loss(
    key: jax.Array,
    denoise_fn: DenoiseFn,
    schedule: Schedule,
    x0: jax.Array,
    mask: jax.Array | None = None,
    cond: Any = None,
    prediction: str = "eps",
    noise_transform: NoiseTransform | None = None,
    *,
    self_condition: float = 0.0,
    x0_weight: float = 0.0,
    x0_max_t: int = 0,
) -> jax.Array:
    """The denoising objective on a batch: draw ``t ~ U{0..T-1}`` and noise, regress the target.

    Steps (lecture, section 7): ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps``; loss ``= ||target -
    denoise_fn(x_t, t)||^2`` averaged over unmasked elements, with target ``eps``, ``x0`` or ``v``.

    Self-conditioning (Chen et al. 2022, "Analog Bits"; used by RFdiffusion and Genie): with probability
    ``self_condition`` per batch, a first pass ``x0_1 = stop_gradient(x0_hat(denoise_fn(x_t, t,
    self_cond=0)))`` is fed back, ``pred = denoise_fn(x_t, t, self_cond=x0_1)``; otherwise ``self_cond =
    0``. The network then learns both to start from nothing and to refine an estimate, which is what the
    sampler gives it (:func:`~protgen_jax.diffusion.ddpm_sample`'s ``self_condition``).

    x0-space term (FrameDiff's auxiliary losses at low noise): ``+ x0_weight * [t < x0_max_t] *
    ||x0_hat - x0||^2`` (masked mean), with ``x0_hat`` derived from the prediction. For eps-prediction it
    equals ``(1 - ab_t) / ab_t * ||eps_hat - eps||^2``, so it adds weight where the noise is moderate and
    little at the very last steps.

    Args:
      key: PRNG key.
      denoise_fn: ``(x_t, t, mask, cond) -> prediction``; with ``self_condition > 0`` it must also take
        the keyword ``self_cond`` (``[*x0.shape]``).
      schedule: noise schedule.
      x0: ``[B, ...]`` clean data (padding already zeroed).
      mask: optional ``[B, L]``.
      cond: passed through to ``denoise_fn``.
      prediction: ``"eps"``, ``"x0"`` or ``"v"``.
      noise_transform: optional ``(noise, mask) -> noise`` (e.g. remove the masked centre of mass so the
        model never sees translations); the target is the transformed noise.
      self_condition: probability in ``[0, 1]`` of the self-conditioned pass (a Python float; 0 = off and
        ``denoise_fn`` is called without ``self_cond``).
      x0_weight, x0_max_t: the x0-space term (off when ``x0_weight == 0``).

    Returns:
      ``[B]`` losses.
    """
    t_key, n_key = jax.random.split(key)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, schedule.num_steps)
    noise = standard_normal(n_key, x0.shape)
    if noise_transform is not None:
        noise = noise_transform(noise, mask)
    noise = noise * _element_mask(mask, x0)
    x_t = q_sample(schedule, x0, t, noise)
    if self_condition > 0:
        zeros = jnp.zeros_like(x_t)

        def first_pass(_):
            first = denoise_fn(x_t, t, mask, cond, self_cond=zeros)
            return jax.lax.stop_gradient(to_x0_eps(schedule, x_t, t, first, prediction)[0])

        use = jax.random.bernoulli(jax.random.fold_in(key, 1), self_condition)
        estimate = jax.lax.cond(use, first_pass, lambda _: zeros, None)
        pred = denoise_fn(x_t, t, mask, cond, self_cond=estimate)
    else:
        pred = denoise_fn(x_t, t, mask, cond)
    loss = noise_mse(pred, regression_target(schedule, x0, t, noise, prediction), mask)
    if x0_weight > 0:
        x0_hat, _ = to_x0_eps(schedule, x_t, t, pred, prediction)
        low = (t < x0_max_t).astype(jnp.float32)
        loss = loss + x0_weight * low * noise_mse(x0_hat, x0, mask)
    return loss


def _two_pass(denoise_fn, schedule, x_t, t, mask=None, cond=None, *, prediction):
    first = denoise_fn(x_t, t, mask, cond, self_cond=jnp.zeros_like(x_t))
    x0_hat, _ = to_x0_eps(schedule, x_t, t, first, prediction)
    return denoise_fn(x_t, t, mask, cond, self_cond=x0_hat)


_TWO_PASS = {kind: functools.partial(_two_pass, prediction=kind) for kind in PREDICTIONS}


def self_conditioned(denoise_fn: DenoiseFn, schedule: Schedule, prediction: str = "eps") -> Partial:
    """A self-conditioned network as an ordinary ``denoise_fn(x_t, t, mask, cond)`` for one-off calls
    (held-out losses, the variational bound): ``denoise_fn(x_t, t, self_cond=x0_hat(denoise_fn(x_t, t,
    self_cond=0)))``, the two passes of training. Samplers carry the previous step's estimate instead.

    Returns:
      A ``Partial`` (params and schedule are its leaves: no recompiles for new params).
    """
    if prediction not in _TWO_PASS:
        raise ValueError(f"unknown prediction kind {prediction!r}; expected one of {PREDICTIONS}")
    fn = denoise_fn if isinstance(denoise_fn, Partial) else Partial(denoise_fn)
    return Partial(_TWO_PASS[prediction], fn, schedule)


def normal_kl(
    mean1: jax.Array, logvar1: jax.Array, mean2: jax.Array, logvar2: jax.Array
) -> jax.Array:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats."""
    return 0.5 * (
        logvar2
        - logvar1
        + jnp.exp(logvar1 - logvar2)
        + jnp.square(mean1 - mean2) * jnp.exp(-logvar2)
        - 1.0
    )


def normal_nll(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise ``-log N(x; mean, e^logvar)`` in nats."""
    return 0.5 * (math.log(2.0 * math.pi) + logvar + jnp.square(x - mean) * jnp.exp(-logvar))


def model_log_variance(schedule: Schedule, t: jax.Array, ndim: int, variance: str) -> jax.Array:
    """log sigma_t^2 of the reverse step: ``"beta"`` (sigma^2 = beta_t) or ``"posterior"`` (clipped)."""
    if variance == "beta":
        return jnp.log(extract(schedule.betas, t, ndim))
    if variance == "posterior":
        return extract(schedule.posterior_log_variance_clipped, t, ndim)
    raise ValueError(f"unknown variance {variance!r}; expected 'beta' or 'posterior'")


class VariationalBound(NamedTuple):
    """Terms of the diffusion variational bound on ``-log p(x_0)``, each ``[B]`` in nats.

    ``total = prior + diffusion + decoder``; ``bits_per_dim = total / (num_dims * ln 2)``.
    """

    total: jax.Array
    prior: jax.Array
    diffusion: jax.Array
    decoder: jax.Array
    bits_per_dim: jax.Array


def variational_bound(
    key: jax.Array,
    denoise_fn: DenoiseFn,
    schedule: Schedule,
    x0: jax.Array,
    mask: jax.Array | None = None,
    cond: Any = None,
    prediction: str = "eps",
    variance: str = "posterior",
) -> VariationalBound:
    """The full diffusion ELBO ("a diffusion model is a hierarchical VAE"), per example.

    ``-log p(x) <= KL(q(x_{T-1}|x) || N(0, I))                                   (prior)
                + sum_{t=1}^{T-1} E_q KL(q(x_{t-1}|x_t, x) || p(x_{t-1}|x_t))    (diffusion)
                + E_q[-log N(x; mu_theta(x_0, 0), sigma_0^2)]                     (decoder)``

    with one noise draw per timestep (all ``T`` terms are evaluated, in one ``lax.scan``). ``sigma_t^2``
    follows ``variance``; the decoder is a continuous Gaussian density (not the discretized decoder used for
    8-bit images), so the bound is on a density and can be negative.

    Args:
      key: PRNG key.
      denoise_fn: ``(x_t, t, mask, cond) -> prediction``.
      schedule: noise schedule.
      x0: ``[B, ...]`` data.
      mask: optional ``[B, L]``; masked elements contribute nothing and are not counted as dimensions.
      cond: passed to ``denoise_fn``.
      prediction: what ``denoise_fn`` predicts (``"eps"``, ``"x0"``, ``"v"``).
      variance: ``"posterior"`` or ``"beta"``.
    """
    x0 = x0.astype(jnp.float32)
    weights = _element_mask(mask, x0)
    batch = x0.shape[0]

    last = jnp.full((batch,), schedule.num_steps - 1)
    ab_last = extract(schedule.alpha_bars, last, x0.ndim)
    prior = _per_example_sum(
        normal_kl(
            jnp.sqrt(ab_last) * x0, jnp.log1p(-ab_last), jnp.zeros_like(x0), jnp.zeros_like(x0)
        )
        * weights
    )

    def term(carry, step):
        t = jnp.full((batch,), step)
        noise = standard_normal(jax.random.fold_in(key, step), x0.shape) * weights
        x_t = q_sample(schedule, x0, t, noise)
        x0_hat, _ = to_x0_eps(schedule, x_t, t, denoise_fn(x_t, t, mask, cond), prediction)
        model_mean, _, _ = q_posterior(schedule, x0_hat, x_t, t)
        logvar = model_log_variance(schedule, t, x0.ndim, variance)
        true_mean, _, true_logvar = q_posterior(schedule, x0, x_t, t)
        kl = normal_kl(true_mean, true_logvar, model_mean, logvar)
        nll = normal_nll(x0, model_mean, logvar)
        value = _per_example_sum(jnp.where(step == 0, nll, kl) * weights)
        return carry, value

    _, values = jax.lax.scan(term, None, jnp.arange(schedule.num_steps))
    decoder, diffusion = values[0], jnp.sum(values[1:], axis=0)
    total = prior + diffusion + decoder
    dims = _per_example_sum(weights)
    return VariationalBound(
        total=total,
        prior=prior,
        diffusion=diffusion,
        decoder=decoder,
        bits_per_dim=total / (dims * math.log(2.0)),
    )
