"""`UNet1DDenoiser`: a 1-D U-Net over residues with time(+class) embedding added in every block.

Every normalization is a per-position LayerNorm over channels and every convolution sees padded
positions as zeros, so a real residue's output never depends on padding values or on how much
padding there is (the mask at coarser levels is the OR of its two children).
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax.nn.embeddings import Dtype, TimeClassEmbedding


def _masked(h: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero `h` `[B, L, C]` where `mask` `[B, L]` is False."""
    return h * mask[..., None].astype(h.dtype)


def _pool_mask(mask: jax.Array) -> jax.Array:
    """`[B, L]` -> `[B, L/2]`: a coarse position is real if either child is."""
    return mask.reshape(mask.shape[0], mask.shape[1] // 2, 2).any(axis=-1)


class _ResBlock(nn.Module):
    """Residual conv block with the conditioning vector added between the two convolutions.

    u = Conv_k(mask * SiLU(LN(h)))
    u = u + Dense(e)
    u = Conv_k(mask * Dropout(SiLU(LN(u))))
    out = mask * (Dense(h) + u)               (Dense = per-position projection when widths differ)
    """

    features: int
    kernel_size: int
    dropout_rate: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, h: jax.Array, e: jax.Array, mask: jax.Array, deterministic: bool
    ) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = dict(features=self.features, kernel_size=(self.kernel_size,), padding="SAME", **kw)
        u = nn.silu(nn.LayerNorm(name="norm_1", **kw)(h))
        u = nn.Conv(name="conv_1", **conv)(_masked(u, mask))
        u = u + nn.Dense(self.features, name="time_proj", **kw)(e)[:, None, :]
        u = nn.silu(nn.LayerNorm(name="norm_2", **kw)(u))
        u = nn.Dropout(self.dropout_rate)(u, deterministic=deterministic)
        u = nn.Conv(name="conv_2", **conv)(_masked(u, mask))
        if h.shape[-1] != self.features:
            h = nn.Dense(self.features, name="skip_proj", **kw)(h)
        return _masked(h + u, mask)


class UNet1DDenoiser(nn.Module):
    """1-D U-Net denoiser over per-residue features `x_t` `[B, L, C_in]`.

    With `channels = (c_0, ..., c_n)` there are `n + 1` resolutions `L, L/2, ..., L/2^n`:

        h = Dense_{c_0}(x_t)                                      (L padded to a multiple of 2^n)
        down, level i:  h = ResBlock_{c_i}(h, e); skip_i = h; h = StridedConv_2(h)  (i < n)
        middle:         h = ResBlock_{c_n}(h, e)
        up, level i:    h = ResBlock_{c_i}([h, skip_i], e); h = Conv_k(Repeat_2(h))  (i > 0)
        out = mask * Dense_{out_dim}(SiLU(LN(h)))                 cropped back to L, float32

    with `e = SiLU(TimeClassEmbedding(t, cond))`. Padded positions are zeroed before every
    convolution and at the output.

    Attributes:
      channels: widths per resolution level.
      kernel_size: odd convolution width (3 or 5).
      out_dim: output features (None = `C_in`).
      time_embed_dim: width of the conditioning vector.
      num_classes: number of real classes (0 = unconditional); class `num_classes` (or
        `cond=None`) is the null class.
      dropout_rate: dropout inside the residual blocks (needs a 'dropout' rng when
        `deterministic=False`).
      dtype, param_dtype: compute and parameter dtypes (the output is float32).
    """

    channels: Sequence[int] = (64, 128, 256)
    kernel_size: int = 3
    out_dim: int | None = None
    time_embed_dim: int = 128
    num_classes: int = 0
    dropout_rate: float = 0.0
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
        """Predict from `x_t` `[B, L, C_in]` and `t` `[B]`.

        Args:
          x_t: `[B, L, C_in]` noisy per-residue features.
          t: `[B]` timesteps.
          mask: `[B, L]` bool, True at real residues (None = all real).
          cond: `[B]` int class labels or None (null class).
          deterministic: disables dropout.

        Returns:
          `[B, L, out_dim]` float32, zero at padded positions.
        """
        chex.assert_rank(x_t, 3)
        batch, length, in_dim = x_t.shape
        chex.assert_shape(t, (batch,))
        if not self.channels:
            raise ValueError("UNet1DDenoiser needs at least one channel level")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if mask is None:
            mask = jnp.ones((batch, length), bool)
        chex.assert_shape(mask, (batch, length))
        mask = mask.astype(bool)

        levels = len(self.channels)
        multiple = 2 ** (levels - 1)
        padded = -(-length // multiple) * multiple
        x = jnp.pad(x_t, ((0, 0), (0, padded - length), (0, 0)))
        m = jnp.pad(mask, ((0, 0), (0, padded - length)))

        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = dict(kernel_size=self.kernel_size, dropout_rate=self.dropout_rate, **kw)
        e = TimeClassEmbedding(self.time_embed_dim, self.num_classes, name="time_embed", **kw)(
            t, cond
        )
        e = nn.silu(e)

        h = nn.Dense(self.channels[0], name="in_proj", **kw)(_masked(x.astype(self.dtype), m))
        skips, masks = [], []
        for i, ch in enumerate(self.channels):
            h = _ResBlock(ch, name=f"down_{i}", **block)(h, e, m, deterministic)
            skips.append(h)
            masks.append(m)
            if i < levels - 1:
                h = nn.Conv(ch, (2,), strides=(2,), padding="VALID", name=f"downsample_{i}", **kw)(
                    h
                )
                m = _pool_mask(m)
                h = _masked(h, m)
        h = _ResBlock(self.channels[-1], name="middle", **block)(h, e, m, deterministic)
        for i in reversed(range(levels)):
            h = jnp.concatenate([h, skips[i]], axis=-1)
            h = _ResBlock(self.channels[i], name=f"up_{i}", **block)(h, e, masks[i], deterministic)
            if i > 0:
                m = masks[i - 1]
                h = _masked(jnp.repeat(h, 2, axis=1), m)
                h = nn.Conv(
                    self.channels[i - 1],
                    (self.kernel_size,),
                    padding="SAME",
                    name=f"upsample_{i}",
                    **kw,
                )(h)
        h = nn.silu(nn.LayerNorm(name="norm_out", **kw)(h))
        out = nn.Dense(self.out_dim or in_dim, name="out_proj", **kw)(h)
        out = _masked(out.astype(jnp.float32), masks[0])
        return out[:, :length]
