"""FoldingDiff recipe: diffusion over the internal coordinates of full N-CA-C backbones
(``protgen train foldingdiff``; Wu et al. 2022, "Protein structure generation via folding diffusion").

Pipeline: load every chain of the configured folder (by default the registry's ``structures_cgdms/pdb``,
2,202 chains of 20-100 residues) and of ``extra_data`` (by default ``@structures``: the 263 chains of
``structures/pdb`` up to ``max_length``) -> a fixed split of whole chains (``data``: cgdms' own train / val
lists from the ``manifest.csv`` beside the folder when it has one, else ``split_holdout``; ``extra_data``:
``split_holdout``) -> six internal coordinates per residue (:mod:`protgen_jax.structure.internal`, masked
at the termini, chain breaks and missing atoms) -> minus the training set's circular mean per angle
(``offset``, stored with the data; FoldingDiff's centring) -> padded per length bucket (the run's
``data.npz``) -> wrapped-normal noise on the torus and the smooth-L1 loss on the wrapped noise difference
(:mod:`protgen_jax.diffusion.torus`) under a cosine schedule -> AdamW with warm-up and cosine decay, EMA.

The network is :class:`protgen_jax.nn.angles.AngleDenoiser` (a bidirectional transformer over residues
with absolute and learned relative positions and the timestep embedding). Bond lengths are never
modelled: the sampler rebuilds N, CA, C from the angles with ideal bond lengths by NeRF inside its jitted
program and adds the carbonyl O (:mod:`.commands`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from protgen_jax.data.structures import Chain, bucket_for
from protgen_jax.diffusion import Schedule
from protgen_jax.diffusion.torus import wrapped_noise_loss, wrapped_q_sample
from protgen_jax.errors import DataError
from protgen_jax.fit import (
    BatchGroup,
    TrainConfig,
    compute_dtype,
    configured_schedule,
    require_at_least,
    require_between,
    uniform_draw,
    validation_timesteps,
    warmup_cosine_adamw,
)
from protgen_jax.nn.angles import AngleDenoiser
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.recipes.structure_split import (
    check_lengths,
    load_folders,
    load_split,
    save_split,
    write_split_json,
)
from protgen_jax.structure.internal import ANGLE_NAMES, internal_coordinates

make_schedule = configured_schedule
"""``make_schedule(config)``: the configured noise schedule (:func:`protgen_jax.fit.configured_schedule`)."""

FAMILY = "foldingdiff"
NUM_ANGLES = 6
VALIDATION_TIMESTEPS = (0.01, 0.1, 0.5)
"""Fractions of T at which the held-out loss is logged during training (fixed noise)."""
MIN_LENGTH = 8
MAX_LENGTH = 512
"""Bounds of ``protgen sample --length``."""
SAMPLE_LENGTH = 100


@dataclass(frozen=True)
class FoldingDiffConfig(TrainConfig):
    """Defaults of ``protgen train foldingdiff`` (override with ``--set key=value``)."""

    data: str = ""  # folder of PDB/mmCIF files; "" = the registry dataset structures_cgdms (pdb/)
    extra_data: str = (
        "@structures"  # a second folder trained with data; "@NAME" = registry NAME/pdb
    )
    min_length: int = 20
    max_length: int = 128
    holdout_fraction: float = 0.1  # split_holdout of folders without a manifest split
    split_seed: int = 0
    buckets: tuple[int, ...] = (64, 128)
    batch_tokens: int = (
        2048  # residues (incl. padding) per batch: batch size = batch_tokens // bucket
    )
    schedule: str = "cosine"
    timesteps: int = 1000
    num_layers: int = 4
    num_heads: int = 4
    model_dim: int = 128
    mlp_ratio: float = 2.0
    max_relative_position: int = 32
    steps: int = 8000
    learning_rate: float = 5e-4
    warmup_steps: int = 300
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    time_limit_minutes: float = 29.0
    steps_per_call: int = 10
    sample_noise_scale: float = 1.0
    sample_batch: int = 64
    eval_num: int = 64
    eval_min_length: int = 50
    eval_max_length: int = 128


class AngleSet(NamedTuple):
    """Chains as internal coordinates, padded to one width W.

    ``names [N]``; ``angles [N, W, 6]`` radians minus the run's offset, wrapped, 0 where undefined;
    ``angle_mask [N, W, 6]`` bool; ``lengths [N]``; ``backbone [N, W, 3, 3]`` the file's N, CA, C in Å
    (NaN where missing or padded); ``break_after [N, W]`` bool, True where residue i is not bonded to i + 1.
    """

    names: np.ndarray
    angles: np.ndarray
    angle_mask: np.ndarray
    lengths: np.ndarray
    backbone: np.ndarray
    break_after: np.ndarray

    def residue_mask(self, rows: np.ndarray, width: int) -> np.ndarray:
        """[n, width] bool, True at the residues of ``rows``."""
        return np.arange(width)[None, :] < self.lengths[rows, None]

    def chains(self) -> list[Any]:
        """Per chain ``.backbone [L, 3, 3]``, ``.ca [L, 3]`` and ``.breaks`` (what the reports measure)."""
        from types import SimpleNamespace

        out = []
        for bb, length, brk in zip(self.backbone, self.lengths, self.break_after, strict=True):
            x = bb[:length]
            out.append(SimpleNamespace(backbone=x, ca=x[:, 1], breaks=np.flatnonzero(brk[:length])))
        return out


class FoldingDiffData(NamedTuple):
    """What a run trains and validates on (``offset [6]``: the circular means subtracted)."""

    train: AngleSet
    holdout: AngleSet
    offset: np.ndarray
    skipped: list[tuple[str, str]]
    folders: list[str]


def circular_mean(angles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-angle circular mean ``atan2(sum sin, sum cos)`` over the defined entries: ``[6]``."""
    a, m = angles.reshape(-1, NUM_ANGLES), mask.reshape(-1, NUM_ANGLES)
    return np.arctan2((np.sin(a) * m).sum(0), (np.cos(a) * m).sum(0)).astype(np.float32)


def angle_set(chains: list[Chain], width: int, offset: np.ndarray | None) -> AngleSet:
    """``chains`` padded to ``width``; ``offset`` None keeps the raw angles (to compute it)."""
    n = len(chains)
    angles = np.zeros((n, width, NUM_ANGLES), np.float32)
    mask = np.zeros((n, width, NUM_ANGLES), bool)
    backbone = np.full((n, width, 3, 3), np.nan, np.float32)
    breaks = np.zeros((n, width), bool)
    for i, chain in enumerate(chains):
        bb = chain.backbone if chain.backbone is not None else None
        if bb is None:
            raise DataError(f"{chain.name}: no N, C atoms (a C-alpha trace cannot be used)")
        a, m = internal_coordinates(bb, chain.breaks)
        if offset is not None:
            a = np.where(m, np.mod(a - offset + np.pi, 2 * np.pi) - np.pi, 0.0)
        angles[i, : chain.length], mask[i, : chain.length] = a, m
        backbone[i, : chain.length] = bb
        breaks[i, chain.breaks] = True
    names = np.array([c.name for c in chains], dtype=str)
    lengths = np.array([c.length for c in chains], np.int64)
    return AngleSet(names, angles, mask, lengths, backbone, breaks)


def load_angles(config: FoldingDiffConfig, progress: bool = True) -> FoldingDiffData:
    """Load, split and convert the configured folders (module docstring).

    Raises:
      DataError: no usable chain, or an empty split.
    """
    specs = [(config.data, "structures_cgdms")]
    if config.extra_data:
        specs.append((config.extra_data, "structures"))
    train, holdout, skipped, folders = load_folders(specs, config, progress)
    width = max(config.buckets)
    raw = angle_set(train, width, None)
    offset = circular_mean(raw.angles, raw.angle_mask)
    return FoldingDiffData(
        angle_set(train, width, offset), angle_set(holdout, width, offset), offset, skipped, folders
    )


def make_loss_fn(model: AngleDenoiser, schedule: Schedule):
    """``loss_fn(params, batch, key) -> (mean wrapped smooth-L1, {})``: t ~ U{0..T-1}, eps ~ N(0, I),
    ``x_t = wrap(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps)``, loss on ``wrap(eps_hat - eps)`` at defined
    angles."""

    def loss_fn(params, batch, key):
        t_key, noise_key = jax.random.split(key)
        x0, mask = batch["angles"], batch["angle_mask"]
        t = jax.random.randint(t_key, (x0.shape[0],), 0, schedule.num_steps)
        noise = jax.random.normal(noise_key, x0.shape)
        x_t = wrapped_q_sample(schedule, x0, t, noise)
        eps_hat = model.apply(params, x_t, t, batch["residue_mask"])
        return jnp.mean(wrapped_noise_loss(eps_hat, noise, mask)), {}

    return loss_fn


def denoiser(model: AngleDenoiser, params: Any) -> Partial:
    """``denoise_fn(x_t, t, mask, cond) = model.apply(params, x_t, t, mask, cond)`` as a Partial."""
    return Partial(model.apply, params)


class FoldingDiffRecipe(Recipe):
    """``protgen train foldingdiff``: the training hooks (commands: :mod:`.commands`)."""

    family = FAMILY
    models = (FAMILY,)
    config_type = FoldingDiffConfig
    data_file = "data.npz"
    curve_keys = ("loss", "grad_norm")

    def validate(self, config: FoldingDiffConfig) -> None:
        make_schedule(config)
        check_lengths(config, min_length_floor=2)
        require_between(config, "holdout_fraction", 0.0, 1.0)
        require_between(config, "sample_noise_scale", 0.0, 2.0)
        require_at_least(config, ("batch_tokens", "sample_batch", "eval_num", "eval_min_length"), 1)
        if not MIN_LENGTH <= config.eval_min_length <= config.eval_max_length <= MAX_LENGTH:
            raise DataError(
                f"need {MIN_LENGTH} <= eval_min_length <= eval_max_length <= {MAX_LENGTH}, got "
                f"{config.eval_min_length}, {config.eval_max_length}"
            )

    def prepare(self, config: FoldingDiffConfig, progress: bool) -> FoldingDiffData:
        return load_angles(config, progress)

    def save_data(self, run: RunDir, data: FoldingDiffData) -> None:
        save_split(
            run.file(self.data_file), data.train, data.holdout, data.skipped, data.folders,
            compress=True, offset=data.offset,
        )  # fmt: skip

    def load_data(self, run: RunDir) -> FoldingDiffData:
        s = load_split(run.file(self.data_file), AngleSet, extra=("offset",))
        offset = s.extra["offset"].astype(np.float32)
        return FoldingDiffData(s.train, s.holdout, offset, s.skipped, s.folders)

    def describe_data(self, config: FoldingDiffConfig, data: FoldingDiffData) -> dict[str, Any]:
        return {
            "num_train": len(data.train.names),
            "num_holdout": len(data.holdout.names),
            "num_skipped": len(data.skipped),
            "train_residues": int(data.train.lengths.sum()),
        }

    def extra_run_files(
        self, run: RunDir, config: FoldingDiffConfig, data: FoldingDiffData
    ) -> None:
        """``data.json``: the source folders, the split, the angle offset and the skipped files."""
        offsets = np.degrees(data.offset).round(2).tolist()
        write_split_json(
            run.file("data.json"), data.train.names, data.holdout.names, data.skipped, data.folders,
            offset_degrees=dict(zip(ANGLE_NAMES, offsets, strict=True)),
        )  # fmt: skip

    def curve_names(self, config: FoldingDiffConfig) -> tuple[str, ...]:
        steps = validation_timesteps(make_schedule(config), VALIDATION_TIMESTEPS)
        return (*self.curve_keys, *(f"val_loss_t{t}" for t in steps))

    def build_model(self, config: FoldingDiffConfig, data: Any) -> AngleDenoiser:
        return AngleDenoiser(
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            model_dim=config.model_dim,
            mlp_ratio=config.mlp_ratio,
            max_relative_position=config.max_relative_position,
            dtype=compute_dtype(config),
        )

    def init_params(self, model: AngleDenoiser, config, data, key: jax.Array) -> Any:
        return model.init(key, jnp.zeros((1, 8, NUM_ANGLES)), jnp.zeros((1,), jnp.int32))

    def optimizer(self, config: FoldingDiffConfig) -> optax.GradientTransformation:
        """AdamW after global-norm clipping; linear warm-up, cosine decay to 5% at ``steps``."""
        return warmup_cosine_adamw(config)

    def loss_fn(self, model: AngleDenoiser, config: FoldingDiffConfig, data: Any):
        return make_loss_fn(model, make_schedule(config))

    def batches(self, config: FoldingDiffConfig, data: FoldingDiffData) -> list[BatchGroup]:
        """One group per length bucket holding a training chain: ``angles [n_b, b, 6]``,
        ``angle_mask [n_b, b, 6]``, ``residue_mask [n_b, b]``; ``batch_tokens // b`` rows drawn
        uniformly with replacement per step; weight ``n_b``."""
        groups = []
        found: dict[int, list[int]] = {}
        for row, length in enumerate(data.train.lengths):
            found.setdefault(bucket_for(int(length), config.buckets), []).append(row)
        for bucket, rows in sorted(found.items()):
            rows = np.asarray(rows)
            size = max(1, config.batch_tokens // bucket)
            arrays = {
                "angles": data.train.angles[rows, :bucket],
                "angle_mask": data.train.angle_mask[rows, :bucket],
                "residue_mask": data.train.residue_mask(rows, bucket),
            }
            groups.append(
                BatchGroup(arrays, uniform_draw(size), size, float(len(rows)), f"L{bucket}")
            )
        return groups

    def make_eval(self, model: AngleDenoiser, config: FoldingDiffConfig, data, key: jax.Array):
        """Held-out loss at fixed timesteps ``VALIDATION_TIMESTEPS * (T - 1)`` with one fixed noise
        ``[N_holdout, W, 6]`` drawn from ``key``."""
        holdout = data.holdout
        if not len(holdout.names):
            return None
        schedule = make_schedule(config)
        rows = np.arange(len(holdout.names))
        width = bucket_for(int(holdout.lengths.max()), config.buckets)
        x0 = jnp.asarray(holdout.angles[:, :width])
        mask = jnp.asarray(holdout.angle_mask[:, :width])
        rmask = jnp.asarray(holdout.residue_mask(rows, width))
        noise = jax.random.normal(key, x0.shape)
        steps = validation_timesteps(schedule, VALIDATION_TIMESTEPS)

        @jax.jit
        def loss(params, t):
            tb = jnp.full((x0.shape[0],), t)
            eps_hat = model.apply(params, wrapped_q_sample(schedule, x0, tb, noise), tb, rmask)
            return jnp.mean(wrapped_noise_loss(eps_hat, noise, mask))

        def eval_fn(params, step):
            del step
            return {f"val_loss_t{t}": float(loss(params, t)) for t in steps}

        return eval_fn
