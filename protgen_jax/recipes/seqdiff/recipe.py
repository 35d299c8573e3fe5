"""The sequence-diffusion recipe on the shared skeleton: config, data, training.

OADM (EvoDiff-OA), D3PM (uniform / absorbing) and the continuous relaxation train on unaligned protein
domains with family labels; one :class:`SeqDiffRecipe` serves the three (``config.method``). A FASTA
without any ``FAMILY|`` header trains an unconditional network (:class:`UnconditionalDenoiser`, no family
embedding; a note on stderr says so). Length buckets, device-side draws and the broad unlabelled
``extra_data``: :mod:`.batches`.

Run folder: ``config.json``, ``run.json``, ``data.npz`` (tokens, labels, split), ``extra.npz`` (the
kept ``extra_data`` sequences), ``checkpoints/``,
``metrics.jsonl``, ``curves.png``, ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from protgen_jax import alphabet as vocab
from protgen_jax import keys
from protgen_jax.data import resolve
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
    require_at_least,
    require_between,
    require_choice,
)
from protgen_jax.nn.sequence_denoiser import SequenceDenoiser
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.recipes.seqdiff.batches import bucket_groups, read_extra
from protgen_jax.recipes.seqdiff.model import SeqDiffModel, build_model
from protgen_jax.train import make_eval_step

METHODS = ("oadm", "d3pm", "relax")


@dataclass(frozen=True)
class SeqDiffConfig(TrainConfig):
    """Defaults of ``protgen train oadm|d3pm|relax`` (override with ``--set key=value``)."""

    data: str = ""  # FASTA, FAMILY|id headers (none: unconditional); "" = the registry's domains
    steps: int = 2000
    ema_decay: float = 0.999
    eval_every: int = 500
    checkpoint_every: int = 500
    time_limit_minutes: float = 30.0  # wall budget per call, whole segments only; 0 = none
    steps_per_call: int = 1  # > 1: consecutive updates share a length bucket (experiments/seqdiff)
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
    unseen_families: tuple[str, ...] = ()  # left out of training entirely: RUN/unseen.fasta
    extra_data: str = ""  # unlabelled FASTA trained with data (null label); "@NAME" = registry
    extra_fraction: float = 0.2  # share of training draws from extra_data
    extra_max_overlap: float = 0.1  # drop extra sequences sharing more 6-mers with unseen families
    num_layers: int = 4
    num_heads: int = 4
    model_dim: int = 128
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    cfg_drop: float = 0.1  # probability of training with the null family label
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_batches: int = 8  # fixed validation minibatches for the in-training loss
    sample_batch: int = 128  # sequences per sampler call
    eval_sequences: int = 192  # held-out sequences for the perplexity estimate (0 = all)
    eval_orders: int = 1  # oadm: random orders per sequence in the likelihood estimate
    inpaint_sequences: int = 48  # held-out sequences per inpainting setting
    cond_families: int = 8  # largest families used for the conditional-sample check
    cond_samples: int = 8  # samples per family and guidance scale
    eval_guidance: tuple[float, ...] = (1.0, 2.0)


def default_data() -> Path:
    """The registry's domain sequences (``sequences/family_domains_train.fasta``)."""
    return resolve("sequences", "family_domains_train.fasta")


class PreparedData(NamedTuple):
    """The sequences a run trains on, with the fixed split (``holdout [N]`` bool), and the sequences of
    the families left out of training (``unseen``; only while preparing: saved as ``unseen.fasta``)."""

    sequences: SequenceSet
    holdout: np.ndarray
    unseen: SequenceSet | None = None
    # extra_data: the kept sequences (null label, training only), and how many records were dropped
    # as copies of validation or left-out sequences
    extra: SequenceSet | None = None
    extra_dropped: int = 0

    @property
    def family_names(self) -> tuple[str, ...]:
        """The label vocabulary (label ``k`` is ``family_names[k]``; ``len`` is the null label)."""
        return self.sequences.family_names

    def label_of(self, family: str | None) -> int:
        """The label of ``family`` (-1 for None or ""); DataError when the run has no family labels
        or not this family."""
        names = self.family_names
        if not family:
            return -1
        if not names:
            raise DataError(f"--family {family!r}: this run was trained without family labels")
        if family not in names:
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise DataError(
                f"family {family!r} is not one of the run's {len(names)} families: {shown}"
            )
        return names.index(family)

    @property
    def train(self) -> SequenceSet:
        """The training sequences (``holdout`` False)."""
        return self.sequences.subset(np.flatnonzero(~self.holdout))

    @property
    def validation(self) -> SequenceSet:
        """The held-out sequences (``holdout`` True)."""
        return self.sequences.subset(np.flatnonzero(self.holdout))


class UnconditionalDenoiser(SequenceDenoiser):
    """A ``SequenceDenoiser`` without family conditioning (``num_classes = 0``) that ignores the null
    labels the model passes: the network of a run whose FASTA has no ``FAMILY|`` headers. Its params
    are those of ``SequenceDenoiser(num_classes=0)``."""

    def __call__(self, x_t, t, mask=None, cond=None, *, deterministic: bool = True):
        return super().__call__(x_t, t, mask, None, deterministic=deterministic)


def unconditional(model: SeqDiffModel) -> SeqDiffModel:
    """``model`` (built with ``num_families = 0``) on an :class:`UnconditionalDenoiser`."""
    module = model.module
    fields = {
        f.name: getattr(module, f.name)
        for f in dataclasses.fields(SequenceDenoiser)
        if f.init and f.name not in ("parent", "name")
    }
    return dataclasses.replace(model, module=UnconditionalDenoiser(**fields))


class SeqDiffRecipe(Recipe):
    """OADM, D3PM and the continuous relaxation (``config.method``) on one ``SequenceDenoiser``:
    the training hooks (commands: :mod:`.commands`)."""

    family = "seqdiff"
    models = METHODS
    config_type = SeqDiffConfig
    data_file = "data.npz"
    curve_keys = ("loss", "bound_per_token", "val_loss", "val_bound_per_token", "grad_norm")

    def make_config(self, model: str) -> SeqDiffConfig:
        """Default config for ``protgen train MODEL`` (MODEL in oadm, d3pm, relax)."""
        if model not in METHODS:
            raise DataError(f"unknown sequence-diffusion model {model!r}; choose one of {METHODS}")
        return SeqDiffConfig(method=model)

    def model_name(self, config: SeqDiffConfig) -> str:
        return config.method

    def validate(self, config: SeqDiffConfig) -> None:
        """Host-side checks of the family keys (DataError naming the bad field)."""
        require_choice(config, "method", METHODS)
        require_choice(config, "transition", ("uniform", "absorbing"))
        require_choice(config, "noise_schedule", ("cosine", "linear"))
        buckets = tuple(config.buckets)
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[-1] != config.max_len:
            raise DataError(
                f"buckets {buckets} must increase strictly and end at max_len {config.max_len}"
            )
        if config.tokens_per_batch < buckets[-1]:
            raise DataError(
                f"tokens_per_batch {config.tokens_per_batch} must be >= max_len {config.max_len}"
            )
        require_between(config, "cfg_drop", 0.0, 1.0, open_high=True)
        if config.extra_data:
            require_between(config, "extra_fraction", 0.0, 1.0, open_low=True, open_high=True)
            require_between(config, "extra_max_overlap", 0.0, 1.0)
        require_at_least(config, ("num_timesteps",), 2)
        require_at_least(config, ("eval_batches", "sample_batch"), 1)

    # ------------------------------------------------------------------ data
    def prepare(self, config: SeqDiffConfig, progress: bool) -> PreparedData:
        """Read the FASTA (letter rule of ``data.sequences``) and apply the hash split."""
        path = Path(config.data) if config.data else default_data()
        # leave-families-out: whole families never seen in training
        data, unseen = leave_families_out(read_sequences(path), config.unseen_families, path)
        holdout = holdout_mask(data.ids, config.holdout_fraction)
        if holdout.all() or len(data) < 2:
            raise DataError(
                f"{path}: too few sequences ({len(data)}) for a training/validation split"
            )
        if not data.family_names:
            print(
                f"note: {path}: no header has a FAMILY|id prefix; training an unconditional model "
                "(no family labels; cfg_drop, --family and --guidance do not apply)",
                file=sys.stderr,
            )
        extra, dropped = self.prepare_extra(config, data, holdout, unseen)
        return PreparedData(data, holdout, unseen, extra, dropped)

    def prepare_extra(
        self,
        config: SeqDiffConfig,
        data: SequenceSet,
        holdout: np.ndarray,
        unseen: SequenceSet | None,
    ) -> tuple[SequenceSet | None, int]:
        """``extra_data`` as :func:`~.batches.read_extra` reads it (``(None, 0)`` without it)."""
        if not config.extra_data:
            return None, 0
        return read_extra(config, data.subset(np.flatnonzero(holdout)), unseen)

    def adapt_init_leaf(self, name: str, source: np.ndarray, fresh: jax.Array) -> np.ndarray | None:
        """Fine-tuning on other families: every row of the new family table ``[F' + 1, C]`` starts as
        the source's null-family row (its last), so the fine-tuned model starts as the unconditional
        source model for every new family."""
        if name.endswith("['class_embed']['embedding']") and source.shape[1:] == fresh.shape[1:]:
            return np.broadcast_to(source[-1], fresh.shape).copy()
        return None

    def save_data(self, run: RunDir, data: PreparedData) -> None:
        """The run's sequences and split in ``data.npz`` (sampling and evaluation read only that);
        the left-out families' sequences in ``unseen.fasta`` (``protgen evaluate RUN --data`` it)."""
        save_sequence_set(run.file(self.data_file), data.sequences, holdout=data.holdout)
        if data.extra is not None:
            dropped = np.int64(data.extra_dropped)
            save_sequence_set(run.file("extra.npz"), data.extra, dropped=dropped)
        if data.unseen is not None:
            write_sequence_set(run.file("unseen.fasta"), data.unseen)

    def load_data(self, run: RunDir) -> PreparedData:
        path = run.file(self.data_file)
        if not path.exists():
            raise DataError(f"{run.path}: not a sequence-diffusion run folder (no data.npz)")
        if run.info.exists() and run.read_info().get("alphabet") != vocab.LAYOUT:
            raise DataError(
                f"{run.info}: the run was trained with another token layout than this version's "
                f"({vocab.LAYOUT}: its networks read MASK and PAD as other tokens); train it again"
            )
        sequences, arrays = load_sequence_set(path)
        if not run.file("extra.npz").exists():
            return PreparedData(sequences, arrays["holdout"])
        extra, saved = load_sequence_set(run.file("extra.npz"))
        return PreparedData(sequences, arrays["holdout"], None, extra, int(saved["dropped"]))

    def describe_data(self, config: SeqDiffConfig, data: PreparedData) -> dict[str, Any]:
        model = self.build_model(config, data)
        shapes = jax.eval_shape(model.init, jax.random.key(0))
        return {
            "method": config.method,
            "transition": config.transition if config.method == "d3pm" else None,
            "num_train": int((~data.holdout).sum()),
            "num_validation": int(data.holdout.sum()),
            "num_families": len(data.family_names),
            "num_skipped_ambiguous": data.sequences.num_skipped,
            "num_extra": 0 if data.extra is None else len(data.extra),
            "num_extra_dropped": data.extra_dropped,
            "num_params": int(sum(np.prod(p.shape) for p in jax.tree.leaves(shapes))),
        }

    # ------------------------------------------------------------------ model and training
    def build_model(self, config: SeqDiffConfig, data: PreparedData) -> SeqDiffModel:
        """The configured model; unconditional (no family embedding) when the data has no family."""
        model = build_model(config, len(data.family_names))
        return model if data.family_names else unconditional(model)

    def init_params(self, model: SeqDiffModel, config, data, key: jax.Array) -> Any:
        return model.init(key)

    def optimizer(self, config: SeqDiffConfig) -> optax.GradientTransformation:
        """AdamW (clipped), linear warm-up then cosine decay to 10% of the peak at ``steps``."""
        warmup = min(config.warmup_steps, config.steps - 1)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, warmup, max(config.steps, warmup + 1),
            end_value=0.1 * config.learning_rate,
        )  # fmt: skip
        return optax.chain(
            optax.clip_by_global_norm(config.grad_clip),
            optax.adamw(schedule, weight_decay=config.weight_decay),
        )

    def loss_fn(self, model: SeqDiffModel, config, data) -> Any:
        return model.loss_fn(train=True)

    def batches(self, config: SeqDiffConfig, data: PreparedData) -> list[BatchGroup]:
        return bucket_groups(
            data.train, config, len(data.family_names), config.cfg_drop, extra=data.extra
        )

    def make_eval(self, model: SeqDiffModel, config, data: PreparedData, key: jax.Array):
        """Mean loss and aux of ``eval_batches`` fixed validation batches (no label drop).

        Batch ``i``: bucket ``b_i`` drawn with the training weights from
        ``numpy_rng(named(key, "buckets"))``, rows from ``fold_in(named(key, "batch"), i)``, loss
        randomness from ``fold_in(named(key, "loss"), i)``; all fixed at the start of the run.
        """
        groups = bucket_groups(data.validation, config, model.null_label, 0.0)
        weights = np.array([g.weight for g in groups])
        picks = keys.numpy_rng(keys.named(key, "buckets")).choice(
            len(groups), size=config.eval_batches, p=weights / weights.sum()
        )
        batch_key, loss_key = keys.named(key, "batch"), keys.named(key, "loss")
        arrays = [jax.tree.map(jnp.asarray, g.arrays) for g in groups]
        batches = [
            groups[g].draw(arrays[g], jax.random.fold_in(batch_key, i), jnp.int32(0))
            for i, g in enumerate(picks)
        ]
        eval_step = make_eval_step(model.loss_fn(train=False))

        def eval_fn(params: Any, step: int) -> dict[str, float]:
            outs = [
                jax.device_get(eval_step(params, b, jax.random.fold_in(loss_key, i)))
                for i, b in enumerate(batches)
            ]
            return {f"val_{k}": float(np.mean([o[k] for o in outs])) for k in outs[0]}

        return eval_fn
