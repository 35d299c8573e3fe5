"""Fixed-width (conditional) sequence VAE on unaligned domains (``protgen train cvae``).

``RECIPE`` trains, samples, evaluates and serves ``protgen compare``. The Python API for scripts and for
models on the VAE's latent space (:mod:`protgen_jax.recipes.cvae.api`):

- ``load_vae(run_dir) -> TrainedVAE``: config, params (EMA when kept), model, ``family_names``,
  ``property_names``, ``property_mean`` / ``property_std`` ``[P]``, ``width`` ``W``, ``latent_dim``
  ``D``, ``null_family`` ``F`` (the unconditional label), ``conditional``, ``data``;
- ``encode(vae, tokens [B, W] int32) -> (mu, logvar)`` ``[B, D]`` (jitted inside);
- ``decode_logits(vae, z [B, D], family [B] int32 or None, properties [B, P] raw or None)``
  ``-> [B, W, 21]`` float32 (None: null family / training-mean properties);
- ``sample_tokens(vae, key, z, family, properties, temperature=1.0) -> [B, W]`` int32;
- ``tokens_to_strings(tokens) -> list[str]`` (cut at the first END token, 20);
- ``training_arrays(run_dir or vae)`` / ``heldout_arrays(...)`` ``-> (tokens [N, W], family [N],
  properties [N, P] raw, ids)``: the run's split, first ``W`` residues, null label where unknown.

Fixed-width rule: :mod:`protgen_jax.data.fixed_width`; properties: :mod:`protgen_jax.properties`.
"""

from protgen_jax.recipes.cvae.api import (
    TrainedVAE,
    decode_logits,
    encode,
    heldout_arrays,
    load_vae,
    sample_tokens,
    tokens_to_strings,
    training_arrays,
)
from protgen_jax.recipes.cvae.commands import CVAE, RECIPE
from protgen_jax.recipes.cvae.model import CVAEModel, make_loss_fn
from protgen_jax.recipes.cvae.recipe import CVAEConfig, PreparedCVAE, build_model, draw_rows

__all__ = [
    "CVAE",
    "RECIPE",
    "CVAEConfig",
    "CVAEModel",
    "PreparedCVAE",
    "TrainedVAE",
    "build_model",
    "decode_logits",
    "draw_rows",
    "encode",
    "heldout_arrays",
    "load_vae",
    "make_loss_fn",
    "sample_tokens",
    "tokens_to_strings",
    "training_arrays",
]
