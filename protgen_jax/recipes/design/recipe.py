"""Inverse-folding recipe: a ProteinMPNN-style model trained on real backbones (``protgen train design``).

Pipeline: load every chain of a folder of PDB / mmCIF files with its N, CA, C atoms and its sequence (bad
files are skipped and counted; a residue missing N or C is masked out) -> a fixed ~10% holdout of whole
chains by name hash (``split_holdout``) -> each chain centred (Å) and padded to the widest bucket, saved in
the run's ``data.npz`` -> one batch group per length bucket (``batch_tokens // bucket`` chains, drawn on
the device) -> Gaussian noise of ``backbone_noise`` Å on every atom (ProteinMPNN's training noise, which
makes the model tolerant of imperfect, e.g. generated, backbones) -> a random decoding order per chain ->
label-smoothed cross-entropy of the teacher-forced conditionals at every residue with a known amino acid
-> AdamW with warm-up and cosine decay, EMA; the shared skeleton (:mod:`protgen_jax.recipes.base`) runs
the loop.

``atom_set="full"`` reads N, CA, C (plus the derived O and virtual C-beta); ``atom_set="ca"`` reads the
C-alpha trace alone, so that C-alpha backbones (``protgen train backbone`` samples) can be designed.

Designing (sampling), scoring and the evaluation are in :mod:`.sampling` and :mod:`.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from protgen_jax import alphabet
from protgen_jax.data import resolve
from protgen_jax.data.structures import (
    Chain,
    bucket_for,
    chain_positions,
    rows_by_bucket,
)
from protgen_jax.fit import (
    BatchGroup,
    TrainConfig,
    compute_dtype,
    require_at_least,
    require_between,
    require_choice,
    uniform_draw,
    warmup_cosine_adamw,
)
from protgen_jax.nn.mpnn import InverseFoldingModel
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.recipes.structure_split import (
    check_lengths,
    load_and_split,
    load_split,
    save_split,
    write_split_json,
)
from protgen_jax.structure.graph import ATOM_SETS

FAMILY = "design"


@dataclass(frozen=True)
class DesignConfig(TrainConfig):
    """Defaults of ``protgen train design`` (override with ``--set key=value``)."""

    data: str = ""  # folder of PDB/mmCIF files; "" = the registry dataset "structures_cgdms" (pdb/)
    chain: str = ""  # chain id to read from every file; "" = the first protein chain
    min_length: int = 20
    max_length: int = 256
    holdout_fraction: float = 0.1
    split_seed: int = 0
    buckets: tuple[int, ...] = (64, 96, 128, 256)
    batch_tokens: int = 512  # residues (incl. padding) per batch: batch = batch_tokens // bucket
    atom_set: str = "full"  # "full" (N, CA, C -> + O, virtual CB) or "ca" (C-alpha trace only)
    dim: int = 64
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    num_neighbours: int = 24
    num_rbf: int = 16
    max_offset: int = 32
    dropout: float = 0.1
    backbone_noise: float = 0.1  # Å, std of the Gaussian noise added to the atoms in training
    label_smoothing: float = 0.1
    steps: int = 5000
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    time_limit_minutes: float = 28.0  # stop at the last checkpoint before this (0 = no limit)
    steps_per_call: int = 10
    design_batch: int = 32  # chains (or designs) per sampler call
    eval_designs: int = 4  # designs per held-out chain for `protgen evaluate` (sequence recovery)
    eval_temperature: float = 0.1


def data_folder(config: DesignConfig) -> Path:
    """The configured structure folder, or the registry's ``structures_cgdms/pdb``."""
    return Path(config.data) if config.data else resolve("structures_cgdms") / "pdb"


@dataclass(frozen=True)
class DesignSet:
    """Chains with their backbones and sequences, padded to one width W.

    ``names`` [N] str; ``coords`` [N, W, 3, 3] float32 N, CA, C in Å, each chain centred on its CA
    atoms; ``mask`` [N, W] bool (False at padding and at residues missing N or C); ``positions``
    [N, W] int32 (:func:`chain_positions`); ``tokens`` [N, W] int32 native amino acids (``MASK`` for
    non-standard residues, ``PAD`` at padding).
    """

    names: np.ndarray
    coords: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    tokens: np.ndarray

    FIELDS = ("names", "coords", "mask", "positions", "tokens")

    @classmethod
    def of(cls, chains: list[Chain], width: int) -> DesignSet:
        n = len(chains)
        coords = np.zeros((n, width, 3, 3), np.float32)
        mask = np.zeros((n, width), bool)
        positions = np.zeros((n, width), np.int32)
        tokens = np.full((n, width), alphabet.PAD, np.int32)
        for i, chain in enumerate(chains):
            length = chain.length
            atoms = (
                chain.backbone if chain.backbone is not None else np.full((length, 3, 3), np.nan)
            )
            complete = np.isfinite(atoms).all(axis=(1, 2))
            centred = atoms - chain.ca.mean(axis=0)
            coords[i, :length] = np.where(complete[:, None, None], centred, 0.0)
            mask[i, :length] = complete
            positions[i, :length] = chain_positions(chain)
            native = alphabet.encode(chain.sequence)
            tokens[i, :length] = np.where(native < alphabet.K_AA, native, alphabet.MASK)
        return cls(np.array([c.name for c in chains], dtype=str), coords, mask, positions, tokens)

    @property
    def lengths(self) -> np.ndarray:
        """[N] padded length of every chain (its last real residue + 1)."""
        last = np.where(self.mask.any(1), self.mask.shape[1] - np.argmax(self.mask[:, ::-1], 1), 0)
        return last.astype(np.int64)

    def take(self, rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        """The arrays of ``rows`` cut to ``width`` (no names)."""
        return {f: getattr(self, f)[rows, :width] for f in self.FIELDS[1:]}

    def __len__(self) -> int:
        return len(self.names)


class DesignData(NamedTuple):
    """The chains a run trains and validates on, and the files it skipped (``(file, reason)``)."""

    train: DesignSet
    holdout: DesignSet
    skipped: list[tuple[str, str]]
    folder: str


def load_design_data(config: DesignConfig, progress: bool = True) -> DesignData:
    """Load the configured folder, split it (fixed by chain names and ``split_seed``) and pad it.

    Raises:
      DataError: no usable chain, or every chain held out.
    """
    folder = data_folder(config)
    train, holdout, skipped = load_and_split(folder, config, progress)
    width = bucket_for(max(c.length for c in train + holdout), config.buckets)
    return DesignData(
        DesignSet.of(train, width), DesignSet.of(holdout, width), skipped, str(folder)
    )


def model_inputs(coords: jax.Array, atom_set: str) -> jax.Array:
    """What the network reads: [..., L, 3, 3] N, CA, C for ``full``, the CA column [..., L, 3] for
    ``ca``."""
    return coords if atom_set == "full" else coords[..., 1, :]


def random_rank(key: jax.Array, mask: jax.Array, first: jax.Array | None = None) -> jax.Array:
    """A uniformly random decoding order as ranks [B, L] int32: the residues in ``first`` (e.g. fixed
    positions) come before all others, padding after all real residues."""
    u = jax.random.uniform(key, mask.shape)
    u = jnp.where(mask, u, 2.0)
    if first is not None:
        u = jnp.where(first & mask, u - 1.0, u)
    return jnp.argsort(jnp.argsort(u, axis=-1), axis=-1).astype(jnp.int32)


def residue_nll(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """-log p(s_i): logits [B, L, 20], tokens [B, L] (clipped into 0..19) -> [B, L] float32."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    target = jnp.clip(tokens, 0, alphabet.K_AA - 1)
    return -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]


def make_loss_fn(config: DesignConfig, model: InverseFoldingModel):
    """``loss_fn(params, batch, key) -> (smoothed CE, {nll_per_residue, accuracy})`` per known residue.

    CE_i = -(1 - eps) log p(s_i) - eps mean_a log p(a) with eps = ``label_smoothing``; the loss, the
    plain NLL and the argmax accuracy are averaged over the residues of the batch with a known amino acid.
    """
    eps = config.label_smoothing

    def loss_fn(params, batch, key):
        noise_key, order_key, dropout_key = jax.random.split(key, 3)
        mask = batch["mask"]
        coords = batch["coords"]
        coords = coords + config.backbone_noise * jax.random.normal(noise_key, coords.shape)
        tokens = batch["tokens"]
        known = mask & (tokens < alphabet.K_AA)
        rank = random_rank(order_key, mask)
        logits = model.apply(
            params, model_inputs(coords, config.atom_set), mask, batch["positions"],
            jnp.where(known, tokens, alphabet.MASK), rank,
            deterministic=False, rngs={"dropout": dropout_key},
        )  # fmt: skip
        nll = residue_nll(logits, tokens)
        smooth = -jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=-1)
        weight = known.astype(jnp.float32)
        count = jnp.maximum(weight.sum(), 1.0)
        loss = jnp.sum(((1 - eps) * nll + eps * smooth) * weight) / count
        correct = (jnp.argmax(logits, -1) == tokens).astype(jnp.float32)
        return loss, {
            "nll_per_residue": jnp.sum(nll * weight) / count,
            "accuracy": jnp.sum(correct * weight) / count,
        }

    return loss_fn


def teacher_forced_nll(model: InverseFoldingModel, atom_set: str) -> Partial:
    """``nll(params, coords, mask, positions, tokens, rank) -> [B, L]`` -log p(s_i | s_<i, X) for the
    order ``rank`` (no dropout, no noise), as a jittable pytree Partial."""

    def nll(params, coords, mask, positions, tokens, rank):
        known = mask & (tokens < alphabet.K_AA)
        logits = model.apply(
            params, model_inputs(coords, atom_set), mask, positions,
            jnp.where(known, tokens, alphabet.MASK), rank,
        )  # fmt: skip
        return residue_nll(logits, tokens)

    return Partial(nll)


class DesignRecipe(Recipe):
    """``protgen train design``: the training hooks (commands: :mod:`.commands`)."""

    family = FAMILY
    models = (FAMILY,)
    config_type = DesignConfig
    data_file = "data.npz"
    curve_keys = ("loss", "nll_per_residue", "accuracy", "val_nll_per_residue", "val_accuracy")

    def validate(self, config: DesignConfig) -> None:
        check_lengths(config)
        require_choice(config, "atom_set", tuple(ATOM_SETS))
        require_between(config, "holdout_fraction", 0.0, 1.0)
        require_between(config, "dropout", 0.0, 1.0, open_high=True)
        require_between(config, "label_smoothing", 0.0, 1.0, open_high=True)
        require_at_least(config, ("backbone_noise", "eval_temperature"), 0.0)
        require_at_least(
            config,
            ("batch_tokens", "dim", "num_encoder_layers", "num_decoder_layers", "num_neighbours",
             "num_rbf", "max_offset", "design_batch", "eval_designs"),
            1,
        )  # fmt: skip

    def prepare(self, config: DesignConfig, progress: bool) -> DesignData:
        return load_design_data(config, progress)

    def save_data(self, run: RunDir, data: DesignData) -> None:
        save_split(
            run.file(self.data_file), data.train, data.holdout, data.skipped, [data.folder],
            compress=True,
        )  # fmt: skip

    def load_data(self, run: RunDir) -> DesignData:
        stored = load_split(run.file(self.data_file), DesignSet)
        return DesignData(stored.train, stored.holdout, stored.skipped, stored.folders[0])

    def describe_data(self, config: DesignConfig, data: DesignData) -> dict[str, Any]:
        return {
            "atom_set": config.atom_set,
            "num_train": len(data.train),
            "num_holdout": len(data.holdout),
            "num_skipped": len(data.skipped),
            "train_residues": int(data.train.mask.sum()),
        }

    def extra_run_files(self, run: RunDir, config: DesignConfig, data: DesignData) -> None:
        """``data.json``: the source folder, the split and the skipped files."""
        write_split_json(
            run.file("data.json"), data.train.names, data.holdout.names, data.skipped, [data.folder]
        )

    def build_model(self, config: DesignConfig, data: Any) -> InverseFoldingModel:
        return InverseFoldingModel(
            atom_set=config.atom_set,
            dim=config.dim,
            num_encoder_layers=config.num_encoder_layers,
            num_decoder_layers=config.num_decoder_layers,
            num_neighbours=config.num_neighbours,
            num_rbf=config.num_rbf,
            max_offset=config.max_offset,
            dropout=config.dropout,
            dtype=compute_dtype(config),
        )

    def init_params(self, model: InverseFoldingModel, config: DesignConfig, data, key) -> Any:
        length = 8
        coords = jnp.zeros((1, length, 3, 3)) + jnp.arange(length)[None, :, None, None]
        mask = jnp.ones((1, length), bool)
        index = jnp.arange(length)[None]
        return model.init(
            key, model_inputs(coords, config.atom_set), mask, index, jnp.zeros_like(index), index
        )

    def optimizer(self, config: DesignConfig) -> optax.GradientTransformation:
        """AdamW after global-norm clipping; linear warm-up over ``warmup_steps``, cosine decay to
        ``0.05 * learning_rate`` at ``steps``."""
        return warmup_cosine_adamw(config)

    def loss_fn(self, model: InverseFoldingModel, config: DesignConfig, data: Any):
        return make_loss_fn(config, model)

    def batches(self, config: DesignConfig, data: DesignData) -> list[BatchGroup]:
        """One group per length bucket that holds a training chain (its arrays cut to the bucket);
        a batch is ``batch_tokens // bucket`` chains drawn uniformly with replacement; weight = chains
        in the bucket."""
        groups = []
        for bucket, rows in rows_by_bucket(data.train.lengths, config.buckets).items():
            size = max(1, config.batch_tokens // bucket)
            groups.append(
                BatchGroup(
                    arrays=data.train.take(rows, bucket),
                    draw=uniform_draw(size),
                    batch_size=size,
                    weight=float(len(rows)),
                    name=f"L{bucket}",
                )
            )
        return groups

    def make_eval(self, model: InverseFoldingModel, config: DesignConfig, data, key: jax.Array):
        """Held-out ``val_nll_per_residue`` and ``val_accuracy`` (argmax = native) of the
        teacher-forced conditionals under one fixed random order per chain (drawn from ``key``)."""
        holdout = data.holdout
        if not len(holdout):
            return None
        width = bucket_for(int(holdout.lengths.max()), config.buckets)
        arrays = {
            k: jnp.asarray(v) for k, v in holdout.take(np.arange(len(holdout)), width).items()
        }
        rank = random_rank(key, arrays["mask"])
        known = arrays["mask"] & (arrays["tokens"] < alphabet.K_AA)

        @jax.jit
        def evaluate(params):
            logits = model.apply(
                params, model_inputs(arrays["coords"], config.atom_set), arrays["mask"],
                arrays["positions"], jnp.where(known, arrays["tokens"], alphabet.MASK), rank,
            )  # fmt: skip
            weight = known.astype(jnp.float32)
            nll = jnp.sum(residue_nll(logits, arrays["tokens"]) * weight) / weight.sum()
            acc = (jnp.argmax(logits, -1) == arrays["tokens"]).astype(jnp.float32)
            return nll, jnp.sum(acc * weight) / weight.sum()

        def eval_fn(params, step):
            del step
            nll, acc = evaluate(params)
            return {"val_nll_per_residue": float(nll), "val_accuracy": float(acc)}

        return eval_fn
