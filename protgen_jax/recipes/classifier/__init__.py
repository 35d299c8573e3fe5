"""Noise-conditioned family classifiers of latent-diffusion runs (classifier guidance).

``recipe`` (config, codes, network, training), ``commands`` (``evaluate``: accuracy vs noise level,
:data:`RECIPE`). The guidance itself is ``protgen_jax.diffusion.classifier_guidance``; the latent
run's sampler takes a classifier run with ``--classifier CLF --classifier-scale S``.
"""

from protgen_jax.recipes.classifier.commands import RECIPE, Classifier
from protgen_jax.recipes.classifier.recipe import (
    ClassifierConfig,
    ClassifierData,
    ClassifierModel,
    ClassifierRecipe,
    heldout_accuracy,
)

__all__ = [
    "RECIPE",
    "Classifier",
    "ClassifierConfig",
    "ClassifierData",
    "ClassifierModel",
    "ClassifierRecipe",
    "heldout_accuracy",
]
