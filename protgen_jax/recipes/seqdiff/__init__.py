"""Discrete sequence diffusion: OADM (EvoDiff-OA), D3PM (uniform / absorbing) and the continuous
relaxation, trained on unaligned protein domains with family labels.

One :class:`~protgen_jax.nn.sequence_denoiser.SequenceDenoiser` serves the three methods; they differ in
the corruption, the loss and the sampler (``protgen_jax.discrete``):

- ``oadm``: random-order masking, loss ``(len/t) sum_masked CE`` (``oadm_loss``), one position per step.
- ``d3pm``: ``q(x_t | x0)`` with uniform or absorbing transitions, hybrid loss ``L_vb(t) + lambda L_ce``.
- ``relax``: Gaussian diffusion of fixed token embeddings, CE + x0 regression, DDPM + rounding.

Family conditioning: the label enters the network through the class embedding and is replaced by the
null class with probability ``cfg_drop`` in training, so sampling can blend conditional and
unconditional logits with a guidance scale.

Modules: ``recipe`` (config, data, device-side bucketed batches), ``model`` (the methods behind one
network, generation), ``commands`` (``sample``, ``evaluate``, :data:`RECIPE`). Baselines and sequence
statistics live in :mod:`protgen_jax.baselines` and :mod:`protgen_jax.metrics`.
"""

from protgen_jax.recipes.seqdiff.batches import bucket_groups, draw_bucket
from protgen_jax.recipes.seqdiff.commands import RECIPE, SeqDiff
from protgen_jax.recipes.seqdiff.model import (
    SeqDiffModel,
    build_model,
    generate_tokens,
    sequence_nll,
)
from protgen_jax.recipes.seqdiff.recipe import (
    METHODS,
    PreparedData,
    SeqDiffConfig,
    SeqDiffRecipe,
)

__all__ = [
    "METHODS",
    "RECIPE",
    "PreparedData",
    "SeqDiff",
    "SeqDiffConfig",
    "SeqDiffModel",
    "SeqDiffRecipe",
    "bucket_groups",
    "build_model",
    "draw_bucket",
    "generate_tokens",
    "sequence_nll",
]
