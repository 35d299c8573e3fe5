"""Tests for protgen_jax.nn: timestep embedding, sequence VAEs and the MLP denoisers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.nn import (
    ConcatMLPDenoiser,
    ConditionalProteinVAE,
    MLPDenoiser,
    ProteinVAE,
    TimeClassEmbedding,
    position_encoding,
    timestep_embedding,
)

B, L, K, D = 3, 7, 21, 4


def _finite_tree(tree) -> bool:
    return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(tree))


def _maxdiff(a, b) -> float:
    """max |a - b| computed in NumPy (no per-shape XLA compile in the tests)."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _abssum(a) -> float:
    return float(np.abs(np.asarray(a, np.float64)).sum())


# --------------------------------------------------------------------------- timestep embedding


def _numpy_embedding(t: np.ndarray, dim: int, max_period: float) -> np.ndarray:
    """Independent NumPy version: loop over frequencies, freq_i = max_period ** (-i / half)."""
    half = dim // 2
    out = np.zeros((t.shape[0], dim), np.float64)
    for i in range(half):
        freq = max_period ** (-i / half)
        out[:, i] = np.sin(t * freq)
        out[:, half + i] = np.cos(t * freq)
    return out


@pytest.mark.parametrize("dim", [8, 7, 32])
@pytest.mark.parametrize("max_period", [10000.0, 100.0])
def test_timestep_embedding_matches_numpy(dim, max_period):
    t = np.array([0, 1, 5, 37, 999], np.int32)
    got = timestep_embedding(jnp.asarray(t), dim, max_period)
    assert got.shape == (5, dim) and got.dtype == jnp.float32
    # float32 argument rounding: |t * freq| <= 999 carries ~1e-4 absolute error in sin/cos.
    np.testing.assert_allclose(np.asarray(got), _numpy_embedding(t, dim, max_period), atol=2e-4)


def test_timestep_embedding_values_and_odd_padding():
    emb = np.asarray(timestep_embedding(jnp.array([0.0, 2.5]), 5))
    # t = 0: sin part 0, cos part 1; the odd dim pads one zero column.
    np.testing.assert_array_equal(emb[0], [0.0, 0.0, 1.0, 1.0, 0.0])
    # half = 2: freqs = [1, 1e-2]
    np.testing.assert_allclose(
        emb[1], [np.sin(2.5), np.sin(0.025), np.cos(2.5), np.cos(0.025), 0.0], rtol=1e-6
    )
    np.testing.assert_array_equal(
        np.asarray(position_encoding(4, 6)), np.asarray(timestep_embedding(jnp.arange(4), 6))
    )


def test_time_class_embedding_null_class():
    module = TimeClassEmbedding(features=8, num_classes=3)
    t = jnp.array([3, 9])
    params = module.init(jax.random.key(0), t)
    assert params["params"]["class_embed"]["embedding"].shape == (4, 8)
    e_none = module.apply(params, t)
    e_null = module.apply(params, t, jnp.array([3, 3]))
    e_cls = module.apply(params, t, jnp.array([0, 1]))
    np.testing.assert_array_equal(np.asarray(e_none), np.asarray(e_null))
    assert not np.allclose(np.asarray(e_cls), np.asarray(e_null))
    unconditional = TimeClassEmbedding(features=8)
    p0 = unconditional.init(jax.random.key(0), t)
    with pytest.raises(ValueError, match="num_classes == 0"):
        unconditional.apply(p0, t, jnp.array([0, 1]))


# --------------------------------------------------------------------------- VAEs


def _vae(dtype=jnp.float32) -> ProteinVAE:
    return ProteinVAE(
        seq_len=L,
        vocab_size=K,
        encoder_widths=(16, 12),
        decoder_widths=(12, 16),
        latent_dim=D,
        dtype=dtype,
    )


@pytest.fixture(scope="module")
def vae_setup():
    model = _vae()
    k_x, k_eps, k_init = jax.random.split(jax.random.key(0), 3)
    x = jax.random.randint(k_x, (B, L), 0, K)
    eps = jax.random.normal(k_eps, (B, D))
    params = model.init(k_init, x, eps)
    return model, params, x, eps


def test_vae_shapes_and_reparameterization(vae_setup):
    model, params, x, eps = vae_setup
    logits, mu, logvar = model.apply(params, x, eps)
    assert logits.shape == (B, L, K) and logits.dtype == jnp.float32
    assert mu.shape == (B, D) and logvar.shape == (B, D)
    mu2, logvar2 = model.apply(params, x, method=model.encode)
    np.testing.assert_array_equal(np.asarray(mu), np.asarray(mu2))
    np.testing.assert_array_equal(np.asarray(logvar), np.asarray(logvar2))
    # __call__ decodes z = mu + exp(logvar / 2) * eps.
    z = mu + jnp.exp(0.5 * logvar) * eps
    np.testing.assert_allclose(
        np.asarray(model.apply(params, z, method=model.decode)), np.asarray(logits), atol=1e-6
    )
    # Sampling entry point by name, for a fresh batch size.
    assert model.apply(params, jnp.zeros((5, D)), method="decode").shape == (5, L, K)


def test_vae_accepts_one_hot_and_probabilities(vae_setup):
    model, params, x, eps = vae_setup
    logits_int, _, _ = model.apply(params, x, eps)
    logits_oh, _, _ = model.apply(params, jax.nn.one_hot(x, K), eps)
    np.testing.assert_allclose(np.asarray(logits_oh), np.asarray(logits_int), atol=1e-6)
    uniform = jnp.full((B, L, K), 1.0 / K)
    mu_u, _ = model.apply(params, uniform, method=model.encode)
    mu_x, _ = model.apply(params, x, method=model.encode)
    assert not np.allclose(np.asarray(mu_u), np.asarray(mu_x))
    with pytest.raises(AssertionError):
        model.apply(params, jnp.zeros((B, L + 1), jnp.int32), eps)


def test_vae_gradients_finite_and_nonzero(vae_setup):
    model, params, x, eps = vae_setup

    def loss(p):
        logits, mu, logvar = model.apply(p, x, eps)
        return jnp.sum(jax.nn.log_softmax(logits)) + jnp.sum(mu**2 + logvar)

    grads = jax.grad(loss)(params)
    assert _finite_tree(grads)
    assert _abssum(grads["params"]["encoder"]["mlp"]["dense_0"]["kernel"]) > 0


def test_vae_bf16_returns_float32(vae_setup):
    _, params, x, eps = vae_setup
    model = _vae(jnp.bfloat16)
    logits, mu, logvar = model.apply(params, x, eps)
    assert logits.dtype == mu.dtype == logvar.dtype == jnp.float32
    assert logits.shape == (B, L, K)
    ref, _, _ = _vae().apply(params, x, eps)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), atol=0.1)


def test_conditional_vae_decode_depends_on_cond():
    model = ConditionalProteinVAE(
        seq_len=L, condition_dim=2, encoder_widths=(16,), decoder_widths=(12, 16), latent_dim=D
    )
    x = jax.random.randint(jax.random.key(1), (B, L), 0, K)
    eps = jax.random.normal(jax.random.key(2), (B, D))
    cond_a = jnp.zeros((B, 2))
    cond_b = jnp.tile(jnp.array([[1.0, -2.0]]), (B, 1))
    params = model.init(jax.random.key(3), x, cond_a, eps)
    assert params["params"]["cond_embed"]["kernel"].shape == (2, 12)
    assert params["params"]["decoder"]["mlp"]["dense_0"]["kernel"].shape == (D + 12, 12)
    logits_a, mu_a, logvar_a = model.apply(params, x, cond_a, eps)
    logits_b, mu_b, _ = model.apply(params, x, cond_b, eps)
    assert logits_a.shape == (B, L, K) and logits_a.dtype == jnp.float32
    assert _maxdiff(logits_a, logits_b) > 1e-3
    # The encoder is unconditional, as in the lecture.
    np.testing.assert_array_equal(np.asarray(mu_a), np.asarray(mu_b))
    z = mu_a + jnp.exp(0.5 * logvar_a) * eps
    decoded = model.apply(params, z, cond_a, method=model.decode)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(logits_a), atol=1e-6)
    with pytest.raises(AssertionError):
        model.apply(params, z, jnp.zeros((B, 3)), method=model.decode)


# --------------------------------------------------------------------------- MLP denoiser


@pytest.fixture(scope="module")
def mlp_setup():
    model = MLPDenoiser(hidden_widths=(16, 16), time_embed_dim=8, num_classes=3)
    x = jax.random.normal(jax.random.key(4), (B, 2))
    t = jnp.array([0, 10, 99])
    params = model.init(jax.random.key(5), x, t)
    return model, params, x, t


def test_mlp_denoiser_shapes_and_class_conditioning(mlp_setup):
    model, params, x, t = mlp_setup
    out_none = model.apply(params, x, t)
    assert out_none.shape == (B, 2) and out_none.dtype == jnp.float32
    out_null = model.apply(params, x, t, None, jnp.full((B,), 3))
    np.testing.assert_array_equal(np.asarray(out_none), np.asarray(out_null))
    out_cls = model.apply(params, x, t, None, jnp.array([0, 1, 2]))
    assert _maxdiff(out_cls, out_null) > 1e-4
    # mask is ignored; time matters.
    mask = jnp.zeros((B, 2), bool)
    np.testing.assert_array_equal(np.asarray(model.apply(params, x, t, mask)), np.asarray(out_none))
    assert _maxdiff(model.apply(params, x, t + 50), out_none) > 1e-4
    wide = MLPDenoiser(hidden_widths=(8,), time_embed_dim=4, out_dim=5)
    p_wide = wide.init(jax.random.key(0), x, t)
    assert wide.apply(p_wide, x, t).shape == (B, 5)
    with pytest.raises(ValueError, match="num_classes == 0"):
        wide.apply(p_wide, x, t, cond=jnp.zeros((B,), jnp.int32))


def test_mlp_denoiser_gradients_and_bf16(mlp_setup):
    model, params, x, t = mlp_setup
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x, t, None, jnp.array([0, 1, 3]))))(params)
    assert _finite_tree(grads)
    assert _abssum(grads["params"]["time_embed"]["class_embed"]["embedding"]) > 0
    bf16 = model.clone(dtype=jnp.bfloat16)
    out = bf16.apply(params, x, t)
    assert out.dtype == jnp.float32 and out.shape == (B, 2)
    np.testing.assert_allclose(np.asarray(out), np.asarray(model.apply(params, x, t)), atol=0.1)


def test_concat_mlp_denoiser_is_the_lecture_layout():
    """concat(x, sinusoidal e) -> Dense-SiLU-Dense-SiLU-Dense: the parameter count of the PyTorch
    nn.Sequential, (C + E) H + H + H H + H + H C + C, and the output by hand."""
    c, e, h = 6, 4, 16
    model = ConcatMLPDenoiser(hidden_widths=(h, h), time_embed_dim=e)
    x = jax.random.normal(jax.random.key(7), (B, c))
    t = jnp.array([0, 10, 999])
    params = model.init(jax.random.key(8), x, t)
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert count == (c + e) * h + h + h * h + h + h * c + c
    p = jax.tree.map(np.asarray, params["params"])
    silu = lambda v: v / (1.0 + np.exp(-v))  # noqa: E731
    hid = np.concatenate([np.asarray(x), np.asarray(timestep_embedding(t, e))], axis=-1)
    hid = silu(hid @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    hid = silu(hid @ p["dense_1"]["kernel"] + p["dense_1"]["bias"])
    want = hid @ p["out"]["kernel"] + p["out"]["bias"]
    got = model.apply(params, x, t)
    assert got.shape == (B, c) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    three = ConcatMLPDenoiser(hidden_widths=(8, 8, 8), time_embed_dim=2, out_dim=3)
    count3 = sum(leaf.size for leaf in jax.tree.leaves(three.init(jax.random.key(0), x, t)))
    assert count3 == (c + 2) * 8 + 8 + 2 * (8 * 8 + 8) + 8 * 3 + 3
    with pytest.raises(ValueError, match="unconditional"):
        model.apply(params, x, t, None, jnp.zeros((B,), jnp.int32))
