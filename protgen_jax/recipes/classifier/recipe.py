"""A noise-conditioned family classifier on a latent run's codes, for classifier guidance.

``protgen train classifier --latent LAT --out CLF`` copies the latent run's standardised codes
(:class:`~protgen_jax.recipes.latent.LatentData`), labels and split into ``codes.npz`` and trains
``p_phi(y | x_t, t)`` (Dhariwal & Nichol 2021) on noisy codes of the latent run's own schedule:

    x0 = x_mu + x_sigma eps'                 (the latent run's code draw, ``latent_source``)
    t ~ U{0..T-1},  x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
    L = -log softmax(f_phi(x_t, t))[y]       (rows with a known label only)

``f_phi`` is ``protgen_jax.nn.MLPDenoiser`` with ``out_dim = F`` and no class input: the timestep
embedding is injected before every layer and the output is ``[B, F]`` logits. At sampling time
``log_prob_fn(x_t, t, mask, y) = log softmax(f_phi(x_t, t))[y]``
(:func:`~protgen_jax.recipes.latent.model.classifier_log_prob_fn`) enters
``diffusion.classifier_guidance``. A classifier belongs to one latent run: ``codes.npz`` keeps its
fingerprint (standardisation, families, code source, schedule), checked when it guides a sampler.

Run folder: ``config.json``, ``run.json``, ``codes.npz``, ``checkpoints/``, ``metrics.jsonl``,
``curves.png``, ``summary.json``.
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
from protgen_jax.atomic import save_npz_atomic
from protgen_jax.diffusion import Schedule, get_schedule, q_sample
from protgen_jax.errors import DataError
from protgen_jax.fit import (
    BatchGroup,
    TrainConfig,
    compute_dtype,
    require_at_least,
    warmup_cosine_adamw,
)
from protgen_jax.nn.mlp import MLPDenoiser
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.train import make_eval_step


@dataclass(frozen=True)
class ClassifierConfig(TrainConfig):
    """Defaults of ``protgen train classifier`` (override with ``--set key=value``)."""

    latent: str = ""  # the latent-diffusion run whose codes and schedule the classifier learns
    steps: int = 8000
    batch_size: int = 256
    ema_decay: float = 0.999
    log_every: int = 200
    eval_every: int = 2000
    checkpoint_every: int = 2000
    steps_per_call: int = 100
    time_limit_minutes: float = 30.0
    hidden_widths: tuple[int, ...] = (512, 512, 512)
    time_embed_dim: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    eval_levels: tuple[int, ...] = (0, 250, 500, 750, 900, 999)  # timesteps of the accuracy report
    eval_rows: int = 2048  # held-out codes per accuracy estimate


class ClassifierData(NamedTuple):
    """``x_mu, x_sigma [N, D]`` (standardised codes, see the latent recipe), ``labels [N]`` (-1
    unknown), ``holdout [N]``, ``family_names``, the latent run's ``schedule`` name and ``num_timesteps``,
    and its ``fingerprint``."""

    x_mu: np.ndarray
    x_sigma: np.ndarray
    labels: np.ndarray
    holdout: np.ndarray
    family_names: tuple[str, ...]
    schedule: str
    num_timesteps: int
    fingerprint: str


@dataclass(frozen=True, eq=False)
class ClassifierModel:
    """The network ``f_phi(x_t, t) -> [B, F]`` logits and the latent run's schedule."""

    module: MLPDenoiser
    schedule: Schedule
    latent_dim: int
    num_families: int

    def init(self, key: jax.Array) -> Any:
        return self.module.init(
            key, jnp.zeros((1, self.latent_dim), jnp.float32), jnp.zeros((1,), jnp.int32)
        )

    def logits(self, params: Any, x_t: jax.Array, t: jax.Array) -> jax.Array:
        return self.module.apply(params, x_t, t)

    def loss_fn(self) -> Any:
        """``loss(params, batch, key)``: mean cross-entropy over labelled rows; aux ``accuracy``.
        ``batch``: ``x0 [B, D]``, ``labels [B]``, and ``t [B]`` (else drawn uniformly)."""

        def loss(params, batch, key):
            t_key, n_key = jax.random.split(key)
            x0, labels = batch["x0"], batch["labels"]
            t = batch.get("t")
            if t is None:
                t = jax.random.randint(t_key, (x0.shape[0],), 0, self.schedule.num_steps)
            x_t = q_sample(self.schedule, x0, t, jax.random.normal(n_key, x0.shape))
            logp = jax.nn.log_softmax(self.logits(params, x_t, t), -1)
            known = labels >= 0
            safe = jnp.where(known, labels, 0).astype(jnp.int32)
            nll = -jnp.take_along_axis(logp, safe[:, None], -1)[:, 0]
            count = jnp.maximum(jnp.sum(known), 1)
            hit = (jnp.argmax(logp, -1) == safe) & known
            return jnp.sum(jnp.where(known, nll, 0.0)) / count, {"accuracy": jnp.sum(hit) / count}

        return loss


def draw_noisy_batch(arrays, key, step, *, batch_size: int) -> dict[str, jax.Array]:
    """Rows ``r ~ U{0..n-1}`` (labelled rows only are stored) with a fresh code draw ``x0 [B, D]``."""
    del step
    n = arrays["x_mu"].shape[0]
    rows = jax.random.randint(keys.named(key, "rows"), (batch_size,), 0, n)
    eps = jax.random.normal(keys.named(key, "posterior"), (batch_size, arrays["x_mu"].shape[1]))
    return {
        "x0": arrays["x_mu"][rows] + arrays["x_sigma"][rows] * eps,
        "labels": arrays["labels"][rows],
    }


def latent_run_path(config: Any) -> Path:
    """The config's latent run (DataError when unset, missing or not a latent run)."""
    if not config.latent:
        raise DataError("a classifier needs its latent run: protgen train classifier --latent LAT")
    run = RunDir(config.latent)
    info = run.read_info()
    if info.get("recipe") != "latent":
        raise DataError(
            f"--latent {config.latent} is a {info.get('recipe')!r} run, not a latent-diffusion run"
        )
    return run.path


class ClassifierRecipe(Recipe):
    """Noise-conditioned family classifiers of latent runs: the training hooks."""

    family = "classifier"
    models = ("classifier",)
    config_type = ClassifierConfig
    data_file = "codes.npz"
    curve_keys = ("loss", "accuracy", "val_accuracy_t0", "val_accuracy_t500", "val_accuracy_t900")

    def validate(self, config: ClassifierConfig) -> None:
        require_at_least(config, ("batch_size", "eval_rows", "time_embed_dim"), 1)
        if not config.hidden_widths or min(config.hidden_widths) < 1:
            raise DataError(f"hidden_widths must be positive widths, got {config.hidden_widths}")
        if not config.eval_levels or min(config.eval_levels) < 0:
            raise DataError(f"eval_levels must be timesteps >= 0, got {config.eval_levels}")
        latent_run_path(config)

    def prepare(self, config: ClassifierConfig, progress: bool) -> ClassifierData:
        from protgen_jax.recipes.latent import RECIPE as LATENT
        from protgen_jax.recipes.latent import fingerprint

        run = RunDir(latent_run_path(config))
        lat_config = LATENT.read_config(run.config)
        data = LATENT.load_data(run)
        if not data.family_names:
            raise DataError(f"{config.latent}: the latent run has no family labels to classify")
        rows = np.arange(len(data.labels))
        x_mu, x_sigma = data.standardised(rows, lat_config.latent_source)
        if max(config.eval_levels) >= lat_config.num_timesteps:
            raise DataError(
                f"eval_levels {config.eval_levels}: the latent run has {lat_config.num_timesteps} "
                "timesteps (0 .. T-1)"
            )
        return ClassifierData(
            x_mu, x_sigma, data.labels, data.holdout, data.family_names,
            lat_config.noise_schedule, int(lat_config.num_timesteps),
            fingerprint(lat_config, data),
        )  # fmt: skip

    def save_data(self, run: RunDir, data: ClassifierData) -> None:
        save_npz_atomic(
            run.file(self.data_file), x_mu=data.x_mu, x_sigma=data.x_sigma, labels=data.labels,
            holdout=data.holdout, family_names=np.asarray(data.family_names, str),
            schedule=np.asarray(data.schedule), num_timesteps=np.asarray(data.num_timesteps),
            fingerprint=np.asarray(data.fingerprint),
        )  # fmt: skip

    def load_data(self, run: RunDir) -> ClassifierData:
        path = run.file(self.data_file)
        if not path.exists():
            raise DataError(f"{run.path}: not a noisy-classifier run folder (no {self.data_file})")
        with np.load(path, allow_pickle=False) as z:
            return ClassifierData(
                z["x_mu"], z["x_sigma"], z["labels"], z["holdout"],
                tuple(str(s) for s in z["family_names"]), str(z["schedule"]),
                int(z["num_timesteps"]), str(z["fingerprint"]),
            )  # fmt: skip

    def describe_data(self, config: ClassifierConfig, data: ClassifierData) -> dict[str, Any]:
        known = data.labels >= 0
        return {
            "latent": str(config.latent),
            "num_train": int((~data.holdout & known).sum()),
            "num_validation": int((data.holdout & known).sum()),
            "num_families": len(data.family_names),
            "num_timesteps": data.num_timesteps,
        }

    def build_model(self, config: ClassifierConfig, data: ClassifierData) -> ClassifierModel:
        module = MLPDenoiser(
            hidden_widths=tuple(config.hidden_widths), time_embed_dim=config.time_embed_dim,
            out_dim=len(data.family_names), dtype=compute_dtype(config),
        )  # fmt: skip
        schedule = get_schedule(data.schedule, data.num_timesteps)
        return ClassifierModel(module, schedule, int(data.x_mu.shape[1]), len(data.family_names))

    def init_params(self, model: ClassifierModel, config, data, key: jax.Array) -> Any:
        return model.init(key)

    def optimizer(self, config: ClassifierConfig) -> optax.GradientTransformation:
        return warmup_cosine_adamw(config)

    def loss_fn(self, model: ClassifierModel, config, data) -> Any:
        return model.loss_fn()

    def batches(self, config: ClassifierConfig, data: ClassifierData) -> list[BatchGroup]:
        rows = np.flatnonzero(~data.holdout & (data.labels >= 0))
        if len(rows) == 0:
            raise DataError(f"{config.latent}: no labelled training codes")
        arrays = {
            "x_mu": data.x_mu[rows],
            "x_sigma": data.x_sigma[rows],
            "labels": data.labels[rows],
        }
        draw = functools.partial(draw_noisy_batch, batch_size=config.batch_size)
        return [BatchGroup(arrays, draw, config.batch_size)]

    def make_eval(self, model: ClassifierModel, config, data: ClassifierData, key: jax.Array):
        """Held-out accuracy at each timestep of ``eval_levels`` (``val_accuracy_t{t}``)."""
        levels = tuple(int(t) for t in config.eval_levels)
        accuracy = heldout_accuracy(model, data, key, levels, config.eval_rows)
        if accuracy is None:
            return None

        def eval_fn(params: Any, step: int) -> dict[str, float]:
            return {f"val_accuracy_t{t}": a for t, a in accuracy(params).items()}

        return eval_fn


def heldout_accuracy(
    model: ClassifierModel, data: ClassifierData, key: jax.Array, levels: tuple[int, ...], rows: int
):
    """``accuracy(params) -> {t: held-out accuracy at timestep t}`` over up to ``rows`` labelled
    held-out codes (one fixed code draw and noise draw per level, from ``key``); None without any."""
    held = np.flatnonzero(data.holdout & (data.labels >= 0))
    if len(held) == 0:
        return None
    held = keys.numpy_rng(keys.named(key, "rows")).permutation(held)[:rows]
    eps = np.asarray(
        jax.random.normal(keys.named(key, "posterior"), (len(held), data.x_mu.shape[1]))
    )
    x0 = jnp.asarray(data.x_mu[held] + data.x_sigma[held] * eps)
    labels = jnp.asarray(data.labels[held])
    step = make_eval_step(model.loss_fn())

    def accuracy(params: Any) -> dict[int, float]:
        out = {}
        for t in levels:
            batch = {"x0": x0, "labels": labels, "t": jnp.full((len(held),), t, jnp.int32)}
            metrics = jax.device_get(step(params, batch, keys.named(key, f"level{t}")))
            out[t] = float(metrics["accuracy"])
        return out

    return accuracy
