"""SiLU MLP denoisers for flat vectors (toy 2-D data, latents, flattened coordinates).

`MLPDenoiser` injects a learned time(+class) embedding before every layer; `ConcatMLPDenoiser` is the
lecture's layout (the sinusoidal time embedding concatenated to the input, then plain layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax.nn.embeddings import Dtype, TimeClassEmbedding, timestep_embedding


class MLPDenoiser(nn.Module):
    """Noise (or x_0) predictor for flat vectors `x_t` `[B, C]`.

        e   = TimeClassEmbedding(t, cond)                             [B, E]
        h_0 = Dense_{w_0}(x_t)
        h_i = Dense_{w_i}(SiLU(h_{i-1} + Dense_{w_{i-1}}(SiLU(e))))   (time before every layer)
        out = Dense_{out_dim}(SiLU(h_n + Dense(SiLU(e))))             [B, out_dim] float32

    Classifier-free guidance: with `num_classes > 0`, `cond` `[B]` int takes values in
    `{0, ..., num_classes}` and `num_classes` (or `cond=None`) is the null class.

    Attributes:
      hidden_widths: widths `w_0, ..., w_n` of the hidden layers (at least one).
      time_embed_dim: width `E` of the conditioning vector.
      out_dim: output width (None = `C`, the width of `x_t`).
      num_classes: number of real classes (0 = unconditional).
      dtype, param_dtype: compute and parameter dtypes (the output is float32).
    """

    hidden_widths: Sequence[int] = (256, 256, 256)
    time_embed_dim: int = 128
    out_dim: int | None = None
    num_classes: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_t: jax.Array,
        t: jax.Array,
        mask: jax.Array | None = None,
        cond: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Predict from `x_t` `[B, C]` and `t` `[B]`; `cond` `[B]` int or None -> `[B, out_dim]`.

        `mask` is accepted for a uniform denoiser signature and ignored (a flat vector has no
        padding); `deterministic` is likewise unused (no dropout).
        """
        del mask, deterministic
        chex.assert_rank(x_t, 2)
        chex.assert_shape(t, (x_t.shape[0],))
        if not self.hidden_widths:
            raise ValueError("MLPDenoiser needs at least one hidden width")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        e = TimeClassEmbedding(self.time_embed_dim, self.num_classes, name="time_embed", **kw)(
            t, cond
        )
        e = nn.silu(e)
        h = nn.Dense(self.hidden_widths[0], name="in_proj", **kw)(x_t.astype(self.dtype))
        widths = list(self.hidden_widths[1:]) + [self.out_dim or x_t.shape[-1]]
        for i, width in enumerate(widths):
            h = h + nn.Dense(h.shape[-1], name=f"time_proj_{i}", **kw)(e)
            h = nn.Dense(width, name=f"dense_{i}", **kw)(nn.silu(h))
        return h.astype(jnp.float32)


class ConcatMLPDenoiser(nn.Module):
    """The lecture's MLP noise predictor for flat vectors `x_t` `[B, C]`:

        e   = timestep_embedding(t, E)                     [B, E]   (sinusoidal, no parameters)
        h_0 = concat(x_t, e)                               [B, C + E]
        h_i = SiLU(Dense_{w_i}(h_{i-1}))                   for each hidden width w_1, ..., w_n
        out = Dense_{out_dim}(h_n)                         [B, out_dim] float32

    With the default two hidden widths this is Linear-SiLU-Linear-SiLU-Linear, with
    `(C + E) w_1 + w_1 + w_1 w_2 + w_2 + w_2 out + out` parameters (`out = out_dim or C`), the same
    count as the PyTorch `nn.Sequential` of the lecture. No class conditioning.

    Attributes:
      hidden_widths: widths `w_1, ..., w_n` of the hidden layers (at least one).
      time_embed_dim: width `E` of the sinusoidal time embedding.
      out_dim: output width (None = `C`, the width of `x_t`).
      dtype, param_dtype: compute and parameter dtypes (the output is float32).
    """

    hidden_widths: Sequence[int] = (256, 256)
    time_embed_dim: int = 128
    out_dim: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_t: jax.Array,
        t: jax.Array,
        mask: jax.Array | None = None,
        cond: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Predict from `x_t` `[B, C]` and `t` `[B]` -> `[B, out_dim]`; `mask` and
        `deterministic` are accepted for the uniform denoiser signature and ignored."""
        del mask, deterministic
        if cond is not None:
            raise ValueError("ConcatMLPDenoiser is unconditional; cond must be None")
        chex.assert_rank(x_t, 2)
        chex.assert_shape(t, (x_t.shape[0],))
        if not self.hidden_widths:
            raise ValueError("ConcatMLPDenoiser needs at least one hidden width")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        e = timestep_embedding(t, self.time_embed_dim)
        h = jnp.concatenate([x_t.astype(self.dtype), e.astype(self.dtype)], axis=-1)
        for i, width in enumerate(self.hidden_widths):
            h = nn.silu(nn.Dense(width, name=f"dense_{i}", **kw)(h))
        out = nn.Dense(self.out_dim or x_t.shape[-1], name="out", **kw)(h)
        return out.astype(jnp.float32)
