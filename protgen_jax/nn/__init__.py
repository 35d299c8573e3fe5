"""Flax Linen networks: timestep embeddings, MLP sequence VAEs, MLP / transformer / U-Net denoisers.

Every denoiser has the signature `__call__(x_t, t, mask=None, cond=None, *, deterministic=True)` and
returns a float32 prediction; class labels `cond` use index `num_classes` as the null class for
classifier-free guidance.
"""

from protgen_jax.nn.embeddings import TimeClassEmbedding, position_encoding, timestep_embedding
from protgen_jax.nn.mlp import ConcatMLPDenoiser, MLPDenoiser
from protgen_jax.nn.transformer import MaskedSelfAttention, TransformerDenoiser
from protgen_jax.nn.unet import UNet1DDenoiser
from protgen_jax.nn.vae import ConditionalProteinVAE, ProteinVAE

__all__ = [
    "ConcatMLPDenoiser",
    "ConditionalProteinVAE",
    "MLPDenoiser",
    "MaskedSelfAttention",
    "ProteinVAE",
    "TimeClassEmbedding",
    "TransformerDenoiser",
    "UNet1DDenoiser",
    "position_encoding",
    "timestep_embedding",
]
