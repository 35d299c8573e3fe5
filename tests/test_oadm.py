"""Tests for protgen_jax.discrete.oadm: masking, loss weighting, sampler and exact log-likelihood."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import alphabet as tokens
from protgen_jax.discrete import oadm

# A small joint distribution over L = 3 positions with K = 3 classes, with strong dependencies.
_K, _L = 3, 3
_CONFIGS = np.array(list(itertools.product(range(_K), repeat=_L)), np.int32)  # [27, 3]
_JOINT = np.random.default_rng(0).dirichlet(np.full(len(_CONFIGS), 0.5))


def _joint_conditional_logits(joint, configs, x, t, mask, cond):
    """Exact p(x_l = k | revealed positions of x) under ``joint`` for every l: logits [B, L, K]."""
    revealed = x != tokens.MASK  # [B, L]
    agrees = (x[:, None, :] == configs[None, :, :]) | ~revealed[:, None, :]  # [B, C, L]
    weights = joint[None, :] * jnp.all(agrees, axis=-1)  # [B, C]
    onehot = jax.nn.one_hot(configs, _K)  # [C, L, K]
    marginals = jnp.einsum("bc,clk->blk", weights, onehot)
    return jnp.log(jnp.maximum(marginals, 1e-30))


_joint_logits_fn = jax.tree_util.Partial(
    _joint_conditional_logits, jnp.asarray(_JOINT, jnp.float32), jnp.asarray(_CONFIGS)
)


def _fixed_logits_fn(log_p, x, t, mask, cond):
    """Context-free model: position l has categorical ``log_p[l]`` (log_p [L, K])."""
    return jnp.broadcast_to(log_p, x.shape + log_p.shape[-1:])


def _oracle_logits_fn(target, x, t, mask, cond):
    """Knows the answer; its K = 21 logits put the largest value on MASK, which must be ignored."""
    logits = 50.0 * jax.nn.one_hot(target, tokens.VOCAB_SIZE)
    return logits.at[..., tokens.MASK].set(1e3)


def test_oadm_mask_counts_and_distribution():
    B, L = 4000, 6
    lengths = jnp.array([6, 4, 1, 0] * (B // 4))
    mask = jnp.arange(L)[None, :] < lengths[:, None]
    masked, num = oadm.oadm_mask(jax.random.key(0), mask)
    masked, num, mask = np.asarray(masked), np.asarray(num), np.asarray(mask)
    assert masked.dtype == bool and num.shape == (B,)
    assert not np.any(masked & ~mask)
    np.testing.assert_array_equal(masked.sum(-1), num)
    np.testing.assert_array_equal(num[3::4], 0)
    np.testing.assert_array_equal(num[2::4], 1)
    n = B // 4
    # t ~ U{1..4} for the length-4 rows; positions equally likely given t, so P(masked) = 5/8 each.
    freq = np.bincount(num[1::4], minlength=5)[1:] / n
    assert np.all(np.abs(freq - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)), freq
    rate = masked[1::4, :4].mean(0)
    assert np.all(np.abs(rate - 5 / 8) < 5 * np.sqrt(5 / 8 * 3 / 8 / n)), rate
    assert 1 <= num[0::4].min() and num[0::4].max() == 6


def test_oadm_loss_hand_computed_weighting():
    logits = np.zeros((2, 3, tokens.VOCAB_SIZE), np.float32)
    logits[0, 0, :3] = [2.0, 0.0, -1.0]
    logits[0, 2, 5] = 3.0
    logits[1, 1, 7] = -2.0
    logits[..., tokens.MASK] = 100.0  # never a valid output: must be sliced away
    x0 = jnp.array([[0, 4, 5], [1, 7, tokens.PAD]], jnp.int32)
    masked = jnp.array([[True, False, True], [False, True, True]])  # [1, 2] is padding
    mask = jnp.array([[True, True, True], [True, True, False]])
    loss, aux = oadm.oadm_loss(jnp.asarray(logits), x0, masked, mask)

    def ce(row, target):
        row = row[: tokens.K_AA].astype(np.float64)
        return -(row[target] - np.log(np.sum(np.exp(row))))

    ce00, ce02, ce11 = ce(logits[0, 0], 0), ce(logits[0, 2], 5), ce(logits[1, 1], 7)
    want = np.array([3 / 2 * (ce00 + ce02), 2 / 1 * ce11])  # (len / t) * sum of masked CE
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux["nll_per_token"], want / np.array([3, 2]), rtol=1e-5)
    np.testing.assert_allclose(aux["num_masked"], [2, 1])


def test_oadm_loss_is_unbiased_for_context_free_model():
    """E_mask[loss] = -sum_l log p_l(x_l) when predictions ignore context."""
    B, L = 2000, 5
    rng = np.random.default_rng(1)
    log_p = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(L, tokens.K_AA)), jnp.float32))
    x_row = jnp.array([3, 0, 19, 7, 7], jnp.int32)
    x0 = jnp.broadcast_to(x_row, (B, L))
    mask = jnp.ones((B, L), bool).at[:, -1].set(False)
    masked, _ = oadm.oadm_mask(jax.random.key(2), mask)
    logits = jnp.broadcast_to(log_p, (B, L, tokens.K_AA))
    loss, _ = oadm.oadm_loss(logits, x0, masked, mask)
    want = -float(jnp.sum(log_p[jnp.arange(L - 1), x_row[:-1]]))
    tol = 5 * float(jnp.std(loss)) / np.sqrt(B)
    assert abs(float(jnp.mean(loss)) - want) < tol, (float(jnp.mean(loss)), want, tol)


def test_oadm_corrupt():
    x0 = jnp.array([[1, 2, 3, 4]], jnp.int32)
    masked = jnp.array([[True, False, False, False]])
    mask = jnp.array([[True, True, True, False]])
    np.testing.assert_array_equal(
        oadm.oadm_corrupt(x0, masked, mask), [[tokens.MASK, 2, 3, tokens.PAD]]
    )


def test_sampler_oracle_fixed_positions_and_padding():
    B, L = 3, 8
    target = jax.random.randint(jax.random.key(3), (B, L), 0, tokens.K_AA)
    mask = jnp.arange(L)[None, :] < jnp.array([8, 5, 2])[:, None]
    oracle = jax.tree_util.Partial(_oracle_logits_fn, target)
    out = oadm.oadm_sample(jax.random.key(4), oracle, (B, L), mask=mask)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, jnp.where(mask, target, tokens.PAD))
    known_mask = jnp.zeros((B, L), bool).at[:, 1::2].set(True)
    known = (target + 3) % tokens.K_AA
    out = oadm.oadm_sample(
        jax.random.key(5),
        oracle,
        (B, L),
        mask=mask,
        known=known,
        known_mask=known_mask,
        temperature=0.7,
    )
    want = jnp.where(known_mask, known, target)
    np.testing.assert_array_equal(out, jnp.where(mask, want, tokens.PAD))


def test_sampler_with_exact_conditionals_draws_from_the_joint():
    n = 3000
    out = oadm.oadm_sample(jax.random.key(6), _joint_logits_fn, (n, _L), num_classes=_K)
    index = np.asarray(out) @ (_K ** np.arange(_L - 1, -1, -1))
    freq = np.bincount(index, minlength=len(_CONFIGS)) / n
    tol = 5 * np.sqrt(_JOINT * (1 - _JOINT) / n) + 1e-3
    assert np.all(np.abs(freq - _JOINT) < tol), np.abs(freq - _JOINT).max()
    # Conditioned on x_1 = 2 (inpainting): p(x_0, x_2 | x_1 = 2).
    known_mask = jnp.zeros((n, _L), bool).at[:, 1].set(True)
    known = jnp.full((n, _L), 2, jnp.int32)
    out = oadm.oadm_sample(
        jax.random.key(7),
        _joint_logits_fn,
        (n, _L),
        known=known,
        known_mask=known_mask,
        num_classes=_K,
    )
    assert np.all(np.asarray(out)[:, 1] == 2)
    index = np.asarray(out) @ (_K ** np.arange(_L - 1, -1, -1))
    conditional = np.where(_CONFIGS[:, 1] == 2, _JOINT, 0.0)
    conditional /= conditional.sum()
    freq = np.bincount(index, minlength=len(_CONFIGS)) / n
    tol = 5 * np.sqrt(conditional * (1 - conditional) / n) + 1e-3
    assert np.all(np.abs(freq - conditional) < tol)


def test_sampler_temperature_zero_is_greedy():
    log_p = jax.nn.log_softmax(jax.random.normal(jax.random.key(8), (6, tokens.K_AA)))
    model = jax.tree_util.Partial(_fixed_logits_fn, log_p)
    out = oadm.oadm_sample(jax.random.key(9), model, (4, 6), temperature=0.0)
    np.testing.assert_array_equal(out, jnp.broadcast_to(jnp.argmax(log_p, -1), (4, 6)))


def test_log_likelihood_context_free_model_is_exact_for_any_order():
    B, L = 4, 7
    log_p = jax.nn.log_softmax(jax.random.normal(jax.random.key(10), (L, tokens.VOCAB_SIZE)))
    model = jax.tree_util.Partial(_fixed_logits_fn, log_p)
    x0 = jax.random.randint(jax.random.key(11), (B, L), 0, tokens.K_AA)
    mask = jnp.arange(L)[None, :] < jnp.array([7, 5, 3, 1])[:, None]
    x0 = jnp.where(mask, x0, tokens.PAD)
    got = oadm.oadm_log_likelihood(jax.random.key(12), model, x0, mask, num_orders=3)
    log_p20 = jax.nn.log_softmax(log_p[:, : tokens.K_AA], -1)  # MASK logit excluded
    per_site = log_p20[jnp.arange(L)[None, :], jnp.where(mask, x0, 0)]
    np.testing.assert_allclose(got, jnp.sum(jnp.where(mask, per_site, 0.0), -1), rtol=1e-5)


def test_log_likelihood_with_exact_conditionals_is_log_joint():
    x0 = jnp.asarray(_CONFIGS[::4])  # 7 sequences
    mask = jnp.ones(x0.shape, bool)
    got = oadm.oadm_log_likelihood(
        jax.random.key(13), _joint_logits_fn, x0, mask, num_orders=2, num_classes=_K
    )
    np.testing.assert_allclose(got, np.log(_JOINT[::4]), rtol=1e-4, atol=1e-5)


def test_sampler_and_likelihood_compile_once():
    traces = []

    def counting(target, x, t, mask, cond):
        traces.append(1)
        return 50.0 * jax.nn.one_hot(target, tokens.VOCAB_SIZE)

    shape = (2, 4)
    first, second = jnp.zeros(shape, jnp.int32), jnp.full(shape, 9, jnp.int32)
    sample = functools.partial(oadm.oadm_sample, shape=shape)
    out1 = sample(jax.random.key(0), jax.tree_util.Partial(counting, first))
    n_traces = len(traces)
    out2 = sample(jax.random.key(1), jax.tree_util.Partial(counting, second))
    assert len(traces) == n_traces >= 1
    np.testing.assert_array_equal(out1, first)
    np.testing.assert_array_equal(out2, second)

    mask = jnp.ones(shape, bool)
    ll1 = oadm.oadm_log_likelihood(
        jax.random.key(2), jax.tree_util.Partial(counting, first), first, mask
    )
    n_traces = len(traces)
    ll2 = oadm.oadm_log_likelihood(
        jax.random.key(3), jax.tree_util.Partial(counting, second), first, mask
    )
    assert len(traces) == n_traces
    np.testing.assert_allclose(ll1, 0.0, atol=1e-4)
    assert np.all(np.asarray(ll2) < -100.0)
