"""`SequenceDenoiser`: the one transformer behind OADM, D3PM and the continuous relaxation.

    features = one_hot(x_t, vocab_size)          int tokens [B, L] (OADM, D3PM: MASK / PAD included)
             | x_t                               float embeddings [B, L, C] (continuous relaxation)
    logits   = TransformerDenoiser(features, t, mask, family)      [B, L, num_outputs] float32

A one-hot input followed by the transformer's input `Dense` is exactly a learned token embedding. The
timestep `t` (D3PM / relaxation step, or the OADM number of masked positions) and the family label (null
class `num_classes` for classifier-free guidance) condition every block through adaptive LayerNorm.
The output head is a categorical over the 20 amino acids for every method: OADM and D3PM read it as
`p(x0 | x_t)`; the relaxation turns it into an x0 embedding (`protgen_jax.discrete.relax`). Padding
(`mask` False) never influences real positions and its outputs are zero.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax import alphabet as vocab
from protgen_jax.nn.embeddings import Dtype
from protgen_jax.nn.transformer import TransformerDenoiser


class SequenceDenoiser(nn.Module):
    """Token / embedding front end + `TransformerDenoiser` + amino-acid logits head.

    Attributes:
      vocab_size: one-hot width for integer inputs (23 = every token of protgen_jax.alphabet).
      num_outputs: logits per position (20 amino acids).
      num_layers, num_heads, model_dim, mlp_ratio, dropout_rate: transformer size.
      num_classes: number of families (0 = unconditional); label `num_classes` is the null class.
      dtype, param_dtype: compute and parameter dtypes (logits are float32).
    """

    vocab_size: int = vocab.VOCAB_SIZE
    num_outputs: int = vocab.K_AA
    num_layers: int = 4
    num_heads: int = 4
    model_dim: int = 128
    mlp_ratio: float = 4.0
    dropout_rate: float = 0.0
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
        """Logits `[B, L, num_outputs]` float32 from `x_t` (`[B, L]` int or `[B, L, C]` float), `t` `[B]`.

        `mask` `[B, L]` bool (None = all residues); `cond` `[B]` int family labels or None (null class).
        """
        if jnp.issubdtype(x_t.dtype, jnp.integer):
            chex.assert_rank(x_t, 2)
            features = jax.nn.one_hot(x_t, self.vocab_size, dtype=self.dtype)
        else:
            chex.assert_rank(x_t, 3)
            features = x_t
        chex.assert_shape(t, (x_t.shape[0],))
        logits = TransformerDenoiser(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            model_dim=self.model_dim,
            mlp_ratio=self.mlp_ratio,
            out_dim=self.num_outputs,
            dropout_rate=self.dropout_rate,
            num_classes=self.num_classes,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="transformer",
        )(features, t, mask, cond, deterministic=deterministic)
        chex.assert_shape(logits, x_t.shape[:2] + (self.num_outputs,))
        return logits
