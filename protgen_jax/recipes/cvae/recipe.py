"""The conditional sequence VAE recipe (``protgen train cvae``): config, data, device-side batches.

Data: the unaligned domain FASTA (default the registry's ``sequences/family_domains_train.fasta``), read
with the letter rule of ``protgen_jax.data.sequences`` and split by its hash rule (``holdout_mask``): the
same records are held out as in a sequence-diffusion run of the same file and ``holdout_fraction``.
Rows are fixed-width (``protgen_jax.data.fixed_width``, width ``W = config.width``): training draws a
uniform window of ``W`` residues of a longer sequence per use; everything else uses the first ``W``.

Condition: the family label (``condition = "family"``; dropped to the null class with probability
``label_dropout``, and null for records without a family) and, with ``properties``, a property vector
z-scored with the training split's mean and standard deviation (stored in the run). Built-in
properties (``builtin:net_charge,hydrophobic_fraction``, :mod:`protgen_jax.properties`) are computed
on the row the model sees (the training window); CSV properties are per record.

``unseen_families`` leaves whole families out of training and of the label vocabulary (the rule of
the sequence-diffusion recipe, ``data.sequences.leave_families_out``); their sequences go to
``RUN/unseen.fasta`` for ``protgen evaluate RUN --data``.

Run folder: ``config.json``, ``run.json``, ``data.npz`` (sequences, split, raw properties, their
names, mean and std), ``unseen.fasta`` (with ``unseen_families``), ``checkpoints/``,
``metrics.jsonl``, ``curves.png``, ``summary.json``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from protgen_jax import keys
from protgen_jax.data import resolve
from protgen_jax.data.fixed_width import END, VOCAB, coverage, encode_many
from protgen_jax.data.sequences import (
    SequenceSet,
    holdout_mask,
    leave_families_out,
    load_sequence_set,
    read_sequences,
    save_sequence_set,
    write_sequence_set,
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
from protgen_jax.nn import ConditionalProteinVAE, ProteinVAE
from protgen_jax.properties import builtin_properties, parse_builtin, read_property_csv
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.recipes.cvae.model import CVAEModel, elbo_terms, make_loss_fn, residues

CONDITIONS = ("family", "none")


@dataclass(frozen=True)
class CVAEConfig(TrainConfig):
    """Defaults of ``protgen train cvae`` (override with ``--set key=value``)."""

    data: str = ""  # unaligned FASTA, FAMILY|id headers; "" = the registry's domain sequences
    width: int = 128  # W: fixed row width (longer sequences are cropped, shorter end with END)
    holdout_fraction: float = 0.05  # hash split of protgen_jax.data.sequences (= seqdiff's)
    unseen_families: tuple[str, ...] = ()  # left out of training entirely: RUN/unseen.fasta
    condition: str = "family"  # "family" (conditional VAE) or "none" (the plain VAE)
    properties: str = ""  # "" | CSV (id + numeric columns) | "builtin:net_charge,..."
    label_dropout: float = 0.1  # probability of training with the null family label
    latent_dim: int = 32
    encoder_widths: tuple[int, ...] = (512, 256)
    decoder_widths: tuple[int, ...] = (256, 512)
    steps: int = 10000
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    beta: float = 1.0
    kl_warmup_steps: int = 2000  # linear beta ramp 0 -> beta
    ema_decay: float = 0.999
    steps_per_call: int = 50
    log_every: int = 100
    eval_every: int = 1000
    checkpoint_every: int = 1000
    time_limit_minutes: float = 30.0
    eval_sequences: int = 1024  # held-out rows of the in-training ELBO
    sample_batch: int = 256  # rows per decoder call in the commands
    property_families: int = 4  # largest families in the property-tracking grid of `evaluate`
    property_grid: int = 5  # requested values per property (train 10th..90th percentile)
    property_samples: int = 16  # samples per (family, value)
    cond_families: int = 8  # largest families in the family-fidelity check of `evaluate`
    cond_samples: int = 16  # samples per family


def default_data() -> Path:
    """The registry's domain sequences (``sequences/family_domains_train.fasta``)."""
    return resolve("sequences", "family_domains_train.fasta")


class PreparedCVAE(NamedTuple):
    """The run's data: sequences, split, raw properties ``[N, P]`` and their training statistics.

    ``property_source``: "" (none), "builtin" or the CSV path. Builtin values here are those of each
    record's first ``W`` residues (its evaluation row).
    """

    sequences: SequenceSet
    holdout: np.ndarray
    properties: np.ndarray
    property_names: tuple[str, ...]
    property_mean: np.ndarray
    property_std: np.ndarray
    property_source: str
    unseen: SequenceSet | None = None  # the left-out families (only while preparing)

    @property
    def family_names(self) -> tuple[str, ...]:
        return self.sequences.family_names

    @property
    def builtin(self) -> bool:
        return self.property_source == "builtin"

    def split(self, heldout: bool) -> np.ndarray:
        """Indices of the training (False) or held-out (True) records."""
        return np.flatnonzero(self.holdout == heldout)


def property_table(
    config: CVAEConfig, seqs: SequenceSet
) -> tuple[tuple[str, ...], np.ndarray, str]:
    """``(names, raw values [N, P], source)`` of ``config.properties`` for the records of ``seqs``."""
    spec = config.properties.strip()
    if not spec:
        return (), np.zeros((len(seqs), 0), np.float32), ""
    if spec.startswith("builtin:"):
        names = parse_builtin(spec)
        rows = encode_many([seqs.sequence(i) for i in range(len(seqs))], config.width)
        return names, np.asarray(builtin_properties(rows, names), np.float32), "builtin"
    names, values = read_property_csv(spec, seqs.ids)
    return names, values.astype(np.float32), spec


def prepare(config: CVAEConfig) -> PreparedCVAE:
    """Read the FASTA, split it by the hash rule and compute / read the properties."""
    path = Path(config.data) if config.data else default_data()
    # leave-families-out: whole families never seen in training
    seqs, unseen = leave_families_out(read_sequences(path), config.unseen_families, path)
    if config.condition == "family" and not seqs.family_names:
        raise DataError(
            f"{path}: no header has a FAMILY|id prefix; condition=family needs family labels "
            "(use --set condition=none for the plain VAE)"
        )
    holdout = holdout_mask(seqs.ids, config.holdout_fraction)
    if holdout.all() or len(seqs) < 2:
        raise DataError(f"{path}: too few sequences ({len(seqs)}) for a training/validation split")
    names, values, source = property_table(config, seqs)
    train = values[~holdout]
    mean = train.mean(0) if len(train) else np.zeros(len(names), np.float32)
    std = train.std(0) if len(train) else np.ones(len(names), np.float32)
    std = np.where(std > 1e-6, std, 1.0)
    return PreparedCVAE(
        seqs,
        holdout,
        values,
        names,
        mean.astype(np.float32),
        std.astype(np.float32),
        source,
        unseen,
    )


def save_prepared(path: Path, data: PreparedCVAE) -> None:
    save_sequence_set(
        path, data.sequences, holdout=data.holdout, properties=data.properties,
        property_names=np.asarray(data.property_names, dtype=str).reshape(-1),
        property_mean=data.property_mean, property_std=data.property_std,
        property_source=np.asarray(data.property_source, dtype=str),
    )  # fmt: skip


def load_prepared(path: Path) -> PreparedCVAE:
    if not path.exists():
        raise DataError(f"{path.parent}: not a cvae run folder (no {path.name})")
    seqs, extra = load_sequence_set(path)
    return PreparedCVAE(
        seqs, extra["holdout"].astype(bool), extra["properties"].astype(np.float32),
        tuple(str(n) for n in extra["property_names"]), extra["property_mean"].astype(np.float32),
        extra["property_std"].astype(np.float32), str(extra["property_source"]),
    )  # fmt: skip


def build_model(config: CVAEConfig, data: PreparedCVAE) -> CVAEModel:
    """``ConditionalProteinVAE`` on ``[one_hot(family, F + 1), props]``, or ``ProteinVAE`` without
    any condition."""
    num_families = len(data.family_names) if config.condition == "family" else 0
    num_props = len(data.property_names)
    kw = dict(
        seq_len=config.width, vocab_size=VOCAB, encoder_widths=tuple(config.encoder_widths),
        decoder_widths=tuple(config.decoder_widths), latent_dim=config.latent_dim,
        dtype=compute_dtype(config),
    )  # fmt: skip
    cond_dim = (num_families + 1 if num_families else 0) + num_props
    module = ConditionalProteinVAE(condition_dim=cond_dim, **kw) if cond_dim else ProteinVAE(**kw)
    return CVAEModel(module, num_families, num_props, config.width)


def padded_tokens(seqs: SequenceSet, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Full sequences ``[N, max(W, L_max)]`` int8 (END after each end) and lengths ``[N]`` int32."""
    lengths = seqs.lengths
    out = np.full((len(seqs), max(width, int(lengths.max(initial=1)))), END, np.int8)
    for i in range(len(seqs)):
        out[i, : lengths[i]] = seqs.tokens[seqs.offsets[i] : seqs.offsets[i + 1]]
    return out, lengths.astype(np.int32)


def draw_rows(
    arrays: dict[str, jax.Array],
    key: jax.Array,
    step: jax.Array,
    *,
    batch_size: int,
    width: int,
    label_dropout: float,
    null_family: int,
    builtin: tuple[str, ...],
    beta: float,
    warmup: int,
) -> dict[str, jax.Array]:
    """One training batch on the device (pure, static shapes).

    Rows ``r ~ U{0..n-1}``, window start ``s ~ U{0..max(len_r - W, 0)}``:

        tokens[i, j] = full[r_i, s_i + j] if s_i + j < len_r else END     [B, W] int32
        family[i]    = null if label_r < 0 or u_i < label_dropout else label_r          [B]
        props[i]     = (builtin(tokens[i]) or csv[r_i] - mean) / std                     [B, P]
        beta         = beta * min(1, (step + 1) / warmup)
    """
    n, full_width = arrays["tokens"].shape
    rows = jax.random.randint(keys.named(key, "rows"), (batch_size,), 0, n)
    full = arrays["lengths"][rows]
    start = jax.random.randint(
        keys.named(key, "crop"), (batch_size,), 0, jnp.maximum(full - width, 0) + 1
    )
    columns = start[:, None] + jnp.arange(width)[None, :]
    gathered = arrays["tokens"][rows[:, None], jnp.minimum(columns, full_width - 1)]
    tokens = jnp.where(columns < full[:, None], gathered, END).astype(jnp.int32)
    labels = arrays["labels"][rows]
    drop = jax.random.uniform(keys.named(key, "drop"), (batch_size,)) < label_dropout
    family = jnp.where((labels < 0) | drop, null_family, labels).astype(jnp.int32)
    raw = builtin_properties(tokens, builtin) if builtin else arrays["props"][rows]
    props = (raw - arrays["mean"][None, :]) / arrays["std"][None, :]
    ramp = jnp.minimum(1.0, (step + 1) / warmup) if warmup else 1.0
    return {"tokens": tokens, "family": family, "props": props, "beta": jnp.float32(beta) * ramp}


def eval_rows(
    data: PreparedCVAE, indices: np.ndarray, width: int, family: bool
) -> dict[str, np.ndarray]:
    """Evaluation rows of records ``indices``: first-``W`` tokens, family labels (null where unknown or
    ``family`` is False) and z-scored properties."""
    seqs = data.sequences
    tokens = encode_many([seqs.sequence(i) for i in indices], width)
    null = len(data.family_names)
    labels = seqs.labels[indices]
    fam = np.where((labels < 0) | (not family), null, labels).astype(np.int32)
    props = (data.properties[indices] - data.property_mean) / data.property_std
    return {"tokens": tokens, "family": fam, "props": props.astype(np.float32)}


class CVAERecipe(Recipe):
    """The training hooks of the conditional VAE (commands: :mod:`protgen_jax.recipes.cvae.commands`)."""

    family = "cvae"
    models = ("cvae",)
    config_type = CVAEConfig
    data_file = "data.npz"
    curve_keys = ("neg_elbo_per_residue", "kl_z", "val_neg_elbo_per_residue", "beta")

    def validate(self, config: CVAEConfig) -> None:
        require_choice(config, "condition", CONDITIONS)
        require_at_least(config, ("width", "latent_dim", "batch_size", "sample_batch"), 1)
        require_at_least(config, ("property_grid", "property_samples", "cond_samples"), 1)
        require_at_least(config, ("eval_sequences", "kl_warmup_steps", "property_families"), 0)
        require_at_least(config, ("cond_families",), 0)
        require_between(config, "label_dropout", 0.0, 1.0, open_high=True)
        require_between(config, "holdout_fraction", 0.0, 1.0, open_high=True)
        if config.properties.strip().startswith("builtin:"):
            parse_builtin(config.properties.strip())

    def prepare(self, config: CVAEConfig, progress: bool) -> PreparedCVAE:
        return prepare(config)

    def save_data(self, run: RunDir, data: PreparedCVAE) -> None:
        """``data.npz``; the left-out families' sequences in ``unseen.fasta`` (``protgen evaluate
        RUN --data`` scores them)."""
        save_prepared(run.file(self.data_file), data)
        if data.unseen is not None:
            write_sequence_set(run.file("unseen.fasta"), data.unseen)

    def load_data(self, run: RunDir) -> PreparedCVAE:
        return load_prepared(run.file(self.data_file))

    def build_model(self, config: CVAEConfig, data: PreparedCVAE) -> CVAEModel:
        return build_model(config, data)

    def init_params(self, model: CVAEModel, config, data, key: jax.Array) -> Any:
        return model.init(key)

    def optimizer(self, config: CVAEConfig) -> optax.GradientTransformation:
        return optax.chain(
            optax.clip_by_global_norm(config.grad_clip),
            optax.adamw(config.learning_rate, weight_decay=config.weight_decay),
        )

    def loss_fn(self, model: CVAEModel, config, data) -> Any:
        return make_loss_fn(model)

    def batches(self, config: CVAEConfig, data: PreparedCVAE) -> list[BatchGroup]:
        train = data.sequences.subset(data.split(False))
        tokens, lengths = padded_tokens(train, config.width)
        props_z = (data.properties[data.split(False)] - data.property_mean) / data.property_std
        if data.builtin:  # computed from each drawn window on the device
            props_z = np.zeros((len(train), 0), np.float32)
        arrays = {
            "tokens": tokens, "lengths": lengths, "labels": train.labels.astype(np.int32),
            "props": props_z.astype(np.float32), "mean": data.property_mean,
            "std": data.property_std,
        }  # fmt: skip
        draw = functools.partial(
            draw_rows, batch_size=config.batch_size, width=config.width,
            label_dropout=config.label_dropout if config.condition == "family" else 1.0,
            null_family=len(data.family_names),
            builtin=data.property_names if data.builtin else (), beta=config.beta,
            warmup=config.kl_warmup_steps,
        )  # fmt: skip
        return [BatchGroup(arrays, draw, config.batch_size)]

    def make_eval(self, model: CVAEModel, config: CVAEConfig, data: PreparedCVAE, key):
        """Held-out negative ELBO per residue (one posterior draw per row, fixed noise) of the first
        ``eval_sequences`` held-out records, with their family labels."""
        held = data.split(True)[: config.eval_sequences or None]
        if not len(held):
            return None
        rows = eval_rows(data, held, config.width, config.condition == "family")
        eps = jax.random.normal(keys.named(key, "eps"), (len(held), model.latent_dim))

        @jax.jit
        def evaluate(params, batch, eps):
            terms = elbo_terms(model, params, batch, eps)
            return jnp.sum(terms.neg_elbo), jnp.sum(residues(batch["tokens"])), jnp.mean(terms.kl)

        batch = jax.tree.map(jnp.asarray, rows)

        def eval_fn(params, step):
            total, count, kl = jax.device_get(evaluate(params, batch, eps))
            return {"val_neg_elbo_per_residue": float(total / count), "val_kl_z": float(kl)}

        return eval_fn

    def describe_data(self, config: CVAEConfig, data: PreparedCVAE) -> dict[str, Any]:
        lengths = data.sequences.lengths
        return {
            "condition": config.condition,
            "num_train": int((~data.holdout).sum()),
            "num_validation": int(data.holdout.sum()),
            "num_families": len(data.family_names),
            "num_skipped_ambiguous": data.sequences.num_skipped,
            "properties": ",".join(data.property_names),
            "fixed_width": coverage(lengths, config.width),
            "fixed_width_rule": (
                f"rows of {config.width} tokens: residues then END (token 20) to the end; longer "
                "sequences cropped (uniform window in training, first W residues elsewhere)"
            ),
        }
