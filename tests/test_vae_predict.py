"""`protgen predict` on a tiny VAE trained on a slice of the real BLAT_ECOLX alignment, and the ranking
metrics against values computed by hand.

The focus is BLAT_ECOLX/24-286: its first match column is V29 (residues 24-28 are lower-case inserts),
then K30, V31, ...; residue 56 (an "e" in the A2M line) is an insert, so no mutant names it.
"""

import csv
import json

import numpy as np
import pytest

from protgen_jax import metrics
from protgen_jax.cli import main
from protgen_jax.config import apply_overrides
from protgen_jax.recipes.vae import RECIPE, VAEConfig
from protgen_jax.recipes.vae.dms import all_singles, best_offset

TINY = [
    "encoder_widths=64",
    "decoder_widths=16,32",
    "latent_dim=4",
    "dictionary_size=8",
    "batch_size=16",
    "eval_every=0",
    "checkpoint_every=2",
    "score_samples=3",
    "score_estimator=elbo",  # the tests pass --samples (M draws); --estimator mean is tested apart
    "devices=1",
    "steps=2",
]


@pytest.fixture(scope="module")
def tiny_run(shared_data, tmp_path_factory):
    """A two-step VAE run on the first 300 records of the real alignment (focus first)."""
    lines = (shared_data / "blat_ecolx" / "BLAT_ECOLX.a2m").read_text().splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.startswith(">")]
    a2m = tmp_path_factory.mktemp("aln") / "blat_slice.a2m"
    a2m.write_text("".join(lines[: headers[300]]))
    run = tmp_path_factory.mktemp("runs") / "vae"
    RECIPE.train(apply_overrides(VAEConfig(), TINY + [f"data={a2m}"]), run, progress=False)
    return run


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


# ---------------------------------------------------------------- metrics by hand


def test_auc_mcc_ndcg_top_recall_by_hand():
    # AUC: positives score 0.9 and 0.3, negatives 0.8 and 0.1: 3 of the 4 pairs ordered right.
    assert metrics.roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == 0.75
    # A tie counts 1/2: positives {0.5, 0.1} vs negatives {0.5, 0.9} -> 0.5 of 4 pairs.
    assert metrics.roc_auc([1, 0, 0, 1], [0.5, 0.5, 0.9, 0.1]) == 0.125
    assert np.isnan(metrics.roc_auc([1, 1], [0.1, 0.2]))
    # MCC: TP=2, FN=1, TN=1, FP=1 -> (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6; a constant guess is 0.
    truth, guess = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert metrics.matthews_correlation(truth, guess) == pytest.approx(1 / 6)
    assert metrics.matthews_correlation(truth, [1] * 5) == 0.0
    # NDCG, top 2 of 4: gains (3,1,2,0)/3; predicted order 1, 2; ideal order 0, 2.
    y, s = np.array([3.0, 1.0, 2.0, 0.0]), np.array([0.1, 0.9, 0.5, 0.2])
    expected = (1 / 3 + (2 / 3) / np.log2(3)) / (1 + (2 / 3) / np.log2(3))
    assert metrics.ndcg(y, s, top_fraction=0.5) == pytest.approx(expected)
    assert metrics.ndcg(y, y, top_fraction=0.5) == pytest.approx(1.0)
    # Top-20% recall on 10 items: true top = items 8, 9 (>= 7.2); predicted top = items 7, 8 (>= 6.2).
    y = np.arange(10.0)
    s = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, -1.0])
    assert metrics.top_recall(y, s, top_fraction=0.2) == 0.5
    report = metrics.fitness_metrics(s, y)
    assert report["threshold"] == 4.5 and report["n_positive"] == 5 and report["n"] == 10
    assert metrics.fitness_metrics(s, y, threshold=8)["n_positive"] == 2
    assert metrics.fitness_metrics([1.0, np.nan], [1.0, 2.0]) == {"n": 1}


# ---------------------------------------------------------------- predict


def test_all_singles_numbering_and_scores_equal_score(tiny_run, shared_data, tmp_path):
    """19 x L rows in the alignment's numbering; the posterior-mean scores are exactly `score`'s (the
    Stiffler DMS holds every single at the match columns), and so are the M-draw ELBO scores for the
    same seed (predict draws score's samples)."""
    aln = RECIPE.load_run(tiny_run).data.aln
    residues = int(
        ((aln.column_positions >= 0) & (np.array(list(aln.focus_sequence)) != "-")).sum()
    )
    for flags in (["--estimator", "mean"], ["--samples", "2", "--seed", "5"]):
        out = tmp_path / "singles.csv"
        argv = ["--quiet", "predict", str(tiny_run), "--all-singles", "--out", str(out), "--force"]
        assert main(argv + flags) == 0
        rows = _rows(out)
        assert len(rows) == 19 * residues == 19 * 253
        mutants = [r["mutant"] for r in rows]
        assert mutants[:3] == ["V29A", "V29C", "V29D"] and "V29V" not in mutants
        assert mutants[19] == "K30A" and mutants[38] == "V31A"
        assert "L55A" in mutants and "S57A" in mutants
        assert not any(m[1:-1] == "56" for m in mutants)  # an insert of the focus
        assert mutants == all_singles(aln)
        assert all(r["skipped_reason"] == "" for r in rows)
        assert (tmp_path / "singles_heatmap.png").read_bytes()[:4] == b"\x89PNG"
        assert not (tmp_path / "singles_metrics.json").exists()  # no labels

        score_json = tmp_path / "score.json"
        argv = ["--quiet", "score", str(tiny_run), "--out", str(score_json), "--force"]
        assert main(argv + flags) == 0
        scored = {r["mutant"]: r["vae_score"] for r in _rows(tmp_path / "score_scores.csv")}
        assert len(scored) == len(rows)
        assert all(scored[r["mutant"]] == r["score_vae"] for r in rows), flags


def test_dms_keeps_every_row_with_its_reason(tiny_run, tmp_path, capsys):
    given = [
        ["mutant", "DMS_score", "note"],
        ["V29A", "1.0", "a"],
        ["V29A:K30D", "2.0", "double"],
        ["H24A", "0.5", "residue 24 is an insert"],
        ["V29", "0.1", "malformed"],
        ["A29C", "0.3", "the focus has V at 29"],
        ["V29*", "0.2", "stop"],
        ["K30D", "3.0", ""],
        ["V31A", "0.2", ""],
        ["K30E", "", "no label"],
    ]
    dms = _write_csv(tmp_path / "mine.csv", given)
    out = tmp_path / "mine_pred.csv"
    argv = ["--quiet", "predict", str(tiny_run), "--dms", str(dms), "--out", str(out)]
    assert main([*argv, "--estimator", "mean"]) == 0
    err = capsys.readouterr().err
    assert "scored 5 of 9 mutants, skipped 4" in err and str(out) in err
    rows = _rows(out)
    assert [[r[c] for c in given[0]] for r in rows] == given[1:]  # all rows, in order, as given
    reasons = [r["skipped_reason"] for r in rows]
    assert reasons[0] == reasons[1] == reasons[6] == reasons[7] == reasons[8] == ""
    assert reasons[2] == "not a match column: residue 24"
    assert reasons[3].startswith("malformed:")
    assert reasons[4] == "wild-type mismatch: the focus has V, not A, at residue 29"
    assert reasons[5] == "not an amino acid: '*' at residue 29"
    assert all((r["score_vae"] == "") == bool(r["skipped_reason"]) for r in rows)

    report = json.loads((tmp_path / "mine_pred_metrics.json").read_text())
    assert report["n_rows"] == 9 and report["n_scored"] == 5 and report["n_labelled"] == 4
    assert report["vae"]["n"] == 4 and report["site_independent"]["n"] == 4
    assert report["vae"]["threshold"] == 1.5 and "median" in report["threshold_rule"]
    assert {"spearman", "auc", "mcc", "ndcg", "top10_recall"} <= set(report["vae"])
    assert (tmp_path / "mine_pred_heatmap.png").exists()

    # The same mutants scored among all singles give the same numbers, up to float32 rounding of
    # the ELBOs (~1e-4 nats: another batch size, another summation order).
    every = tmp_path / "every.csv"
    argv = ["--quiet", "predict", str(tiny_run), "--all-singles", "--out", str(every)]
    assert main([*argv, "--estimator", "mean"]) == 0
    by_mutant = {r["mutant"]: float(r["score_vae"]) for r in _rows(every)}
    for mutant in ("V29A", "K30D", "V31A"):
        mine = float(next(r["score_vae"] for r in rows if r["mutant"] == mutant))
        assert mine == pytest.approx(by_mutant[mutant], abs=1e-3)

    # An explicit threshold is stated; a label column the file lacks is an error naming the columns.
    argv = ["--quiet", "predict", str(tiny_run), "--dms", str(dms), "--estimator", "mean"]
    assert main([*argv, "--out", str(out), "--force", "--threshold", "2"]) == 0
    report = json.loads((tmp_path / "mine_pred_metrics.json").read_text())
    assert report["threshold_rule"] == "--threshold 2" and report["vae"]["n_positive"] == 2
    assert main([*argv, "--out", str(out), "--force", "--score-column", "fitness"]) == 2
    assert "no column 'fitness'; available columns: mutant, DMS_score, note" in (
        capsys.readouterr().err
    )


def test_offset_shifts_the_numbering_and_is_suggested(tiny_run, tmp_path, capsys):
    """A file numbered from 1 (residue 29 written as 6): without --offset most mutants miss and the
    error names --offset 23; with it, the scores are those of the alignment's numbering."""
    aln = RECIPE.load_run(tiny_run).data.aln
    shifted = ["V6A", "K7D", "V8A:K7D"]
    assert best_offset(aln, shifted) == (23, 4, 0, 4)
    dms = _write_csv(tmp_path / "from1.csv", [["mutant"], *[[m] for m in shifted]])
    plain = _write_csv(tmp_path / "plain.csv", [["mutant"], ["V29A"], ["K30D"], ["V31A:K30D"]])
    out = tmp_path / "p.csv"
    base = ["--quiet", "predict", str(tiny_run), "--estimator", "mean", "--out", str(out)]
    assert main([*base, "--dms", str(dms)]) == 2
    err = capsys.readouterr().err
    assert "3 of 3 mutants miss the alignment of BLAT_ECOLX" in err
    assert "--offset 23 puts 4 of 4 wild-type letters on the focus (0 with --offset 0)" in err
    assert main([*base, "--dms", str(dms), "--offset", "23"]) == 0
    moved = [r["score_vae"] for r in _rows(out)]
    assert main([*base, "--dms", str(plain), "--force"]) == 0
    assert moved == [r["score_vae"] for r in _rows(out)] and all(moved)
    assert not (tmp_path / "p_metrics.json").exists()  # no labels, no metrics


def test_ensemble_columns_and_output_checks(tiny_run, tmp_path, capsys):
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(tiny_run, twin)
    dms = _write_csv(tmp_path / "d.csv", [["mutant", "DMS_score"], ["V29A", "1"], ["K30D", "2"]])
    out = tmp_path / "ens.csv"
    argv = ["--quiet", "predict", str(tiny_run), str(twin), "--dms", str(dms), "--out", str(out)]
    assert main([*argv, "--estimator", "mean"]) == 0
    rows = _rows(out)
    assert list(rows[0]) == ["mutant", "DMS_score", "score_vae", "score_twin", "ensemble_score",
                             "skipped_reason"]  # fmt: skip
    assert all(r["score_vae"] == r["score_twin"] == r["ensemble_score"] for r in rows)
    result = json.loads(capsys.readouterr().out)
    assert result["scored"] == 2 and result["metrics"].endswith("ens_metrics.json")
    # Every file predict writes is checked before any model is loaded: no silent replacement.
    (tmp_path / "ens_heatmap.png").rename(tmp_path / "keep.png")
    out.unlink()
    assert main([*argv, "--estimator", "mean"]) == 2
    assert "ens_metrics.json already exists; pass --force" in capsys.readouterr().err
    # With --force, a metrics file this call would not write (no labels) is removed, not left stale.
    argv = ["--quiet", "predict", str(tiny_run), "--all-singles", "--out", str(out), "--force"]
    assert main([*argv, "--estimator", "mean"]) == 0
    assert not (tmp_path / "ens_metrics.json").exists() and (tmp_path / "ens_heatmap.png").exists()


def test_cli_needs_exactly_one_source(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "x.csv")
    base = ["predict", str(tiny_run), "--out", out]
    assert main(base) == 2
    assert "exactly one of --all-singles and --dms" in capsys.readouterr().err
    assert main([*base, "--all-singles", "--dms", out]) == 2
    assert "exactly one of --all-singles and --dms" in capsys.readouterr().err
    assert main([*base, "--all-singles", "--offset", "3"]) == 2
    assert "--offset applies to --dms, not --all-singles" in capsys.readouterr().err
    assert main([*base, "--all-singles", "--estimator", "mean", "--samples", "4"]) == 2
    assert "the posterior-mean estimator draws no samples" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
