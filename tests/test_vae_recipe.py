"""End to end on a slice of the real BLAT_ECOLX alignment: train (tiny), resume, score, sample, evaluate, CLI."""

import json

import numpy as np
import pytest

from protgen_jax.cli import main
from protgen_jax.config import apply_overrides
from protgen_jax.data.fasta import read_records
from protgen_jax.fit import read_metrics
from protgen_jax.recipes.vae import RECIPE, VAEConfig, prepare_dms

train = RECIPE.train

TINY = [
    "encoder_widths=64",
    "decoder_widths=16,32",
    "latent_dim=4",
    "dictionary_size=8",
    "batch_size=16",
    "log_every=2",
    "eval_every=4",
    "checkpoint_every=2",
    "eval_samples=2",
    "score_samples=3",
    "score_estimator=elbo",  # the tests pass --samples (M draws); --estimator mean is tested apart
    "devices=1",
]


@pytest.fixture(scope="module")
def slice_a2m(shared_data, tmp_path_factory):
    """The first 300 records of the real alignment (focus first)."""
    lines = (shared_data / "blat_ecolx" / "BLAT_ECOLX.a2m").read_text().splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.startswith(">")]
    path = tmp_path_factory.mktemp("aln") / "blat_slice.a2m"
    path.write_text("".join(lines[: headers[300]]))
    return path


@pytest.fixture(scope="module")
def tiny_run(slice_a2m, shared_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "vae"
    dms = shared_data / "blat_ecolx" / "BLAT_ECOLX_Stiffler2015_dms.csv"
    config = apply_overrides(VAEConfig(), TINY + [f"data={slice_a2m}", "steps=4", f"dms={dms}"])
    summary = train(config, run, progress=False)
    return run, config, summary


def test_train_writes_run_folder_and_tracks_metrics(tiny_run):
    run, _, summary = tiny_run
    assert summary["steps"] == 4
    assert summary["num_columns"] == 253
    for name in (
        "config.json",
        "run.json",
        "alignment.npz",
        "metrics.jsonl",
        "curves.png",
        "summary.json",
    ):
        assert (run / name).exists(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [4]
    assert -1 <= evals[0]["spearman"] <= 1 and evals[0]["val_neg_elbo"] > 0


def test_resume_continues_from_checkpoint(tiny_run):
    run, config, _ = tiny_run
    summary = train(apply_overrides(config, ["steps=6"]), run, progress=False)
    assert summary["steps"] == 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(4) == 2  # train + eval at 4, nothing replayed


def test_resuming_a_run_older_than_a_config_key_names_the_filled_defaults(
    tiny_run, tmp_path, capsys
):
    """A config.json written before a key existed resumes with today's default, and says which."""
    import shutil

    run = tmp_path / "old_run"
    shutil.copytree(tiny_run[0], run)
    saved = json.loads((run / "config.json").read_text())
    del saved["local_reparameterization"], saved["sparsity_prior_p"]
    (run / "config.json").write_text(json.dumps(saved))
    from protgen_jax.config import missing_keys

    assert missing_keys(VAEConfig, run / "config.json") == {
        "sparsity_prior_p": VAEConfig().sparsity_prior_p,
        "local_reparameterization": VAEConfig().local_reparameterization,
    }
    steps = max(
        json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
    )
    assert main(["--quiet", "train", "vae", "--out", str(run), "--steps", str(steps)]) == 0
    err = capsys.readouterr().err
    assert "predates these keys" in err and "local_reparameterization=True" in err
    assert main(["--quiet", "train", "vae", "--out", str(tiny_run[0]), "--steps", str(steps)]) == 0
    assert "predates" not in capsys.readouterr().err  # a run written today fills nothing


def test_prepare_dms_maps_real_mutants(tiny_run, shared_data):
    run, _, _ = tiny_run
    prep = RECIPE.load_run(run).data
    dms = prepare_dms(
        prep.aln, shared_data / "blat_ecolx" / "BLAT_ECOLX_Stiffler2015_dms.csv", "2500"
    )
    assert len(dms.mutants) + sum(dms.skip_reasons.values()) == dms.n_total == 4997
    assert len(dms.mutants) <= 4807
    wt = dms.sequences[0]
    assert np.all(
        (dms.sequences[1:] != wt[None]).sum(1) == 1
    )  # single mutants differ at one column


def test_cli_score_sample_evaluate(tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    score_json = tmp_path / "score.json"
    assert main(["--quiet", "score", str(run), "--out", str(score_json), "--samples", "2"]) == 0
    report = json.loads(score_json.read_text())
    assert report["n_used"] + report["n_skipped"] == 4997
    assert -1 <= report["spearman"] <= 1
    # the site-independent model on 300 sequences already carries signal
    assert report["site_independent_spearman"] > 0.2
    assert (tmp_path / "score.png").exists() and (tmp_path / "score_scores.csv").exists()

    fasta = tmp_path / "samples.fasta"
    assert main(["--quiet", "sample", str(run), "--num", "7", "--out", str(fasta)]) == 0
    records = read_records(fasta)
    assert len(records) == 7 and all(len(r.sequence) == 253 for r in records)

    eval_json = tmp_path / "eval.json"
    assert main(["--quiet", "evaluate", str(run), "--out", str(eval_json), "--num", "20"]) == 0
    ev = json.loads(eval_json.read_text())
    assert {"holdout_neg_elbo_per_seq", "vae_samples", "site_independent_samples"} <= set(ev)
    assert (tmp_path / "eval_latent.png").exists()


def test_score_batch_size_changes_speed_not_scores(tiny_run, tmp_path, capsys):
    """Every batch shares the same Monte-Carlo draws, so the scores do not depend on how mutants are
    batched (7 does not divide 4,808: the last batch is padded; a batch larger than the set is cut to it)."""
    run, _, _ = tiny_run
    reports = {}
    for batch in (7, 100000):
        out = tmp_path / f"b{batch}.json"
        argv = ["--quiet", "score", str(run), "--out", str(out), "--samples", "2"]
        assert main([*argv, "--batch-size", str(batch)]) == 0
        reports[batch] = json.loads(out.read_text())
        reports[batch]["csv"] = (tmp_path / f"b{batch}_scores.csv").read_text().splitlines()
    assert reports[7]["batch_size"] == 7 and reports[100000]["batch_size"] == 4808  # mutants + wt
    assert reports[7]["compile_seconds"] > 0 and reports[7]["seconds"] > 0
    a = np.array([float(line.split(",")[2]) for line in reports[7]["csv"][1:]])
    b = np.array([float(line.split(",")[2]) for line in reports[100000]["csv"][1:]])
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    assert abs(reports[7]["spearman"] - reports[100000]["spearman"]) < 1e-4
    assert main(["score", str(run), "--out", str(tmp_path / "x.json"), "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def test_learning_rate_schedule_constant_or_cosine():
    import dataclasses

    from protgen_jax.errors import DataError
    from protgen_jax.recipes.vae import learning_rate_schedule

    assert learning_rate_schedule(VAEConfig()) == VAEConfig().learning_rate  # the default: constant
    config = dataclasses.replace(VAEConfig(), learning_rate=1e-3, lr_final_fraction=0.1, steps=100)
    rate = learning_rate_schedule(config)
    # cosine from 1e-3 to 1e-4: the midpoint is their mean, and it stays at 1e-4 past `steps`
    np.testing.assert_allclose(
        [rate(0), rate(50), rate(100), rate(300)], [1e-3, 5.5e-4, 1e-4, 1e-4]
    )
    with pytest.raises(DataError, match="lr_final_fraction"):
        RECIPE.check(dataclasses.replace(config, lr_final_fraction=1.5))


def test_cli_rejects_bad_input_with_one_line_reason(tmp_path, capsys):
    bad = tmp_path / "bad.a2m"
    bad.write_text("this is not an alignment\n")
    assert main(["train", "vae", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "bad.a2m" in err and "\n" not in err
    assert main(["train", "vae", "--out", str(tmp_path / "r2"), "--set", "nonsense=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "x.fasta")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_quickstart_main_job_smoke(shared_data, tmp_path, capsys):
    from protgen_jax.recipes.quickstart import run_quickstart

    report = run_quickstart(
        tmp_path / "qs",
        progress=False,
        steps=2,
        score_samples=1,
        overrides=TINY + ["eval_every=2"],
        num_samples=20,
        fast=True,
    )
    printed = capsys.readouterr()
    for stage in ("[1/4] preparing the BLAT_ECOLX alignment", "[2/4] training", "[3/4] scoring",
                  "[4/4] sampling", "[4/4] done in"):  # fmt: skip
        assert stage in printed.err, stage
    lines = printed.out.splitlines()
    assert "protgen quickstart: summary" in lines
    table = {
        line.strip()[:44].strip(): line.split()[-1] for line in lines if line.startswith("    ")
    }
    assert float(table["this VAE (ELBO, 1 sample)"]) == pytest.approx(report["spearman"], abs=1e-3)
    assert table["site-independent (same code, same data)"] == "0.600"
    assert table["published DeepSequence (one model)"] == "0.750"
    assert table["published EVmutation"] == "0.720"
    full = json.loads((tmp_path / "qs" / "report.json").read_text())
    assert full["published_source"].endswith("PROVENANCE.md") and full["fast"] is True
    assert report["report"] == str(tmp_path / "qs" / "report.json")
    assert "(fast: 2 steps instead of 2,500" in printed.out
    assert any(line.startswith("  wall time ") for line in lines)
    assert any(line.startswith("  machine ") and "jax backend " in line for line in lines)
    for name in ("scores CSV", "scatter PNG", "samples FASTA", "report JSON", "run folder"):
        assert any(line.strip().startswith(name) for line in lines), name
    assert str(tmp_path / "qs" / "score_scores.csv") in printed.out
    assert set(full["stage_seconds"]) == {"prepare", "train", "score", "sample_and_evaluate"}
    assert report["n_used"] == 4807 and report["n_skipped"] == 190
    mean_report = json.loads((tmp_path / "qs" / "score_mean.json").read_text())
    assert mean_report["estimator"] == "mean"
    assert report["spearman_posterior_mean"] == mean_report["spearman"]
    for name in (
        "report.json",
        "score.json",
        "score.png",
        "samples.fasta",
        "eval.json",
        "run/curves.png",
    ):
        assert (tmp_path / "qs" / name).exists(), name


def test_cli_data_list(capsys, shared_data):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "blat_ecolx" in out and "structures" in out and "sequences" in out


def test_training_killed_mid_run_resumes_from_last_checkpoint(slice_a2m, tmp_path):
    """SIGKILL a real `protgen train` process after its first checkpoint, then resume it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from protgen_jax.checkpoint import Checkpointer

    run = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "protgen_jax.cli",
        "--quiet",
        "train",
        "vae",
        "--data",
        str(slice_a2m),
    ]
    args += ["--out", str(run), "--steps", "100000"]
    for item in TINY:
        args += ["--set", item]
    args += ["--set", "checkpoint_every=5", "--set", "eval_every=0"]
    env = {**os.environ, "XLA_FLAGS": ""}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            ckpt_dir = run / "checkpoints"
            if ckpt_dir.exists() and any(
                p.name.isdigit() and int(p.name) >= 10 for p in ckpt_dir.iterdir()
            ):
                break
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint appeared")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Checkpointer(run / "checkpoints") as ckpt:
        saved = ckpt.latest_step()
    assert saved is not None and saved >= 10
    target = saved + 3
    assert main(["--quiet", "train", "vae", "--out", str(run), "--steps", str(target)]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == target
    assert steps == sorted(
        set(steps)
    )  # nothing logged twice: records after the checkpoint were dropped


@pytest.mark.parametrize("model_name", ["lecture", "deepsequence"])
def test_unmodelled_gaps_leave_the_likelihood_and_the_samples(model_name):
    import jax
    import jax.numpy as jnp

    from protgen_jax.recipes.vae import build_model

    L = 12
    tokens = jnp.array([[0, 20, 3, 4, 20, 5, 6, 7, 8, 20, 9, 10]] * 2, jnp.int32)
    small = dict(model=model_name, encoder_widths=(16,), decoder_widths=(8, 16), latent_dim=4)
    with_gaps = build_model(VAEConfig(**small), L)
    without = build_model(VAEConfig(**small, model_gaps=False), L)
    params = with_gaps.init(jax.random.key(0), L)
    z = jax.random.normal(jax.random.key(1), (2, 4))
    raw = with_gaps.decode(params, z)
    logits = without.decode(params, z)
    assert int(jnp.argmax(logits, -1).max()) < 20  # never a gap
    # Expected: log-softmax over the 20 residue letters, summed over the 9 residue positions.
    log_p = jax.nn.log_softmax(raw[..., :20], -1)
    residue = np.asarray(tokens[0]) != 20
    expected = np.asarray(log_p)[:, np.arange(L)[residue], np.asarray(tokens[0])[residue]].sum(-1)
    np.testing.assert_allclose(without.log_likelihood(logits, tokens), expected, rtol=1e-5)
    # Modelling gaps counts the gap positions (and normalises over 21 letters): a different number.
    assert not np.allclose(with_gaps.log_likelihood(raw, tokens), expected, rtol=1e-3)


def test_local_reparameterization_flag_reaches_the_training_loss():
    """The config key switches the loss to per-example draws: same params and key, a different draw."""
    import jax
    import jax.numpy as jnp

    from protgen_jax.recipes.vae import build_model, make_loss_fn

    L = 12
    small = dict(encoder_widths=(16,), decoder_widths=(8, 16), latent_dim=4)
    shared = build_model(VAEConfig(**small, local_reparameterization=False), L)
    local = build_model(VAEConfig(**small, local_reparameterization=True), L)
    assert local.local_reparameterization and not shared.local_reparameterization
    params = shared.init(jax.random.key(0), L)
    batch = {"tokens": jnp.tile(jnp.arange(L, dtype=jnp.int32)[None], (3, 1)), "beta": 1.0}
    key = jax.random.key(1)
    loss_shared, aux_shared = make_loss_fn(shared, 100.0)(params, batch, key)
    loss_local, aux_local = make_loss_fn(local, 100.0)(params, batch, key)
    assert np.isfinite(float(loss_local))
    # The weight KL does not depend on the draw; the reconstruction term does.
    np.testing.assert_allclose(aux_local["kl_weights"], aux_shared["kl_weights"], rtol=1e-6)
    assert abs(float(aux_local["nll"]) - float(aux_shared["nll"])) > 1e-4


def test_posterior_mean_estimator_is_the_elbo_without_its_spread():
    """At the variational means the estimator ignores ``q(W)``'s spread and the key; as that spread and
    the encoder's shrink to nothing, the Monte-Carlo ELBO converges to it."""
    import jax
    import jax.numpy as jnp

    from protgen_jax.recipes.vae import (
        build_model,
        make_elbo_estimator,
        make_posterior_mean_estimator,
    )

    L = 12
    small = dict(encoder_widths=(16,), decoder_widths=(8, 16), latent_dim=4, dictionary_size=5)
    model = build_model(VAEConfig(**small), L)
    params = model.init(jax.random.key(0), L)
    tokens = jax.random.randint(jax.random.key(1), (5, L), 0, 21)

    def with_log_sigma(value):
        def leaf(path, x):
            return jnp.full_like(x, value) if "log_sigma" in jax.tree_util.keystr(path) else x

        return jax.tree_util.tree_map_with_path(leaf, params)

    def with_tiny_logvar(p):  # the encoder's logvar head -> -40 for every input
        def leaf(path, x):
            name = jax.tree_util.keystr(path)
            if "logvar" in name:
                return jnp.full_like(x, -40.0) if "bias" in name else jnp.zeros_like(x)
            return x

        return jax.tree_util.tree_map_with_path(leaf, p)

    wide, narrow = with_log_sigma(0.0), with_tiny_logvar(with_log_sigma(-30.0))
    plug_in = make_posterior_mean_estimator(model)
    a = plug_in(wide, tokens, jax.random.key(2))
    np.testing.assert_array_equal(a, plug_in(wide, tokens, jax.random.key(3)))
    np.testing.assert_allclose(a, plug_in(with_log_sigma(-30.0), tokens, None), rtol=1e-6)
    # The Monte-Carlo ELBO differs while q(W) is wide, and meets the plug-in value once it is not
    # (the latent KL is then large but identical in both, the sampled z equals mu).
    elbo = make_elbo_estimator(model, 8)
    assert float(jnp.max(jnp.abs(elbo(wide, tokens, jax.random.key(2)) - a))) > 1.0
    np.testing.assert_allclose(
        elbo(narrow, tokens, jax.random.key(2)), plug_in(narrow, tokens, None), rtol=1e-5
    )


def test_score_with_the_posterior_mean_estimator_is_deterministic(tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    reports = []
    for seed in (0, 1):
        out = tmp_path / f"mean{seed}.json"
        argv = ["--quiet", "score", str(run), "--out", str(out), "--estimator", "mean"]
        assert main([*argv, "--seed", str(seed)]) == 0
        reports.append(json.loads(out.read_text()))
        reports[-1]["csv"] = (tmp_path / f"mean{seed}_scores.csv").read_text()
    assert reports[0]["estimator"] == "mean" and reports[0]["num_samples"] == 1
    assert reports[0]["csv"] == reports[1]["csv"]  # no Monte-Carlo draws: the seed changes nothing
    elbo = tmp_path / "elbo.json"
    argv = [
        "--quiet",
        "score",
        str(run),
        "--out",
        str(elbo),
        "--estimator",
        "elbo",
        "--samples",
        "2",
    ]
    assert main(argv) == 0
    assert json.loads(elbo.read_text())["estimator"] == "elbo"
    assert (tmp_path / "elbo_scores.csv").read_text() != reports[0]["csv"]
    argv = ["score", str(run), "--out", str(elbo), "--estimator", "mean", "--samples", "5"]
    assert main(argv) == 2
    assert "the posterior-mean estimator draws no samples" in capsys.readouterr().err
    assert main(["score", str(run), "--out", str(elbo), "--estimator", "median"]) == 2
    assert "--estimator must be one of elbo, mean, got 'median'" in capsys.readouterr().err


def test_unknown_score_estimator_is_refused_before_training(slice_a2m, tmp_path):
    from protgen_jax.errors import DataError

    config = apply_overrides(VAEConfig(), [f"data={slice_a2m}", "score_estimator=mode"])
    with pytest.raises(DataError, match="score_estimator must be one of elbo, mean, got 'mode'"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["plain.json", "deepsequence.json"])
def test_experiment_configs_load_and_track_the_spearman(name, slice_a2m, shared_data, tmp_path):
    """experiments/blat_vae/*.json: every key is a config field, and (shrunk) two steps run with the
    in-training Spearman computed by the config's score estimator."""
    from pathlib import Path

    from protgen_jax.config import config_to_dict, load_config

    path = Path(__file__).parents[1] / "experiments" / "blat_vae" / name
    assert set(json.loads(path.read_text())) <= set(config_to_dict(VAEConfig()))
    config = load_config(VAEConfig, path)
    dms = shared_data / "blat_ecolx" / "BLAT_ECOLX_Stiffler2015_dms.csv"
    config = apply_overrides(
        config, TINY + [f"data={slice_a2m}", "steps=2", "eval_every=2", f"dms={dms}"]
    )
    train(config, tmp_path / "run", progress=False)
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["split"] == "eval"]
    assert len(evals) == 1 and -1 <= evals[0]["spearman"] <= 1


def test_flags_are_typed_per_family_and_zero_is_a_value(tiny_run, tmp_path, capsys):
    run, _, _ = tiny_run
    out = str(tmp_path / "s.fasta")
    for flag, value in (("--family", "PF00001"), ("--guidance", "2"), ("--motif", "x.pdb:A:1-5@1")):
        assert main(["--quiet", "sample", str(run), "--out", out, flag, value]) == 2
        err = capsys.readouterr().err
        assert f"{flag} does not apply to sample for a 'vae' run" in err and "\n" not in err.strip()
    assert main(["--quiet", "sample", str(run), "--out", out, "--num", "0"]) == 2
    assert "--num must be >= 1, got 0" in capsys.readouterr().err
    greedy = tmp_path / "greedy.fasta"
    cold = tmp_path / "cold.fasta"
    assert (
        main(["--quiet", "sample", str(run), "--out", str(greedy), "--num", "5", "--greedy"]) == 0
    )
    argv = ["--quiet", "sample", str(run), "--out", str(cold), "--num", "5", "--temperature", "0"]
    assert main(argv) == 0
    assert greedy.read_text() == cold.read_text()  # temperature 0 is the argmax, not temperature 1
    warm = tmp_path / "warm.fasta"
    argv = ["--quiet", "sample", str(run), "--out", str(warm), "--num", "5", "--temperature", "1"]
    assert main(argv) == 0 and warm.read_text() != cold.read_text()


def test_four_devices_train_the_same_curve_as_one(slice_a2m, tmp_path):
    """Data parallelism on 4 of the 8 fake CPU devices: run.json says so and the loss curve matches
    the one-device run (same batches, same keys; only the reduction order differs)."""
    base = TINY + [
        f"data={slice_a2m}",
        "steps=6",
        "eval_every=0",
        "log_every=1",
        "steps_per_call=3",
    ]
    curves = {}
    for devices in (1, 4):
        run = tmp_path / f"d{devices}"
        train(apply_overrides(VAEConfig(), base + [f"devices={devices}"]), run, progress=False)
        assert json.loads((run / "run.json").read_text())["devices"] == devices
        curves[devices] = [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    assert len(curves[1]) == 6
    np.testing.assert_allclose(curves[4], curves[1], rtol=2e-3)
