"""Tests for ``protgen compare``: run specs, the statistics it adds, the hooks, and the command end to end
on two tiny sequence-diffusion runs (OADM, absorbing D3PM) trained on a slice of the real domain file."""

import json
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from protgen_jax.alphabet import AMINO_ACIDS, K_AA
from protgen_jax.baselines import KmerNaiveBayes
from protgen_jax.cli import main
from protgen_jax.compare.measure import classifier_probabilities, encode_samples, training_time
from protgen_jax.compare.specs import parse_spec, parse_specs
from protgen_jax.data.fasta import read_records, write_fasta
from protgen_jax.data.sequences import holdout_mask, read_sequences
from protgen_jax.errors import DataError
from protgen_jax.recipes.base import Recipe
from protgen_jax.recipes.seqdiff import RECIPE

TINY = [
    "num_layers=1", "num_heads=2", "model_dim=32", "max_len=32", "buckets=32",
    "tokens_per_batch=128", "eval_batches=1", "eval_every=1", "log_every=1", "num_timesteps=4",
    "warmup_steps=0", "sample_batch=8", "devices=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def split(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """(training FASTA = every 300th record of the real domain file, its held-out split as FASTA)."""
    records = read_records(shared_data / "sequences" / "family_domains_train.fasta")[::300]
    folder = tmp_path_factory.mktemp("data")
    train, heldout = folder / "slice.fasta", folder / "heldout.fasta"
    write_fasta(train, [(r.id, r.sequence) for r in records])
    held = holdout_mask([r.id for r in records], 0.05)
    write_fasta(heldout, [(r.id, r.sequence) for r, h in zip(records, held, strict=True) if h])
    return train, heldout


@pytest.fixture(scope="module")
def runs(split, tmp_path_factory) -> dict[str, Path]:
    """Two-step OADM and absorbing-D3PM runs trained through the command line."""
    folder = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("oadm", []), ("d3pm", ["transition=absorbing"])):
        args = ["--quiet", "train", name, "--data", str(split[0]), "--out", str(folder / name)]
        sets = [x for s in TINY + extra for x in ("--set", s)]
        assert main(args + ["--steps", "2", *sets]) == 0
        out[name] = folder / name
    return out


def _compare(runs_given, split, out, *extra) -> int:
    args = ["--quiet", "compare", *map(str, runs_given), "--data", str(split[1])]
    args += ["--train", str(split[0]), "--out", str(out), "--num", "4", "--warmup", "2"]
    return main(args + ["--per-family", "2", "--nll-sequences", "0", *extra])


@pytest.fixture(scope="module")
def compared(runs, split, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cmp") / "compare"
    held = read_sequences(split[1])
    a, b = held.family_names[:2]
    specs = [runs["oadm"], f"{runs['d3pm']}@guidance=2,temperature=0.5,label=D3PM"]
    assert _compare(specs, split, out, "--interpolate", f"{a},{b}") == 0
    return json.loads((out / "compare.json").read_text()), out


# ------------------------------------------------------------------------------ pieces


def test_run_specs_options_labels_and_errors():
    spec = parse_spec("/r/lat@guidance=2,classifier=/p/clf,classifier_scale=3.5")
    assert spec.path == Path("/r/lat") and spec.label == (
        "lat@guidance=2,classifier=/p/clf,classifier_scale=3.5"
    )
    assert spec.options == {"guidance": 2, "classifier": "/p/clf", "classifier_scale": 3.5}
    assert parse_spec("/r/vae@label=VAE,temperature=0.5").label == "VAE"
    assert parse_spec("/r/vae").options == {} and parse_spec("/r/vae").label == "vae"
    with pytest.raises(DataError, match="'guidance' is not key=value"):
        parse_spec("/r/lat@guidance")
    with pytest.raises(DataError, match="given twice"):
        parse_spec("/r/lat@s=1,s=2")
    with pytest.raises(DataError, match="same row 'lat'"):
        parse_specs(["/r/lat", "/x/lat"])


def test_classifier_probabilities_by_hand():
    # k = 1 naive Bayes over two families: theta_0 favours A, theta_1 favours C.
    theta = np.full((2, K_AA), 0.01)
    theta[0, 0], theta[1, 1] = 1 - 0.19, 1 - 0.19
    clf = KmerNaiveBayes(np.log([0.25, 0.75]), np.log(theta), 1)
    seqs = [np.array([0, 0, 1]), np.array([1])]
    p = classifier_probabilities(clf, seqs)
    s0 = np.log(0.25) + 2 * np.log(0.81) + np.log(0.01)
    s1 = np.log(0.75) + 2 * np.log(0.01) + np.log(0.81)
    assert p[0, 0] == pytest.approx(np.exp(s0) / (np.exp(s0) + np.exp(s1)))
    t0, t1 = np.log(0.25) + np.log(0.01), np.log(0.75) + np.log(0.81)
    assert p[1, 1] == pytest.approx(np.exp(t1) / (np.exp(t0) + np.exp(t1)))
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert list(p.argmax(1)) == list(clf.predict(seqs))


def test_empty_samples_are_counted_not_measured():
    seqs, empty = encode_samples(["ACD", "", "W", ""], "rows")
    assert empty == 2 and [s.tolist() for s in seqs] == [[0, 1, 2], [18]]
    with pytest.raises(
        DataError, match="rows: sequence 1 holds a non-standard letter|rows: sequence 1"
    ):
        encode_samples(["ACD", "AXC"], "rows")
    with pytest.raises(DataError, match="all 2 sequences are empty"):
        encode_samples(["", ""], "rows")


def test_training_time_sums_the_calls_of_a_resumed_run(tmp_path):
    lines = [
        {"step": 1, "split": "train", "time": 5.0},
        {"step": 1, "split": "eval", "time": 99.0},
        {"step": 2, "split": "train", "time": 9.0},
        {"step": 3, "split": "train", "time": 2.0},  # resumed: time restarts
        {"step": 4, "split": "train", "time": 4.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "run.json").write_text(json.dumps({"platform": "cpu", "devices": 1}))
    got = training_time(tmp_path)
    assert got["seconds"] == pytest.approx(9.0 + 4.5) and got["steps"] == 4
    assert got["platform"] == "cpu"


def test_default_hooks_raise_a_data_error():
    fake = SimpleNamespace(family="toy")
    with pytest.raises(DataError, match="toy runs cannot generate"):
        Recipe.generate_sequences(fake, None, jax.random.key(0), 2, lengths=np.array([3, 3]))
    with pytest.raises(DataError, match="toy runs cannot score"):
        Recipe.sequence_nll(fake, None, ["ACD"], [None])
    with pytest.raises(DataError, match="toy runs cannot interpolate"):
        Recipe.latent_interpolation(fake, None, jax.random.key(0), "A", "B", 3, 2)


def test_seqdiff_hooks(runs):
    run = RECIPE.load_run(runs["oadm"])
    key, family = jax.random.key(0), run.data.family_names[0]
    with pytest.raises(DataError, match="'classifier' does not apply.*guidance, temperature"):
        RECIPE.generate_sequences(run, key, 0, lengths=np.zeros(0), options={"classifier": "x"})
    with pytest.raises(DataError, match="guidance"):
        RECIPE.generate_sequences(run, key, 0, lengths=np.zeros(0), options={"guidance": -1})
    with pytest.raises(DataError, match="not one of the run's"):
        RECIPE.generate_sequences(run, key, 0, lengths=np.zeros(0), family="PF_NONE")
    assert RECIPE.generate_sequences(run, key, 0, lengths=np.zeros(0), family=family) == []
    seqs = RECIPE.generate_sequences(
        run, key, 3, lengths=np.array([5, 40, 12]), family=family, options={"guidance": 2}
    )
    assert [len(s) for s in seqs] == [5, 32, 12]  # capped at max_len 32
    assert all(set(s) <= set(AMINO_ACIDS) for s in seqs)
    value, kind = RECIPE.sequence_nll(run, ["ACDEFGHIK", "W" * 40], [family, None])
    assert 0 < value < 20 and "exact-order likelihood" in kind and "chunks" in kind
    assert RECIPE.latent_interpolation(run, key, family, family, 3, 2) is None


# ------------------------------------------------------------------------------ end to end


def test_compare_end_to_end(compared, runs, split):
    result, out = compared
    labels = [r["label"] for r in result["rows"]]
    held = read_sequences(split[1])
    assert labels == [f"held-out ({len(held)})", "held-out draw (4)", "unigram", "oadm", "D3PM"]
    assert result["complete"] and result["pending"] == []
    rows = {r["label"]: r for r in result["rows"]}
    whole = rows[labels[0]]["samples"]
    assert whole["composition_tv_heldout"] == 0.0 and whole["kmer3_tv_heldout"] == 0.0
    assert whole["pair_tv_heldout"] == 0.0 and whole["num"] == len(held)
    assert rows["held-out draw (4)"]["samples"]["composition_tv_heldout"] > 0.0
    # The unigram's NLL by hand: letter counts of the training reference (slice minus held-out) + 1.
    train = read_sequences(split[0])
    keep = [i for i, name in enumerate(train.ids) if name not in set(held.ids)]
    counts = np.ones(K_AA)
    for i in keep:
        counts += np.bincount(train.sequence(i), minlength=K_AA)
    log_p = np.log(counts / counts.sum())
    residues = np.concatenate([held.sequence(i) for i in range(len(held))])
    nll = rows["unigram"]["nll"]
    assert nll["nats_per_residue"] == pytest.approx(-log_p[residues].mean(), rel=1e-9)
    assert nll["num_residues"] == len(residues)
    assert result["classifier"]["heldout_ids_in_training_reference"] == 0
    assert result["classifier"]["training_reference_records"] == len(keep)
    for label in ("unigram", "oadm", "D3PM"):
        speed = rows[label]["speed"]
        assert speed["sequences_per_second"] > 0 and speed["num"] == 4
        assert speed["seconds_per_1000_projected"] == pytest.approx(
            1000 / speed["sequences_per_second"]
        )
    assert "variational bound" in rows["D3PM"]["nll"]["kind"]
    assert (
        rows["D3PM"]["options"] == {"guidance": 2, "temperature": 0.5}
        and rows["D3PM"]["model"] == "d3pm"
    )
    assert rows["oadm"]["train"]["steps"] == 2 and rows["oadm"]["train"]["seconds"] > 0
    assert rows["oadm"]["interpolation"]["reason"] == "no latent space"
    cond = rows["oadm"]["conditional"]
    assert 0.0 <= cond["fraction_assigned"] <= 1.0 and set(cond["by_family"]) <= set(
        result["families"]
    )
    md = (out / "compare.md").read_text()
    assert "## The lecture's table, measured" in md and "| D3PM |" in md
    assert (out / "compare.png").stat().st_size > 0
    assert result["machine"]["cpu_count"] >= 1 and result["command"].startswith("protgen")


def test_compare_refuses_bad_specs_before_sampling(runs, split, tmp_path, capsys):
    out = tmp_path / "c"
    assert _compare([f"{runs['oadm']}@classifier_scale=3"], split, out) == 2
    err = capsys.readouterr().err
    assert "classifier_scale" in err and "@classifier_scale=3" in err
    assert _compare([runs["oadm"], tmp_path / "missing"], split, out) == 2
    assert "missing" in capsys.readouterr().err
    assert _compare([runs["oadm"]], split, out, "--families", "PF_NONE") == 2
    assert "PF_NONE" in capsys.readouterr().err
    assert not out.exists()  # nothing was written


def test_compare_keeps_finished_rows_when_interrupted(runs, split, tmp_path, monkeypatch):
    calls = []

    def fail_second(self, run, sequences, families, progress=False):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 1.5, "stub"

    monkeypatch.setattr(type(RECIPE), "sequence_nll", fail_second)
    out = tmp_path / "c"
    assert _compare([runs["oadm"], runs["d3pm"]], split, out) == 130
    result = json.loads((out / "compare.json").read_text())
    assert not result["complete"] and result["pending"] == ["d3pm"]
    assert result["rows"][-1]["label"] == "oadm" and result["rows"][-1]["nll"]["kind"] == "stub"
