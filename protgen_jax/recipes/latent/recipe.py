"""The latent-diffusion recipe on the shared skeleton: config, the encoded data, batches, training.

``protgen train latent --vae VAE_RUN --out LAT`` encodes the VAE run's sequences once (its training
split and its held-out split, ``protgen_jax.recipes.cvae.training_arrays``) with the VAE's encoder
and trains a Gaussian DDPM (:mod:`.model`) on the codes. The run is self-contained apart from the VAE,
which decodes the samples: its path is the config's ``vae``.

Which codes (``latent_source``):

- ``"sample"`` (default): every batch row is a fresh reparameterised draw ``z = mu + e^{logvar/2} eps``
  of the encoder's posterior, so the diffusion learns the aggregate posterior
  ``q(z) = (1/N) sum_n q(z | x_n)``: the distribution the decoder saw in training, which the
  VAE's ``N(0, I)`` prior only approximates (what Rombach et al.'s LDM does: a posterior draw of its
  KL-regularised autoencoder per batch);
- ``"mean"``: the encoder means ``mu`` (a fixed set of points; samples decode nearer the posterior
  modes).

Standardisation (``m, s [D]`` of the training codes, :func:`.model.latent_moments`) is folded into the
stored arrays: ``x_mu = (mu - m) / s`` and ``x_sigma = e^{logvar/2} / s`` (zero for ``"mean"``), so a
batch row is ``x0 = x_mu + x_sigma eps``. Labels are the VAE run's family labels (-1 unknown: trained
with the null label only); a row's label becomes the null label ``F`` with probability ``cfg_drop``.

Run folder: ``config.json``, ``run.json``, ``latents.npz`` (``mu``, ``logvar``, ``labels``,
``holdout``, ``family_names``, ``mean``, ``std``, ``ids``), ``checkpoints/``, ``metrics.jsonl``,
``curves.png``, ``summary.json``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from protgen_jax import keys
from protgen_jax.atomic import save_npz_atomic
from protgen_jax.diffusion import get_schedule
from protgen_jax.errors import DataError
from protgen_jax.fit import (
    BatchGroup,
    TrainConfig,
    compute_dtype,
    require_at_least,
    require_between,
    require_choice,
    warmup_cosine_adamw,
)
from protgen_jax.nn.mlp import MLPDenoiser
from protgen_jax.recipes.base import Recipe, RunDir
from protgen_jax.recipes.latent.model import LatentModel, latent_moments, standardise
from protgen_jax.recipes.seqdiff.model import progress_bar
from protgen_jax.train import make_eval_step


@dataclass(frozen=True)
class LatentConfig(TrainConfig):
    """Defaults of ``protgen train latent`` (override with ``--set key=value``)."""

    vae: str = ""  # the VAE run whose codes are modelled and whose decoder decodes the samples
    latent_source: str = "sample"  # sample (a posterior draw per batch row) | mean (encoder means)
    steps: int = 15000
    batch_size: int = 256
    ema_decay: float = 0.999
    log_every: int = 200
    eval_every: int = 2500
    checkpoint_every: int = 2500
    steps_per_call: int = 100
    time_limit_minutes: float = 30.0
    noise_schedule: str = "cosine"  # cosine | linear
    num_timesteps: int = 1000
    hidden_widths: tuple[int, ...] = (512, 512, 512)
    time_embed_dim: int = 128
    cfg_drop: float = 0.1  # probability of training with the null family label
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    encode_batch: int = 4096  # sequences per encoder call while preparing (progress steps)
    eval_rows: int = 2048  # held-out codes of the in-training validation loss
    sample_batch: int = 500  # codes per sampler call
    sample_steps: int = 50  # default DDIM steps of the commands (0 = ancestral DDPM, T steps)
    clip_x0: float = 6.0  # sampling: clip x0_hat to [-c, c] (standardised units; 0 = off)
    eval_samples: int = 500  # evaluate: unconditional samples (latent diffusion and VAE prior)
    cond_families: int = 8  # evaluate: largest families of the fidelity check
    cond_samples: int = 24  # evaluate: samples per family and guidance setting
    eval_guidance: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0)  # classifier-free scales
    eval_classifier_scales: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)  # with --classifier


class LatentData(NamedTuple):
    """The encoded sequences of a latent run.

    ``mu, logvar [N, D]`` float32 (raw encoder outputs), ``labels [N]`` int32 (-1 = unknown),
    ``holdout [N]`` bool (the VAE run's held-out split), ``family_names`` (label ``k`` is
    ``family_names[k]``), ``mean, std [D]`` (the standardisation of the training codes), ``ids [N]``.
    """

    mu: np.ndarray
    logvar: np.ndarray
    labels: np.ndarray
    holdout: np.ndarray
    family_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    ids: np.ndarray

    @property
    def latent_dim(self) -> int:
        return int(self.mu.shape[1])

    def standardised(self, rows: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x_mu, x_sigma)`` ``[n, D]`` of ``rows``: ``x0 = x_mu + x_sigma eps`` (module docstring)."""
        x_mu = standardise(self.mu[rows], self.mean, self.std)
        if source == "mean":
            return x_mu, np.zeros_like(x_mu)
        return x_mu, (np.exp(0.5 * self.logvar[rows]) / self.std).astype(np.float32)


def draw_codes(
    arrays: dict[str, jax.Array], key: jax.Array, step: jax.Array, *, batch_size: int,
    cfg_drop: float, null_label: int,
) -> dict[str, jax.Array]:  # fmt: skip
    """One batch on the device: rows ``r ~ U{0..n-1}``, ``x0 = x_mu[r] + x_sigma[r] eps`` ``[B, D]``,
    ``cond = null_label`` where the label is unknown or ``u < cfg_drop``, else the label ``[B]``."""
    del step
    n = arrays["x_mu"].shape[0]
    rows = jax.random.randint(keys.named(key, "rows"), (batch_size,), 0, n)
    eps = jax.random.normal(keys.named(key, "posterior"), (batch_size, arrays["x_mu"].shape[1]))
    x0 = arrays["x_mu"][rows] + arrays["x_sigma"][rows] * eps
    labels = arrays["labels"][rows]
    drop = jax.random.uniform(keys.named(key, "drop"), (batch_size,)) < cfg_drop
    cond = jnp.where((labels < 0) | drop, null_label, labels).astype(jnp.int32)
    return {"x0": x0, "cond": cond}


def vae_run_path(config: Any) -> Path:
    """The config's VAE run folder (DataError when unset or not a run)."""
    if not config.vae:
        raise DataError("a latent run needs its VAE run: protgen train latent --vae VAE_RUN")
    path = Path(config.vae)
    if not (path / "run.json").exists():
        raise DataError(
            f"--vae {config.vae}: not a VAE run folder (no run.json); train one with "
            "`protgen train cvae` first"
        )
    return path


def load_vae_of(config: Any) -> Any:
    """The trained VAE of a latent run (``protgen_jax.recipes.cvae.load_vae``)."""
    from protgen_jax.recipes.cvae import load_vae

    return load_vae(vae_run_path(config))


def encode_tokens(
    vae: Any, tokens: np.ndarray, chunk: int, bar: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder ``(mu, logvar)`` ``[N, D]`` of fixed-width rows ``tokens [N, W]``
    (``protgen_jax.recipes.cvae.encode``, ``chunk`` rows per call so that ``bar`` advances)."""
    from protgen_jax.recipes.cvae import encode

    mus, logvars = [], []
    for start in range(0, len(tokens), chunk):
        mu, logvar = encode(vae, tokens[start : start + chunk])
        mus.append(np.asarray(mu, np.float32))
        logvars.append(np.asarray(logvar, np.float32))
        if bar is not None:
            bar.update(len(mu))
    if not mus:
        empty = np.zeros((0, vae.latent_dim), np.float32)
        return empty, empty
    return np.concatenate(mus), np.concatenate(logvars)


def fingerprint(config: Any, data: LatentData) -> str:
    """A digest of what a noisy classifier must share with the latent run: the standardisation, the
    family vocabulary, the code source and the schedule."""
    h = hashlib.sha256()
    for part in (data.mean, data.std):
        h.update(np.ascontiguousarray(part, np.float32).tobytes())
    h.update("\n".join(data.family_names).encode())
    h.update(f"{config.latent_source}|{config.noise_schedule}|{config.num_timesteps}".encode())
    return h.hexdigest()[:16]


class LatentRecipe(Recipe):
    """Latent diffusion over a trained sequence VAE: the training hooks (commands: :mod:`.commands`)."""

    family = "latent"
    models = ("latent",)
    config_type = LatentConfig
    data_file = "latents.npz"
    curve_keys = ("loss", "val_loss")

    def validate(self, config: LatentConfig) -> None:
        require_choice(config, "latent_source", ("sample", "mean"))
        require_choice(config, "noise_schedule", ("cosine", "linear"))
        require_at_least(config, ("num_timesteps",), 2)
        require_at_least(
            config, ("batch_size", "encode_batch", "sample_batch", "eval_rows", "time_embed_dim"), 1
        )
        require_at_least(config, ("sample_steps", "eval_samples", "cond_samples", "clip_x0"), 0)
        require_between(config, "cfg_drop", 0.0, 1.0, open_high=True)
        if not config.hidden_widths or min(config.hidden_widths) < 1:
            raise DataError(f"hidden_widths must be positive widths, got {config.hidden_widths}")
        if config.sample_steps > config.num_timesteps:
            raise DataError(
                f"sample_steps {config.sample_steps} exceeds num_timesteps {config.num_timesteps}"
            )
        vae_run_path(config)

    # ------------------------------------------------------------------ data
    def prepare(self, config: LatentConfig, progress: bool) -> LatentData:
        """Encode the VAE run's training and held-out splits; standardise on the training codes."""
        from protgen_jax.recipes.cvae import heldout_arrays, training_arrays

        vae = load_vae_of(config)
        train, held = training_arrays(vae), heldout_arrays(vae)
        if len(train[0]) < 2:
            raise DataError(f"{config.vae}: the VAE run has too few training sequences to model")
        tokens = np.concatenate([np.asarray(train[0]), np.asarray(held[0])]).astype(np.int32)
        with progress_bar(len(tokens), "encode", progress) as bar:
            mu, logvar = encode_tokens(vae, tokens, config.encode_batch, bar)
        holdout = np.zeros(len(tokens), bool)
        holdout[len(train[0]) :] = True
        names = tuple(vae.family_names)
        labels = np.concatenate([np.asarray(train[1]), np.asarray(held[1])]).astype(np.int32)
        labels = np.where((labels < 0) | (labels >= len(names)), -1, labels).astype(np.int32)
        mean, std = latent_moments(mu[~holdout], logvar[~holdout], config.latent_source)
        ids = np.asarray([*train[3], *held[3]], str)
        return LatentData(mu, logvar, labels, holdout, names, mean, std, ids)

    def save_data(self, run: RunDir, data: LatentData) -> None:
        save_npz_atomic(
            run.file(self.data_file), mu=data.mu, logvar=data.logvar, labels=data.labels,
            holdout=data.holdout, family_names=np.asarray(data.family_names, str),
            mean=data.mean, std=data.std, ids=data.ids,
        )  # fmt: skip

    def load_data(self, run: RunDir) -> LatentData:
        path = run.file(self.data_file)
        if not path.exists():
            raise DataError(f"{run.path}: not a latent-diffusion run folder (no {self.data_file})")
        with np.load(path, allow_pickle=False) as z:
            return LatentData(
                z["mu"], z["logvar"], z["labels"], z["holdout"],
                tuple(str(s) for s in z["family_names"]), z["mean"], z["std"], z["ids"],
            )  # fmt: skip

    def describe_data(self, config: LatentConfig, data: LatentData) -> dict[str, Any]:
        return {
            "vae": str(config.vae),
            "latent_source": config.latent_source,
            "latent_dim": data.latent_dim,
            "num_train": int((~data.holdout).sum()),
            "num_validation": int(data.holdout.sum()),
            "num_families": len(data.family_names),
        }

    # ------------------------------------------------------------------ model and training
    def build_model(self, config: LatentConfig, data: LatentData) -> LatentModel:
        module = MLPDenoiser(
            hidden_widths=tuple(config.hidden_widths), time_embed_dim=config.time_embed_dim,
            num_classes=len(data.family_names), dtype=compute_dtype(config),
        )  # fmt: skip
        schedule = get_schedule(config.noise_schedule, config.num_timesteps)
        clip = float(config.clip_x0) or None
        return LatentModel(module, schedule, data.latent_dim, len(data.family_names), clip)

    def init_params(self, model: LatentModel, config, data, key: jax.Array) -> Any:
        return model.init(key)

    def optimizer(self, config: LatentConfig) -> optax.GradientTransformation:
        return warmup_cosine_adamw(config)

    def loss_fn(self, model: LatentModel, config, data) -> Any:
        return model.loss_fn()

    def _arrays(self, data: LatentData, rows: np.ndarray, source: str) -> dict[str, np.ndarray]:
        x_mu, x_sigma = data.standardised(rows, source)
        return {"x_mu": x_mu, "x_sigma": x_sigma, "labels": data.labels[rows]}

    def batches(self, config: LatentConfig, data: LatentData) -> list[BatchGroup]:
        rows = np.flatnonzero(~data.holdout)
        draw = functools.partial(
            draw_codes, batch_size=config.batch_size, cfg_drop=float(config.cfg_drop),
            null_label=len(data.family_names),
        )  # fmt: skip
        return [BatchGroup(self._arrays(data, rows, config.latent_source), draw, config.batch_size)]

    def make_eval(self, model: LatentModel, config, data: LatentData, key: jax.Array):
        """Noise MSE on up to ``eval_rows`` held-out codes (with their labels, no label drop), one
        fixed draw of rows, posterior noise, timesteps and diffusion noise for the whole run."""
        rows = np.flatnonzero(data.holdout)
        if len(rows) == 0:
            return None
        rows = keys.numpy_rng(keys.named(key, "rows")).permutation(rows)[: config.eval_rows]
        arrays = jax.tree.map(jnp.asarray, self._arrays(data, rows, config.latent_source))
        eps = jax.random.normal(keys.named(key, "posterior"), arrays["x_mu"].shape)
        labels = arrays["labels"]
        batch = {
            "x0": arrays["x_mu"] + arrays["x_sigma"] * eps,
            "cond": jnp.where(labels < 0, model.null_label, labels).astype(jnp.int32),
        }
        eval_step = make_eval_step(model.loss_fn())
        loss_key = keys.named(key, "loss")

        def eval_fn(params: Any, step: int) -> dict[str, float]:
            out = jax.device_get(eval_step(params, batch, loss_key))
            return {"val_loss": float(out["loss"])}

        return eval_fn
