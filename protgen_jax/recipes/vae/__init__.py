"""The sequence VAE family (``protgen train vae``): DeepSequence-style or the lecture's ProteinVAE.

``RECIPE`` trains, samples, evaluates and scores; the names below are what scripts and tests use.
"""

from protgen_jax.recipes.vae.commands import RECIPE, VAE, generate, interpolate, reconstruct
from protgen_jax.recipes.vae.dms import DMSSet, prepare_dms
from protgen_jax.recipes.vae.model import (
    SCORE_ESTIMATORS,
    VAEModel,
    batched_elbo,
    make_elbo_estimator,
    make_loss_fn,
    make_posterior_mean_estimator,
    make_score_estimator,
)
from protgen_jax.recipes.vae.recipe import (
    PreparedAlignment,
    VAEConfig,
    build_model,
    default_alignment,
    default_dms,
    draw_batch,
    learning_rate_schedule,
    prepare_alignment,
    train_neff,
)

__all__ = [
    "RECIPE",
    "SCORE_ESTIMATORS",
    "VAE",
    "DMSSet",
    "PreparedAlignment",
    "VAEConfig",
    "VAEModel",
    "batched_elbo",
    "build_model",
    "default_alignment",
    "default_dms",
    "draw_batch",
    "generate",
    "interpolate",
    "learning_rate_schedule",
    "make_elbo_estimator",
    "make_loss_fn",
    "make_posterior_mean_estimator",
    "make_score_estimator",
    "prepare_alignment",
    "prepare_dms",
    "reconstruct",
    "train_neff",
]
