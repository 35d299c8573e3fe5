"""Inverse folding (``protgen train design``, ``protgen design``): a ProteinMPNN-style model on the shared
recipe skeleton.

``RECIPE`` is the family's :class:`~protgen_jax.recipes.base.Recipe`: ``RECIPE.train(config, run_dir)``,
``RECIPE.load_run(run_dir)``, ``RECIPE.run_command("design" | "evaluate", [run_dir], flags)``.

- :mod:`.recipe`: config, data (backbones and sequences padded per split, saved in the run's
  ``data.npz``), model, loss, device-side length-bucket batches, held-out NLL during training;
- :mod:`.sampling`: designing sequences (one residue per step in a ``lax.scan``) and their scores;
- :mod:`.inputs`: backbones from structure files, ``--fixed`` / ``--omit`` / ``--bias`` parsing;
- :mod:`.quality`: recovery, composition, secondary-structure fit and burial of designs;
- :mod:`.commands`: ``design`` (FASTA + report) and ``evaluate`` (recovery, perplexity, baseline).
"""

from protgen_jax.recipes.design.commands import PUBLISHED_RECOVERY, RECIPE, Design
from protgen_jax.recipes.design.inputs import load_backbones
from protgen_jax.recipes.design.quality import HELIX_FAVOURING, STRAND_FAVOURING, burial, ss_fit
from protgen_jax.recipes.design.recipe import (
    FAMILY,
    DesignConfig,
    DesignData,
    DesignRecipe,
    DesignSet,
    load_design_data,
    make_loss_fn,
    random_rank,
)
from protgen_jax.recipes.design.sampling import Designs, design_sequences, omit_bias, sequence_nll

__all__ = [
    "FAMILY",
    "HELIX_FAVOURING",
    "PUBLISHED_RECOVERY",
    "RECIPE",
    "STRAND_FAVOURING",
    "Design",
    "DesignConfig",
    "DesignData",
    "DesignRecipe",
    "DesignSet",
    "Designs",
    "burial",
    "design_sequences",
    "load_backbones",
    "load_design_data",
    "make_loss_fn",
    "omit_bias",
    "random_rank",
    "sequence_nll",
    "ss_fit",
]
