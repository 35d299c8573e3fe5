"""Tests for latent diffusion: standardisation, the loss, guidance wiring, the CLI end to end."""

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.cli import main
from protgen_jax.data.fasta import read_fasta, read_records, write_fasta
from protgen_jax.diffusion import cosine_schedule
from protgen_jax.errors import DataError
from protgen_jax.nn.mlp import MLPDenoiser
from protgen_jax.recipes import recipe_for_run
from protgen_jax.recipes.base import RunDir
from protgen_jax.recipes.cvae import heldout_arrays, training_arrays
from protgen_jax.recipes.latent import (
    RECIPE,
    LatentData,
    LatentModel,
    classifier_log_prob_fn,
    draw_codes,
    latent_moments,
    standardise,
    unstandardise,
)
from protgen_jax.recipes.latent.commands import mixture_labels

# ------------------------------------------------------------------------------ math and wiring


@pytest.mark.parametrize("source", ["mean", "sample"])
def test_standardisation_round_trip_and_unit_moments(source):
    rng = np.random.default_rng(0)
    mu = rng.normal(3.0, 2.0, (500, 4)).astype(np.float32) * np.array([1, 0.1, 5, 1], np.float32)
    logvar = rng.normal(-1.0, 0.3, (500, 4)).astype(np.float32)
    mean, std = latent_moments(mu, logvar, source)
    data = LatentData(mu, logvar, np.zeros(500, np.int32), np.zeros(500, bool), ("A",), mean, std,
                      np.asarray([str(i) for i in range(500)]))  # fmt: skip
    x_mu, x_sigma = data.standardised(np.arange(500), source)
    np.testing.assert_allclose(x_mu.mean(0), 0.0, atol=1e-4)
    # total variance of the standardised codes (law of total variance) is exactly 1 per dimension
    np.testing.assert_allclose(x_mu.var(0) + (x_sigma**2).mean(0), 1.0, rtol=1e-4)
    if source == "mean":
        assert np.all(x_sigma == 0)
    else:
        np.testing.assert_allclose(x_sigma, np.exp(0.5 * logvar) / std, rtol=1e-5)
    np.testing.assert_allclose(unstandardise(standardise(mu, mean, std), mean, std), mu, atol=1e-5)


def test_draw_codes_drops_labels_and_nulls_unknown_ones():
    n = 1000
    arrays = {
        "x_mu": jnp.arange(n, dtype=jnp.float32)[:, None] * jnp.ones((1, 3)),
        "x_sigma": jnp.zeros((n, 3)),
        "labels": jnp.where(jnp.arange(n) % 2 == 0, 1, -1).astype(jnp.int32),
    }
    batch = draw_codes(arrays, jax.random.key(1), jnp.int32(0), batch_size=4000, cfg_drop=0.25,
                       null_label=7)  # fmt: skip
    rows = np.asarray(batch["x0"][:, 0]).astype(int)
    cond = np.asarray(batch["cond"])
    np.testing.assert_array_equal(cond[rows % 2 == 1], 7)  # unknown label -> null
    known = cond[rows % 2 == 0]
    assert set(np.unique(known)) == {1, 7}
    assert 0.2 < np.mean(known == 7) < 0.3  # cfg_drop


def _tiny_model(num_families=3, dim=4, T=50):
    module = MLPDenoiser(hidden_widths=(16, 16), time_embed_dim=8, num_classes=num_families)
    return LatentModel(module, cosine_schedule(T), dim, num_families)


def test_loss_equals_the_hand_computed_noise_mse():
    model = _tiny_model()
    params = model.init(jax.random.key(0))
    x0 = jax.random.normal(jax.random.key(1), (6, 4))
    cond = jnp.array([0, 1, 2, 3, 0, 3], jnp.int32)
    key = jax.random.key(2)
    loss, _ = model.loss_fn()(params, {"x0": x0, "cond": cond}, key)
    t_key, n_key = jax.random.split(key)
    t = jax.random.randint(t_key, (6,), 0, 50)
    eps = jax.random.normal(n_key, (6, 4))
    ab = np.asarray(model.schedule.alpha_bars)[np.asarray(t)][:, None]
    x_t = np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(eps)
    pred = model.module.apply(params, jnp.asarray(x_t, jnp.float32), t, None, cond)
    expected = np.mean((np.asarray(eps) - np.asarray(pred)) ** 2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


# A toy problem with exact networks: x0 ~ 1/2 N(-c e1, s^2 I) + 1/2 N(+c e1, s^2 I) in 2-D. At step t,
# x_t | k ~ N(sqrt(ab) m_k, v I) with v = ab s^2 + 1 - ab, so the exact unconditional eps and the
# exact noisy classifier log p(k | x_t) are closed-form.
CENTRES = np.array([[-2.5, 0.0], [2.5, 0.0]], np.float32)
SPREAD = 0.3


def _component_logp(schedule, x_t, t):
    ab = schedule.alpha_bars[t][:, None, None]
    v = ab * SPREAD**2 + 1 - ab
    diff = x_t[:, None, :] - jnp.sqrt(ab) * jnp.asarray(CENTRES)[None]
    return -0.5 * jnp.sum(diff**2, -1) / v[..., 0], diff, v


@dataclass(frozen=True)
class ExactDenoiser:
    """``apply(params, x_t, t, mask, cond)``: the exact eps of the toy mixture (cond k = component
    k only, the null label 2 = the mixture)."""

    schedule: object

    def apply(self, params, x_t, t, mask=None, cond=None):
        logp, diff, v = _component_logp(self.schedule, x_t, t)
        if cond is not None:
            own = jax.nn.one_hot(cond, 2)
            w = jnp.where(cond[:, None] == 2, jax.nn.softmax(logp, -1), own)
        else:
            w = jax.nn.softmax(logp, -1)
        score = -jnp.sum(w[..., None] * diff, 1) / v[:, :, 0]
        ab = self.schedule.alpha_bars[t][:, None]
        return -jnp.sqrt(1 - ab) * score


@dataclass(frozen=True)
class ExactClassifier:
    schedule: object

    def apply(self, params, x_t, t):
        return _component_logp(self.schedule, x_t, t)[0]


def _fraction_in_blob(x, k):
    return float(np.mean(np.sign(np.asarray(x)[:, 0]) == np.sign(CENTRES[k, 0])))


def test_classifier_guidance_moves_samples_into_the_target_blob():
    schedule = cosine_schedule(200)
    model = LatentModel(ExactDenoiser(schedule), schedule, 2, 2)
    target = jnp.zeros(400, jnp.int32)  # the left blob
    key = jax.random.key(3)
    plain = model.sample({}, key, jnp.full(400, 2, jnp.int32), steps=40, guidance=0.0)
    assert 0.35 < _fraction_in_blob(plain, 0) < 0.65
    log_prob = classifier_log_prob_fn(ExactClassifier(schedule), {})
    guided = model.sample({}, key, target, steps=40, log_prob_fn=log_prob, classifier_scale=3.0)
    assert _fraction_in_blob(guided, 0) > 0.95  # a flipped gradient sign would give < 0.05
    unguided = model.sample({}, key, target, steps=40, log_prob_fn=log_prob, classifier_scale=0.0)
    np.testing.assert_allclose(np.asarray(unguided), np.asarray(plain), atol=1e-5)
    # classifier-free guidance with the exact conditional eps lands in the requested blob too
    cfg = model.sample({}, key, jnp.ones(400, jnp.int32), steps=40, guidance=2.0)
    assert _fraction_in_blob(cfg, 1) > 0.95


# ------------------------------------------------------------------------------ end to end

CVAE_TINY = [
    "width=32", "latent_dim=4", "encoder_widths=16", "decoder_widths=16", "batch_size=16",
    "steps=2", "steps_per_call=1", "kl_warmup_steps=1", "eval_every=0", "log_every=1",
    "checkpoint_every=2", "eval_sequences=8", "sample_batch=16", "condition=none", "devices=1",
    "cond_families=2", "cond_samples=2",
]  # fmt: skip
LATENT_TINY = [
    "steps=3", "steps_per_call=1", "batch_size=16", "hidden_widths=16,16", "time_embed_dim=8",
    "num_timesteps=20", "sample_steps=4", "sample_batch=16", "eval_every=3", "log_every=1",
    "checkpoint_every=3", "eval_rows=8", "eval_samples=4", "cond_families=2", "cond_samples=3",
    "eval_guidance=0,2", "eval_classifier_scales=1", "warmup_steps=1", "devices=1",
]  # fmt: skip
CLASSIFIER_TINY = [
    "steps=3", "steps_per_call=1", "batch_size=16", "hidden_widths=16", "time_embed_dim=8",
    "eval_levels=0,10,19", "eval_rows=8", "eval_every=3", "log_every=1", "checkpoint_every=3",
    "warmup_steps=1", "devices=1",
]  # fmt: skip


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory) -> dict[str, Path]:
    """A tiny plain VAE on 300 real domains, a latent run on it and a noisy classifier of that."""
    root = tmp_path_factory.mktemp("latent")
    records = read_records(shared_data / "sequences" / "family_domains_train.fasta")
    fasta = root / "slice.fasta"
    write_fasta(fasta, [(r.id, r.sequence) for r in records[::300]])
    out = {k: root / k for k in ("vae", "latent", "clf")}
    assert main(["--quiet", "train", "cvae", "--data", str(fasta), "--out", str(out["vae"]),
                 *_sets(CVAE_TINY)]) == 0  # fmt: skip
    assert main(["--quiet", "train", "latent", "--vae", str(out["vae"]), "--out",
                 str(out["latent"]), *_sets(LATENT_TINY)]) == 0  # fmt: skip
    assert main(["--quiet", "train", "classifier", "--latent", str(out["latent"]), "--out",
                 str(out["clf"]), *_sets(CLASSIFIER_TINY)]) == 0  # fmt: skip
    return out


def test_latent_run_is_self_contained_and_standardised(runs):
    info = json.loads((runs["latent"] / "run.json").read_text())
    assert info["family"] == "latent"
    config = json.loads((runs["latent"] / "config.json").read_text())
    assert Path(config["vae"]) == runs["vae"].resolve()
    data = RECIPE.load_data(RunDir(runs["latent"]))

    assert len(data.mu) == len(training_arrays(runs["vae"])[0]) + len(
        heldout_arrays(runs["vae"])[0]
    )
    assert data.holdout.sum() == len(heldout_arrays(runs["vae"])[0])
    x_mu, x_sigma = data.standardised(np.flatnonzero(~data.holdout), "sample")
    np.testing.assert_allclose(x_mu.var(0) + (x_sigma**2).mean(0), 1.0, rtol=1e-3)
    summary = json.loads((runs["clf"] / "summary.json").read_text())
    assert summary["steps"] == 3 and "val_accuracy_t0" in summary["last_eval"]


def test_cli_sample_with_both_guidance_kinds(runs, tmp_path, capsys):
    family = RECIPE.load_data(RunDir(runs["latent"])).family_names[0]
    for extra in (["--guidance", "2"], ["--classifier", str(runs["clf"]), "--classifier-scale", "3"],
                  ["--ddpm"]):  # fmt: skip
        out = tmp_path / f"s{len(extra)}.fasta"
        fam = ["--family", family] if extra[0] != "--ddpm" else []
        assert main(["--quiet", "sample", str(runs["latent"]), "--num", "6", *fam, *extra,
                     "--out", str(out)]) == 0  # fmt: skip
        report = json.loads(capsys.readouterr().out)
        records = read_fasta(out)
        assert report["num"] + report["num_empty"] == 6 and len(records) == report["num"]
        assert all(set(s) <= set("ACDEFGHIKLMNPQRSTVWY") and 0 < len(s) <= 32 for _, s in records)
        if fam:
            assert all(h.startswith(f"{family}|") for h, _ in records)
    assert report["steps"] == 0  # --ddpm


def test_bad_classifier_runs_are_refused_by_name(runs, tmp_path, capsys):
    family_args = ["--family", "PF00072", "--out", str(tmp_path / "x.fasta")]
    # not a classifier
    assert main(["sample", str(runs["latent"]), "--classifier", str(runs["vae"]),
                 *family_args]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert str(runs["vae"]) in err and "not a noisy classifier" in err
    # a classifier of another latent run (other codes: the encoder means)
    other = tmp_path / "latent_mean"
    assert main(["--quiet", "train", "latent", "--vae", str(runs["vae"]), "--out", str(other),
                 *_sets(LATENT_TINY), "--set", "latent_source=mean", "--set", "steps=1"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["sample", str(other), "--classifier", str(runs["clf"]), *family_args]) == 2
    err = capsys.readouterr().err
    assert str(runs["clf"]) in err and "trained on the latent run" in err
    assert not (tmp_path / "x.fasta").exists()
    # both guidance kinds at once, and a missing VAE run
    assert main(["sample", str(runs["latent"]), "--classifier", str(runs["clf"]), "--guidance",
                 "2", *family_args]) == 2  # fmt: skip
    assert "give one of them" in capsys.readouterr().err
    assert main(["train", "latent", "--vae", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "lat2")]) == 2  # fmt: skip
    assert "not a VAE run folder" in capsys.readouterr().err


def test_cli_evaluate_latent_and_classifier(runs, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["--quiet", "evaluate", str(runs["latent"]), "--classifier", str(runs["clf"]),
                 "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["complete"]
    uncond = report["unconditional"]
    assert set(uncond) == {
        "latent_diffusion", "latent_diffusion_family_mixture", "vae_prior", "natural_heldout"
    }  # fmt: skip
    for stats in uncond.values():
        assert (
            0 <= stats["composition_tv_heldout"] <= 1
            and -1 <= stats["pair_corr_pearson_heldout"] <= 1
        )
    cond = report["conditional"]
    assert [e["scale"] for e in cond["classifier_free"]] == [0.0, 2.0]
    assert [e["scale"] for e in cond["classifier_guidance"]] == [1.0]
    assert all(0 <= e["fraction_assigned"] <= 1 for e in cond["classifier_free"])
    assert out.with_suffix(".png").stat().st_size > 0
    acc = tmp_path / "acc.json"
    capsys.readouterr()
    assert main(["--quiet", "evaluate", str(runs["clf"]), "--levels", "3", "--out", str(acc)]) == 0
    levels = json.loads(acc.read_text())["levels"]
    assert [lv["t"] for lv in levels] == [0, 10, 19]
    assert levels[0]["signal_sqrt_alpha_bar"] > levels[-1]["signal_sqrt_alpha_bar"]


def test_comparison_hooks(runs):
    recipe = recipe_for_run(runs["latent"])
    run = recipe.load_run(runs["latent"])
    family = run.data.family_names[0]
    seqs = recipe.generate_sequences(
        run, jax.random.key(0), 5, lengths=np.full(5, 50), family=family,
        options={"classifier": str(runs["clf"]), "classifier_scale": 2.0, "steps": 3},
    )  # fmt: skip
    assert len(seqs) == 5 and all(0 < len(s) <= 32 for s in seqs)
    # num = 0 checks the spec (compare's validation call) and samples nothing
    none = np.zeros(0, np.int64)
    assert recipe.generate_sequences(run, jax.random.key(0), 0, lengths=none, family=family) == []
    with pytest.raises(DataError, match="not a classifier run|classifier"):
        recipe.generate_sequences(run, jax.random.key(0), 0, lengths=none,
                                  options={"classifier": str(runs["latent"])})  # fmt: skip
    with pytest.raises(DataError, match="unknown: bogus"):
        recipe.generate_sequences(run, jax.random.key(0), 2, lengths=np.full(2, 9),
                                  options={"bogus": 1})  # fmt: skip
    with pytest.raises(DataError, match="not one of the run's"):
        recipe.generate_sequences(run, jax.random.key(0), 2, lengths=np.full(2, 9),
                                  family="NOPE")  # fmt: skip
    for how in ("null", "mixture"):
        seqs = recipe.generate_sequences(
            run, jax.random.key(2), 3, lengths=np.full(3, 9), options={"unconditional": how}
        )
        assert len(seqs) == 3
    with pytest.raises(DataError, match="unconditional"):
        recipe.generate_sequences(
            run, jax.random.key(0), 2, lengths=np.full(2, 9), options={"unconditional": "x"}
        )
    drawn = mixture_labels(run, jax.random.key(3), 500)
    train_labels = run.data.labels[~run.data.holdout]
    assert set(drawn) <= set(train_labels) and len(set(drawn)) > 1
    assert recipe.sequence_nll(run, ["ACD"], [None]) is None
    names = run.data.family_names
    grid = recipe.latent_interpolation(run, jax.random.key(1), names[0], names[1], 3, 2)
    assert len(grid) == 3 and all(len(point) == 2 for point in grid)


@dataclass(frozen=True)
class BiasedDenoiser(ExactDenoiser):
    """The exact eps plus a constant error of 0.05 (a trained network's error at t = T - 1)."""

    def apply(self, params, x_t, t, mask=None, cond=None):
        return super().apply(params, x_t, t, mask, cond) + 0.05


def test_clipping_x0_keeps_ddim_stable_at_the_cosine_schedules_last_step():
    schedule = cosine_schedule(1000)  # sqrt(ab_999) ~ 5e-5: eps errors are amplified ~2e4 times
    labels = jnp.full(200, 2, jnp.int32)
    loose = LatentModel(BiasedDenoiser(schedule), schedule, 2, 2)
    assert float(jnp.abs(loose.sample({}, jax.random.key(0), labels, steps=20)).max()) > 20
    clipped = LatentModel(BiasedDenoiser(schedule), schedule, 2, 2, clip_x0=4.0)
    x = np.asarray(clipped.sample({}, jax.random.key(0), labels, steps=20))
    assert np.abs(x).max() <= 4.0 and np.all(np.abs(np.abs(x[:, 0]) - 2.5) < 1.5)
