"""MLP sequence VAEs: `ProteinVAE` (lecture section 5) and `ConditionalProteinVAE` (section 11).

The encoder one-hot encodes `[B, L]` tokens, flattens them to `[B, L*K]` and maps them through a
ReLU MLP to the Gaussian parameters `mu, logvar` `[B, D]` of q(z | x). The decoder maps `z` `[B, D]`
through a ReLU MLP and a final Dense to logits `[B, L, K]` of p(x | z). The noise of the
reparameterization is an argument (`eps` `[B, D]`), so the modules are deterministic; the caller
draws it from its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax.vae import reparameterize_with_noise

Dtype = Any


def _one_hot_flat(x: jax.Array, seq_len: int, vocab_size: int, dtype: Dtype) -> jax.Array:
    """Int tokens `[B, L]` or float one-hot / probabilities `[B, L, K]` -> `[B, L*K]` in `dtype`."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        chex.assert_rank(x, 2)
        chex.assert_axis_dimension(x, 1, seq_len)
        x = jax.nn.one_hot(x, vocab_size, dtype=dtype)
    else:
        chex.assert_rank(x, 3)
        chex.assert_axis_dimension(x, 1, seq_len)
        chex.assert_axis_dimension(x, 2, vocab_size)
    return x.astype(dtype).reshape(x.shape[0], seq_len * vocab_size)


class _ReluMLP(nn.Module):
    """`h = ReLU(Dense_w(h))` for each width `w` in `widths` (no layer when `widths` is empty)."""

    widths: Sequence[int]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        for i, width in enumerate(self.widths):
            h = nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, name=f"dense_{i}")(
                h
            )
            h = nn.relu(h)
        return h


class _Encoder(nn.Module):
    """q(z | x): tokens `[B, L]` (or `[B, L, K]` floats) -> `mu, logvar` `[B, D]` float32."""

    seq_len: int
    vocab_size: int
    widths: Sequence[int]
    latent_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _one_hot_flat(x, self.seq_len, self.vocab_size, self.dtype)
        h = _ReluMLP(self.widths, name="mlp", **kw)(h)
        mu = nn.Dense(self.latent_dim, name="fc_mu", **kw)(h)
        logvar = nn.Dense(self.latent_dim, name="fc_logvar", **kw)(h)
        return mu.astype(jnp.float32), logvar.astype(jnp.float32)


class _Decoder(nn.Module):
    """p(x | z): features `[B, F]` -> ReLU MLP -> Dense `L*K` -> logits `[B, L, K]` float32."""

    seq_len: int
    vocab_size: int
    widths: Sequence[int]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _ReluMLP(self.widths, name="mlp", **kw)(h.astype(self.dtype))
        logits = nn.Dense(self.seq_len * self.vocab_size, name="fc_out", **kw)(h)
        return logits.reshape(h.shape[0], self.seq_len, self.vocab_size).astype(jnp.float32)


def _reparameterize(mu: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """`z = mu + exp(0.5 * logvar) * eps`, all `[B, D]` float32."""
    chex.assert_equal_shape([mu, logvar, eps])
    return reparameterize_with_noise(mu, logvar, eps.astype(jnp.float32))


class ProteinVAE(nn.Module):
    """Variational autoencoder for fixed-length (aligned) protein sequences, lecture section 5.

        mu, logvar = Dense(MLP_relu(flatten(one_hot(x))))        q(z | x) = N(mu, diag(exp(logvar)))
        z          = mu + exp(0.5 * logvar) * eps,  eps ~ N(0, I) supplied by the caller
        logits     = reshape(Dense_{L*K}(MLP_relu(z)), [B, L, K])   p(x | z) = Cat(softmax(logits))

    Usage: `params = model.init(key, x, eps)`; `logits, mu, logvar = model.apply(params, x, eps)`;
    sampling: `model.apply(params, z, method=model.decode)` or `method="decode"`.

    Attributes:
      seq_len: `L`.
      vocab_size: `K` (21 = 20 amino acids + gap).
      encoder_widths: hidden widths of the encoder MLP.
      decoder_widths: hidden widths of the decoder MLP.
      latent_dim: `D`.
      dtype, param_dtype: compute and parameter dtypes (outputs are float32).
    """

    seq_len: int
    vocab_size: int = 21
    encoder_widths: Sequence[int] = (256, 256)
    decoder_widths: Sequence[int] = (256, 256)
    latent_dim: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = _Encoder(
            self.seq_len, self.vocab_size, tuple(self.encoder_widths), self.latent_dim, **kw
        )
        self.decoder = _Decoder(self.seq_len, self.vocab_size, tuple(self.decoder_widths), **kw)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Tokens `[B, L]` int (or one-hot / probabilities `[B, L, K]`) -> `(mu, logvar)` `[B, D]`.

        Both outputs are float32.
        """
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """Latent codes `[B, D]` -> logits `[B, L, K]` float32."""
        chex.assert_rank(z, 2)
        chex.assert_axis_dimension(z, 1, self.latent_dim)
        return self.decoder(z)

    def __call__(self, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`x` `[B, L]` (or `[B, L, K]`), `eps` `[B, D]` -> `(logits [B, L, K], mu, logvar)`."""
        mu, logvar = self.encode(x)
        z = _reparameterize(mu, logvar, eps)
        return self.decode(z), mu, logvar


class ConditionalProteinVAE(nn.Module):
    """Protein VAE whose decoder is conditioned on a property vector, lecture section 11.

        mu, logvar = encoder(x)                       (unconditional, as in the lecture)
        z          = mu + exp(0.5 * logvar) * eps
        logits     = decoder([z, Dense_H(cond)])     H = decoder_widths[0] (or latent_dim if empty)

    The encoder ignores the condition, as in the lecture's `ConditionalProteinVAE`; the latent code
    is then free to capture the variation orthogonal to `cond`.

    Usage: `model.init(key, x, cond, eps)`; sampling:
    `model.apply(params, z, cond, method=model.decode)`.

    Attributes:
      seq_len: `L`.
      condition_dim: `C`, width of the float condition vector.
      vocab_size, encoder_widths, decoder_widths, latent_dim, dtype, param_dtype: as `ProteinVAE`.
    """

    seq_len: int
    condition_dim: int
    vocab_size: int = 21
    encoder_widths: Sequence[int] = (256, 256)
    decoder_widths: Sequence[int] = (256, 256)
    latent_dim: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = _Encoder(
            self.seq_len, self.vocab_size, tuple(self.encoder_widths), self.latent_dim, **kw
        )
        cond_width = self.decoder_widths[0] if len(self.decoder_widths) else self.latent_dim
        self.cond_embed = nn.Dense(cond_width, **kw)
        self.decoder = _Decoder(self.seq_len, self.vocab_size, tuple(self.decoder_widths), **kw)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Tokens `[B, L]` int (or `[B, L, K]` floats) -> `(mu, logvar)` `[B, D]` float32."""
        return self.encoder(x)

    def decode(self, z: jax.Array, cond: jax.Array) -> jax.Array:
        """`z` `[B, D]`, `cond` `[B, C]` float -> logits `[B, L, K]` float32."""
        chex.assert_rank([z, cond], 2)
        chex.assert_axis_dimension(z, 1, self.latent_dim)
        chex.assert_shape(cond, (z.shape[0], self.condition_dim))
        cond_emb = self.cond_embed(cond.astype(self.dtype))
        return self.decoder(jnp.concatenate([z.astype(self.dtype), cond_emb], axis=-1))

    def __call__(
        self, x: jax.Array, cond: jax.Array, eps: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`x` `[B, L]`, `cond` `[B, C]`, `eps` `[B, D]` -> `(logits [B, L, K], mu, logvar)`."""
        mu, logvar = self.encode(x)
        z = _reparameterize(mu, logvar, eps)
        return self.decode(z, cond), mu, logvar
