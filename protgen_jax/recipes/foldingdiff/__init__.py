"""FoldingDiff (``protgen train foldingdiff``): diffusion over backbone internal coordinates on the torus.

``RECIPE`` is the family's :class:`~protgen_jax.recipes.base.Recipe`.

- :mod:`.recipe`: config, data (six angles per residue, masked at termini and breaks, split by whole
  chains, saved in the run's ``data.npz``), model, wrapped-noise loss, length-bucket batches, held-out
  loss during training;
- :mod:`.commands`: sampling (wrapped DDPM + NeRF + O in one jitted program, N-CA-C-O PDB files) and the
  geometry evaluation against held-out natural chains and the random-torsion floor.
"""

from protgen_jax.recipes.foldingdiff.commands import RECIPE, FoldingDiff, sample_backbones
from protgen_jax.recipes.foldingdiff.recipe import (
    FAMILY,
    AngleSet,
    FoldingDiffConfig,
    FoldingDiffData,
    FoldingDiffRecipe,
    angle_set,
    circular_mean,
    load_angles,
    make_loss_fn,
    make_schedule,
)

__all__ = [
    "FAMILY",
    "RECIPE",
    "AngleSet",
    "FoldingDiff",
    "FoldingDiffConfig",
    "FoldingDiffData",
    "FoldingDiffRecipe",
    "angle_set",
    "circular_mean",
    "load_angles",
    "make_loss_fn",
    "make_schedule",
    "sample_backbones",
]
