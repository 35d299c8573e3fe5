"""Sinusoidal timestep / position embeddings and the time(+class) conditioning MLP.

`timestep_embedding` is the lecture's `SinusoidalTimestepEmbedding` (section 8) as a pure function;
`TimeClassEmbedding` turns it (plus an optional class label) into the conditioning vector that the
denoisers in this package inject into their blocks.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of scalar timesteps (Ho et al. 2020; the lecture's section 8).

    With `half = dim // 2` and `i = 0, ..., half - 1`:

        freqs_i = exp(-log(max_period) * i / half)
        emb(t)  = [sin(t * freqs_0), ..., sin(t * freqs_{half-1}),
                   cos(t * freqs_0), ..., cos(t * freqs_{half-1})]

    An odd `dim` gets one trailing zero column.

    Args:
      t: `[B]` timesteps (int or float; residue indices work too).
      dim: embedding width `C`.
      max_period: the longest wavelength, 10000 as in the transformer position encoding.

    Returns:
      `[B, C]` float32.
    """
    chex.assert_rank(t, 1)
    if dim < 1:
        raise ValueError(f"timestep_embedding: dim must be >= 1, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros((t.shape[0], 1), jnp.float32)], axis=-1)
    return emb


def position_encoding(length: int, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal residue-position encoding `timestep_embedding(arange(L), C)`: `[L, C]` float32."""
    return timestep_embedding(jnp.arange(length), dim, max_period)


def null_class(cond: jax.Array | None, batch: int, num_classes: int) -> jax.Array:
    """Class labels with `None` replaced by the null class `num_classes` (classifier-free guidance).

    Args:
      cond: `[B]` int labels in `{0, ..., num_classes}` or None.
      batch: `B`.
      num_classes: number of real classes; index `num_classes` is the null class.

    Returns:
      `[B]` int32 labels.
    """
    if cond is None:
        return jnp.full((batch,), num_classes, jnp.int32)
    chex.assert_shape(cond, (batch,))
    return cond.astype(jnp.int32)


class TimeClassEmbedding(nn.Module):
    """Conditioning vector from a timestep and an optional class label.

        e = Dense(SiLU(Dense(timestep_embedding(t, C)))) + Embed_{num_classes + 1}(cond)

    The class table has `num_classes + 1` rows; row `num_classes` is the null class used for
    classifier-free guidance, and `cond=None` means the null class. With `num_classes == 0` there is
    no table and passing `cond` is an error. Out-of-range labels give NaN rows (`jnp.take` fill
    mode).

    Attributes:
      features: output width `C`.
      num_classes: number of real classes (0 = unconditional).
      dtype, param_dtype: compute and parameter dtypes.
    """

    features: int
    num_classes: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        """`t` `[B]`, `cond` `[B]` int or None -> `[B, C]` in `dtype`."""
        chex.assert_rank(t, 1)
        batch = t.shape[0]
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        e = timestep_embedding(t, self.features)
        e = nn.Dense(self.features, name="time_in", **dense)(e)
        e = nn.Dense(self.features, name="time_out", **dense)(nn.silu(e))
        if self.num_classes > 0:
            labels = null_class(cond, batch, self.num_classes)
            table = nn.Embed(
                self.num_classes + 1,
                self.features,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="class_embed",
            )
            e = e + table(labels)
        elif cond is not None:
            raise ValueError("cond was given but num_classes == 0 (the network is unconditional)")
        return e
