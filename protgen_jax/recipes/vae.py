"""Sequence VAE recipe: train on a family alignment (DeepSequence-style by default).

Pipeline: read the alignment -> filter gappy columns/rows -> 80%-identity sequence weights (``N_eff``) ->
hold out a fixed slice of rows -> train with weighted minibatches, KL warm-up and (optionally) a Bayesian
sparse decoder -> checkpoints, ``metrics.jsonl``, curves. The model seam, loss and score estimators live in
:mod:`protgen_jax.recipes.vae_model` (re-exported here); scoring, sampling and evaluation in
:mod:`protgen_jax.recipes.vae_eval`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from protgen_jax.checkpoint import Checkpointer, save_json_atomic
from protgen_jax.data import (
    Alignment,
    effective_sample_size,
    filter_alignment,
    read_alignment,
    resolve,
    sequence_weights,
)
from protgen_jax.data.alphabet import GAP_TOKEN
from protgen_jax.errors import DataError
from protgen_jax.nn import ProteinVAE
from protgen_jax.nn.deepsequence import SequenceVAE
from protgen_jax.plots import plot_curves
from protgen_jax.recipes.config import config_to_dict, load_config
from protgen_jax.recipes.loop import fit, read_metrics
from protgen_jax.recipes.vae_model import (
    VAEModel,
    batched_elbo,
    check_score_estimator,
    make_elbo_estimator,
    make_loss_fn,
    make_posterior_mean_estimator,
    make_score_estimator,
)
from protgen_jax.train import TrainState, make_train_step

FAMILY = "vae"


@dataclass(frozen=True)
class VAEConfig:
    """Defaults of ``protgen train vae`` (override with ``--set key=value``)."""

    data: str = ""  # alignment (A2M/A3M/aligned FASTA); "" = the registry's BLAT_ECOLX alignment
    focus: str = ""  # focus record id (prefix); "" = first record
    max_column_gap_fraction: float = 0.3
    max_sequence_gap_fraction: float = 0.5
    theta: float = 0.2  # reweighting radius: neighbours are > 1 - theta identical
    holdout_fraction: float = 0.05  # rows held out for the validation ELBO and sample statistics
    model: str = (
        "deepsequence"  # "deepsequence" (Bayesian sparse decoder) or "lecture" (ProteinVAE)
    )
    latent_dim: int = 30
    encoder_widths: tuple[int, ...] = (1500, 1500)
    decoder_widths: tuple[int, ...] = (100, 500)
    bayesian: bool = True
    sparsity: bool = True
    dictionary_size: int = 40
    sparsity_prior_p: float = 0.001  # prior mass of an "on" sparsity gate (DeepSequence's logit_p)
    model_gaps: bool = True  # False: gaps are not a letter of the likelihood (DeepSequence / EVE)
    local_reparameterization: bool = True  # per-example output-layer draws in training
    steps: int = 12000  # about 20 min on an idle 2-core CPU
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_final_fraction: float = (
        1.0  # < 1: cosine decay of the rate to this fraction of it at `steps`
    )
    weight_decay: float = 0.0  # decoupled (AdamW); EVE-style regularization for the lecture model
    beta: float = 1.0
    kl_warmup_steps: int = 0  # linear beta ramp 0 -> beta
    ema_decay: float = 0.0  # 0 = no EMA (DeepSequence uses none); else e.g. 0.999
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    dms: str = ""  # optional DMS CSV whose Spearman is tracked during training
    dms_column: str = "2500"
    eval_samples: int = 20  # Monte-Carlo samples for the in-training Spearman
    score_samples: int = 500  # default M for `protgen score`
    # "elbo": delta ELBO averaged over M draws (DeepSequence); "mean": one deterministic pass at the
    # variational means (z = mu(x), W = E_q[W]); used by `protgen score` and the in-training Spearman
    score_estimator: str = "elbo"


def default_alignment() -> Path:
    return resolve("blat_ecolx", "BLAT_ECOLX.a2m")


def default_dms() -> Path:
    return resolve("blat_ecolx", "BLAT_ECOLX_Stiffler2015_dms.csv")


class PreparedAlignment(NamedTuple):
    """The filtered alignment a run trains on, with weights and the fixed split."""

    aln: Alignment
    weights: np.ndarray  # [N] float32
    holdout: np.ndarray  # [N] bool


def prepare_alignment(config: VAEConfig, progress: bool = True) -> PreparedAlignment:
    """Read, filter and weight the alignment; hold out a fixed random slice of rows (never the focus)."""
    path = Path(config.data) if config.data else default_alignment()
    aln = read_alignment(path, focus=config.focus or None)
    aln = filter_alignment(
        aln,
        max_column_gap_fraction=config.max_column_gap_fraction,
        max_sequence_gap_fraction=config.max_sequence_gap_fraction,
    )
    if aln.num_sequences < 10:
        raise DataError(
            f"{path}: only {aln.num_sequences} sequences left after filtering (need >= 10)"
        )
    weights = sequence_weights(aln.tokens, theta=config.theta).astype(np.float32)
    rng = np.random.default_rng(config.seed)
    holdout = rng.random(aln.num_sequences) < config.holdout_fraction
    holdout[aln.focus_index] = False
    return PreparedAlignment(aln, weights, holdout)


def save_prepared(run_dir: Path, prep: PreparedAlignment) -> None:
    """Store the run's alignment (tokens, weights, split, numbering) so scoring/sampling need no re-read."""
    aln = prep.aln
    tmp = run_dir / "alignment.tmp.npz"
    np.savez_compressed(
        tmp,
        tokens=aln.tokens,
        weights=prep.weights,
        holdout=prep.holdout,
        column_positions=aln.column_positions,
        focus_index=aln.focus_index,
        focus_start=aln.focus_start,
        focus_name=aln.focus_name,
        focus_sequence=aln.focus_sequence,
        ids=np.asarray(aln.ids),
        path=str(aln.path or ""),
    )
    tmp.replace(run_dir / "alignment.npz")


def load_prepared(run_dir: Path) -> PreparedAlignment:
    """Inverse of :func:`save_prepared`."""
    path = Path(run_dir) / "alignment.npz"
    if not path.exists():
        raise DataError(f"{run_dir}: not a VAE run folder (no alignment.npz)")
    z = np.load(path, allow_pickle=False)
    aln = Alignment(
        ids=[str(i) for i in z["ids"]],
        tokens=z["tokens"],
        focus_index=int(z["focus_index"]),
        focus_name=str(z["focus_name"]),
        focus_start=int(z["focus_start"]),
        column_positions=z["column_positions"],
        focus_sequence=str(z["focus_sequence"]),
        path=Path(str(z["path"])) if str(z["path"]) else None,
    )
    return PreparedAlignment(aln, z["weights"], z["holdout"])


def build_model(config: VAEConfig, seq_len: int) -> VAEModel:
    """The configured network for an alignment of ``seq_len`` match columns."""
    gap_token = None if config.model_gaps else GAP_TOKEN
    if config.model == "lecture":
        module = ProteinVAE(
            seq_len=seq_len,
            encoder_widths=config.encoder_widths,
            decoder_widths=config.decoder_widths,
            latent_dim=config.latent_dim,
        )
        return VAEModel(module, bayesian=False, gap_token=gap_token)
    if config.model == "deepsequence":
        module = SequenceVAE(
            seq_len=seq_len,
            latent_dim=config.latent_dim,
            encoder_widths=config.encoder_widths,
            decoder_widths=config.decoder_widths,
            bayesian=config.bayesian,
            sparsity=config.sparsity,
            dictionary_size=config.dictionary_size,
            sparsity_prior_p=config.sparsity_prior_p,
        )
        return VAEModel(
            module,
            bayesian=config.bayesian,
            gap_token=gap_token,
            local_reparameterization=config.local_reparameterization,
        )
    raise DataError(f"unknown VAE model {config.model!r}; expected 'deepsequence' or 'lecture'")


def learning_rate_schedule(config: VAEConfig) -> optax.ScalarOrSchedule:
    """Constant ``learning_rate``, or (``lr_final_fraction < 1``) a cosine decay from it to
    ``lr_final_fraction * learning_rate`` over ``steps`` (then flat, if a run is resumed for longer)."""
    if not 0.0 <= config.lr_final_fraction <= 1.0:
        raise DataError(f"lr_final_fraction must be in [0, 1], got {config.lr_final_fraction}")
    if config.lr_final_fraction == 1.0:
        return config.learning_rate
    return optax.cosine_decay_schedule(
        config.learning_rate, max(config.steps, 1), alpha=config.lr_final_fraction
    )


def _optimizer(config: VAEConfig) -> optax.GradientTransformation:
    rate = learning_rate_schedule(config)
    if config.weight_decay > 0:
        return optax.adamw(rate, weight_decay=config.weight_decay)
    return optax.adam(rate)


def init_state(
    config: VAEConfig, seq_len: int
) -> tuple[VAEModel, TrainState, optax.GradientTransformation]:
    model = build_model(config, seq_len)
    params = model.init(jax.random.key(config.seed), seq_len)
    optimizer = _optimizer(config)
    state = TrainState.create(
        model.module.apply, params, optimizer, ema_decay=config.ema_decay or 0.0
    )
    return model, state, optimizer


def write_run_info(run_dir: Path, config: VAEConfig, extra: dict[str, Any] | None = None) -> None:
    save_json_atomic(run_dir / "config.json", config_to_dict(config))
    save_json_atomic(run_dir / "run.json", {"family": FAMILY, **(extra or {})})


def load_run(run_dir: Path) -> tuple[VAEConfig, PreparedAlignment, VAEModel, Any]:
    """Config, alignment, model and the latest params of a VAE run folder (EMA params when enabled)."""
    run_dir = Path(run_dir)
    config = load_config(VAEConfig, run_dir / "config.json")
    prep = load_prepared(run_dir)
    model, state, _ = init_state(config, prep.aln.num_columns)
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        restored = ckpt.restore_or_none(state)
    if restored is None:
        raise DataError(f"{run_dir}: no checkpoint to load (train first)")
    state = restored[0]
    return config, prep, model, state.ema_params if config.ema_decay else state.params


def train(config: VAEConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a VAE run in ``run_dir``; returns a summary dict (also in ``summary.json``)."""
    check_score_estimator(config.score_estimator)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if (run_dir / "alignment.npz").exists():
        prep = load_prepared(run_dir)
    else:
        prep = prepare_alignment(config, progress)
        save_prepared(run_dir, prep)
    write_run_info(run_dir, config)
    aln, weights, holdout = prep
    train_rows = np.flatnonzero(~holdout)
    probs = weights[train_rows] / weights[train_rows].sum()
    neff = float(effective_sample_size(weights[train_rows]))
    model, state, optimizer = init_state(config, aln.num_columns)
    step_fn = make_train_step(make_loss_fn(model, neff), optimizer)
    tokens = aln.tokens

    def batch_fn(step: int) -> dict[str, Any]:
        rng = np.random.default_rng([config.seed, step])
        rows = rng.choice(train_rows, size=config.batch_size, p=probs)
        ramp = min(1.0, (step + 1) / config.kl_warmup_steps) if config.kl_warmup_steps else 1.0
        return {"tokens": jnp.asarray(tokens[rows]), "beta": jnp.float32(config.beta * ramp)}

    eval_fn = _make_eval_fn(config, model, prep)
    with Checkpointer(run_dir / "checkpoints", max_to_keep=2) as ckpt:
        state = fit(
            state,
            step_fn,
            batch_fn,
            config.steps,
            jax.random.key(config.seed + 1),
            run_dir,
            checkpointer=ckpt,
            log_every=config.log_every,
            checkpoint_every=config.checkpoint_every,
            eval_fn=eval_fn,
            eval_every=config.eval_every,
            desc="train vae",
            progress=progress,
        )
    records = read_metrics(run_dir / "metrics.jsonl")
    plot_curves(
        records,
        ["neg_elbo", "kl_z", "kl_weights", "val_neg_elbo", "spearman"],
        run_dir / "curves.png",
        title=f"VAE on {aln.focus_name} (N_eff={neff:.0f})",
    )
    evals = [r for r in records if r.get("split") == "eval"]
    summary = {
        "num_sequences": int(aln.num_sequences),
        "num_columns": int(aln.num_columns),
        "neff_train": neff,
        "num_holdout": int(holdout.sum()),
        "steps": int(jax.device_get(state.step)),
        "train_seconds_this_call": time.perf_counter() - started,
        "last_eval": evals[-1] if evals else None,
    }
    save_json_atomic(run_dir / "summary.json", summary)
    return summary


def _make_eval_fn(config: VAEConfig, model: VAEModel, prep: PreparedAlignment):
    """Validation ELBO on the held-out rows, and the DMS Spearman when ``config.dms`` is set."""
    aln, weights, holdout = prep
    val_tokens = aln.tokens[holdout][:512]
    val_weights = weights[holdout][:512]
    estimator = make_elbo_estimator(model, 1)
    dms = None
    if config.dms:
        from protgen_jax.recipes.vae_eval import prepare_dms

        dms = prepare_dms(aln, Path(config.dms), config.dms_column)
        dms_estimator = make_score_estimator(model, config.score_estimator, config.eval_samples)

    def eval_fn(state, step):
        params = state.ema_params if config.ema_decay else state.params
        key = jax.random.key(12345)
        out = {}
        if len(val_tokens):
            elbo = batched_elbo(estimator, params, val_tokens, key)
            out["val_neg_elbo"] = float(-np.average(elbo, weights=val_weights))
        if dms is not None:
            from protgen_jax.metrics import spearman

            scores = dms.delta(batched_elbo(dms_estimator, params, dms.sequences, key))
            out["spearman"] = spearman(scores, dms.fitness)
        return out

    return eval_fn


def describe(config: VAEConfig) -> str:
    return json.dumps(dataclasses.asdict(config), indent=1)


__all__ = [
    "FAMILY",
    "evaluate",
    "make_config",
    "sample",
    "score",
    "PreparedAlignment",
    "VAEConfig",
    "VAEModel",
    "batched_elbo",
    "build_model",
    "check_score_estimator",
    "load_run",
    "make_elbo_estimator",
    "make_posterior_mean_estimator",
    "make_score_estimator",
    "make_loss_fn",
    "prepare_alignment",
    "train",
]


def make_config(model: str = "vae") -> VAEConfig:
    """Default config for ``protgen train vae``."""
    return VAEConfig()


def sample(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    from protgen_jax.recipes.vae_eval import sample as _sample

    return _sample(run_dir, options)


def evaluate(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    from protgen_jax.recipes.vae_eval import evaluate as _evaluate

    return _evaluate(run_dir, options)


def score(run_dirs: list[Path], options: dict[str, Any]) -> dict[str, Any]:
    from protgen_jax.recipes.vae_eval import score as _score

    return _score(run_dirs, options)
