"""Order-agnostic autoregressive diffusion (OADM): Hoogeboom et al. 2022 (ARDM), as used by EvoDiff-OA
(Alamdari et al. 2023).

A sequence of ``len`` residues is generated one position at a time in a uniformly random order
``sigma``; undecoded positions hold ``alphabet.MASK``. The model is ``logits_fn(x [B, L] int32,
t [B] int32, mask [B, L] bool, cond) -> logits [B, L, K]`` where ``t`` is the number of positions still
masked, and predicts every masked position from the revealed ones. Only the first ``num_classes``
(default ``alphabet.K_AA``) logits are used, so a network with more outputs never emits GAP, MASK or PAD.

The bound: for t ~ U{1..len} masked positions chosen uniformly,
``log p(x) >= E_sigma[sum_i log p(x_sigma(i) | x_sigma(<i))] = len * E_t[(1/t) * sum_{masked} log p]``
(Hoogeboom et al. 2022 eq. 4). This module imports neither flax nor orbax.
"""

import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from protgen_jax import alphabet
from protgen_jax.diffusion.samplers import as_partial
from protgen_jax.vae import token_log_probs

LogitsFn = Callable[..., jax.Array]


def _random_order(key: jax.Array, eligible: jax.Array) -> jax.Array:
    """Positions [B, L] int32: the eligible ones first, in uniformly random order, then the rest."""
    scores = jnp.where(eligible, jax.random.uniform(key, eligible.shape), 2.0)
    return jnp.argsort(scores, axis=-1).astype(jnp.int32)


def _gather_positions(values: jax.Array, positions: jax.Array) -> jax.Array:
    """``values[b, positions[b]]``: values [B, L, ...], positions [B] -> [B, ...]."""
    return values[jnp.arange(values.shape[0]), positions]


def oadm_mask(key: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Training corruption: per sequence ``t ~ U{1..len}``, then a uniform random subset of t residues.

    mask [B, L] bool (True = residue, ``len = sum(mask)``). Returns ``masked [B, L]`` bool (exactly t
    True, all inside ``mask``) and ``num_masked = t`` [B] int32 (0 for an empty sequence).
    """
    chex.assert_rank(mask, 2)
    mask = mask.astype(bool)
    t_key, order_key = jax.random.split(key)
    length = jnp.sum(mask, axis=-1).astype(jnp.int32)
    num_masked = jax.random.randint(t_key, length.shape, 1, length + 1, dtype=jnp.int32)
    num_masked = jnp.minimum(num_masked, length)
    scores = jnp.where(mask, jax.random.uniform(order_key, mask.shape), 2.0)
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    masked = (ranks < num_masked[:, None]) & mask
    return masked, num_masked


def oadm_corrupt(x0: jax.Array, masked: jax.Array, mask: jax.Array) -> jax.Array:
    """Model input [B, L] int32: ``MASK`` where masked, ``PAD`` at padding, x0 elsewhere."""
    chex.assert_equal_shape([x0, masked, mask])
    return jnp.where(masked, alphabet.MASK, jnp.where(mask, x0, alphabet.PAD)).astype(jnp.int32)


def oadm_loss(
    logits: jax.Array,
    x0: jax.Array,
    masked: jax.Array,
    mask: jax.Array,
    num_classes: int = alphabet.K_AA,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """EvoDiff-OA loss: ``loss = (len / t) * sum_{masked} -log p(x0_i | x_unmasked)`` per example [B].

    ``len = sum(mask)``, ``t = sum(masked & mask)``; with t ~ U{1..len} and a uniform subset this is
    Hoogeboom et al.'s unbiased estimate of ``-E_sigma log p(x | sigma) >= -log p(x)`` in nats.
    logits [B, L, K >= num_classes] (log-softmax over the first num_classes), x0 [B, L] int,
    masked / mask [B, L] bool. ``aux["nll_per_token"] = loss / len`` (the mean CE over masked
    positions, for logging) and ``aux["num_masked"]`` [B]. Examples with t = 0 give 0.
    """
    chex.assert_rank(logits, 3)
    chex.assert_equal_shape([x0, masked, mask])
    chex.assert_shape(logits, x0.shape + (None,))
    ce = -token_log_probs(logits[..., :num_classes], jnp.where(mask, x0, 0))
    on = masked & mask
    num_masked = jnp.sum(on, axis=-1).astype(jnp.float32)
    length = jnp.sum(mask, axis=-1).astype(jnp.float32)
    nll_per_token = jnp.sum(jnp.where(on, ce, 0.0), axis=-1) / jnp.maximum(num_masked, 1.0)
    loss = length * nll_per_token
    return loss, {"nll_per_token": nll_per_token, "num_masked": num_masked}


@functools.partial(jax.jit, static_argnames=("shape", "num_classes", "unroll"))
def _oadm_sample_jit(
    key, logits_fn, mask, cond, known, known_mask, temperature, shape, num_classes, unroll
):
    batch, length = shape
    mask = jnp.ones(shape, bool) if mask is None else mask.astype(bool)
    fixed = jnp.zeros(shape, bool) if known_mask is None else known_mask.astype(bool) & mask
    known = jnp.zeros(shape, jnp.int32) if known is None else known
    to_fill = mask & ~fixed
    x_init = jnp.where(fixed, known, jnp.where(mask, alphabet.MASK, alphabet.PAD))
    order_key, steps_key = jax.random.split(key)
    order = _random_order(order_key, to_fill)
    num_fill = jnp.sum(to_fill, axis=-1).astype(jnp.int32)
    rows = jnp.arange(batch)

    def step(x, inputs):
        i, step_key = inputs
        position = order[:, i]
        active = i < num_fill
        logits = logits_fn(x, jnp.maximum(num_fill - i, 0), mask, cond)
        chex.assert_shape(logits, (batch, length, None))
        site_logits = _gather_positions(logits, position)[:, :num_classes].astype(jnp.float32)
        gumbel = jax.random.gumbel(step_key, site_logits.shape)
        token = jnp.argmax(site_logits + temperature * gumbel, axis=-1).astype(jnp.int32)
        new = jnp.where(active, token, x[rows, position])
        return x.at[rows, position].set(new), None

    steps = jnp.arange(length, dtype=jnp.int32)
    x, _ = jax.lax.scan(
        step, x_init.astype(jnp.int32), (steps, jax.random.split(steps_key, length)), unroll=unroll
    )
    return x


def oadm_sample(
    key: jax.Array,
    logits_fn: LogitsFn,
    shape: tuple[int, int],
    *,
    mask: jax.Array | None = None,
    cond: Any = None,
    known: jax.Array | None = None,
    known_mask: jax.Array | None = None,
    temperature: float = 1.0,
    num_classes: int = alphabet.K_AA,
    unroll: int = 1,
) -> jax.Array:
    """Generate by unmasking one position per step in a uniformly random order.

    Start from MASK at every residue except ``known_mask`` positions (which hold ``known`` and
    never change) and PAD at padding. Step i (one jitted ``lax.scan`` over L steps) calls the model on
    the current state with ``t = #still masked`` and sets the i-th position of the order to
    ``argmax(logits / temperature + g)`` (Gumbel-max over the first num_classes logits, computed as
    ``argmax(logits + temperature * g)`` so temperature 0 is greedy); steps beyond a sequence's number
    of free positions leave it unchanged. ``shape = (B, L)`` static; mask [B, L] bool (default all
    residues). Pass params as ``jax.tree_util.Partial(apply_fn, params)``. Returns int32 [B, L].
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2:
        raise ValueError(f"shape must be (B, L), got {shape}")
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask must be given together")
    for array in (mask, known, known_mask):
        if array is not None:
            chex.assert_shape(array, shape)
    temperature = jnp.asarray(temperature, jnp.float32)
    return _oadm_sample_jit(
        key,
        as_partial(logits_fn),
        mask,
        cond,
        known,
        known_mask,
        temperature,
        shape,
        num_classes,
        unroll,
    )


@functools.partial(jax.jit, static_argnames=("num_orders", "num_classes"))
def _oadm_log_likelihood_jit(key, logits_fn, x0, mask, cond, num_orders, num_classes):
    batch, length = x0.shape
    lengths = jnp.sum(mask, axis=-1).astype(jnp.int32)
    rows = jnp.arange(batch)

    def one_order(order_key):
        order = _random_order(order_key, mask)
        x_init = jnp.where(mask, alphabet.MASK, alphabet.PAD).astype(jnp.int32)

        def step(carry, i):
            x, total = carry
            position = order[:, i]
            active = i < lengths
            logits = logits_fn(x, jnp.maximum(lengths - i, 0), mask, cond)
            chex.assert_shape(logits, (batch, length, None))
            site_logits = _gather_positions(logits, position)[:, :num_classes]
            log_p = jax.nn.log_softmax(site_logits.astype(jnp.float32), axis=-1)
            true = jnp.where(active, x0[rows, position], 0)
            log_p_true = jnp.take_along_axis(log_p, true[:, None], axis=-1)[:, 0]
            total = total + jnp.where(active, log_p_true, 0.0)
            x = x.at[rows, position].set(jnp.where(active, true, x[rows, position]))
            return (x, total), None

        init = (x_init, jnp.zeros((batch,), jnp.float32))
        (_, total), _ = jax.lax.scan(step, init, jnp.arange(length, dtype=jnp.int32))
        return total

    per_order = jax.lax.map(one_order, jax.random.split(key, num_orders))
    return jnp.mean(per_order, axis=0)


def oadm_log_likelihood(
    key: jax.Array,
    logits_fn: LogitsFn,
    x0: jax.Array,
    mask: jax.Array,
    num_orders: int = 1,
    cond: Any = None,
    num_classes: int = alphabet.K_AA,
) -> jax.Array:
    """``(1/M) sum_m log p(x0 | sigma_m)`` per example [B], in nats, for M = num_orders random orders.

    For each order ``sigma`` (uniform over the residues) decode in that order, revealing the true
    token after each step: ``log p(x0 | sigma) = sum_i log p(x0_sigma(i) | x0_sigma(<i))``, exact, one
    ``lax.scan`` over L (L model calls per order; orders run sequentially with ``lax.map``). The average
    is an unbiased estimate of the order-ELBO ``E_sigma log p(x0 | sigma) <= log p(x0)``.
    x0 [B, L] int (tokens < num_classes at residues), mask [B, L] bool.
    """
    chex.assert_rank(x0, 2)
    chex.assert_equal_shape([x0, mask])
    if num_orders < 1:
        raise ValueError(f"num_orders must be >= 1, got {num_orders}")
    return _oadm_log_likelihood_jit(
        key, as_partial(logits_fn), x0, mask.astype(bool), cond, int(num_orders), num_classes
    )
