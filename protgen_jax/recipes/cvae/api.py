"""A trained (conditional) VAE as plain functions: load, encode, decode, sample, the run's arrays.

For scripts and for models built on a VAE's latent space (latent diffusion, latent classifiers):

    vae = load_vae("CVAE")
    tokens, family, props, ids = training_arrays("CVAE")       # [N, W], [N], [N, P], N ids
    mu, logvar = encode(vae, tokens)                            # [N, D] each
    logits = decode_logits(vae, mu, family, props)              # [N, W, 21]
    rows = sample_tokens(vae, key, z, family, None)             # [B, W] int32
    strings = tokens_to_strings(rows)                           # cut at the first END

Family labels: ``0 .. F - 1`` index ``vae.family_names``; ``vae.null_family = F`` is the null class
(unconditional decoding; the only label a ``condition = "none"`` run uses). Properties are in raw units
(``vae.property_names``); the functions z-score them with the run's training statistics. ``None``
stands for the training mean (z-score 0).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax.data.fixed_width import tokens_to_strings
from protgen_jax.errors import DataError
from protgen_jax.recipes.base import RunDir, padded_map
from protgen_jax.recipes.cvae.model import CVAEModel
from protgen_jax.recipes.cvae.recipe import CVAEConfig, CVAERecipe, PreparedCVAE, eval_rows

_HOOKS = CVAERecipe()  # loading a run needs the training hooks only, not the commands

__all__ = [
    "TrainedVAE",
    "decode_logits",
    "encode",
    "heldout_arrays",
    "load_vae",
    "sample_tokens",
    "tokens_to_strings",
    "trained_vae",
    "training_arrays",
]


class TrainedVAE(NamedTuple):
    """A trained fixed-width VAE: config, chosen params (EMA when kept) and its vocabularies.

    ``model`` is the :class:`~protgen_jax.recipes.cvae.model.CVAEModel`; ``width`` ``W``,
    ``latent_dim`` ``D``; ``null_family`` ``F``; ``property_mean / property_std`` ``[P]``;
    ``conditional``: the decoder reads the family label; ``data``: the run's prepared data.
    """

    config: CVAEConfig
    params: Any
    model: CVAEModel
    family_names: tuple[str, ...]
    property_names: tuple[str, ...]
    property_mean: np.ndarray
    property_std: np.ndarray
    width: int
    latent_dim: int
    null_family: int
    conditional: bool
    data: PreparedCVAE


def trained_vae(
    config: CVAEConfig, data: PreparedCVAE, model: CVAEModel, params: Any
) -> TrainedVAE:
    """A :class:`TrainedVAE` from the parts of a loaded run."""
    return TrainedVAE(
        config, params, model, data.family_names, data.property_names, data.property_mean,
        data.property_std, config.width, model.latent_dim, len(data.family_names),
        model.num_families > 0, data,
    )  # fmt: skip


def load_vae(run_dir: str | Path) -> TrainedVAE:
    """Load a ``cvae`` run folder (DataError when it is not one)."""
    recipe = RunDir(run_dir).read_info().get("recipe")
    if recipe != "cvae":
        raise DataError(f"{run_dir}: a {recipe!r} run, not a fixed-width VAE ('cvae') run")
    run = _HOOKS.load_run(run_dir)
    return trained_vae(run.config, run.data, run.model, run.params)


@functools.partial(jax.jit, static_argnums=0)
def _encode(model: CVAEModel, params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    return model.encode(params, tokens)


@functools.partial(jax.jit, static_argnums=0)
def _decode(model: CVAEModel, params, z, family, props_z) -> jax.Array:
    return model.decode(params, z, family, props_z)


def _batch(vae: TrainedVAE) -> int:
    return int(vae.config.sample_batch)


def encode(vae: TrainedVAE, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[B, W]`` int32 -> ``(mu, logvar)`` ``[B, D]`` float32 (the encoder sees no label)."""
    tokens = np.asarray(tokens, np.int32)
    if tokens.ndim != 2 or tokens.shape[1] != vae.width:
        raise DataError(f"encode: expected tokens [B, {vae.width}], got {list(tokens.shape)}")
    if not len(tokens):
        empty = np.zeros((0, vae.latent_dim), np.float32)
        return empty, empty
    both = padded_map(
        lambda t: jnp.concatenate(_encode(vae.model, vae.params, jnp.asarray(t)), -1),
        (tokens,), _batch(vae),
    )  # fmt: skip
    return both[:, : vae.latent_dim], both[:, vae.latent_dim :]


def zscore(vae: TrainedVAE, properties: np.ndarray | None, num: int) -> np.ndarray:
    """Raw properties ``[B, P]`` (None = training mean) -> z-scores ``[B, P]`` float32."""
    p = len(vae.property_names)
    if properties is None:
        return np.zeros((num, p), np.float32)
    properties = np.asarray(properties, np.float32)
    if properties.shape != (num, p):
        raise DataError(f"properties: expected [{num}, {p}] ({vae.property_names}), "
                        f"got {list(properties.shape)}")  # fmt: skip
    return (properties - vae.property_mean) / vae.property_std


def _labels(vae: TrainedVAE, family: np.ndarray | None, num: int) -> np.ndarray:
    if family is None:
        return np.full(num, vae.null_family, np.int32)
    family = np.asarray(family, np.int32).reshape(num)
    if np.any((family < 0) | (family > vae.null_family)):
        raise DataError(f"family labels must lie in 0..{vae.null_family} (null), got {family}")
    if not vae.conditional and np.any(family != vae.null_family):
        raise DataError("this VAE was trained without family labels (condition=none); pass None")
    return family


def decode_logits(
    vae: TrainedVAE, z: np.ndarray, family: np.ndarray | None, properties: np.ndarray | None
) -> np.ndarray:
    """``z [B, D]``, ``family [B]`` int (``null_family`` = unconditional; None = all null),
    ``properties [B, P]`` raw units (None = training mean) -> logits ``[B, W, 21]`` float32."""
    z = np.asarray(z, np.float32)
    num = len(z)
    labels, props = _labels(vae, family, num), zscore(vae, properties, num)
    return padded_map(
        lambda zz, ff, pp: _decode(vae.model, vae.params, jnp.asarray(zz), jnp.asarray(ff),
                                   jnp.asarray(pp)),
        (z, labels, props), _batch(vae),
    ).astype(np.float32)  # fmt: skip


def sample_tokens(
    vae: TrainedVAE,
    key: jax.Array,
    z: np.ndarray,
    family: np.ndarray | None,
    properties: np.ndarray | None,
    temperature: float = 1.0,
) -> np.ndarray:
    """Rows ``[B, W]`` int32 drawn from ``softmax(logits / temperature)`` of :func:`decode_logits`
    independently per position (``temperature = 0``: the argmax)."""
    if temperature < 0:
        raise DataError(f"temperature must be >= 0, got {temperature}")
    logits = decode_logits(vae, z, family, properties)
    if temperature == 0:
        return logits.argmax(-1).astype(np.int32)
    drawn = jax.random.categorical(key, jnp.asarray(logits) / temperature)
    return np.asarray(drawn, np.int32)


def _arrays(
    run: str | Path | TrainedVAE, heldout: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    vae = run if isinstance(run, TrainedVAE) else None
    if vae is None:
        directory = RunDir(run)
        config = _HOOKS.read_config(directory.config)
        data = _HOOKS.load_data(directory)
        width = config.width
    else:
        data, width = vae.data, vae.width
    indices = data.split(heldout)
    rows = eval_rows(data, indices, width, family=True)
    ids = tuple(data.sequences.ids[i] for i in indices)
    return rows["tokens"], rows["family"], data.properties[indices].astype(np.float32), ids


def training_arrays(
    run: str | Path | TrainedVAE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """The run's training split as ``(tokens [N, W] int32 (first W residues, END after the end),
    family [N] int32 (null_family where a record has none), properties [N, P] raw float32, ids)``."""
    return _arrays(run, heldout=False)


def heldout_arrays(
    run: str | Path | TrainedVAE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """As :func:`training_arrays`, for the held-out split."""
    return _arrays(run, heldout=True)
