"""Backbone diffusion recipe: a C-alpha DDPM trained on real PDB chains (``protgen train backbone``).

Pipeline: load every chain of a folder of PDB / mmCIF files (bad files are skipped and counted) -> a fixed
~10% holdout by name hash (``split_holdout``) -> centre each chain, divide by ``COORD_SCALE`` -> batches
padded to length buckets with masks (one bucket per step, batch size ``batch_tokens // bucket``) -> a
random rotation per example -> eps-prediction loss with zero-centre-of-mass noise (masked MSE, one value per
example) -> AdamW with warm-up and cosine decay, EMA, orbax checkpoints with resume, ``metrics.jsonl``.

Schedule: cosine with T = 1000 by default. For C-alpha coordinates at ``COORD_SCALE`` = 10 Å the local
geometry (bonds of 3.8 Å, helix and strand turns) is destroyed once the noise std passes ~1 Å = 0.1 model
units; the cosine schedule spends ~5.6% of its steps below that level, the linear one ~2.7%, and the
targets here (bond lengths within 0.2 Å) are decided in those steps.

The denoiser is :class:`protgen_jax.nn.backbone.BackboneDenoiser` (SE(3)-equivariant transformer with
pairwise-distance attention bias and relative chain positions). Chain positions come from the author
residue numbers across chain breaks, so a gap in a natural chain reads as a gap, not as a bond.

Sampling, motif scaffolding and evaluation are in :mod:`protgen_jax.recipes.backbone_eval`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from protgen_jax.checkpoint import Checkpointer, save_json_atomic
from protgen_jax.data import resolve
from protgen_jax.data.structures import (
    COORD_SCALE,
    Chain,
    center,
    load_folder,
    split_holdout,
)
from protgen_jax.diffusion import Schedule, diffusion_loss, get_schedule, q_sample
from protgen_jax.diffusion.losses import noise_mse
from protgen_jax.errors import DataError
from protgen_jax.nn.backbone import BackboneDenoiser
from protgen_jax.plots import plot_curves
from protgen_jax.recipes.config import config_to_dict, load_config
from protgen_jax.recipes.loop import fit, read_metrics
from protgen_jax.structure.frames import apply_rotation, random_rotation
from protgen_jax.structure.noise import zero_com_noise
from protgen_jax.train import TrainState, make_train_step

__all__ = [
    "FAMILY",
    "BackboneConfig",
    "BackboneData",
    "bucket_for",
    "build_model",
    "chain_positions",
    "data_folder",
    "init_state",
    "evaluate",
    "load_data",
    "load_run",
    "make_batch_fn",
    "make_config",
    "make_loss_fn",
    "make_schedule",
    "pad_examples",
    "sample",
    "train",
]

FAMILY = "backbone"
VALIDATION_TIMESTEPS = (0.01, 0.1, 0.5)
"""Fractions of T at which the held-out eps-MSE is logged during training (fixed noise)."""


@dataclass(frozen=True)
class BackboneConfig:
    """Defaults of ``protgen train backbone`` (override with ``--set key=value``)."""

    data: str = ""  # folder of PDB/mmCIF files; "" = the registry dataset "structures" (pdb/)
    chain: str = ""  # chain id to read from every file; "" = the first protein chain
    min_length: int = 40
    max_length: int = 256
    holdout_fraction: float = 0.1
    split_seed: int = 0
    buckets: tuple[int, ...] = (64, 128, 192, 256)
    batch_tokens: int = (
        2048  # residues (incl. padding) per batch: batch size = batch_tokens // bucket
    )
    rotate: bool = True  # random rotation per example (the network is equivariant; kept as a check)
    schedule: str = "cosine"  # "cosine" or "linear"
    timesteps: int = 1000
    num_layers: int = 4
    num_heads: int = 4
    model_dim: int = 64
    mlp_ratio: float = 4.0
    pair_dim: int = 16
    num_rbf: int = 16
    max_relative_position: int = 32
    output_heads: int = 8
    local_neighbours: int = 3
    steps: int = 4000
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 25
    eval_every: int = 250
    checkpoint_every: int = 250
    time_limit_minutes: float = 27.0  # stop at the first checkpoint past this (0 = no limit)
    sample_variance: str = "beta"  # DDPM reverse variance: "beta" or "posterior"
    sample_noise_scale: float = 1.0  # scales sigma_t of each DDPM reverse step (< 1: reduced)
    sample_clip: float = 10.0  # clip x0_hat to +-this (model units, 100 Å; a safety net), 0 = off
    sample_batch: int = 64  # backbones per sampler call
    eval_num: int = 64  # default number of samples for `protgen evaluate`
    eval_min_length: int = 64
    eval_max_length: int = 128
    eval_bound: bool = True  # held-out variational bound (T network calls per bucket batch)


def make_config(model: str = FAMILY) -> BackboneConfig:
    """The default config of ``protgen train backbone``."""
    if model != FAMILY:
        raise DataError(f"the backbone recipe trains model 'backbone', not {model!r}")
    return BackboneConfig()


def data_folder(config: BackboneConfig) -> Path:
    """The configured structure folder, or the registry's ``structures/pdb``."""
    return Path(config.data) if config.data else resolve("structures") / "pdb"


def chain_positions(chain: Chain) -> np.ndarray:
    """Chain positions p [L] int32: p_0 = 0, p_{i+1} = p_i + 1, or at a break (CA-CA > 4.2 Å)
    p_i + max(2, r_{i+1} - r_i) with r the author residue numbers, so a gap is never read as a bond."""
    steps = np.ones(max(chain.length - 1, 0), dtype=np.int64)
    if len(chain.breaks):
        jumps = np.diff(chain.residue_ids.astype(np.int64))[chain.breaks]
        steps[chain.breaks] = np.maximum(2, jumps)
    return np.concatenate([[0], np.cumsum(steps)]).astype(np.int32)


class BackboneData(NamedTuple):
    """The chains a run trains and validates on, and the files it skipped."""

    train: list[Chain]
    holdout: list[Chain]
    skipped: list[tuple[str, str]]


def load_data(config: BackboneConfig, progress: bool = True) -> BackboneData:
    """Load the configured folder and split it (fixed by chain names and ``split_seed``).

    Raises:
      DataError: no usable chain, or too few to hold any out.
    """
    folder = data_folder(config)
    chains, skipped = load_folder(
        folder, config.chain or None, config.min_length, config.max_length, progress=progress
    )
    if len(chains) < 2:
        raise DataError(f"{folder}: {len(chains)} usable chains (need >= 2); skipped {skipped[:3]}")
    if max(config.buckets) < config.max_length:
        raise DataError(
            f"buckets {config.buckets} do not cover max_length={config.max_length}; "
            "add a bucket or lower max_length"
        )
    train, holdout = split_holdout(chains, config.holdout_fraction, config.split_seed)
    if not train:
        raise DataError(f"{folder}: every chain fell in the holdout; lower holdout_fraction")
    return BackboneData(train, holdout, skipped)


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket >= length."""
    return min(b for b in buckets if b >= length)


def pad_examples(chains: list[Chain], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x0 [B, length, 3] centred / COORD_SCALE, mask [B, length], positions [B, length] int32)."""
    x0 = np.zeros((len(chains), length, 3), np.float32)
    mask = np.zeros((len(chains), length), bool)
    positions = np.zeros((len(chains), length), np.int32)
    for i, chain in enumerate(chains):
        x0[i, : chain.length] = center(chain.ca) / COORD_SCALE
        mask[i, : chain.length] = True
        positions[i, : chain.length] = chain_positions(chain)
    return x0, mask, positions


def make_batch_fn(config: BackboneConfig, chains: list[Chain]):
    """``batch_fn(step) -> {"x0", "mask", "positions"}``, a pure function of the step (exact resume).

    A bucket is drawn with probability proportional to its number of chains, then
    ``batch_tokens // bucket`` chains of that bucket with replacement.
    """
    by_bucket: dict[int, list[Chain]] = {}
    for chain in chains:
        by_bucket.setdefault(bucket_for(chain.length, config.buckets), []).append(chain)
    sizes = sorted(by_bucket)
    probs = np.array([len(by_bucket[b]) for b in sizes], np.float64)
    probs /= probs.sum()

    def batch_fn(step: int) -> dict[str, jax.Array]:
        rng = np.random.default_rng([config.seed, step])
        bucket = sizes[rng.choice(len(sizes), p=probs)]
        members = by_bucket[bucket]
        size = max(1, config.batch_tokens // bucket)
        picked = [members[i] for i in rng.integers(0, len(members), size)]
        x0, mask, positions = pad_examples(picked, bucket)
        return {
            "x0": jnp.asarray(x0),
            "mask": jnp.asarray(mask),
            "positions": jnp.asarray(positions),
        }

    return batch_fn


def build_model(config: BackboneConfig) -> BackboneDenoiser:
    """The configured denoiser."""
    return BackboneDenoiser(
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        model_dim=config.model_dim,
        mlp_ratio=config.mlp_ratio,
        pair_dim=config.pair_dim,
        num_rbf=config.num_rbf,
        max_relative_position=config.max_relative_position,
        output_heads=config.output_heads,
        local_neighbours=config.local_neighbours,
        schedule=config.schedule,
        timesteps=config.timesteps,
        coord_scale=COORD_SCALE,
    )


def make_schedule(config: BackboneConfig) -> Schedule:
    """The configured noise schedule with ``config.timesteps`` steps."""
    if config.timesteps < 2:
        raise DataError(f"timesteps must be >= 2, got {config.timesteps}")
    try:
        return get_schedule(config.schedule, config.timesteps)
    except ValueError as err:
        raise DataError(str(err)) from err


def make_loss_fn(config: BackboneConfig, model: BackboneDenoiser, schedule: Schedule):
    """``loss_fn(params, batch, key) -> (mean eps-MSE, {})`` for :func:`make_train_step`.

    Per example: a uniform random rotation (``config.rotate``), then ``diffusion_loss`` with
    ``t ~ U{0..T-1}``, zero-centre-of-mass noise and the masked MSE; the batch mean is the loss.
    """
    noise_fn = Partial(zero_com_noise)

    def loss_fn(params, batch, key):
        rot_key, loss_key = jax.random.split(key)
        x0 = batch["x0"]
        if config.rotate:
            x0 = apply_rotation(random_rotation(rot_key, x0.shape[0]), x0)
        losses = diffusion_loss(
            loss_key,
            Partial(model.apply, params),
            schedule,
            x0,
            batch["mask"],
            batch["positions"],
            prediction="eps",
            noise_transform=noise_fn,
        )
        return jnp.mean(losses), {}

    return loss_fn


def _optimizer(config: BackboneConfig) -> optax.GradientTransformation:
    lr = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        max(1, min(config.warmup_steps, config.steps - 1)),
        max(config.steps, 2),
        end_value=0.05 * config.learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(lr, weight_decay=config.weight_decay),
    )


def _example_inputs(length: int = 8) -> tuple[jax.Array, jax.Array, jax.Array]:
    return jnp.zeros((1, length, 3)), jnp.zeros((1,), jnp.int32), jnp.ones((1, length), bool)


def init_state(config: BackboneConfig, abstract: bool = False):
    """(model, state, optimizer); ``abstract=True`` gives shape-only params (a restore target)."""
    model = build_model(config)
    optimizer = _optimizer(config)

    def create():
        params = model.init(jax.random.key(config.seed), *_example_inputs())
        return TrainState.create(model.apply, params, optimizer, ema_decay=config.ema_decay)

    state = jax.eval_shape(create) if abstract else create()
    return model, state, optimizer


def load_run(run_dir: Path) -> tuple[BackboneConfig, BackboneDenoiser, Any, Schedule]:
    """(config, model, EMA params, schedule) of a trained backbone run folder."""
    run_dir = Path(run_dir)
    config = load_config(BackboneConfig, run_dir / "config.json")
    model, target, _ = init_state(config, abstract=True)
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        restored = ckpt.restore_or_none(target)
    if restored is None:
        raise DataError(f"{run_dir}: no checkpoint to load (train first)")
    return config, model, restored[0].ema_params, make_schedule(config)


def _make_eval_fn(config: BackboneConfig, model: BackboneDenoiser, schedule, holdout):
    """Held-out eps-MSE at fixed timesteps (fixed noise), on the EMA params."""
    if not holdout:
        return None
    x0, mask, positions = pad_examples(
        holdout, bucket_for(max(c.length for c in holdout), config.buckets)
    )
    x0, mask, positions = jnp.asarray(x0), jnp.asarray(mask), jnp.asarray(positions)
    noise = zero_com_noise(jax.random.normal(jax.random.key(1234), x0.shape), mask)
    steps = sorted({int(f * (schedule.num_steps - 1)) for f in VALIDATION_TIMESTEPS})

    @jax.jit
    def mse(params, t):
        tb = jnp.full((x0.shape[0],), t)
        x_t = q_sample(schedule, x0, tb, noise)
        return jnp.mean(noise_mse(model.apply(params, x_t, tb, mask, positions), noise, mask))

    def eval_fn(state, step):
        del step
        return {f"val_mse_t{t}": float(mse(state.ema_params, t)) for t in steps}

    return eval_fn


def write_run_info(run_dir: Path, config: BackboneConfig, data: BackboneData) -> None:
    """``config.json``, ``run.json`` and ``data.json`` (the split and the skipped files)."""
    save_json_atomic(run_dir / "config.json", config_to_dict(config))
    save_json_atomic(run_dir / "run.json", {"family": FAMILY})
    save_json_atomic(
        run_dir / "data.json",
        {
            "folder": str(data_folder(config)),
            "train": [c.name for c in data.train],
            "holdout": [c.name for c in data.holdout],
            "skipped": [{"file": f, "reason": r} for f, r in data.skipped],
        },
    )


def train(config: BackboneConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a backbone run in ``run_dir``; returns the summary (also ``summary.json``).

    Runs ``fit`` in segments of ``checkpoint_every`` steps; once ``time_limit_minutes`` of this call
    have passed, or the next segment would pass them, it stops at that checkpoint and records
    ``stopped_early`` (the same command resumes towards ``steps``).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_data(config, progress)
    write_run_info(run_dir, config, data)
    schedule = make_schedule(config)
    model, state, optimizer = init_state(config)
    step_fn = make_train_step(make_loss_fn(config, model, schedule), optimizer)
    batch_fn = make_batch_fn(config, data.train)
    eval_fn = _make_eval_fn(config, model, schedule, data.holdout)
    limit = 60.0 * config.time_limit_minutes
    stopped_early = False
    with Checkpointer(run_dir / "checkpoints", max_to_keep=2) as ckpt:
        target = ckpt.latest_step() or 0
        while True:
            target = min(
                config.steps, (target // config.checkpoint_every + 1) * config.checkpoint_every
            )
            segment_start = time.perf_counter()
            state = fit(
                state,
                step_fn,
                batch_fn,
                target,
                jax.random.key(config.seed + 1),
                run_dir,
                checkpointer=ckpt,
                log_every=config.log_every,
                checkpoint_every=config.checkpoint_every,
                eval_fn=eval_fn,
                eval_every=config.eval_every,
                desc=f"train backbone (of {config.steps})",
                progress=progress,
            )
            if target >= config.steps:
                break
            now = time.perf_counter()
            if limit > 0 and (now - started) + (now - segment_start) > limit:
                stopped_early = True
                break
    records = read_metrics(run_dir / "metrics.jsonl")
    plot_curves(
        records,
        ["loss", "grad_norm"]
        + [k for k in (records[-1] if records else {}) if k.startswith("val_")],
        run_dir / "curves.png",
        title=f"backbone DDPM ({len(data.train)} chains)",
    )
    evals = [r for r in records if r.get("split") == "eval"]
    trains = [r for r in records if r.get("split") == "train"]
    summary = {
        "num_train": len(data.train),
        "num_holdout": len(data.holdout),
        "num_skipped": len(data.skipped),
        "steps": int(jax.device_get(state.step)),
        "target_steps": config.steps,
        "stopped_early": stopped_early,
        "train_seconds_this_call": time.perf_counter() - started,
        "last_train": trains[-1] if trains else None,
        "last_eval": evals[-1] if evals else None,
    }
    save_json_atomic(run_dir / "summary.json", summary)
    return summary


def sample(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """``protgen sample`` for a backbone run; see :func:`protgen_jax.recipes.backbone_eval.sample`."""
    from protgen_jax.recipes import backbone_eval

    return backbone_eval.sample(run_dir, options)


def evaluate(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """``protgen evaluate`` for a backbone run; see :func:`protgen_jax.recipes.backbone_eval.evaluate`."""
    from protgen_jax.recipes import backbone_eval

    return backbone_eval.evaluate(run_dir, options)
