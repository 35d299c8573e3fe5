"""The likelihood temperature of sequence diffusion: tau = 1 is the model, tau -> inf the uniform model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.config import apply_overrides
from protgen_jax.recipes.seqdiff import RECIPE, build_model

TINY = ["num_layers=1", "num_heads=2", "model_dim=16", "max_len=16", "buckets=16"]


@pytest.mark.parametrize("method", ["oadm", "d3pm"])
def test_likelihood_temperature(method):
    config = apply_overrides(RECIPE.make_config(method), [*TINY, "num_timesteps=4"])
    model = build_model(config, 2)
    params = model.init(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    x0 = jax.random.randint(jax.random.key(2), (3, 16), 0, 20)
    mask = jnp.arange(16)[None, :] < jnp.array([[16], [9], [5]])
    cond = jnp.array([0, 1, 2])
    key = jax.random.key(3)
    plain = np.asarray(model.nll(params, key, x0, mask, cond))
    np.testing.assert_allclose(np.asarray(model.nll(params, key, x0, mask, cond, 1.0)), plain)
    hot = np.asarray(model.nll(params, key, x0, mask, cond, 2.0))
    assert not np.allclose(hot, plain)
    if method == "oadm":  # an exact likelihood: at tau -> inf every residue costs log 20
        flat = np.asarray(model.nll(params, key, x0, mask, cond, 1e6))
        np.testing.assert_allclose(flat, np.asarray(mask.sum(1)) * np.log(20.0), rtol=1e-4)
