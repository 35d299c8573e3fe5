"""Tests for the noise-conditioned family classifier of latent runs (classifier guidance)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.atomic import save_json_atomic
from protgen_jax.cli import main
from protgen_jax.config import config_to_dict
from protgen_jax.diffusion import cosine_schedule
from protgen_jax.errors import DataError
from protgen_jax.nn.mlp import MLPDenoiser
from protgen_jax.recipes.base import RunDir
from protgen_jax.recipes.classifier import RECIPE, ClassifierConfig, ClassifierModel
from protgen_jax.recipes.latent import RECIPE as LATENT
from protgen_jax.recipes.latent import LatentConfig, LatentData, fingerprint, latent_moments


def test_loss_is_the_cross_entropy_of_labelled_rows_at_the_noised_codes():
    model = ClassifierModel(
        MLPDenoiser(hidden_widths=(8,), time_embed_dim=8, out_dim=3), cosine_schedule(30), 2, 3
    )
    params = model.init(jax.random.key(0))
    x0 = jax.random.normal(jax.random.key(1), (5, 2))
    labels = jnp.array([0, 2, -1, 1, -1], jnp.int32)
    key = jax.random.key(2)
    loss, aux = model.loss_fn()(params, {"x0": x0, "labels": labels}, key)
    t_key, n_key = jax.random.split(key)
    t = jax.random.randint(t_key, (5,), 0, 30)
    ab = np.asarray(model.schedule.alpha_bars)[np.asarray(t)][:, None]
    x_t = np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(
        jax.random.normal(n_key, (5, 2))
    )
    logp = np.asarray(jax.nn.log_softmax(model.logits(params, jnp.asarray(x_t, jnp.float32), t)))
    known = np.array([0, 1, 3])
    expected = -np.mean(logp[known, np.asarray(labels)[known]])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    acc = np.mean(logp[known].argmax(-1) == np.asarray(labels)[known])
    np.testing.assert_allclose(float(aux["accuracy"]), acc)


def _fake_latent_run(path: Path, source: str = "mean") -> Path:
    """A latent run folder with codes of three well-separated blobs (no VAE needed to classify)."""
    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]], np.float32)
    labels = np.repeat(np.arange(3), 200).astype(np.int32)
    mu = (centres[labels] + 0.3 * rng.standard_normal((600, 2))).astype(np.float32)
    logvar = np.full_like(mu, -4.0)
    holdout = np.arange(600) % 5 == 0
    mean, std = latent_moments(mu[~holdout], logvar[~holdout], source)
    data = LatentData(mu, logvar, labels, holdout, ("A", "B", "C"), mean, std,
                      np.asarray([str(i) for i in range(600)]))  # fmt: skip
    run = RunDir(path)
    run.path.mkdir(parents=True)
    LATENT.save_data(run, data)
    config = LatentConfig(latent_source=source, num_timesteps=100, vae="/nowhere")
    save_json_atomic(run.config, config_to_dict(config))
    save_json_atomic(run.info, {"family": "latent", "recipe": "latent"})
    return path


def test_classifier_learns_clean_codes_and_is_at_chance_on_pure_noise(tmp_path, capsys):
    latent = _fake_latent_run(tmp_path / "lat")
    clf = tmp_path / "clf"
    sets = [
        "steps=300", "steps_per_call=50", "batch_size=64", "hidden_widths=32,32",
        "time_embed_dim=16", "eval_levels=0,99", "eval_every=300", "checkpoint_every=300",
        "log_every=50", "warmup_steps=10", "devices=1", "ema_decay=0",
    ]  # fmt: skip
    argv = ["--quiet", "train", "classifier", "--latent", str(latent), "--out", str(clf)]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    last = json.loads(capsys.readouterr().out)["last_eval"]
    assert last["val_accuracy_t0"] > 0.95
    assert last["val_accuracy_t99"] < 0.6  # nothing of the code is left at t = T - 1
    data = RECIPE.load_data(RunDir(clf))
    own = fingerprint(LATENT.read_config(RunDir(latent).config), LATENT.load_data(RunDir(latent)))
    assert data.fingerprint == own and data.num_timesteps == 100
    out = tmp_path / "acc.json"
    assert main(["--quiet", "evaluate", str(clf), "--levels", "3", "--out", str(out)]) == 0
    levels = json.loads(out.read_text())["levels"]
    assert [lv["t"] for lv in levels] == [0, 50, 99]
    assert levels[0]["accuracy"] > 0.95 > levels[-1]["accuracy"]
    assert out.with_suffix(".png").exists()


def test_a_classifier_needs_a_latent_run(tmp_path):
    with pytest.raises(DataError, match="needs its latent run"):
        RECIPE.check(ClassifierConfig())
    other = tmp_path / "other"
    other.mkdir()
    save_json_atomic(other / "run.json", {"family": "oadm", "recipe": "seqdiff"})
    with pytest.raises(DataError, match=f"{other}.*not a latent-diffusion run"):
        RECIPE.check(ClassifierConfig(latent=str(other)))
    with pytest.raises(DataError, match="no run.json"):
        RECIPE.check(ClassifierConfig(latent=str(tmp_path / "missing")))
