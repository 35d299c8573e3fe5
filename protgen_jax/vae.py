"""Variational autoencoder math: closed-form KL, reparameterization, likelihoods, ELBO and IWAE bounds.

Pure functions over arrays; networks enter as callables (``encode_fn``, ``decode_fn``). Shapes use the
glossary of CONTRIBUTING.md: ``B`` batch, ``L`` positions, ``K`` alphabet, ``D`` latent size, ``M`` samples.
Every bound returns one value per example (``[B]``); the caller reduces.

Lecture: sections 3-5 (ELBO, closed-form KL, reparameterization trick, beta-VAE loss).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

_LOG_2PI = float(jnp.log(2.0 * jnp.pi))


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in closed form, one value per example.

    ``KL = -1/2 * sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))``

    Args:
      mu: ``[B, D]`` posterior means.
      logvar: ``[B, D]`` posterior log-variances.

    Returns:
      ``[B]`` KL divergences in nats (float32), each >= 0.
    """
    chex.assert_equal_shape([mu, logvar])
    mu = mu.astype(jnp.float32)
    logvar = logvar.astype(jnp.float32)
    return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


def reparameterize_with_noise(mu: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """Deterministic reparameterization ``z = mu + exp(logvar / 2) * eps``.

    Args:
      mu, logvar: ``[..., D]``.
      eps: standard-normal noise of the same rank as ``mu`` (add a leading axis to ``mu`` for ``[M, B, D]``).
    """
    return mu + jnp.exp(0.5 * logvar) * eps


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """Draw ``z ~ N(mu, diag(exp(logvar)))`` differentiably in ``mu`` and ``logvar``.

    Args:
      key: PRNG key.
      mu, logvar: ``[B, D]``.

    Returns:
      ``[B, D]`` latent samples.
    """
    eps = jax.random.normal(key, mu.shape, dtype=mu.dtype)
    return reparameterize_with_noise(mu, logvar, eps)


def gaussian_log_prob(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mu, diag(exp(logvar))) summed over the last axis: ``[..., D] -> [...]``."""
    return -0.5 * jnp.sum(_LOG_2PI + logvar + jnp.square(z - mu) * jnp.exp(-logvar), axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) summed over the last axis: ``[..., D] -> [...]``."""
    return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """``log softmax(logits)[..., x]`` per position: logits ``[..., L, K]``, tokens ``[..., L]`` int in
    ``[0, K)`` -> ``[..., L]`` float32 (the one categorical log-likelihood of the library: the VAE,
    D3PM, OADM and the continuous relaxation all use it)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_log_likelihood(
    logits: jax.Array, tokens: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """log p(x | logits) = sum_l log softmax(logits_l)[x_l] over unmasked positions.

    Args:
      logits: ``[B, L, K]`` unnormalized log-probabilities.
      tokens: ``[B, L]`` int tokens in ``[0, K)``.
      mask: optional ``[B, L]`` bool (True = position counts).

    Returns:
      ``[B]`` log-likelihoods in nats (float32).
    """
    chex.assert_rank([logits, tokens], [3, 2])
    chex.assert_equal_shape_prefix([logits, tokens], 2)
    picked = token_log_probs(logits, tokens)
    if mask is not None:
        chex.assert_equal_shape([tokens, mask])
        picked = jnp.where(mask, picked, 0.0)
    return jnp.sum(picked, axis=-1)


class ElboTerms(NamedTuple):
    """Per-example terms of the (beta-weighted) negative ELBO, each ``[B]``."""

    loss: jax.Array  # nll + beta * kl: what training minimizes
    nll: jax.Array  # -E_q[log p(x|z)] (one-sample estimate)
    kl: jax.Array  # KL(q(z|x) || p(z))
    neg_elbo: jax.Array  # nll + kl: the unweighted bound on -log p(x)


def negative_elbo(
    logits: jax.Array,
    tokens: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    beta: float | jax.Array = 1.0,
    mask: jax.Array | None = None,
) -> ElboTerms:
    """Negative ELBO of a sequence VAE, per example.

    ``-ELBO = -E_q[log p(x|z)] + KL(q(z|x) || N(0, I))``; the training loss weights the KL by ``beta``
    (beta-VAE; ``beta < 1`` during KL warm-up). The reconstruction term is the categorical log-likelihood
    of ``tokens`` under decoder ``logits`` computed from one reparameterized ``z``.

    Unlike the lecture's ``vae_loss`` (a batch mean of per-position cross-entropy), this sums over positions
    so that the result is a bound on ``-log p(x)`` in nats, and returns one value per example.

    Args:
      logits: ``[B, L, K]`` decoder output for ``z ~ q(z|x)``.
      tokens: ``[B, L]`` the sequences ``x``.
      mu, logvar: ``[B, D]`` encoder output.
      beta: KL weight.
      mask: optional ``[B, L]`` positions that count.
    """
    nll = -categorical_log_likelihood(logits, tokens, mask)
    kl = gaussian_kl(mu, logvar)
    return ElboTerms(loss=nll + beta * kl, nll=nll, kl=kl, neg_elbo=nll + kl)


def iwae_bound_with_noise(
    encode_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    decode_fn: Callable[[jax.Array], jax.Array],
    tokens: jax.Array,
    eps: jax.Array,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Importance-weighted lower bound on log p(x) with given noise (Burda et al. 2016).

    ``log p(x) >= log (1/M) sum_m p(x | z_m) p(z_m) / q(z_m | x)``, ``z_m = mu + sigma * eps_m``.
    With ``M = 1`` this is the ELBO; it tightens monotonically in expectation as ``M`` grows.

    Args:
      encode_fn: ``tokens [B, L] -> (mu [B, D], logvar [B, D])``.
      decode_fn: ``z [N, D] -> logits [N, L, K]`` (called once on all ``M * B`` latents).
      tokens: ``[B, L]``.
      eps: ``[M, B, D]`` standard-normal noise.
      mask: optional ``[B, L]``.

    Returns:
      ``[B]`` bounds in nats.
    """
    mu, logvar = encode_fn(tokens)
    m, b, d = eps.shape
    chex.assert_shape(mu, (b, d))
    z = reparameterize_with_noise(mu[None], logvar[None], eps)  # [M, B, D]
    logits = decode_fn(z.reshape(m * b, d))
    rep_tokens = jnp.broadcast_to(tokens[None], (m,) + tokens.shape).reshape(m * b, -1)
    rep_mask = None if mask is None else jnp.broadcast_to(mask[None], (m,) + mask.shape)
    rep_mask = None if rep_mask is None else rep_mask.reshape(m * b, -1)
    log_px_z = categorical_log_likelihood(logits, rep_tokens, rep_mask).reshape(m, b)
    log_w = log_px_z + standard_normal_log_prob(z) - gaussian_log_prob(z, mu[None], logvar[None])
    return jax.nn.logsumexp(log_w, axis=0) - jnp.log(float(m))


def iwae_bound(
    key: jax.Array,
    encode_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    decode_fn: Callable[[jax.Array], jax.Array],
    tokens: jax.Array,
    num_samples: int,
    latent_dim: int,
    mask: jax.Array | None = None,
) -> jax.Array:
    """:func:`iwae_bound_with_noise` with ``num_samples`` (``M``) fresh draws from ``key``; ``[B]``."""
    eps = jax.random.normal(key, (num_samples, tokens.shape[0], latent_dim))
    return iwae_bound_with_noise(encode_fn, decode_fn, tokens, eps, mask)
