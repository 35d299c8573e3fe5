"""Backbone diffusion recipe: a C-alpha DDPM trained on real PDB chains (``protgen train backbone``).

Pipeline: load every chain of ``data`` (default the registry's ``structures/pdb``, 263 chains) and of
``extra_data`` (default ``structures_cgdms/pdb``, 2,202 chains of 20-100 residues; bad files and chains
outside ``min_length`` .. ``max_length`` are skipped and counted) -> a fixed split of whole chains (cgdms by
its manifest's train / val lists, the rest ~10% by name hash; ``load_folders``) -> centre each chain,
divide by ``COORD_SCALE`` and pad it to the widest bucket (saved in the run's ``data.npz``) -> one batch
group per length bucket (batch size ``batch_tokens // bucket``, rows drawn on the device) -> a random
rotation per example -> eps-prediction loss with zero-centre-of-mass noise (masked MSE, one value per
example; optional self-conditioning and an x0-space term at low noise) -> AdamW with warm-up and cosine
decay, EMA; the shared skeleton (:mod:`protgen_jax.recipes.base`) runs the loop.

Schedule: cosine with T = 1000 by default. For C-alpha coordinates at ``COORD_SCALE`` = 10 Å the local
geometry (bonds of 3.8 Å, helix and strand turns) is destroyed once the noise std passes ~1 Å = 0.1
model units; the cosine schedule spends ~5.6% of its steps below that level, the linear one ~2.7%, and
the targets here (bond lengths within 0.2 Å) are decided in those steps.

The denoiser is :class:`protgen_jax.nn.backbone.BackboneDenoiser` (SE(3)-equivariant transformer with
pairwise-distance attention bias and relative chain positions); it takes the noise level sqrt(SNR_t) as
an input, which :func:`denoiser` looks up from the configured schedule. Chain positions come from the author
residue numbers across chain breaks, so a gap in a natural chain reads as a gap, not as a bond.

Sampling, motif scaffolding and evaluation are in :mod:`protgen_jax.recipes.backbone.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from protgen_jax.data.structures import (
    COORD_SCALE,
    ChainSet,
    bucket_for,
)
from protgen_jax.diffusion import (
    Schedule,
    diffusion_loss,
    q_sample,
    self_conditioned,
    with_noise_level,
)
from protgen_jax.diffusion.losses import noise_mse
from protgen_jax.errors import DataError
from protgen_jax.fit import (
    BatchGroup,
    TrainConfig,
    compute_dtype,
    configured_schedule,
    require_at_least,
    require_between,
    require_choice,
    uniform_draw,
    validation_timesteps,
    warmup_cosine_adamw,
)
from protgen_jax.nn.backbone import BackboneDenoiser
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.recipes.structure_split import (
    check_lengths,
    load_folders,
    load_split,
    save_split,
    write_split_json,
)
from protgen_jax.structure.frames import apply_rotation, random_rotation
from protgen_jax.structure.noise import zero_com_noise

make_schedule = configured_schedule
"""``make_schedule(config)``: the configured noise schedule (:func:`protgen_jax.fit.configured_schedule`)."""

FAMILY = "backbone"
VALIDATION_TIMESTEPS = (0.01, 0.1, 0.5)
"""Fractions of T at which the held-out eps-MSE is logged during training (fixed noise)."""
MIN_LENGTH = 8
MAX_LENGTH = 1024
"""Bounds of ``protgen sample --length``."""
SAMPLE_LENGTH = 100
"""``protgen sample`` length when ``--length`` is not given."""
DDIM_STEPS = 100
"""``protgen sample --sampler ddim`` steps when ``--steps`` is not given."""
NOISE_SCALE_MAX = 2.0


@dataclass(frozen=True)
class BackboneConfig(TrainConfig):
    """Defaults of ``protgen train backbone`` (override with ``--set key=value``)."""

    data: str = ""  # folder of PDB/mmCIF files; "" = the registry dataset "structures" (pdb/)
    extra_data: str = "@structures_cgdms"  # a second folder trained with data; "@NAME" = registry
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
    self_condition: bool = False  # feed the previous x0 estimate back (training: half the batches)
    x0_loss_weight: float = 0.0  # weight of the x0-space MSE term (0 = off)
    x0_loss_max_t: float = 0.25  # ... applied where t < x0_loss_max_t * T
    steps: int = 4000
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 25
    eval_every: int = 250
    checkpoint_every: int = 250
    time_limit_minutes: float = 27.0  # stop at the last checkpoint before this (0 = no limit)
    steps_per_call: int = 5
    sample_variance: str = "beta"  # DDPM reverse variance: "beta" or "posterior"
    sample_noise_scale: float = 1.0  # scales sigma_t of each DDPM reverse step (< 1: reduced)
    sample_clip: float = 10.0  # clip x0_hat to +-this (model units, 100 Å; a safety net), 0 = off
    sample_batch: int = 64  # backbones per sampler call
    eval_num: int = 64  # default number of samples for `protgen evaluate`
    eval_min_length: int = 64
    eval_max_length: int = 128
    eval_bound: bool = True  # held-out variational bound (T network calls per bucket batch)


class BackboneData(NamedTuple):
    """The chains a run trains and validates on, the files it skipped (``(file, reason)``) and the
    folders they came from."""

    train: ChainSet
    holdout: ChainSet
    skipped: list[tuple[str, str]]
    folders: list[str]


def load_structures(config: BackboneConfig, progress: bool = True) -> BackboneData:
    """Load ``data`` (default the registry's ``structures/pdb``) and ``extra_data`` (default
    ``structures_cgdms/pdb``), split each (cgdms by its manifest, the rest by chain-name hash and
    ``split_seed``; :func:`~protgen_jax.recipes.structure_split.load_folders`) and pad every chain to
    ``max(config.buckets)``.

    Raises:
      DataError: no usable training chain.
    """
    specs = [(config.data, "structures")]
    if config.extra_data:
        specs.append((config.extra_data, "structures_cgdms"))
    train, holdout, skipped, folders = load_folders(specs, config, progress, need_holdout=False)
    width = max(config.buckets)
    return BackboneData(ChainSet.of(train, width), ChainSet.of(holdout, width), skipped, folders)


def denoiser(model: BackboneDenoiser, params: Any, schedule: Schedule) -> Partial:
    """``denoise_fn(x_t, t, mask, cond) = model.apply(params, x_t, t, mask, cond,
    noise_level=sqrt(ab_t / (1 - ab_t)))`` of ``schedule`` (a pytree Partial: no recompiles for new
    params)."""
    return with_noise_level(Partial(model.apply, params), schedule)


def point_denoiser(
    model: BackboneDenoiser, params: Any, schedule: Schedule, config: BackboneConfig
) -> Partial:
    """:func:`denoiser` for one-off calls (held-out errors, the bound): a self-conditioned network
    runs its two training passes (:func:`protgen_jax.diffusion.self_conditioned`)."""
    fn = denoiser(model, params, schedule)
    return self_conditioned(fn, schedule) if config.self_condition else fn


SELF_CONDITION_RATE = 0.5
"""Fraction of training batches that take the self-conditioned pass (Chen et al. 2022)."""


def make_loss_fn(config: BackboneConfig, model: BackboneDenoiser, schedule: Schedule):
    """``loss_fn(params, batch, key) -> (mean loss, {})``.

    Per example: a uniform random rotation (``config.rotate``), then ``diffusion_loss`` with
    ``t ~ U{0..T-1}``, zero-centre-of-mass noise and the masked eps-MSE; with ``self_condition``,
    ``SELF_CONDITION_RATE`` of the batches are self-conditioned; with ``x0_loss_weight`` > 0, ``+ w
    ||x0_hat - x0||^2`` (model units) where ``t < x0_loss_max_t * T``. The batch mean is the loss.
    """
    noise_fn = Partial(zero_com_noise)

    def loss_fn(params, batch, key):
        rot_key, loss_key = jax.random.split(key)
        x0 = batch["x0"]
        if config.rotate:
            x0 = apply_rotation(random_rotation(rot_key, x0.shape[0]), x0)
        losses = diffusion_loss(
            loss_key,
            denoiser(model, params, schedule),
            schedule,
            x0,
            batch["mask"],
            batch["positions"],
            prediction="eps",
            noise_transform=noise_fn,
            self_condition=SELF_CONDITION_RATE if config.self_condition else 0.0,
            x0_weight=config.x0_loss_weight,
            x0_max_t=int(round(config.x0_loss_max_t * schedule.num_steps)),
        )
        return jnp.mean(losses), {}

    return loss_fn


make_draw = uniform_draw
"""``make_draw(batch_size)``: :func:`protgen_jax.fit.uniform_draw` (rows uniform with replacement)."""


def _example_inputs(length: int = 8) -> tuple[jax.Array, jax.Array, jax.Array]:
    return jnp.zeros((1, length, 3)), jnp.zeros((1,), jnp.int32), jnp.ones((1, length), bool)


class BackboneRecipe(Recipe):
    """``protgen train backbone``: the training hooks (commands: :mod:`.commands`)."""

    family = FAMILY
    models = (FAMILY,)
    config_type = BackboneConfig
    data_file = "data.npz"
    curve_keys = ("loss", "grad_norm")

    # ------------------------------------------------------------------ config and data
    def validate(self, config: BackboneConfig) -> None:
        make_schedule(config)
        check_lengths(config)
        require_between(config, "holdout_fraction", 0.0, 1.0)
        require_at_least(config, ("batch_tokens", "sample_batch", "eval_num", "eval_min_length"), 1)
        if config.eval_max_length < config.eval_min_length:
            raise DataError(
                f"eval_max_length={config.eval_max_length} < eval_min_length="
                f"{config.eval_min_length}"
            )
        require_choice(config, "sample_variance", ("beta", "posterior"))
        require_between(config, "sample_noise_scale", 0.0, NOISE_SCALE_MAX)
        require_between(config, "x0_loss_max_t", 0.0, 1.0)
        if config.x0_loss_weight < 0:
            raise DataError(f"x0_loss_weight must be >= 0, got {config.x0_loss_weight}")

    def prepare(self, config: BackboneConfig, progress: bool) -> BackboneData:
        return load_structures(config, progress)

    def save_data(self, run: RunDir, data: BackboneData) -> None:
        save_split(
            run.file(self.data_file), data.train, data.holdout, data.skipped, data.folders,
            compress=False,
        )  # fmt: skip

    def load_data(self, run: RunDir) -> BackboneData:
        stored = load_split(run.file(self.data_file), ChainSet)
        return BackboneData(stored.train, stored.holdout, stored.skipped, stored.folders)

    def describe_data(self, config: BackboneConfig, data: BackboneData) -> dict[str, Any]:
        return {
            "num_train": len(data.train),
            "num_holdout": len(data.holdout),
            "num_skipped": len(data.skipped),
        }

    def extra_run_files(self, run: RunDir, config: BackboneConfig, data: BackboneData) -> None:
        """``data.json``: the source folder, the split and the skipped files."""
        write_split_json(
            run.file("data.json"), data.train.names, data.holdout.names, data.skipped, data.folders
        )

    def curve_names(self, config: BackboneConfig) -> tuple[str, ...]:
        steps = validation_timesteps(make_schedule(config), VALIDATION_TIMESTEPS)
        return (*self.curve_keys, *(f"val_mse_t{t}" for t in steps))

    # ------------------------------------------------------------------ model and training
    def build_model(self, config: BackboneConfig, data: Any) -> BackboneDenoiser:
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
            coord_scale=COORD_SCALE,
            self_condition=config.self_condition,
            dtype=compute_dtype(config),
        )

    def init_params(self, model: BackboneDenoiser, config, data, key: jax.Array) -> Any:
        return model.init(key, *_example_inputs())

    def optimizer(self, config: BackboneConfig) -> optax.GradientTransformation:
        """AdamW after global-norm clipping; the learning rate warms up linearly over
        ``warmup_steps`` and decays by a cosine to ``0.05 * learning_rate`` at ``steps``."""
        return warmup_cosine_adamw(config)

    def loss_fn(self, model: BackboneDenoiser, config: BackboneConfig, data: Any):
        return make_loss_fn(config, model, make_schedule(config))

    def batches(self, config: BackboneConfig, data: BackboneData) -> list[BatchGroup]:
        """One group per length bucket that holds a training chain: ``arrays`` = that bucket's
        padded ``x0 [n_b, b, 3]``, ``mask [n_b, b]``, ``positions [n_b, b]``; a batch is
        ``batch_tokens // b`` rows drawn uniformly with replacement; weight ``n_b``."""
        groups = []
        for bucket, rows in data.train.by_bucket(config.buckets).items():
            x0, mask, positions = data.train.padded(rows, bucket)
            size = max(1, config.batch_tokens // bucket)
            groups.append(
                BatchGroup(
                    arrays={"x0": x0, "mask": mask, "positions": positions},
                    draw=make_draw(size),
                    batch_size=size,
                    weight=float(len(rows)),
                    name=f"L{bucket}",
                )
            )
        return groups

    def make_eval(self, model: BackboneDenoiser, config: BackboneConfig, data, key: jax.Array):
        """Held-out eps-MSE at the fixed timesteps ``VALIDATION_TIMESTEPS * (T - 1)``, with one
        fixed zero-COM noise ``eps ~ N(0, I)`` [N_holdout, W, 3] drawn from ``key``:
        ``val_mse_t{t} = mean_n ||eps_hat(q_sample(x0, t, eps), t) - eps||^2_mask``."""
        holdout = data.holdout
        if not len(holdout):
            return None
        schedule = make_schedule(config)
        rows = np.arange(len(holdout))
        width = bucket_for(int(holdout.lengths.max()), config.buckets)
        x0, mask, positions = (jnp.asarray(a) for a in holdout.padded(rows, width))
        noise = zero_com_noise(jax.random.normal(key, x0.shape), mask)
        steps = validation_timesteps(schedule, VALIDATION_TIMESTEPS)

        @jax.jit
        def mse(params, t):
            tb = jnp.full((x0.shape[0],), t)
            x_t = q_sample(schedule, x0, tb, noise)
            eps_hat = point_denoiser(model, params, schedule, config)(x_t, tb, mask, positions)
            return jnp.mean(noise_mse(eps_hat, noise, mask))

        def eval_fn(params, step):
            del step
            return {f"val_mse_t{t}": float(mse(params, t)) for t in steps}

        return eval_fn
