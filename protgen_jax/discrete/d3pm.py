"""D3PM: denoising diffusion over token sequences (Austin et al. 2021, "Structured Denoising Diffusion
Models in Discrete State-Spaces").

Conventions (0-indexed like the rest of protgen_jax; ``T`` steps, ``K`` token classes):

- ``Q_t = q_onestep[t]`` for ``t in {0..T-1}``: ``Q_t[i, j] = q(x_t = j | x_{t-1} = i)``, where the
  clean data ``x0`` plays the role of ``x_{-1}``. So ``x_t`` is the data after ``t + 1`` corruptions.
- ``Qbar_t = q_cumulative[t] = Q_0 Q_1 ... Q_t`` and ``q(x_t | x0) = Cat(row x0 of Qbar_t)``. Before any
  step ``Qbar_{-1} = I``; the first cumulative matrix is the first one-step matrix, ``Qbar_0 = Q_0``.
- Posterior, for ``t >= 1`` (Austin et al. eq. 3)::

      q(x_{t-1} | x_t, x0) ∝ Q_t[x_{t-1}, x_t] * Qbar_{t-1}[x0, x_{t-1}]

  and at ``t = 0`` the "previous state" is the data itself, so the posterior is the x0 distribution.
- Model (x0-parameterization, Austin et al. eq. 4): ``logits_fn(x_t [B, L] int32, t [B] int32,
  mask [B, L] bool, cond) -> logits [B, L, K]`` of ``p~(x0 | x_t)``, and
  ``p(x_{t-1} | x_t) ∝ sum_x0 q(x_{t-1}, x_t | x0) p~(x0 | x_t)``: the posterior above with the predicted
  distribution in place of one-hot x0. At ``t = 0`` this is ``p~`` itself.

Token padding: losses take ``mask [B, L]`` (True = residue) and ignore whatever token sits at padding;
``q_probs`` / ``q_sample`` need tokens in ``[0, K)`` everywhere (``jnp.where(mask, x0, 0)``). Samplers
write ``alphabet.PAD`` at padding. This module imports neither flax nor orbax.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import alphabet
from protgen_jax.diffusion.samplers import as_partial
from protgen_jax.vae import token_log_probs

LogitsFn = Callable[..., jax.Array]

# Probabilities below this are treated as this when taking logs (log ~= -69); exact zeros of the
# absorbing process stay effectively zero after normalization.
_PROB_FLOOR = 1e-30


class DiscreteSchedule(NamedTuple):
    """Transition matrices of a discrete diffusion, stored float32 (computed in float64 NumPy).

    Fields: ``betas [T]``; ``q_onestep [T, K, K]`` with ``q_onestep[t] = Q_t``; ``q_cumulative [T, K, K]``
    with ``q_cumulative[t] = Q_0 ... Q_t``; ``stationary [K]``, the prior ``p(x_{T-1})`` the sampler
    starts from. Every row of the matrices sums to 1.
    """

    betas: jax.Array
    q_onestep: jax.Array
    q_cumulative: jax.Array
    stationary: jax.Array

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps (static)."""
        return self.q_onestep.shape[0]

    @property
    def num_classes(self) -> int:
        """K, the number of token classes (static)."""
        return self.q_onestep.shape[-1]


def _safe_log(probs: jax.Array) -> jax.Array:
    return jnp.log(jnp.maximum(probs, _PROB_FLOOR))


# ----------------------------------------------------------------------------- beta schedules


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule of Hoogeboom et al. 2021, used by D3PM for uniform noise. float64 [T].

    ``abar(u) = cos((u + s) / (1 + s) * pi / 2)`` for ``u = t / T`` (no square, as in D3PM), and
    ``beta_t = min(1 - abar((t+1)/T) / abar(t/T), max_beta)``. For uniform transitions ``abar`` is the
    probability of keeping the token untouched, which falls to ~0 at t = T-1.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    abar = np.cos((u + s) / (1.0 + s) * np.pi / 2.0)
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def absorbing_betas(num_steps: int) -> np.ndarray:
    """``beta_t = 1 / (T - t)`` for t = 0..T-1 (1/T, 1/(T-1), ..., 1). float64 [T].

    D3PM's absorbing schedule (Sohl-Dickstein et al. 2015; Austin et al. 2021 sec. 4): the
    probability that a token has been absorbed after step t is ``1 - prod_{s<=t}(1 - beta_s) = (t+1)/T``,
    linear in t, and ``beta_{T-1} = 1`` so ``Qbar_{T-1}`` sends every token to MASK exactly.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return 1.0 / (num_steps - np.arange(num_steps, dtype=np.float64))


# ------------------------------------------------------------------------- transition matrices


def _check_betas(betas: np.ndarray) -> np.ndarray:
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0 or np.any(betas < 0) or np.any(betas > 1):
        raise ValueError(f"betas must be a non-empty 1-D array in [0, 1], got shape {betas.shape}")
    return betas


def _to_schedule(betas, q_onestep, q_cumulative, stationary) -> DiscreteSchedule:
    arrays = (betas, q_onestep, q_cumulative, stationary)
    return DiscreteSchedule(*(jnp.asarray(np.asarray(a, np.float64), jnp.float32) for a in arrays))


def uniform_transitions(betas: np.ndarray, K: int = alphabet.K_AA) -> DiscreteSchedule:
    """Uniform noise: ``Q_t = (1 - beta_t) I + beta_t / K 11^T``.

    Closed form ``Qbar_t = abar_t I + (1 - abar_t) / K 11^T`` with ``abar_t = prod_{s<=t} (1 - beta_s)``
    (the matrices commute). Stationary distribution: uniform over the K classes.
    """
    betas = _check_betas(betas)
    eye, uniform = np.eye(K), np.full((K, K), 1.0 / K)
    abar = np.cumprod(1.0 - betas)
    q_onestep = (1.0 - betas)[:, None, None] * eye + betas[:, None, None] * uniform
    q_cumulative = abar[:, None, None] * eye + (1.0 - abar)[:, None, None] * uniform
    return _to_schedule(betas, q_onestep, q_cumulative, np.full(K, 1.0 / K))


def absorbing_transitions(
    betas: np.ndarray, K: int = alphabet.K_ABSORBING, mask_index: int = alphabet.MASK
) -> DiscreteSchedule:
    """Absorbing (mask) noise: ``Q_t = (1 - beta_t) I + beta_t 1 e_m^T`` (every row leaks to MASK).

    Closed form ``Qbar_t = abar_t I + (1 - abar_t) 1 e_m^T``; the mask row is ``e_m`` for all t.
    Stationary distribution: all mass on ``mask_index``. ``K`` includes the mask state.
    """
    betas = _check_betas(betas)
    if not 0 <= mask_index < K:
        raise ValueError(f"mask_index {mask_index} outside 0..{K - 1}")
    eye = np.eye(K)
    to_mask = np.zeros((K, K))
    to_mask[:, mask_index] = 1.0
    abar = np.cumprod(1.0 - betas)
    q_onestep = (1.0 - betas)[:, None, None] * eye + betas[:, None, None] * to_mask
    q_cumulative = abar[:, None, None] * eye + (1.0 - abar)[:, None, None] * to_mask
    return _to_schedule(betas, q_onestep, q_cumulative, eye[mask_index])


def schedule_from_onestep(q_onestep: np.ndarray, stationary: np.ndarray) -> DiscreteSchedule:
    """Any row-stochastic ``Q_t [T, K, K]`` -> schedule, ``Qbar_t = Q_0 ... Q_t`` by explicit products.

    The slow path (float64 matrix products) for structured noise such as BLOSUM-shaped transitions;
    ``betas`` is filled with ``1 - mean(diag(Q_t))``, for reference only.
    """
    q = np.asarray(q_onestep, dtype=np.float64)
    if q.ndim != 3 or q.shape[1] != q.shape[2]:
        raise ValueError(f"q_onestep must be [T, K, K], got {q.shape}")
    if np.any(q < 0) or not np.allclose(q.sum(-1), 1.0, atol=1e-6):
        raise ValueError("rows of q_onestep must be probability vectors")
    cumulative = np.empty_like(q)
    running = np.eye(q.shape[1])
    for t in range(q.shape[0]):
        running = running @ q[t]
        cumulative[t] = running
    betas = 1.0 - np.diagonal(q, axis1=1, axis2=2).mean(-1)
    return _to_schedule(betas, q, cumulative, stationary)


# ------------------------------------------------------------------------ forward process


def q_probs(schedule: DiscreteSchedule, x0: jax.Array, t: jax.Array) -> jax.Array:
    """``q(x_t | x0)`` = row ``x0`` of ``Qbar_t``. x0 [B, L] int in [0, K), t [B] int -> [B, L, K]."""
    chex.assert_rank(x0, 2)
    chex.assert_shape(t, (x0.shape[0],))
    return schedule.q_cumulative[t[:, None], x0]


def q_sample(
    schedule: DiscreteSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
    """Draw ``x_t ~ q(x_t | x0)`` by Gumbel-max, deterministic in ``noise``.

    ``x_t = argmax_k(log q(x_t = k | x0) + g_k)``, ``g = -log(-log(u))`` with ``noise = u`` uniforms in
    [0, 1) of shape [B, L, K]. Returns int32 [B, L].
    """
    probs = q_probs(schedule, x0, t)
    chex.assert_equal_shape([probs, noise])
    finfo = jnp.finfo(jnp.float32)
    u = jnp.clip(noise.astype(jnp.float32), finfo.tiny, 1.0 - finfo.eps)
    gumbel = -jnp.log(-jnp.log(u))
    return jnp.argmax(_safe_log(probs) + gumbel, axis=-1).astype(jnp.int32)


def q_sample_key(
    key: jax.Array, schedule: DiscreteSchedule, x0: jax.Array, t: jax.Array
) -> jax.Array:
    """``q_sample`` with uniforms drawn from ``key``. x0 [B, L], t [B] -> x_t int32 [B, L]."""
    noise = jax.random.uniform(key, x0.shape + (schedule.num_classes,))
    return q_sample(schedule, x0, t, noise)


def q_posterior_logits(
    schedule: DiscreteSchedule, x_start: jax.Array, x_t: jax.Array, t: jax.Array
) -> jax.Array:
    """Logits of ``q(x_{t-1} | x_t, x0)`` [B, L, K] (unnormalized; apply log_softmax for log-probs).

    ``log Q_t[:, x_t] + log(p(x0) @ Qbar_{t-1})`` for t >= 1, where ``x_start`` is either int tokens
    [B, L] (one-hot ``p(x0)``) or float logits [B, L, K] of a distribution over x0 (pass probabilities
    as their log). At t = 0 it returns the x0 distribution itself: ``log_softmax(x_start)`` for logits,
    log one-hot (floored at log 1e-30) for tokens. The two factors are combined as a sum of logs; the
    mixture over x0 is a matrix product of probabilities in [0, 1] at full float32 precision, whose
    tiny entries are floored at 1e-30 before the log. x_t [B, L] int, t [B] int.
    """
    chex.assert_rank(x_t, 2)
    batch, length = x_t.shape
    num_classes = schedule.num_classes
    chex.assert_shape(t, (batch,))
    t_prev = jnp.maximum(t - 1, 0)
    if jnp.issubdtype(x_start.dtype, jnp.integer):
        chex.assert_shape(x_start, (batch, length))
        x0_logprobs = _safe_log(jax.nn.one_hot(x_start, num_classes, dtype=jnp.float32))
        from_x0 = schedule.q_cumulative[t_prev[:, None], x_start]
    else:
        chex.assert_shape(x_start, (batch, length, num_classes))
        x0_logprobs = jax.nn.log_softmax(x_start.astype(jnp.float32), axis=-1)
        from_x0 = jnp.einsum(
            "blj,bjk->blk",
            jnp.exp(x0_logprobs),
            schedule.q_cumulative[t_prev],
            precision=jax.lax.Precision.HIGHEST,
        )
    # to_x_t[b, l, k] = Q_t[k, x_t[b, l]]: the column of Q_t that leads into the observed x_t.
    to_x_t = schedule.q_onestep[t[:, None], :, x_t]
    logits = _safe_log(to_x_t) + _safe_log(from_x0)
    chex.assert_shape(logits, (batch, length, num_classes))
    return jnp.where((t == 0)[:, None, None], x0_logprobs, logits)


# ------------------------------------------------------------------------------ losses


def _categorical_kl(logits_q: jax.Array, logits_p: jax.Array) -> jax.Array:
    """``sum_k q_k (log q_k - log p_k)`` over the last axis."""
    log_q = jax.nn.log_softmax(logits_q, axis=-1)
    log_p = jax.nn.log_softmax(logits_p, axis=-1)
    return jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)


def _token_nll(logits: jax.Array, x0: jax.Array) -> jax.Array:
    """``-log softmax(logits)[x0]``: logits [B, L, K], x0 [B, L] -> [B, L]."""
    return -token_log_probs(logits, x0)


def _vb_terms(schedule, model_logits, x0, x_t, t) -> jax.Array:
    """Per-token bound term [B, L]: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)), or -log p(x0|x_0) at t=0."""
    true_logits = q_posterior_logits(schedule, x0, x_t, t)
    pred_logits = q_posterior_logits(schedule, model_logits.astype(jnp.float32), x_t, t)
    kl = _categorical_kl(true_logits, pred_logits)
    return jnp.where((t == 0)[:, None], _token_nll(model_logits, x0), kl)


def _masked_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(mask, values, 0.0), axis=-1)


def reverse_logits(
    schedule: DiscreteSchedule,
    logits_fn: LogitsFn,
    x_t: jax.Array,
    t: jax.Array,
    mask: jax.Array,
    cond: Any = None,
) -> jax.Array:
    """Logits of the model's reverse step ``p(x_{t-1} | x_t)`` [B, L, K] (x0-parameterization).

    ``q_posterior_logits(schedule, logits_fn(x_t, t, mask, cond), x_t, t)``; at t = 0 the model's x0
    logits. x_t [B, L] int, t [B] int, mask [B, L] bool.
    """
    model_logits = logits_fn(x_t, t, mask, cond)
    chex.assert_shape(model_logits, x_t.shape + (schedule.num_classes,))
    return q_posterior_logits(schedule, model_logits.astype(jnp.float32), x_t, t)


def hybrid_loss(
    schedule: DiscreteSchedule,
    logits_fn: LogitsFn,
    x0: jax.Array,
    t: jax.Array,
    x_t: jax.Array,
    mask: jax.Array,
    hybrid_lambda: float = 0.01,
    cond: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """D3PM hybrid loss ``L_vb(t) + lambda * L_ce`` (Austin et al. eq. 5), per example, in nats.

    ``L_vb(t) = sum_l KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t))`` for t >= 1 and
    ``-sum_l log p~(x0 | x_0)`` at t = 0; ``L_ce = -sum_l log p~(x0 | x_t)``, the cross-entropy of the
    predicted x0. Sums run over residues (``mask``); the caller draws ``t ~ U{0..T-1}`` and
    ``x_t = q_sample(...)`` and reduces over the batch (``T * L_vb`` is the unbiased bound estimate).
    x0, x_t [B, L] int; t [B] int; mask [B, L] bool. Returns ``loss [B]`` and
    ``aux = {"vb": [B], "ce": [B], "num_tokens": [B]}``.
    """
    chex.assert_rank(x0, 2)
    chex.assert_equal_shape([x0, x_t, mask])
    chex.assert_shape(t, (x0.shape[0],))
    model_logits = logits_fn(x_t, t, mask, cond)
    chex.assert_shape(model_logits, x0.shape + (schedule.num_classes,))
    x0 = jnp.where(mask, x0, 0)
    x_t_safe = jnp.where(mask, x_t, 0)
    vb = _masked_sum(_vb_terms(schedule, model_logits, x0, x_t_safe, t), mask)
    ce = _masked_sum(_token_nll(model_logits, x0), mask)
    aux = {"vb": vb, "ce": ce, "num_tokens": jnp.sum(mask, axis=-1).astype(jnp.float32)}
    return vb + hybrid_lambda * ce, aux


def prior_kl(schedule: DiscreteSchedule, x0: jax.Array, mask: jax.Array) -> jax.Array:
    """``sum_l KL(q(x_{T-1} | x0) || stationary)`` per example [B], nats. x0 [B, L], mask [B, L]."""
    chex.assert_equal_shape([x0, mask])
    x0 = jnp.where(mask, x0, 0)
    last = jnp.full((x0.shape[0],), schedule.num_steps - 1, dtype=jnp.int32)
    probs = q_probs(schedule, x0, last)
    log_ratio = _safe_log(probs) - _safe_log(schedule.stationary)[None, None, :]
    return _masked_sum(jnp.sum(probs * log_ratio, axis=-1), mask)


@jax.jit
def _vlb_nll_jit(key, schedule, logits_fn, x0, mask, cond):
    batch = x0.shape[0]
    x0 = jnp.where(mask, x0, 0)

    def step(total, inputs):
        step_t, step_key = inputs
        t = jnp.full((batch,), step_t, dtype=jnp.int32)
        x_t = q_sample_key(step_key, schedule, x0, t)
        model_logits = logits_fn(x_t, t, mask, cond)
        return total + _masked_sum(_vb_terms(schedule, model_logits, x0, x_t, t), mask), None

    steps = jnp.arange(schedule.num_steps, dtype=jnp.int32)
    keys = jax.random.split(key, schedule.num_steps)
    total, _ = jax.lax.scan(step, jnp.zeros((batch,), jnp.float32), (steps, keys))
    return total + prior_kl(schedule, x0, mask)


def vlb_nll(
    key: jax.Array,
    schedule: DiscreteSchedule,
    logits_fn: LogitsFn,
    x0: jax.Array,
    mask: jax.Array,
    cond: Any = None,
) -> jax.Array:
    """Variational bound on ``-log p(x0)`` per example [B], in nats (Austin et al. eq. 1).

    ``prior_kl + sum_{t=1}^{T-1} E_{x_t} KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) + E_{x_0}[-log p(x0|x_0)]``:
    every one of the T terms is computed (one ``lax.scan`` over t, T model calls), each expectation
    estimated with one draw ``x_t ~ q(x_t | x0)``, so the result is an unbiased estimate of the bound.
    Per-token perplexity: ``exp(sum(nll) / sum(mask))``. x0 [B, L] int, mask [B, L] bool.
    """
    chex.assert_rank(x0, 2)
    chex.assert_equal_shape([x0, mask])
    return _vlb_nll_jit(key, schedule, as_partial(logits_fn), x0, mask, cond)


# ------------------------------------------------------------------------------ sampling


@functools.partial(jax.jit, static_argnames=("shape", "unroll"))
def _d3pm_sample_jit(key, logits_fn, schedule, mask, cond, known, known_mask, shape, unroll):
    batch, length = shape
    mask = jnp.ones(shape, bool) if mask is None else mask
    known_mask = jnp.zeros(shape, bool) if known_mask is None else known_mask
    known = jnp.zeros(shape, jnp.int32) if known is None else known
    known = known.astype(jnp.int32)
    init_key, steps_key = jax.random.split(key)

    prior = jnp.broadcast_to(_safe_log(schedule.stationary), shape + (schedule.num_classes,))
    x_init = jax.random.categorical(init_key, prior, axis=-1).astype(jnp.int32)
    x_init = jnp.where(known_mask, known, x_init)

    def step(x_t, inputs):
        step_t, step_key = inputs
        t = jnp.full((batch,), step_t, dtype=jnp.int32)
        logits = reverse_logits(schedule, logits_fn, x_t, t, mask, cond)
        x_prev = jax.random.categorical(step_key, logits, axis=-1).astype(jnp.int32)
        return jnp.where(known_mask, known, x_prev), None

    steps = jnp.arange(schedule.num_steps - 1, -1, -1, dtype=jnp.int32)
    keys = jax.random.split(steps_key, schedule.num_steps)
    x0, _ = jax.lax.scan(step, x_init, (steps, keys), unroll=unroll)
    return jnp.where(mask, x0, alphabet.PAD)


def d3pm_sample(
    key: jax.Array,
    logits_fn: LogitsFn,
    schedule: DiscreteSchedule,
    shape: tuple[int, int],
    *,
    mask: jax.Array | None = None,
    cond: Any = None,
    known: jax.Array | None = None,
    known_mask: jax.Array | None = None,
    unroll: int = 1,
) -> jax.Array:
    """Ancestral sampling ``x_{T-1} ~ stationary``, ``x_{t-1} ~ p(x_{t-1} | x_t)`` down to x0.

    One jitted ``lax.scan`` over t = T-1, ..., 0 (T model calls; per-step keys from
    ``jax.random.split``); each step draws every position by Gumbel-max from ``reverse_logits``; the
    t = 0 step draws from the model's x0 distribution. Inpainting: where ``known_mask`` [B, L] is True,
    the state holds ``known`` [B, L] (clean) at every step and in the output. Padding
    (``mask`` False, default all residues) is ``alphabet.PAD`` in the output. Pass the network as
    ``jax.tree_util.Partial(apply_fn, params)`` so new params reuse the compiled sampler.
    ``shape = (B, L)`` is static. Returns int32 tokens [B, L].
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2:
        raise ValueError(f"shape must be (B, L), got {shape}")
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask must be given together")
    for array in (mask, known, known_mask):
        if array is not None:
            chex.assert_shape(array, shape)
    return _d3pm_sample_jit(
        key, as_partial(logits_fn), schedule, mask, cond, known, known_mask, shape, unroll
    )
