"""Latent diffusion (Rombach et al. 2022): a Gaussian DDPM on a trained sequence VAE's latent codes.

``protgen train latent --vae VAE_RUN --out LAT`` encodes the VAE run's sequences and trains a
family-conditional ``MLPDenoiser`` (null family for classifier-free guidance) on the standardised
codes with the foundation's schedules and noise loss; ``protgen sample LAT`` draws codes with DDIM
(or DDPM), guided by a family (classifier-free, or by a noisy classifier run of
``protgen_jax.recipes.classifier``), and decodes them with the VAE's decoder.

Modules: ``model`` (standardisation, the loss and the guided samplers), ``recipe`` (config, the
encoded data, batches), ``commands`` (``sample``, ``evaluate``, the comparison hooks, :data:`RECIPE`).
"""

from protgen_jax.recipes.latent.commands import (
    GENERATE_OPTIONS,
    RECIPE,
    Latent,
    check_classifier,
    decode_rows,
    generate_codes,
)
from protgen_jax.recipes.latent.model import (
    LatentModel,
    classifier_log_prob_fn,
    latent_moments,
    standardise,
    unstandardise,
)
from protgen_jax.recipes.latent.recipe import (
    LatentConfig,
    LatentData,
    LatentRecipe,
    draw_codes,
    fingerprint,
)

__all__ = [
    "GENERATE_OPTIONS",
    "RECIPE",
    "Latent",
    "LatentConfig",
    "LatentData",
    "LatentModel",
    "LatentRecipe",
    "check_classifier",
    "classifier_log_prob_fn",
    "decode_rows",
    "draw_codes",
    "fingerprint",
    "generate_codes",
    "latent_moments",
    "standardise",
    "unstandardise",
]
