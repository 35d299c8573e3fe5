"""Continuous relaxation of sequences: Gaussian diffusion on fixed token embeddings.

The lecture's first strategy for discrete data (Li et al. 2022, "Diffusion-LM"; Dieleman et al. 2022,
"CDCD"). Each residue ``w_l`` maps to a fixed embedding ``e_l = E[w_l]`` (``E [K, D]``), the foundation's
Gaussian process noises it, ``z_t = sqrt(ab_t) e + sqrt(1 - ab_t) eps``, and the network predicts token
logits ``f(z_t, t) [B, L, K]`` from which

    x0_hat = softmax(f / tau) @ E                    (the x0-prediction fed to the Gaussian samplers)
    x0_hat = E[round(softmax(f / tau) @ E)]          (with the clamping trick of Diffusion-LM)

where ``round`` is the nearest token embedding. Generation runs ``protgen_jax.diffusion.ddpm_sample``
with ``prediction="x0"`` and rounds the final ``z`` to tokens.

Likelihood: with ``q(z_{0:T-1} | w) = q(z_{0:T-1} | E[w])`` and a categorical decoder
``p(w | z_0) = prod_l softmax(f(z_0, 0))[w_l]``, the bound is

    -log p(w) <= KL(q(z_{T-1}|e) || N(0, I)) + sum_{t>=1} E KL(q(z_{t-1}|z_t, e) || p(z_{t-1}|z_t))
                 + E_{z_0 ~ q(z_0|e)}[-log p(w | z_0)]

(the Gaussian terms from ``protgen_jax.diffusion.variational_bound``), in nats per sequence; it is a
bound on a discrete probability, so its per-residue exponential is a perplexity comparable with D3PM's
and OADM's. ``logits_fn(z_t [B, L, D], t [B], mask [B, L], cond) -> [B, L, K]``; no flax or orbax here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from protgen_jax import alphabet as vocab
from protgen_jax.diffusion import Schedule, ddpm_sample, q_sample, variational_bound
from protgen_jax.vae import categorical_log_likelihood

LogitsFn = Callable[..., jax.Array]


def token_embeddings(dim: int = 32, num_tokens: int = vocab.K_AA, seed: int = 0) -> np.ndarray:
    """Fixed token embeddings ``E [K, D]`` float32, every row of norm ``sqrt(D)`` (unit variance per dim).

    For ``D >= K`` the rows are orthogonal (from the QR factorization of a seeded Gaussian matrix), so all
    tokens are equidistant, ``||E_i - E_j|| = sqrt(2 D)``; for ``D < K`` they are normalized Gaussian rows.
    """
    if dim < 1 or num_tokens < 1:
        raise ValueError(f"dim and num_tokens must be positive, got {dim}, {num_tokens}")
    rng = np.random.default_rng(seed)
    if dim >= num_tokens:
        q, _ = np.linalg.qr(rng.standard_normal((dim, num_tokens)))
        rows = q.T
    else:
        rows = rng.standard_normal((num_tokens, dim))
    rows = rows / np.linalg.norm(rows, axis=-1, keepdims=True) * np.sqrt(dim)
    return rows.astype(np.float32)


def embed(tokens: jax.Array, embeddings: jax.Array, mask: jax.Array) -> jax.Array:
    """``E[w] [B, L, D]``, zero at padding. tokens [B, L] int (any value at padding), mask [B, L] bool."""
    chex.assert_equal_shape([tokens, mask])
    safe = jnp.where(mask, tokens, 0)
    return embeddings[safe] * mask[..., None].astype(embeddings.dtype)


def round_to_tokens(x: jax.Array, embeddings: jax.Array) -> jax.Array:
    """Nearest token embedding: ``argmin_k ||x_l - E_k||^2`` -> int32 [B, L]. x [B, L, D], E [K, D]."""
    chex.assert_rank(x, 3)
    sq = (
        jnp.sum(jnp.square(x), -1, keepdims=True)
        - 2.0 * jnp.einsum("bld,kd->blk", x, embeddings, precision=jax.lax.Precision.HIGHEST)
        + jnp.sum(jnp.square(embeddings), -1)[None, None, :]
    )
    return jnp.argmin(sq, axis=-1).astype(jnp.int32)


def expected_embedding(logits: jax.Array, embeddings: jax.Array) -> jax.Array:
    """``softmax(logits) @ E``: logits [B, L, K] -> [B, L, D] float32."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.einsum("blk,kd->bld", probs, embeddings, precision=jax.lax.Precision.HIGHEST)


def _x0_soft(logits_fn, embeddings, inv_temperature, x_t, t, mask, cond):
    return expected_embedding(logits_fn(x_t, t, mask, cond) * inv_temperature, embeddings)


def _x0_clamped(logits_fn, embeddings, inv_temperature, x_t, t, mask, cond):
    soft = _x0_soft(logits_fn, embeddings, inv_temperature, x_t, t, mask, cond)
    return embeddings[round_to_tokens(soft, embeddings)]


def x0_denoiser(
    logits_fn: LogitsFn, embeddings: jax.Array, clamp: bool = False, temperature: float = 1.0
) -> Partial:
    """``denoise_fn(z_t, t, mask, cond) -> x0_hat [B, L, D]`` for the foundation samplers (x0-prediction).

    ``x0_hat = softmax(logits / temperature) @ E``, or its nearest token embedding when ``clamp``.
    """
    fn = _x0_clamped if clamp else _x0_soft
    inv = jnp.float32(1.0 / max(float(temperature), 1e-4))
    return Partial(fn, logits_fn, jnp.asarray(embeddings), inv)


def _token_nll_sum(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """``-sum_l log softmax(logits_l)[w_l]`` over residues: [B, L, K], [B, L], [B, L] -> [B]."""
    return -categorical_log_likelihood(logits, jnp.where(mask, tokens, 0), mask)


def relax_loss(
    key: jax.Array,
    logits_fn: LogitsFn,
    schedule: Schedule,
    embeddings: jax.Array,
    x0: jax.Array,
    mask: jax.Array,
    cond: Any = None,
    mse_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss per example [B]: ``sum_l CE(f(z_t, t)_l, w_l) + mse_weight sum_l ||x0_hat_l - e_l||^2 / D``.

    ``t ~ U{0..T-1}``, ``z_t = q_sample(schedule, E[w], t, eps)``. The cross-entropy trains the
    categorical decoder and the x0 logits (CDCD's score interpolation objective); the squared error is the
    x0 regression that the Gaussian bound terms weight. x0 [B, L] int, mask [B, L] bool. Returns
    ``(loss [B], {"ce": [B], "mse": [B], "num_tokens": [B]})``.
    """
    chex.assert_equal_shape([x0, mask])
    t_key, noise_key = jax.random.split(key)
    batch = x0.shape[0]
    t = jax.random.randint(t_key, (batch,), 0, schedule.num_steps)
    e = embed(x0, embeddings, mask)
    noise = jax.random.normal(noise_key, e.shape) * mask[..., None]
    z_t = q_sample(schedule, e, t, noise)
    logits = logits_fn(z_t, t, mask, cond)
    chex.assert_shape(logits, x0.shape + (embeddings.shape[0],))
    x0_hat = expected_embedding(logits, embeddings)
    sq_err = jnp.mean(jnp.square(x0_hat - e), axis=-1)
    mse = jnp.sum(jnp.where(mask, sq_err, 0.0), axis=-1)
    ce = _token_nll_sum(logits, x0, mask)
    aux = {"ce": ce, "mse": mse, "num_tokens": jnp.sum(mask, -1).astype(jnp.float32)}
    return ce + mse_weight * mse, aux


@jax.jit
def _nll_bound_jit(key, logits_fn, schedule, embeddings, x0, mask, cond):
    bound_key, dec_key = jax.random.split(key)
    e = embed(x0, embeddings, mask)
    denoise = Partial(_x0_soft, logits_fn, embeddings, jnp.float32(1.0))
    vb = variational_bound(
        bound_key, denoise, schedule, e, mask, cond, prediction="x0", variance="posterior"
    )
    t0 = jnp.zeros((x0.shape[0],), jnp.int32)
    z0 = q_sample(schedule, e, t0, jax.random.normal(dec_key, e.shape) * mask[..., None])
    decoder = _token_nll_sum(logits_fn(z0, t0, mask, cond), x0, mask)
    return vb.prior + vb.diffusion + decoder


def relax_nll_bound(
    key: jax.Array,
    logits_fn: LogitsFn,
    schedule: Schedule,
    embeddings: jax.Array,
    x0: jax.Array,
    mask: jax.Array,
    cond: Any = None,
) -> jax.Array:
    """Upper bound on ``-log p(w)`` per example [B] in nats (module docstring), one draw per term.

    All T Gaussian terms are evaluated (T + 1 network calls); the categorical decoder replaces the
    Gaussian one at t = 0. x0 [B, L] int, mask [B, L] bool.
    """
    chex.assert_rank(x0, 2)
    chex.assert_equal_shape([x0, mask])
    fn = logits_fn if isinstance(logits_fn, Partial) else Partial(logits_fn)
    return _nll_bound_jit(key, fn, schedule, jnp.asarray(embeddings), x0, mask.astype(bool), cond)


@jax.jit
def _round_output(x, embeddings, mask, known, known_mask):
    out = round_to_tokens(x, embeddings)
    out = jnp.where(known_mask, known, out)
    return jnp.where(mask, out, vocab.PAD).astype(jnp.int32)


def relax_sample(
    key: jax.Array,
    logits_fn: LogitsFn,
    schedule: Schedule,
    shape: tuple[int, int],
    *,
    embeddings: jax.Array,
    mask: jax.Array | None = None,
    cond: Any = None,
    known: jax.Array | None = None,
    known_mask: jax.Array | None = None,
    clamp: bool = True,
    temperature: float = 1.0,
    variance: str = "posterior",
) -> jax.Array:
    """Generate tokens [B, L] int32: DDPM in embedding space (one jitted scan), then rounding.

    ``z_{T-1} ~ N(0, I)``; each step uses :func:`x0_denoiser` (clamped if ``clamp``) as the x0-prediction
    of ``ddpm_sample``; the final ``z`` is rounded to the nearest token embedding. Inpainting: where
    ``known_mask`` [B, L] is True the state is replaced by the noised embedding of ``known`` after
    every step (as ``ddpm_sample`` does with its ``known``) and the output holds ``known``. Padding (``mask``
    False) is ``PAD``. ``shape = (B, L)`` is static.
    """
    batch, length = (int(n) for n in shape)
    embeddings = jnp.asarray(embeddings)
    mask = jnp.ones((batch, length), bool) if mask is None else mask.astype(bool)
    chex.assert_shape(mask, (batch, length))
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask must be given together")
    known_x = known_x_mask = None
    if known_mask is None:
        known = jnp.zeros((batch, length), jnp.int32)
        known_mask = jnp.zeros((batch, length), bool)
    else:
        chex.assert_shape([known, known_mask], (batch, length))
        known_mask = known_mask.astype(bool) & mask
        known_x = embed(known, embeddings, known_mask)
        known_x_mask = known_mask[..., None]
    denoise = x0_denoiser(logits_fn, embeddings, clamp=clamp, temperature=temperature)
    x = ddpm_sample(
        key,
        denoise,
        schedule,
        (batch, length, embeddings.shape[1]),
        mask=mask,
        cond=cond,
        prediction="x0",
        variance=variance,
        known=known_x,
        known_mask=known_x_mask,
    )
    return _round_output(x, embeddings, mask, known, known_mask)
