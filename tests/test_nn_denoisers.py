"""Tests for the sequence denoisers in protgen_jax.nn: TransformerDenoiser and UNet1DDenoiser."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.nn import TransformerDenoiser, UNet1DDenoiser

B, C_IN, REAL = 2, 3, 10


def _finite_tree(tree) -> bool:
    return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(tree))


def _maxdiff(a, b) -> float:
    """max |a - b| computed in NumPy (no per-shape XLA compile in the tests)."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _abssum(a) -> float:
    return float(np.abs(np.asarray(a, np.float64)).sum())


def _random_params(model, *args, seed: int = 0):
    """Random parameters of `model.init(key, *args)`'s shapes, drawn with NumPy.

    Cheaper than `model.init` (whose initializers take XLA seconds to compile on CPU) and nonzero
    everywhere, so zero-initialized layers (the adaLN modulation) are exercised too: kernels
    N(0, 1 / fan_in), embeddings N(0, 1), LayerNorm scales 1 + N(0, 0.01), biases N(0, 0.01).
    """
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name == "embedding":
            std = 1.0
        else:
            std = 0.1
        value = std * rng.standard_normal(leaf.shape)
        return jnp.asarray(value + (name == "scale"), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _padded(x_real: np.ndarray, length: int, seed: int) -> tuple[jax.Array, jax.Array]:
    """Pad `[B, REAL, C]` to `[B, length, C]` with large random garbage; mask True on the first REAL."""
    x = 100.0 * np.random.default_rng(seed).standard_normal((B, length, x_real.shape[2]))
    x[:, :REAL] = x_real
    mask = np.broadcast_to(np.arange(length)[None] < REAL, (B, length))
    return jnp.asarray(x, jnp.float32), jnp.asarray(mask)


def _transformer(**kw) -> TransformerDenoiser:
    base = dict(num_layers=2, num_heads=2, model_dim=16, mlp_ratio=2.0, num_classes=2)
    return TransformerDenoiser(**{**base, **kw})


def _unet(**kw) -> UNet1DDenoiser:
    base = dict(channels=(8, 12, 16), time_embed_dim=8, num_classes=2)
    return UNet1DDenoiser(**{**base, **kw})


MODELS = {
    "transformer_adaln": lambda: _transformer(),
    "transformer_add": lambda: _transformer(time_conditioning="add"),
    "unet_k3": lambda: _unet(),
    "unet_k5": lambda: _unet(kernel_size=5, out_dim=4),
}
X_REAL = np.random.default_rng(0).standard_normal((B, REAL, C_IN)).astype(np.float32)
T = jnp.array([3, 250])
COND = jnp.array([1, 2])


# The costlier checks (backward pass, bf16) skip the k=5 U-Net to keep the suite fast.
CORE_MODELS = ["transformer_adaln", "transformer_add", "unet_k3"]


@functools.cache
def _build(name: str):
    """(model, random params, jitted apply) for one configuration, shared by both fixtures."""
    model = MODELS[name]()
    return model, _random_params(model, X_REAL, T), jax.jit(model.apply)


@pytest.fixture(params=sorted(MODELS))
def setup(request):
    return _build(request.param)


@pytest.fixture(params=CORE_MODELS)
def core_setup(request):
    return _build(request.param)


def test_output_shape_dtype_and_conditioning(setup):
    model, params, apply = setup
    ref = apply(params, X_REAL, T, None, COND)
    assert ref.shape == (B, REAL, model.out_dim or C_IN)
    assert ref.dtype == jnp.float32
    assert np.isfinite(np.asarray(ref)).all()
    # Time and class both reach the output; cond=None is the null class.
    assert _maxdiff(apply(params, X_REAL, T + 100, None, COND), ref) > 1e-4
    null = apply(params, X_REAL, T, None, jnp.full((B,), model.num_classes))
    assert _maxdiff(null, ref) > 1e-4
    np.testing.assert_array_equal(np.asarray(null), np.asarray(apply(params, X_REAL, T)))


def test_padding_invariance_and_zero_padded_outputs(setup):
    """Real positions of a length-10 sequence are the same unpadded, padded to 16 and to 24."""
    _, params, apply = setup
    ref = apply(params, X_REAL, T, None, COND)
    for length in (16, 24):
        x, mask = _padded(X_REAL, length, seed=length)
        out = apply(params, x, T, mask, COND)
        np.testing.assert_allclose(np.asarray(out[:, :REAL]), np.asarray(ref), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(out[:, REAL:]), 0.0)
    # The check can fail: without the mask the garbage changes the real positions.
    x, _ = _padded(X_REAL, 16, seed=16)
    unmasked = apply(params, x, T, None, COND)
    assert _maxdiff(unmasked[:, :REAL], ref) > 1e-3


def test_gradients_finite(core_setup):
    model, params, _ = core_setup
    mask = jnp.asarray(np.arange(REAL)[None] < np.array([[REAL], [6]]))

    def loss(p, x):
        return jnp.sum(model.apply(p, x, T, mask, COND) ** 2)

    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(X_REAL))
    assert _finite_tree(g_params)
    assert all(_abssum(g) > 0 for g in jax.tree.leaves(g_params))
    assert _abssum(g_x[:, :6]) > 0
    # Padded inputs do not influence the output.
    np.testing.assert_array_equal(np.asarray(g_x[1, 6:]), 0.0)


def test_bf16_returns_float32(core_setup):
    model, params, apply = core_setup
    out = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(params, X_REAL, T, None, COND)
    ref = apply(params, X_REAL, T, None, COND)
    assert out.dtype == jnp.float32 and out.shape == ref.shape
    assert np.isfinite(np.asarray(out)).all()
    # bf16 keeps ~3 significant digits; a loose relative bound still catches a broken network.
    scale = float(np.abs(np.asarray(ref)).max())
    assert _maxdiff(out, ref) < 0.1 * scale


# --------------------------------------------------------------------------- transformer specifics


def test_adaln_starts_as_identity_modulation():
    """Zero-initialized modulation: at init the adaLN network ignores t and cond."""
    t0, t1 = jnp.array([0, 0]), jnp.array([500, 900])
    model = _transformer(num_layers=1)
    params = model.init(jax.random.key(4), X_REAL, t0)
    for name in ("norm_attn", "norm_mlp"):
        mod = params["params"]["block_0"][name]["modulation"]
        assert not np.any(np.asarray(mod["kernel"])) and not np.any(np.asarray(mod["bias"]))
    apply = jax.jit(model.apply)
    out_t0 = apply(params, X_REAL, t0)
    out_t1 = apply(params, X_REAL, t1, None, jnp.array([0, 1]))
    np.testing.assert_allclose(np.asarray(out_t0), np.asarray(out_t1), atol=1e-6)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, X_REAL, t1) ** 2)))(params)
    assert _abssum(grads["params"]["block_0"]["norm_attn"]["modulation"]["kernel"]) > 0


def test_attention_bias_argument():
    model = _transformer(num_classes=0)
    params = _random_params(model, X_REAL, T)
    apply = jax.jit(model.apply)
    ref = apply(params, X_REAL, T)
    zero = apply(params, X_REAL, T, attn_bias=jnp.zeros((B, 1, REAL, REAL)))
    np.testing.assert_allclose(np.asarray(zero), np.asarray(ref), atol=1e-6)
    bias = jnp.asarray(np.random.default_rng(1).standard_normal((B, 2, REAL, REAL)), jnp.float32)
    assert _maxdiff(apply(params, X_REAL, T, attn_bias=bias), ref) > 1e-3
    # A -1e9 bias on keys >= 6 acts like masking them: real positions 0..5 agree with the masked run.
    keep = jnp.arange(REAL) < 6
    bias_keys = jnp.broadcast_to(jnp.where(keep, 0.0, -1e9), (B, 1, REAL, REAL))
    out_bias = apply(params, X_REAL, T, attn_bias=bias_keys)
    out_mask = apply(params, X_REAL, T, jnp.broadcast_to(keep, (B, REAL)))
    np.testing.assert_allclose(np.asarray(out_bias[:, :6]), np.asarray(out_mask[:, :6]), atol=1e-5)
    assert _maxdiff(out_bias[:, :6], ref[:, :6]) > 1e-3
    with pytest.raises(ValueError, match="attention bias shape"):
        model.apply(params, X_REAL, T, attn_bias=jnp.zeros((B, 3, REAL, REAL)))


def test_attention_bias_subclass_hook_can_own_parameters():
    class DistanceBiasTransformer(TransformerDenoiser):
        def attention_bias(self, x_t, mask):
            d = jnp.linalg.norm(x_t[:, :, None, :] - x_t[:, None, :, :], axis=-1)
            return nn.Dense(self.num_heads, name="dist_bias")(d[..., None]).transpose(0, 3, 1, 2)

    sub = DistanceBiasTransformer(num_layers=1, num_heads=2, model_dim=16)
    params = _random_params(sub, X_REAL, T)
    assert params["params"]["dist_bias"]["kernel"].shape == (1, 2)
    out = sub.apply(params, X_REAL, T)
    assert out.shape == (B, REAL, C_IN)
    # Scaling the bias kernel changes the output, so the hook's bias reaches the attention.
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, v: 5.0 * v if "dist_bias" in jax.tree_util.keystr(path) else v, params
    )
    assert _maxdiff(sub.apply(scaled, X_REAL, T), out) > 1e-4


def test_transformer_dropout_uses_rng():
    model = _transformer(dropout_rate=0.5, num_layers=1)
    params = _random_params(model, X_REAL, T)
    ref = model.apply(params, X_REAL, T)
    train = model.apply(params, X_REAL, T, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert _maxdiff(train, ref) > 1e-4
