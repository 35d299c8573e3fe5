"""`AngleDenoiser`: FoldingDiff's network, a bidirectional transformer over residues predicting the noise
of the six internal coordinates per residue.

    features = [x_t, sin x_t, cos x_t] * mask                          [B, L, 3 C]   (C = 6 angles)
    bias_{hqk} = table_h[clip(k - q, -R, R)]                           (learned relative positions)
    eps_hat  = TransformerDenoiser(features, t, mask, attn_bias=bias)   [B, L, C]

The trunk (:class:`protgen_jax.nn.transformer.TransformerDenoiser`) adds absolute sinusoidal positions
and conditions every block on the sinusoidal timestep embedding (adaptive LayerNorm). Sine and cosine make
the input continuous across the wrap at +-pi; the raw angle is kept because the noise to predict is
defined on the unwrapped line.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax.nn.embeddings import Dtype
from protgen_jax.nn.transformer import TransformerDenoiser


class AngleDenoiser(nn.Module):
    """eps-prediction network on ``[B, L, C]`` angles (module docstring).

    Attributes:
      num_layers, num_heads, model_dim, mlp_ratio: the trunk's depth, heads, width, MLP ratio.
      max_relative_position: ``R``, relative offsets are clipped to ``[-R, R]``.
      dtype, param_dtype: compute and parameter dtypes (the output is float32).
    """

    num_layers: int = 4
    num_heads: int = 4
    model_dim: int = 128
    mlp_ratio: float = 4.0
    max_relative_position: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x_t: jax.Array, t: jax.Array, mask: jax.Array | None = None, cond=None
    ) -> jax.Array:
        """``x_t [B, L, C]`` radians, ``t [B]`` int, ``mask [B, L]`` -> ``eps_hat [B, L, C]`` float32."""
        chex.assert_rank(x_t, 3)
        batch, length, channels = x_t.shape
        if mask is None:
            mask = jnp.ones((batch, length), bool)
        feats = jnp.concatenate([x_t, jnp.sin(x_t), jnp.cos(x_t)], axis=-1)
        offsets = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]
        span = self.max_relative_position
        table = self.param(
            "relative_bias", nn.initializers.zeros_init(), (2 * span + 1, self.num_heads)
        )
        bias = jnp.take(table, jnp.clip(offsets, -span, span) + span, axis=0)  # [L, L, H]
        bias = jnp.broadcast_to(
            jnp.transpose(bias, (2, 0, 1))[None], (batch, self.num_heads, length, length)
        )
        return TransformerDenoiser(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            model_dim=self.model_dim,
            mlp_ratio=self.mlp_ratio,
            out_dim=channels,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="trunk",
        )(feats, t, mask, cond, attn_bias=bias)
