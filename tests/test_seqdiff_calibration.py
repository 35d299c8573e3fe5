"""Likelihood calibrations of sequence diffusion: the temperature (tau = 1 is the model, tau -> inf
the uniform model) and the background mixture with a composition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.config import apply_overrides
from protgen_jax.recipes.seqdiff import RECIPE, build_model
from protgen_jax.recipes.seqdiff.model import background_mixed

TINY = ["num_layers=1", "num_heads=2", "model_dim=16", "max_len=16", "buckets=16"]


def tiny_problem(method):
    """A 1-layer model with perturbed params and three padded sequences (two family labels, one null)."""
    config = apply_overrides(RECIPE.make_config(method), [*TINY, "num_timesteps=4"])
    model = build_model(config, 2)
    params = model.init(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    x0 = jax.random.randint(jax.random.key(2), (3, 16), 0, 20)
    mask = jnp.arange(16)[None, :] < jnp.array([[16], [9], [5]])
    cond = jnp.array([0, 1, 2])
    key = jax.random.key(3)
    return model, params, x0, mask, cond, key


@pytest.mark.parametrize("method", ["oadm", "d3pm"])
def test_likelihood_temperature(method):
    model, params, x0, mask, cond, key = tiny_problem(method)
    plain = np.asarray(model.nll(params, key, x0, mask, cond))
    np.testing.assert_allclose(np.asarray(model.nll(params, key, x0, mask, cond, 1.0)), plain)
    hot = np.asarray(model.nll(params, key, x0, mask, cond, 2.0))
    assert not np.allclose(hot, plain)
    if method == "oadm":  # an exact likelihood: at tau -> inf every residue costs log 20
        flat = np.asarray(model.nll(params, key, x0, mask, cond, 1e6))
        np.testing.assert_allclose(flat, np.asarray(mask.sum(1)) * np.log(20.0), rtol=1e-4)


def test_background_mixture_is_the_convex_combination_of_probabilities():
    logits = jnp.array([[[2.0, -1.0, 0.5] + [0.0] * 17]])
    log_q = jnp.log(jnp.linspace(1.0, 2.0, 20) / jnp.linspace(1.0, 2.0, 20).sum())

    def fn(x_t, t, mask, cond):
        return logits

    mixed = background_mixed(fn, 0.25, log_q)
    got = np.exp(np.asarray(mixed(None, None, None, None)))
    want = 0.75 * np.asarray(jax.nn.softmax(logits)) + 0.25 * np.exp(np.asarray(log_q))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    none = np.asarray(background_mixed(fn, 0.0, log_q)(None, None, None, None))
    np.testing.assert_allclose(none, np.asarray(jax.nn.log_softmax(logits)), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        background_mixed(fn, 1.0, log_q)
    with pytest.raises(ValueError, match="20"):
        background_mixed(fn, 0.5, log_q[:5])


@pytest.mark.parametrize("method", ["oadm", "d3pm"])
def test_likelihood_background_mixture(method):
    """OADM's likelihood is exact, so at w -> 1 every residue costs -log q(x); and for every w the
    mixture's loss is at most the convex combination of the model's and the background's."""
    model, params, x0, mask, cond, key = tiny_problem(method)
    log_q = np.log(np.arange(1.0, 21.0) / np.arange(1.0, 21.0).sum())
    plain = np.asarray(model.nll(params, key, x0, mask, cond))
    same = np.asarray(model.nll(params, key, x0, mask, cond, background=(0.0, log_q)))
    np.testing.assert_allclose(same, plain)
    half = np.asarray(model.nll(params, key, x0, mask, cond, background=(0.5, log_q)))
    assert not np.allclose(half, plain)
    if method == "oadm":
        background = -np.where(mask, log_q[np.asarray(x0)], 0.0).sum(1)
        assert np.all(half <= 0.5 * plain + 0.5 * background + 1e-4)
        almost = np.asarray(model.nll(params, key, x0, mask, cond, background=(0.999999, log_q)))
        np.testing.assert_allclose(almost, background, rtol=1e-4)
