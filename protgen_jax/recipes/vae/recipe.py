"""Sequence VAE recipe: train on a family alignment (DeepSequence-style by default).

Pipeline: read the alignment -> filter gappy columns/rows -> 80%-identity sequence weights (``N_eff``) ->
hold out a fixed slice of rows -> train with minibatches drawn on the device with probability
proportional to the weights, KL warm-up and (optionally) a Bayesian sparse decoder. The model seam, loss
and score estimators live in :mod:`protgen_jax.recipes.vae.model`; scoring, sampling and evaluation in
:mod:`protgen_jax.recipes.vae.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from protgen_jax import keys
from protgen_jax.alphabet import GAP
from protgen_jax.atomic import save_npz_atomic
from protgen_jax.data import (
    Alignment,
    effective_sample_size,
    filter_alignment,
    read_alignment,
    resolve,
    sequence_weights,
)
from protgen_jax.errors import DataError
from protgen_jax.fit import (
    BatchGroup,
    TrainConfig,
    compute_dtype,
    require_at_least,
    require_between,
    require_choice,
)
from protgen_jax.metrics import spearman
from protgen_jax.nn import ProteinVAE
from protgen_jax.nn.deepsequence import SequenceVAE
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.recipes.vae.dms import prepare_dms
from protgen_jax.recipes.vae.model import (
    SCORE_ESTIMATORS,
    VAEModel,
    batched_elbo,
    make_elbo_estimator,
    make_loss_fn,
    make_score_estimator,
)


@dataclass(frozen=True)
class VAEConfig(TrainConfig):
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
    steps: int = 12000
    steps_per_call: int = 50
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_final_fraction: float = 1.0  # < 1: cosine decay of the rate to this fraction at `steps`
    weight_decay: float = 0.0  # decoupled (AdamW); EVE-style regularization for the lecture model
    beta: float = 1.0
    kl_warmup_steps: int = 0  # linear beta ramp 0 -> beta
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    dms: str = ""  # optional DMS CSV whose Spearman is tracked during training
    dms_column: str = "2500"
    eval_samples: int = 20  # Monte-Carlo samples for the in-training Spearman
    score_samples: int = 500  # default M for `protgen score`
    # "elbo": delta ELBO averaged over M draws (DeepSequence); "mean": one deterministic pass at the
    # variational means (z = mu(x), W = E_q[W]); used by `protgen score` and the in-training Spearman
    score_estimator: str = (
        "mean"  # the better ranker on BLAT_ECOLX (experiments/blat_vae), 750x faster
    )


def default_alignment() -> Path:
    return resolve("blat_ecolx", "BLAT_ECOLX.a2m")


def default_dms() -> Path:
    return resolve("blat_ecolx", "BLAT_ECOLX_Stiffler2015_dms.csv")


class PreparedAlignment(NamedTuple):
    """The filtered alignment a run trains on, with weights and the fixed split."""

    aln: Alignment
    weights: np.ndarray  # [N] float32
    holdout: np.ndarray  # [N] bool


def prepare_alignment(config: VAEConfig) -> PreparedAlignment:
    """Read, filter and weight the alignment; hold out a fixed random slice of rows (never the focus).

    The split is drawn from the ``split`` branch of the run's key tree (``keys.named(root, "split")``).
    """
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
    rng = keys.numpy_rng(keys.named(keys.root_key(config.seed), "split"))
    holdout = rng.random(aln.num_sequences) < config.holdout_fraction
    holdout[aln.focus_index] = False
    return PreparedAlignment(aln, weights, holdout)


def save_prepared(path: Path, prep: PreparedAlignment) -> None:
    """Store the run's alignment (tokens, weights, split, numbering) so commands need no re-read."""
    aln = prep.aln
    save_npz_atomic(
        path,
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


def load_prepared(path: Path) -> PreparedAlignment:
    """Inverse of :func:`save_prepared`."""
    if not path.exists():
        raise DataError(f"{path.parent}: not a VAE run folder (no {path.name})")
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
    gap_token = None if config.model_gaps else GAP
    dtype = compute_dtype(config)
    if config.model == "lecture":
        module = ProteinVAE(
            seq_len=seq_len,
            encoder_widths=config.encoder_widths,
            decoder_widths=config.decoder_widths,
            latent_dim=config.latent_dim,
            dtype=dtype,
        )
        return VAEModel(module, bayesian=False, gap_token=gap_token)
    module = SequenceVAE(
        seq_len=seq_len,
        latent_dim=config.latent_dim,
        encoder_widths=config.encoder_widths,
        decoder_widths=config.decoder_widths,
        bayesian=config.bayesian,
        sparsity=config.sparsity,
        dictionary_size=config.dictionary_size,
        sparsity_prior_p=config.sparsity_prior_p,
        dtype=dtype,
    )
    return VAEModel(
        module,
        bayesian=config.bayesian,
        gap_token=gap_token,
        local_reparameterization=config.local_reparameterization,
    )


def learning_rate_schedule(config: VAEConfig) -> optax.ScalarOrSchedule:
    """Constant ``learning_rate``, or (``lr_final_fraction < 1``) a cosine decay from it to
    ``lr_final_fraction * learning_rate`` over ``steps`` (then flat, if a run is resumed for longer)."""
    if config.lr_final_fraction == 1.0:
        return config.learning_rate
    return optax.cosine_decay_schedule(
        config.learning_rate, max(config.steps, 1), alpha=config.lr_final_fraction
    )


def draw_batch(arrays: dict[str, jax.Array], key: jax.Array, step: jax.Array, *, size: int,
               beta: float, warmup: int) -> dict[str, jax.Array]:  # fmt: skip
    """A weighted minibatch on the device: ``size`` rows with ``P(row) = probs[row]`` (replacement),
    and the KL weight ``beta * min(1, (step + 1) / warmup)`` (``beta`` when ``warmup`` is 0)."""
    rows = jax.random.choice(key, arrays["probs"].shape[0], (size,), p=arrays["probs"])
    ramp = jnp.minimum(1.0, (step + 1) / warmup) if warmup else 1.0
    return {"tokens": arrays["tokens"][rows], "beta": jnp.float32(beta) * ramp}


class VAERecipe(Recipe):
    """The training hooks of the sequence VAE (its commands: :mod:`protgen_jax.recipes.vae.commands`)."""

    family = "vae"
    models = ("vae",)
    config_type = VAEConfig
    data_file = "alignment.npz"
    curve_keys = ("neg_elbo", "kl_z", "kl_weights", "val_neg_elbo", "spearman")

    def validate(self, config: VAEConfig) -> None:
        require_choice(config, "model", ("deepsequence", "lecture"))
        require_choice(config, "score_estimator", SCORE_ESTIMATORS)
        require_between(config, "lr_final_fraction", 0.0, 1.0)
        require_at_least(config, ("batch_size", "latent_dim", "eval_samples", "score_samples"), 1)
        require_between(config, "holdout_fraction", 0.0, 1.0, open_high=True)

    def prepare(self, config: VAEConfig, progress: bool) -> PreparedAlignment:
        return prepare_alignment(config)

    def save_data(self, run: RunDir, data: PreparedAlignment) -> None:
        save_prepared(run.file(self.data_file), data)

    def load_data(self, run: RunDir) -> PreparedAlignment:
        return load_prepared(run.file(self.data_file))

    def build_model(self, config: VAEConfig, data: PreparedAlignment) -> VAEModel:
        return build_model(config, data.aln.num_columns)

    def init_params(self, model: VAEModel, config, data: PreparedAlignment, key) -> Any:
        return model.init(key, data.aln.num_columns)

    def optimizer(self, config: VAEConfig) -> optax.GradientTransformation:
        rate = learning_rate_schedule(config)
        if config.weight_decay > 0:
            return optax.adamw(rate, weight_decay=config.weight_decay)
        return optax.adam(rate)

    def loss_fn(self, model: VAEModel, config: VAEConfig, data: PreparedAlignment):
        return make_loss_fn(model, train_neff(data))

    def batches(self, config: VAEConfig, data: PreparedAlignment) -> list[BatchGroup]:
        rows = np.flatnonzero(~data.holdout)
        probs = data.weights[rows] / data.weights[rows].sum()
        arrays = {"tokens": data.aln.tokens[rows].astype(np.int32), "probs": probs}

        def draw(arrays, key, step):
            return draw_batch(arrays, key, step, size=config.batch_size, beta=config.beta,
                              warmup=config.kl_warmup_steps)  # fmt: skip

        return [BatchGroup(arrays, draw, config.batch_size)]

    def make_eval(self, model: VAEModel, config: VAEConfig, data: PreparedAlignment, key):
        """Validation ELBO on the held-out rows, and the DMS Spearman when ``config.dms`` is set."""
        aln, weights, holdout = data
        val_tokens = aln.tokens[holdout][:512]
        val_weights = weights[holdout][:512]
        estimator = make_elbo_estimator(model, 1)
        dms = prepare_dms(aln, Path(config.dms), config.dms_column) if config.dms else None
        dms_estimator = make_score_estimator(model, config.score_estimator, config.eval_samples)
        holdout_key, dms_key = keys.named(key, "holdout"), keys.named(key, "dms")

        def eval_fn(params, step):
            out = {}
            if len(val_tokens):
                elbo = batched_elbo(estimator, params, val_tokens, holdout_key)
                out["val_neg_elbo"] = float(-np.average(elbo, weights=val_weights))
            if dms is not None:
                values = batched_elbo(dms_estimator, params, dms.sequences, dms_key)
                out["spearman"] = spearman(dms.delta(values), dms.fitness)
            return out

        return eval_fn

    def describe_data(self, config: VAEConfig, data: PreparedAlignment) -> dict[str, Any]:
        return {
            "focus": data.aln.focus_name,
            "num_sequences": int(data.aln.num_sequences),
            "num_columns": int(data.aln.num_columns),
            "neff_train": train_neff(data),
            "num_holdout": int(data.holdout.sum()),
        }


def train_neff(data: PreparedAlignment) -> float:
    """``N_eff`` of the training rows: the sum of their weights."""
    return float(effective_sample_size(data.weights[~data.holdout]))
