"""The DeepSequence decoder: weight KL, sparsity prior, shared and local (per-example) weight draws."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from protgen_jax.nn.deepsequence import SparseBayesianDecoder, normal_kl_scalar

Z = jnp.array([[0.3, -1.0], [1.0, 0.5], [-0.7, 0.2]])


def _decoder(**kw):
    kw = {"hidden": (5, 8), "num_tiles": 2, "dictionary_size": 3, **kw}
    return SparseBayesianDecoder(seq_len=3, latent_dim=2, vocab_size=4, **kw)


def _params(decoder, log_sigma_shift=0.0):
    params = decoder.init({"params": jax.random.key(0), "weights": jax.random.key(1)}, Z)
    return jax.tree_util.tree_map_with_path(
        lambda path, v: v + log_sigma_shift if "log_sigma" in str(path[-1]) else v, params
    )


def test_normal_kl_scalar_matches_closed_form_by_hand():
    mu, log_sigma = np.array([0.5, -1.0]), np.array([-1.0, 0.3])
    prior_mu, prior_log_sigma = -2.0, math.log(4.0)
    s2, p2 = np.exp(2 * log_sigma), 16.0
    expected = np.sum(prior_log_sigma - log_sigma + (s2 + (mu - prior_mu) ** 2) / (2 * p2) - 0.5)
    got = normal_kl_scalar(jnp.array(mu), jnp.array(log_sigma), prior_mu, prior_log_sigma)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert float(normal_kl_scalar(jnp.zeros(3), jnp.zeros(3))) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("p", [0.01, 0.001])
def test_sparsity_prior_puts_mass_p_on_open_gates(p):
    decoder = _decoder(sparsity_prior_p=p)
    params = _params(decoder)
    bound = decoder.bind(params)
    scale = bound.scale
    # P(sigmoid(s) > 1/2) = P(s > 0) under N(prior_mu, 4^2) must be p.
    assert norm.sf(0.0, loc=scale.prior_mu, scale=math.exp(scale.prior_log_sigma)) == (
        pytest.approx(p, rel=1e-6)
    )


def test_mean_weights_are_deterministic_and_draws_are_not():
    decoder = _decoder()
    params = _params(decoder, log_sigma_shift=3.0)
    mean_a = decoder.apply(params, Z, False)
    mean_b = decoder.apply(params, Z, False, rngs={"weights": jax.random.key(5)})
    np.testing.assert_array_equal(mean_a, mean_b)
    draw_a = decoder.apply(params, Z, True, rngs={"weights": jax.random.key(5)})
    draw_b = decoder.apply(params, Z, True, rngs={"weights": jax.random.key(6)})
    assert draw_a.shape == (3, 3, 4)
    assert not np.allclose(draw_a, draw_b)


def test_weight_kl_is_the_sum_over_every_variational_tensor():
    decoder = _decoder()
    params = _params(decoder, log_sigma_shift=1.0)
    total = float(decoder.apply(params, method=decoder.weight_kl))
    by_hand = 0.0
    bound = decoder.bind(params)
    tensors = [*bound.weights, *bound.biases, bound.w_out, bound.b_out, bound.dictionary]
    tensors += [bound.scale, bound.inv_temperature]
    for t in tensors:
        leaf = params["params"][t.name]
        mu, log_sigma = np.asarray(leaf["mu"]), np.asarray(leaf["log_sigma"])
        var_ratio = np.exp(2 * log_sigma - 2 * t.prior_log_sigma)
        by_hand += np.sum(
            t.prior_log_sigma
            - log_sigma
            + 0.5 * var_ratio
            + 0.5 * (mu - t.prior_mu) ** 2 * np.exp(-2 * t.prior_log_sigma)
            - 0.5
        )
    np.testing.assert_allclose(total, by_hand, rtol=1e-5)


def test_local_reparameterization_keeps_each_examples_distribution():
    """Per-example draws of the output layer: same mean and spread of every logit as one shared weight
    draw, but examples are (nearly) independent instead of strongly correlated."""
    decoder = _decoder()
    params = _params(decoder, log_sigma_shift=4.0)  # broad posteriors: the noise dominates

    @functools.partial(jax.jit, static_argnums=1)
    def draws(keys, local):
        return jax.vmap(lambda k: decoder.apply(params, Z, True, local, rngs={"weights": k}))(keys)

    keys = jax.random.split(jax.random.key(2), 8000)
    shared, local = np.asarray(draws(keys, False)), np.asarray(draws(keys, True))
    spread = shared.std(0)
    assert spread.mean() > 0.3
    # Monte-Carlo error of a mean is spread / sqrt(8000) ~ 0.011 * spread.
    assert np.all(np.abs(shared.mean(0) - local.mean(0)) < 0.06 * spread)
    np.testing.assert_allclose(local.std(0), spread, rtol=0.08)
    corr_shared = np.corrcoef(shared[:, 0, 0, 0], shared[:, 1, 0, 0])[0, 1]
    corr_local = np.corrcoef(local[:, 0, 0, 0], local[:, 1, 0, 0])[0, 1]
    assert corr_shared > 0.5 and corr_local < corr_shared - 0.3


def test_local_flag_is_ignored_without_sampling_or_for_point_estimates():
    decoder = _decoder()
    params = _params(decoder)
    key = {"weights": jax.random.key(3)}
    np.testing.assert_array_equal(
        decoder.apply(params, Z, False, True, rngs=key), decoder.apply(params, Z, False)
    )
    point = _decoder(bayesian=False)
    point_params = point.init(jax.random.key(0), Z)
    np.testing.assert_array_equal(
        point.apply(point_params, Z, True, True, rngs=key), point.apply(point_params, Z, False)
    )
