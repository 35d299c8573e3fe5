"""C-alpha backbone DDPM (``protgen train backbone``) on the shared recipe skeleton.

``RECIPE`` is the family's :class:`~protgen_jax.recipes.base.Recipe`: ``RECIPE.train(config, run_dir)``,
``RECIPE.load_run(run_dir)``, ``RECIPE.run_command("sample" | "evaluate", [run_dir], flags)``.

- :mod:`.recipe`: config, data (chains padded per split, saved in the run's ``data.npz``), model,
  loss, device-side length-bucket batches, held-out eps-MSE during training;
- :mod:`.commands`: sampling (DDPM / DDIM, trajectories), the geometry evaluation, the held-out bound;
- :mod:`.motif`: motif scaffolding specs and their metrics.
"""

from protgen_jax.recipes.backbone.commands import (
    RECIPE,
    Backbone,
    heldout_bound,
    load_reference,
)
from protgen_jax.recipes.backbone.motif import Motif, motif_metrics, parse_motif
from protgen_jax.recipes.backbone.recipe import (
    FAMILY,
    VALIDATION_TIMESTEPS,
    BackboneConfig,
    BackboneData,
    BackboneRecipe,
    denoiser,
    load_structures,
    make_draw,
    make_loss_fn,
    make_schedule,
    point_denoiser,
)

__all__ = [
    "FAMILY",
    "RECIPE",
    "VALIDATION_TIMESTEPS",
    "Backbone",
    "BackboneConfig",
    "BackboneData",
    "BackboneRecipe",
    "Motif",
    "denoiser",
    "point_denoiser",
    "heldout_bound",
    "load_reference",
    "load_structures",
    "make_draw",
    "make_loss_fn",
    "make_schedule",
    "motif_metrics",
    "parse_motif",
]
