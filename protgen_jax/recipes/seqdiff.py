"""Discrete sequence diffusion recipe: OADM (EvoDiff-OA), D3PM (uniform / absorbing) and the continuous
relaxation, trained on unaligned protein domains with family labels.

One :class:`~protgen_jax.nn.sequence_denoiser.SequenceDenoiser` serves the three methods; they differ in
the corruption, the loss and the sampler (``protgen_jax.discrete``):

- ``oadm``: random-order masking, loss ``(len/t) sum_masked CE`` (``oadm_loss``), one position per step.
- ``d3pm``: ``q(x_t | x0)`` with uniform or absorbing transitions, hybrid loss ``L_vb(t) + lambda L_ce``.
- ``relax``: Gaussian diffusion of fixed token embeddings, CE + x0 regression, DDPM + rounding.

Family conditioning: the label enters the network through the class embedding and is replaced by the
null class with probability ``cfg_drop`` in training, so sampling can blend conditional and unconditional
logits with a guidance scale (``protgen_jax.diffusion.classifier_free_guidance`` applied to logits).
Run folder: ``config.json``, ``run.json``, ``data.npz`` (tokens, labels, split), ``checkpoints/``,
``metrics.jsonl``, ``curves.png``, ``summary.json``. Evaluation lives in ``seqdiff_eval``.
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

from protgen_jax.checkpoint import Checkpointer, save_json_atomic
from protgen_jax.data import resolve
from protgen_jax.data.fasta import write_fasta
from protgen_jax.data.sequences import (
    BucketBatcher,
    SequenceSet,
    holdout_mask,
    load_sequence_set,
    read_inpaint_fasta,
    read_sequences,
    save_sequence_set,
)
from protgen_jax.discrete.tokens import decode
from protgen_jax.errors import DataError
from protgen_jax.plots import plot_curves
from protgen_jax.recipes.config import config_to_dict, load_config
from protgen_jax.recipes.loop import fit, read_metrics
from protgen_jax.recipes.seqdiff_model import SeqDiffModel, build_model, generate_tokens
from protgen_jax.train import TrainState, make_eval_step, make_train_step

METHODS = ("oadm", "d3pm", "relax")


@dataclass(frozen=True)
class SeqDiffConfig:
    """Defaults of ``protgen train oadm|d3pm|relax`` (override with ``--set key=value``)."""

    data: str = ""  # FASTA with FAMILY|id headers; "" = the registry's domain sequences
    method: str = "oadm"  # oadm | d3pm | relax
    transition: str = "absorbing"  # d3pm: uniform | absorbing
    num_timesteps: int = 100  # T of d3pm and relax
    hybrid_lambda: float = 0.01  # d3pm: weight of the x0 cross-entropy
    noise_schedule: str = "cosine"  # relax: foundation Gaussian schedule (cosine | linear)
    embed_dim: int = 32  # relax: width of the fixed token embeddings
    mse_weight: float = 1.0  # relax: weight of the x0 regression next to the cross-entropy
    clamp: bool = True  # relax: clamp x0 to the nearest token embedding while sampling
    max_len: int = 256  # longer sequences: random windows in training, chunks in evaluation
    buckets: tuple[int, ...] = (32, 64, 96, 128, 192, 256)  # padded lengths; the last is max_len
    tokens_per_batch: int = 4096  # batch size of a bucket = tokens_per_batch // its length
    holdout_fraction: float = 0.05  # hash-based validation split (sequences.holdout_mask)
    num_layers: int = 4
    num_heads: int = 4
    model_dim: int = 128
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    cfg_drop: float = 0.1  # probability of training with the null family label
    steps: int = 2000
    time_limit_minutes: float = 30.0  # wall budget per call, whole segments only; 0 = none
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    eval_batches: int = 8  # fixed validation minibatches for the in-training loss
    checkpoint_every: int = 500
    sample_batch: int = 128  # sequences per sampler call
    eval_sequences: int = 192  # held-out sequences for the perplexity estimate (0 = all)
    eval_orders: int = 1  # oadm: random orders per sequence in the likelihood estimate
    inpaint_sequences: int = 48  # held-out sequences per inpainting setting
    cond_families: int = 8  # largest families used for the conditional-sample check
    cond_samples: int = 8  # samples per family and guidance scale
    eval_guidance: tuple[float, ...] = (1.0, 2.0)


def make_config(model: str) -> SeqDiffConfig:
    """Default config for ``protgen train MODEL`` (MODEL in oadm, d3pm, relax)."""
    if model not in METHODS:
        raise DataError(f"unknown sequence-diffusion model {model!r}; choose one of {METHODS}")
    return SeqDiffConfig(method=model)


def check_config(config: SeqDiffConfig) -> SeqDiffConfig:
    """Validate a config on the host (DataError naming the bad field)."""
    if config.method not in METHODS:
        raise DataError(f"method must be one of {METHODS}, got {config.method!r}")
    if config.transition not in ("uniform", "absorbing"):
        raise DataError(f"transition must be 'uniform' or 'absorbing', got {config.transition!r}")
    if config.noise_schedule not in ("cosine", "linear"):
        raise DataError(
            f"noise_schedule must be 'cosine' or 'linear', got {config.noise_schedule!r}"
        )
    buckets = tuple(config.buckets)
    if not buckets or list(buckets) != sorted(set(buckets)) or buckets[-1] != config.max_len:
        raise DataError(
            f"buckets {buckets} must increase strictly and end at max_len {config.max_len}"
        )
    if config.steps < 1 or config.tokens_per_batch < buckets[-1]:
        raise DataError("steps must be >= 1 and tokens_per_batch >= max_len")
    if not 0.0 <= config.cfg_drop < 1.0:
        raise DataError(f"cfg_drop must lie in [0, 1), got {config.cfg_drop}")
    if config.num_timesteps < 2:
        raise DataError(f"num_timesteps must be >= 2, got {config.num_timesteps}")
    return config


def default_data() -> Path:
    """The registry's domain sequences (``sequences/family_domains_train.fasta``)."""
    return resolve("sequences", "family_domains_train.fasta")


class PreparedData(NamedTuple):
    """The sequences a run trains on, with the fixed split (``holdout [N]`` bool)."""

    data: SequenceSet
    holdout: np.ndarray

    @property
    def train(self) -> SequenceSet:
        """The training sequences (``holdout`` False)."""
        return self.data.subset(np.flatnonzero(~self.holdout))

    @property
    def validation(self) -> SequenceSet:
        """The held-out sequences (``holdout`` True)."""
        return self.data.subset(np.flatnonzero(self.holdout))


def prepare_data(config: SeqDiffConfig) -> PreparedData:
    """Read the FASTA (letter rule of ``data.sequences``) and apply the hash split."""
    path = Path(config.data) if config.data else default_data()
    data = read_sequences(path)
    holdout = holdout_mask(data.ids, config.holdout_fraction)
    if holdout.all() or len(data) < 2:
        raise DataError(f"{path}: too few sequences ({len(data)}) for a training/validation split")
    return PreparedData(data, holdout)


def save_prepared(run_dir: Path, prep: PreparedData) -> None:
    """Store the run's sequences and split in ``data.npz`` (sampling and evaluation read only that)."""
    save_sequence_set(Path(run_dir) / "data.npz", prep.data, holdout=prep.holdout)


def load_prepared(run_dir: Path) -> PreparedData:
    """Inverse of :func:`save_prepared`."""
    path = Path(run_dir) / "data.npz"
    if not path.exists():
        raise DataError(f"{run_dir}: not a sequence-diffusion run folder (no data.npz)")
    data, extra = load_sequence_set(path)
    return PreparedData(data, extra["holdout"])


def _optimizer(config: SeqDiffConfig) -> optax.GradientTransformation:
    """AdamW (clipped) with linear warm-up then cosine decay to 10% of the peak at ``config.steps``."""
    warmup = min(config.warmup_steps, config.steps - 1)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(config.steps, warmup + 1),
        end_value=0.1 * config.learning_rate,
    )  # fmt: skip
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


def init_state(config: SeqDiffConfig, model: SeqDiffModel) -> TrainState:
    """A fresh TrainState (params from ``config.seed``) with the run's optimizer."""
    params = model.init(jax.random.key(config.seed))
    return TrainState.create(model.module.apply, params, _optimizer(config), config.ema_decay)


class LoadedRun(NamedTuple):
    """Everything sampling and evaluation need from a run folder (``params`` are the EMA params)."""

    config: SeqDiffConfig
    prep: PreparedData
    model: SeqDiffModel
    params: Any


def load_run(run_dir: Path) -> LoadedRun:
    """Config, data, model and the latest EMA params of a run folder."""
    run_dir = Path(run_dir)
    config = check_config(load_config(SeqDiffConfig, run_dir / "config.json"))
    prep = load_prepared(run_dir)
    model = build_model(config, len(prep.data.family_names))
    state = init_state(config, model)
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        restored = ckpt.restore_or_none(state)
    if restored is None:
        raise DataError(f"{run_dir}: no checkpoint to load (train first)")
    return LoadedRun(config, prep, model, restored[0].ema_params)


def _batch_dict(model: SeqDiffModel, tokens, mask, labels, drop: np.ndarray) -> dict[str, Any]:
    cond = np.where((labels < 0) | drop, model.null_label, labels).astype(np.int32)
    return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask), "cond": jnp.asarray(cond)}


def train(config: SeqDiffConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a sequence-diffusion run in ``run_dir``; returns (and writes) a summary."""
    config = check_config(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if (run_dir / "data.npz").exists():
        prep = load_prepared(run_dir)
    else:
        prep = prepare_data(config)
        save_prepared(run_dir, prep)
    save_json_atomic(run_dir / "config.json", config_to_dict(config))
    save_json_atomic(run_dir / "run.json", {"family": config.method})
    train_set, val_set = prep.train, prep.validation
    model = build_model(config, len(prep.data.family_names))
    state = init_state(config, model)
    step_fn = make_train_step(model.loss_fn(train=True), _optimizer(config))
    batcher = BucketBatcher(train_set, config.buckets, config.tokens_per_batch, config.seed)

    def batch_fn(step: int) -> dict[str, Any]:
        tokens, mask, labels = batcher(step)
        drop = np.random.default_rng([config.seed, step, 1]).random(len(labels)) < config.cfg_drop
        return _batch_dict(model, tokens, mask, labels, drop)

    val_batcher = BucketBatcher(val_set, config.buckets, config.tokens_per_batch, config.seed + 1)
    val_batches = [
        _batch_dict(model, *val_batcher(i), np.zeros(1, bool)) for i in range(config.eval_batches)
    ]
    eval_step = make_eval_step(model.loss_fn(train=False))

    def eval_fn(state: TrainState, step: int) -> dict[str, float]:
        outs = [
            jax.device_get(eval_step(state.ema_params, b, jax.random.key(1000 + i)))
            for i, b in enumerate(val_batches)
        ]
        return {f"val_{k}": float(np.mean([o[k] for o in outs])) for k in outs[0]}

    with Checkpointer(run_dir / "checkpoints", max_to_keep=2) as ckpt:
        start_step = ckpt.latest_step() or 0
        state, stopped = _fit_within_budget(
            config, state, step_fn, batch_fn, eval_fn, run_dir, ckpt, started, progress
        )
    records = read_metrics(run_dir / "metrics.jsonl")
    plot_curves(
        records,
        ["loss", "bound_per_token", "val_loss", "val_bound_per_token", "grad_norm"],
        run_dir / "curves.png",
        title=f"{config.method} on {len(train_set)} sequences",
    )
    evals = [r for r in records if r.get("split") == "eval"]
    steps_done = int(jax.device_get(state.step))
    seconds = time.perf_counter() - started
    summary = {
        "method": config.method,
        "transition": config.transition if config.method == "d3pm" else None,
        "num_train": len(train_set),
        "num_validation": len(val_set),
        "num_families": len(prep.data.family_names),
        "num_skipped_ambiguous": prep.data.num_skipped,
        "num_params": int(sum(np.size(p) for p in jax.tree.leaves(state.params))),
        "steps": steps_done,
        "stopped_by_time_limit": stopped,
        "train_seconds_this_call": seconds,
        "seconds_per_step_this_call": seconds / max(steps_done - start_step, 1),
        "last_eval": evals[-1] if evals else None,
    }
    save_json_atomic(run_dir / "summary.json", summary)
    return summary


def _fit_within_budget(config, state, step_fn, batch_fn, eval_fn, run_dir, ckpt, started, progress):
    """``fit`` in segments of ``checkpoint_every`` steps (each ending with a checkpoint), skipping the
    next segment when the last one's duration says it would end past ``time_limit_minutes`` of wall
    time (this call). A stopped run resumes exactly. Returns ``(state, stopped_early)``."""
    deadline = started + 60.0 * config.time_limit_minutes if config.time_limit_minutes > 0 else None
    done = ckpt.latest_step() or 0
    while done < config.steps:
        target = min(config.steps, (done // config.checkpoint_every + 1) * config.checkpoint_every)
        segment_start = time.perf_counter()
        state = fit(
            state, step_fn, batch_fn, target, jax.random.key(config.seed + 1), run_dir,
            checkpointer=ckpt, log_every=config.log_every, checkpoint_every=config.checkpoint_every,
            eval_fn=eval_fn, eval_every=config.eval_every,
            desc=f"train {config.method} (of {config.steps})", progress=progress,
        )  # fmt: skip
        per_step = (time.perf_counter() - segment_start) / max(target - done, 1)
        done = target
        next_steps = min(config.checkpoint_every, config.steps - done)
        if deadline is not None and done < config.steps:
            if time.perf_counter() + per_step * next_steps > deadline:
                return state, True
    return state, False


def _family_label(run: LoadedRun, family: str | None) -> int:
    names = run.prep.data.family_names
    if not family:
        return -1
    if family not in names:
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise DataError(f"family {family!r} is not one of the run's {len(names)} families: {shown}")
    return names.index(family)


def _sample_lengths(run: LoadedRun, label: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths drawn from the training lengths (of family ``label`` if >= 0), capped at max_len."""
    train = run.prep.train
    pool = train.lengths if label < 0 else train.lengths[train.labels == label]
    return np.minimum(rng.choice(pool, size=num), run.config.max_len)


def sample(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """``protgen sample``: unconditional / family-conditional sequences, or inpainting, to FASTA.

    Options: ``out`` (FASTA path), ``num``, ``length`` (None = drawn from the training lengths),
    ``family`` (label to condition on), ``guidance`` (classifier-free scale, needs ``family``),
    ``inpaint`` (FASTA whose ``#`` positions are filled; other options then ignored but temperature,
    guidance and seed), ``temperature``, ``seed``.
    """
    run = load_run(Path(run_dir))
    out = Path(options["out"])
    seed, temperature = int(options.get("seed") or 0), float(options.get("temperature", 1.0))
    guidance = float(options.get("guidance") or 1.0)
    if temperature < 0:
        raise DataError(f"--temperature must be >= 0, got {temperature}")
    started = time.perf_counter()
    key = jax.random.key(seed)
    if options.get("inpaint"):
        records = read_inpaint_fasta(options["inpaint"], run.prep.data.family_names)
        too_long = [r.id for r in records if len(r.tokens) > run.config.max_len]
        if too_long:
            raise DataError(
                f"{options['inpaint']}: record {too_long[0]!r} is longer than the model's "
                f"max_len {run.config.max_len}"
            )
        filled = generate_tokens(
            run.model, run.params, key, [len(r.tokens) for r in records],
            [r.label for r in records], guidance, temperature, run.config,
            fixed=[(r.tokens, ~r.fill) for r in records],
        )  # fmt: skip
        fasta = [
            (f"{r.id} filled={int(r.fill.sum())}", decode(s))
            for r, s in zip(records, filled, strict=True)
        ]
        write_fasta(out, fasta)
        return {
            "out": str(out),
            "num": len(fasta),
            "mode": "inpaint",
            "seconds": time.perf_counter() - started,
        }
    num = int(options["num"]) if options.get("num") is not None else 100
    family = options.get("family")
    label = _family_label(run, family)
    if guidance != 1.0 and label < 0:
        raise DataError(
            "--guidance needs --family (classifier-free guidance blends a family label)"
        )
    length = options.get("length")
    if num < 1:
        raise DataError(f"--num must be >= 1, got {num}")
    if length is not None and not 1 <= int(length) <= run.config.max_len:
        raise DataError(
            f"--length must lie in 1..{run.config.max_len} (the model's max_len), got {length}"
        )
    rng = np.random.default_rng(seed)
    lengths = (
        np.full(num, int(length)) if length is not None else _sample_lengths(run, label, num, rng)
    )
    seqs = generate_tokens(
        run.model, run.params, key, lengths, [label] * num, guidance, temperature, run.config
    )
    prefix = f"{family}|" if family else ""
    note = f" guidance={guidance:g}" if family else ""
    fasta = [
        (f"{prefix}sample_{i} method={run.config.method} length={len(s)}{note}", decode(s))
        for i, s in enumerate(seqs)
    ]
    write_fasta(out, fasta)
    return {
        "out": str(out), "num": num, "mode": "conditional" if family else "unconditional",
        "family": family, "guidance": guidance, "temperature": temperature,
        "seconds": time.perf_counter() - started,
    }  # fmt: skip


def evaluate(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """``protgen evaluate``: see :func:`protgen_jax.recipes.seqdiff_eval.evaluate_run`."""
    from protgen_jax.recipes.seqdiff_eval import evaluate_run

    return evaluate_run(Path(run_dir), options)
