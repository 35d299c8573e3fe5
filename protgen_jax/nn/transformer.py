"""`TransformerDenoiser`: a pre-LN transformer over residues with adaptive-LayerNorm conditioning.

Per block (Peebles & Xie 2023, "DiT", without the output gates):

    h = h + Dropout(Attn(Mod(LN(h); shift_1, scale_1), mask, bias))
    h = h + Dropout(MLP(Mod(LN(h); shift_2, scale_2)))       Mod(u; s, c) = u * (1 + c) + s

where `(shift, scale)` come from a zero-initialized Dense of SiLU(time + class embedding), so every
modulation starts as the identity. With `time_conditioning="add"` the embedding is instead added to
the input tokens and the LayerNorms are ordinary learned ones.
"""

from __future__ import annotations

from typing import Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax.nn.embeddings import Dtype, TimeClassEmbedding, position_encoding

_NEG_INF = -1e9


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask and an optional additive bias.

        logits_{bhqk} = <q_{bqh}, k_{bkh}> / sqrt(C / H) + bias_{bhqk}    (float32)
        logits_{bhqk} = -1e9 where mask_{bk} is False
        out_{bq}      = Dense(concat_h sum_k softmax_k(logits)_{bhqk} v_{bkh})

    Attributes:
      num_heads: `H`.
      model_dim: `C` (a multiple of `H`).
      dtype, param_dtype: compute and parameter dtypes; logits and softmax run in float32.
    """

    num_heads: int
    model_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, mask: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        """`h` `[B, L, C]`, `mask` `[B, L]` bool, `bias` `[B, H or 1, L, L]` -> `[B, L, C]`."""
        if self.model_dim % self.num_heads:
            raise ValueError(
                f"model_dim {self.model_dim} not divisible by num_heads {self.num_heads}"
            )
        head_dim = self.model_dim // self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        proj = dict(features=(self.num_heads, head_dim), axis=-1, **kw)
        q = nn.DenseGeneral(name="query", **proj)(h)
        k = nn.DenseGeneral(name="key", **proj)(h)
        v = nn.DenseGeneral(name="value", **proj)(h)
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits.astype(jnp.float32) / jnp.sqrt(jnp.float32(head_dim))
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        logits = jnp.where(mask[:, None, None, :], logits, _NEG_INF)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhc->bqhc", weights, v)
        return nn.DenseGeneral(self.model_dim, axis=(-2, -1), name="out", **kw)(out)


class _ModulatedLayerNorm(nn.Module):
    """`LN(h) * (1 + scale) + shift` with `(shift, scale)` from a zero-initialized Dense of `e`.

    With `e=None` this is an ordinary LayerNorm with learned scale and bias.
    """

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, e: jax.Array | None) -> jax.Array:
        """`h` `[B, L, C]`, `e` `[B, E]` (SiLU already applied) or None -> `[B, L, C]`."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if e is None:
            return nn.LayerNorm(name="norm", **kw)(h)
        h = nn.LayerNorm(use_scale=False, use_bias=False, name="norm", **kw)(h)
        mod = nn.Dense(
            2 * h.shape[-1],
            kernel_init=nn.initializers.zeros_init(),
            bias_init=nn.initializers.zeros_init(),
            name="modulation",
            **kw,
        )(e)
        shift, scale = jnp.split(mod[:, None, :], 2, axis=-1)
        return h * (1 + scale) + shift


class _Block(nn.Module):
    """One pre-LN transformer block (attention + MLP, both residual)."""

    num_heads: int
    model_dim: int
    mlp_ratio: float
    dropout_rate: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        e: jax.Array | None,
        mask: jax.Array,
        bias: jax.Array | None,
        deterministic: bool,
    ) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        u = _ModulatedLayerNorm(name="norm_attn", **kw)(h, e)
        u = MaskedSelfAttention(self.num_heads, self.model_dim, name="attn", **kw)(u, mask, bias)
        h = h + nn.Dropout(self.dropout_rate)(u, deterministic=deterministic)
        u = _ModulatedLayerNorm(name="norm_mlp", **kw)(h, e)
        u = nn.Dense(int(self.mlp_ratio * self.model_dim), name="mlp_in", **kw)(u)
        u = nn.Dense(self.model_dim, name="mlp_out", **kw)(nn.gelu(u))
        return h + nn.Dropout(self.dropout_rate)(u, deterministic=deterministic)


class TransformerDenoiser(nn.Module):
    """Transformer denoiser over per-residue features `x_t` `[B, L, C_in]`.

        h_0 = Dense_C(x_t * mask) + PE(arange(L))                (sinusoidal residue positions)
        e   = TimeClassEmbedding(t, cond)
        h   = Block_n(... Block_1(h_0, e) ...)                   (attention over real residues only)
        out = Dense_{out_dim}(Mod(LN(h))) * mask                 [B, L, out_dim] float32

    Padding: `mask` `[B, L]` masks attention keys, inputs at padded positions are zeroed and outputs
    there are zero, so real positions never depend on padded ones (or on how much padding there is).

    Pairwise features (e.g. distances for backbone diffusion) enter as an additive attention bias
    `[B, H or 1, L, L]`: pass `attn_bias=` to `__call__`, or subclass and override `attention_bias`
    (the two are summed). The same bias is used in every layer.

    Attributes:
      num_layers, num_heads, model_dim: depth, heads `H` and width `C` (a multiple of `H`).
      mlp_ratio: MLP hidden width as a multiple of `model_dim`.
      out_dim: output features (None = `C_in`).
      dropout_rate: dropout on the attention and MLP residual branches (needs a 'dropout' rng when
        `deterministic=False`).
      num_classes: number of real classes (0 = unconditional); class `num_classes` (or
        `cond=None`) is the null class.
      time_conditioning: "adaln" (adaptive LayerNorm, zero-initialized) or "add".
      time_embed_dim: width of the conditioning vector (None = `model_dim`).
      dtype, param_dtype: compute and parameter dtypes (the output is float32).
    """

    num_layers: int = 4
    num_heads: int = 4
    model_dim: int = 128
    mlp_ratio: float = 4.0
    out_dim: int | None = None
    dropout_rate: float = 0.0
    num_classes: int = 0
    time_conditioning: Literal["adaln", "add"] = "adaln"
    time_embed_dim: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def attention_bias(self, x_t: jax.Array, mask: jax.Array) -> jax.Array | None:
        """Hook for subclasses: an additive attention bias `[B, H or 1, L, L]` computed from `x_t`.

        Called inside the compact `__call__`, so an override may create parameters (e.g. a Dense
        over pairwise-distance features). The base class adds no bias.
        """
        del x_t, mask
        return None

    @nn.compact
    def __call__(
        self,
        x_t: jax.Array,
        t: jax.Array,
        mask: jax.Array | None = None,
        cond: jax.Array | None = None,
        *,
        attn_bias: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Predict from `x_t` `[B, L, C_in]` and `t` `[B]`.

        Args:
          x_t: `[B, L, C_in]` noisy per-residue features.
          t: `[B]` timesteps.
          mask: `[B, L]` bool, True at real residues (None = all real).
          cond: `[B]` int class labels or None (null class).
          attn_bias: `[B, H or 1, L, L]` additive attention bias or None.
          deterministic: disables dropout.

        Returns:
          `[B, L, out_dim]` float32, zero at padded positions.
        """
        chex.assert_rank(x_t, 3)
        batch, length, in_dim = x_t.shape
        chex.assert_shape(t, (batch,))
        if mask is None:
            mask = jnp.ones((batch, length), bool)
        chex.assert_shape(mask, (batch, length))
        mask = mask.astype(bool)
        if self.time_conditioning not in ("adaln", "add"):
            raise ValueError(
                f"time_conditioning must be 'adaln' or 'add', got {self.time_conditioning!r}"
            )
        bias = self._total_bias(self.attention_bias(x_t, mask), attn_bias, batch, length)

        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        maskf = mask[..., None].astype(self.dtype)
        h = nn.Dense(self.model_dim, name="in_proj", **kw)(x_t.astype(self.dtype) * maskf)
        h = h + position_encoding(length, self.model_dim)[None].astype(self.dtype)
        e = TimeClassEmbedding(
            self.time_embed_dim or self.model_dim, self.num_classes, name="time_embed", **kw
        )(t, cond)
        e = nn.silu(e)
        if self.time_conditioning == "add":
            h = h + nn.Dense(self.model_dim, name="time_proj", **kw)(e)[:, None, :]
            e = None
        for i in range(self.num_layers):
            h = _Block(
                self.num_heads,
                self.model_dim,
                self.mlp_ratio,
                self.dropout_rate,
                name=f"block_{i}",
                **kw,
            )(h, e, mask, bias, deterministic)
        h = _ModulatedLayerNorm(name="norm_out", **kw)(h, e)
        out = nn.Dense(self.out_dim or in_dim, name="out_proj", **kw)(h)
        return out.astype(jnp.float32) * mask[..., None].astype(jnp.float32)

    def _total_bias(
        self, hook: jax.Array | None, given: jax.Array | None, batch: int, length: int
    ) -> jax.Array | None:
        """Check and sum the hook and caller biases, each `[B, H or 1, L, L]`; None if neither."""
        total = None
        for bias in (hook, given):
            if bias is None:
                continue
            chex.assert_rank(bias, 4)
            if bias.shape[0] != batch or bias.shape[1] not in (1, self.num_heads):
                raise ValueError(
                    f"attention bias shape {bias.shape} is not "
                    f"[B={batch}, H={self.num_heads} or 1, L={length}, L={length}]"
                )
            chex.assert_axis_dimension(bias, 2, length)
            chex.assert_axis_dimension(bias, 3, length)
            bias = bias.astype(jnp.float32)
            total = bias if total is None else total + bias
        return total
