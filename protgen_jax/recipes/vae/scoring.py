"""Mutation-effect scoring with sequence VAE runs: ``protgen score`` (a DMS, Spearman) and ``protgen predict``.

Mutation effect (DeepSequence): ``score(mutant) = E[ELBO(mutant)] - E[ELBO(wild type)]``, the ELBO
averaged over ``M`` Monte-Carlo draws of ``z`` (and decoder weights) common to all sequences, or taken at
the posterior mean (one deterministic pass); ensembles average the scores of their members. Baseline: the
site-independent model fitted on the same weighted alignment. ``predict`` writes the scores of every single
substitution, or of every row of a CSV (rows kept, skip reasons), with ProteinGym's metrics when the rows
carry labels.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from protgen_jax.atomic import atomic_write, save_json_atomic
from protgen_jax.baselines import SiteIndependentModel
from protgen_jax.errors import DataError
from protgen_jax.metrics import fitness_metrics, spearman
from protgen_jax.plots import plot_mutation_heatmap, plot_scatter
from protgen_jax.recipes.base import LoadedRun
from protgen_jax.recipes.options import Option
from protgen_jax.recipes.vae.dms import (
    DMSSet,
    Placed,
    all_singles,
    best_offset,
    listed_reasons,
    place_mutants,
    prepare_dms,
    read_mutant_table,
    single_effects,
)
from protgen_jax.recipes.vae.model import (
    SCORE_ESTIMATORS,
    batched_elbo,
    make_score_estimator,
)
from protgen_jax.recipes.vae.recipe import default_dms

SCORING = (
    Option("samples", int, None, "Monte-Carlo samples M (default: the run's score_samples)", low=1),
    Option("estimator", str, None, "elbo: delta ELBO over M draws; mean: one pass at the "
           "variational means (default: the run's score_estimator; on BLAT_ECOLX the mean ranks "
           "as well as the M=500 ELBO, Spearman 0.750 vs 0.746 over 6 seeds)",
           choices=SCORE_ESTIMATORS),
    Option("batch_size", int, None, "mutants per jitted call (default 256 on CPU, 2048 on an "
           "accelerator)", low=1),
)  # fmt: skip
"""The scoring options ``score`` and ``predict`` share."""

DMS_ONLY = ("mutant_column", "score_column", "offset", "threshold")
"""``predict`` options that apply to ``--dms`` only."""


def default_score_batch_size() -> int:
    """Mutants per jitted scoring call: 256 on CPU; 2,048 on a GPU/TPU, where one call of 256 leaves the
    device mostly idle (throughput by batch size: ``python -m benchmarks.bench_score``)."""
    return 256 if jax.default_backend() == "cpu" else 2048


def _shared_alignment(runs: list[LoadedRun]) -> Any:
    """The alignment of the first run; DataError when another run's match columns differ (an
    ensemble averages scores column by column)."""
    first = runs[0]
    aln = first.data.aln
    for run in runs[1:]:
        if not np.array_equal(run.data.aln.column_positions, aln.column_positions):
            raise DataError(
                f"{run.run.path}: its alignment columns differ from {first.run.path}; cannot ensemble"
            )
    return aln


def _num_samples(run: LoadedRun, estimator_name: str, samples: int | None) -> int:
    """``M``: 1 for the posterior-mean estimator (one deterministic pass), else ``--samples`` or the
    run's ``score_samples``."""
    return 1 if estimator_name == "mean" else (samples or run.config.score_samples)


def _site_independent(run: LoadedRun) -> SiteIndependentModel:
    """The site-independent baseline fitted on the run's weighted training rows."""
    aln, weights, holdout = run.data
    return SiteIndependentModel.fit(
        aln.tokens[~holdout], weights[~holdout], gap_token=run.model.gap_token
    )


def estimate_elbo(
    runs: list[LoadedRun],
    sequences: np.ndarray,
    estimator_name: str,
    num_samples: int,
    batch_size: int,
    key: jax.Array,
    quiet: bool = True,
    desc: str = "score",
) -> tuple[np.ndarray, float, float]:
    """Each run's score estimate of ``sequences [S, L]`` -> ``([R, S], compile s, scoring s)``.

    Every run and batch uses the same ``key`` (common random numbers), so a sequence's value does not
    depend on what it is batched with (up to float32 rounding, ~1e-4 nats, when the batch size
    changes). Compiled ahead of time: compile time is reported apart.
    """
    values, compile_seconds, seconds = [], 0.0, 0.0
    label = "(posterior mean)" if estimator_name == "mean" else f"(M={num_samples})"
    for run in runs:
        started = time.perf_counter()
        example = jnp.zeros((batch_size, sequences.shape[1]), jnp.int32)
        estimator = make_score_estimator(run.model, estimator_name, num_samples)
        estimator = estimator.lower(run.params, example, key).compile()
        compile_seconds += time.perf_counter() - started
        started = time.perf_counter()
        name = f"{desc} {run.run.path.name} {label}"
        with tqdm(total=len(sequences), desc=name, disable=quiet) as bar:
            values.append(
                batched_elbo(
                    estimator, run.params, sequences, key, batch_size=batch_size, progress=bar
                )
            )
        seconds += time.perf_counter() - started
    return np.stack(values), compile_seconds, seconds


def score(runs: list[LoadedRun], opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen score``: Spearman of VAE (ensemble) scores and of the site-independent baseline.

    Writes ``opts.out`` (JSON), a scatter PNG and ``*_scores.csv`` beside it. Several runs are an
    ensemble: their score vectors are averaged. All runs share one key (common random numbers).
    """
    out = Path(opts.out)
    first = runs[0]
    estimator_name = opts.estimator or first.config.score_estimator
    dms_path = Path(opts.dms) if opts.dms else default_dms()
    aln = _shared_alignment(runs)
    dms = prepare_dms(aln, dms_path, opts.column, opts.mutant_column)
    warning = dms.skipped_warning(dms_path)
    if warning:
        print(warning, file=sys.stderr)
    num_samples = _num_samples(first, estimator_name, opts.samples)
    batch_size = min(opts.batch_size or default_score_batch_size(), len(dms.sequences))
    elbo, compile_seconds, seconds = estimate_elbo(
        runs, dms.sequences, estimator_name, num_samples, batch_size, key, opts.quiet, "score"
    )
    per_run = [dms.delta(values) for values in elbo]
    ensemble = np.mean(per_run, axis=0)
    site_scores = dms.delta(_site_independent(first).log_prob(dms.sequences))
    report = {
        "spearman": spearman(ensemble, dms.fitness),
        "spearman_per_run": [spearman(s, dms.fitness) for s in per_run],
        "site_independent_spearman": spearman(site_scores, dms.fitness),
        "n_used": len(dms.mutants),
        "n_skipped": dms.n_skipped,
        "skipped_reasons": dms.skip_reasons,
        "estimator": estimator_name,
        "num_samples": num_samples,
        "batch_size": batch_size,
        "runs": [str(r.run.path) for r in runs],
        "dms": str(dms_path),
        "column": opts.column,
        "seconds": seconds,  # scoring only (all runs); compiling is apart
        "compile_seconds": compile_seconds,
        "mutant_samples_per_second": len(dms.sequences) * num_samples * len(runs) / seconds,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json_atomic(out, report)
    _write_scores_csv(out.with_name(out.stem + "_scores.csv"), dms, ensemble, site_scores)
    plot_scatter(
        ensemble,
        dms.fitness,
        out.with_suffix(".png"),
        "VAE score (delta ELBO, nats)"
        if estimator_name == "elbo"
        else "VAE score (delta ELBO at the posterior mean, nats)",
        f"measured fitness ({report['column']})",
        f"Spearman {report['spearman']:.3f} (site-indep. {report['site_independent_spearman']:.3f})",
    )
    return report


def _write_scores_csv(path: Path, dms: DMSSet, scores: np.ndarray, site: np.ndarray) -> None:
    lines = ["mutant,fitness,vae_score,site_independent_score"]
    lines += [
        f"{m},{f:.6g},{s:.6g},{b:.6g}"
        for m, f, s, b in zip(dms.mutants, dms.fitness, scores, site, strict=True)
    ]
    with atomic_write(path) as handle:
        handle.write("\n".join(lines) + "\n")


def predict(runs: list[LoadedRun], opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen predict``: the predicted effect of every mutant of ``--all-singles`` or ``--dms``.

    ``score_r(m) = ELBO_r(m) - ELBO_r(wild type)`` for each run ``r`` (positive: predicted fitter than
    the wild type; the same numbers ``score`` gives for the same seed and estimator), and
    ``ensemble_score = mean_r score_r`` when there are several runs. Writes ``opts.out``: the input rows
    in order with their columns, one ``score_<run folder>`` column per run and ``skipped_reason``
    (empty when scored); ``<stem>_metrics.json`` when the rows carry labels (the VAE and the
    site-independent baseline, :func:`~protgen_jax.metrics.fitness_metrics`); ``<stem>_heatmap.png``
    when single substitutions are scored.
    """
    out = Path(opts.out)
    first = runs[0]
    aln = _shared_alignment(runs)
    estimator_name = opts.estimator or first.config.score_estimator
    offset = opts.offset or 0
    if opts.all_singles:
        mutants = all_singles(aln)
        header, rows, labels, label_name = ["mutant"], [[m] for m in mutants], None, None
    else:
        header, rows, mutants, labels, label_name = read_mutant_table(
            Path(opts.dms), opts.mutant_column or "mutant", opts.score_column
        )
    placed = place_mutants(aln, mutants, offset)
    source = "--all-singles" if opts.all_singles else opts.dms
    if opts.dms:
        _check_numbering(aln, opts.dms, mutants, placed, offset)
    scored = placed.scored
    if not scored.any():
        raise DataError(
            f"{source}: no mutant can be scored ({listed_reasons(placed.skip_counts())})"
        )
    names = _score_columns(runs)
    clash = [name for name in (*names, "ensemble_score", "skipped_reason") if name in header]
    if clash:
        raise DataError(f"{source}: already has a column {clash[0]!r}; rename it")

    num_samples = _num_samples(first, estimator_name, opts.samples)
    batch_size = min(opts.batch_size or default_score_batch_size(), len(placed.sequences))
    elbo, _, _ = estimate_elbo(
        runs, placed.sequences, estimator_name, num_samples, batch_size, key, opts.quiet, "predict"
    )
    per_run = elbo[:, 1:] - elbo[:, :1]  # [R, n_scored]: mutant minus wild type
    ensemble = per_run.mean(0)
    columns = dict(zip(names, per_run, strict=True))
    if len(runs) > 1:
        columns["ensemble_score"] = ensemble
    _write_predictions(out, header, rows, placed.reasons, columns)

    written = {"out": out}
    metrics_path = out.with_name(out.stem + "_metrics.json")
    heatmap_path = out.with_name(out.stem + "_heatmap.png")
    report = None
    if labels is not None and np.isfinite(labels[scored]).sum() >= 2:
        measured = labels[scored]
        site = _site_independent(first).log_prob(placed.sequences)
        report = {
            "dms": str(opts.dms), "score_column": label_name, "offset": offset,
            "estimator": estimator_name, "num_samples": num_samples,
            "runs": [str(r.run.path) for r in runs],
            "n_rows": len(rows), "n_scored": int(scored.sum()),
            "n_labelled": int(np.isfinite(measured).sum()),
            "threshold_rule": f"--threshold {opts.threshold:g}" if opts.threshold is not None
            else f"the median {label_name} of the scored rows",
            "conventions": f"ProteinGym: positive = {label_name} >= threshold; AUC ranks the "
            "scores; MCC predicts positive where score >= its median; NDCG: gains are the min-max "
            "scaled labels, over the top 10% of the predicted ranking; top10_recall: fraction of "
            "the true top 10% (by label) in the predicted top 10%",
            "vae": fitness_metrics(ensemble, measured, opts.threshold),
            "site_independent": fitness_metrics(site[1:] - site[0], measured, opts.threshold),
        }  # fmt: skip
        if len(runs) > 1:
            report["per_run"] = {
                name: fitness_metrics(s, measured, opts.threshold) for name, s in columns.items()
            }
        written["metrics"] = save_json_atomic(metrics_path, report)
    grid = single_effects(aln, placed, ensemble)
    if grid is not None:
        members = f", mean of {len(runs)} runs" if len(runs) > 1 else ""
        written["heatmap"] = plot_mutation_heatmap(
            *grid, heatmap_path,
            title=f"{aln.focus_name}: single substitutions ({estimator_name}{members})",
            label="delta ELBO (nats); > 0: fitter than wild type",
        )  # fmt: skip
    for stale in {metrics_path, heatmap_path} - set(written.values()):
        if opts.force and stale.exists():  # an output of an earlier call that this one replaces
            stale.unlink()

    counts = placed.skip_counts()
    skipped = f", skipped {len(rows) - scored.sum()} ({listed_reasons(counts)})" if counts else ""
    print(
        f"predict: scored {scored.sum()} of {len(rows)} mutants{skipped}; wrote "
        + ", ".join(str(path) for path in written.values()),
        file=sys.stderr,
    )
    return {
        **{key: str(path) for key, path in written.items()},
        "rows": len(rows), "scored": int(scored.sum()), "skipped": counts,
        "estimator": estimator_name, "num_samples": num_samples,
        **({"spearman": report["vae"].get("spearman")} if report else {}),
    }  # fmt: skip


def _check_numbering(aln: Any, path: str, mutants: list[str], placed: Placed, offset: int) -> None:
    """DataError when most well-formed mutants miss the focus (a residue off the match columns or a
    different wild-type letter) and another ``--offset`` puts more wild-type letters on it; a warning
    when most miss and no offset does better."""
    kinds = [reason.split(":")[0] for reason in placed.reasons]
    formed = sum(kind not in ("malformed", "empty mutant") for kind in kinds)
    missed = sum(kind in ("not a match column", "wild-type mismatch") for kind in kinds)
    if not formed or 2 * missed <= formed:
        return
    numbered = aln.column_positions[aln.column_positions >= 0]
    what = (
        f"{missed} of {formed} mutants miss the alignment of {aln.focus_name} (residues "
        f"{numbered.min()}-{numbered.max()}): a residue off its match columns or another wild-type "
        "letter"
    )
    best, hits, at_given, total = best_offset(aln, mutants, offset)
    if best != offset and hits > at_given:
        raise DataError(
            f"{path}: {what}; the CSV may number residues from elsewhere: --offset {best} puts "
            f"{hits} of {total} wild-type letters on the focus ({at_given} with --offset {offset})"
        )
    print(f"warning: {path}: {what}; no offset matches more wild-type letters", file=sys.stderr)


def _score_columns(runs: list[LoadedRun]) -> list[str]:
    """``score_<run folder name>`` per run (numbered when two folders share a name)."""
    names = [r.run.path.resolve().name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{name}_{i + 1}" for i, name in enumerate(names)]
    return [f"score_{name}" for name in names]


def _write_predictions(
    path: Path,
    header: list[str],
    rows: list[list[str]],
    reasons: list[str],
    columns: dict[str, np.ndarray],
) -> None:
    """The input ``rows`` with ``columns`` (values ``[n_scored]``, for the rows whose reason is ``""``,
    in order; empty cells elsewhere) and ``skipped_reason`` appended, written atomically."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*header, *columns, "skipped_reason"])
        index = 0
        for row, reason in zip(rows, reasons, strict=True):
            if reason:
                writer.writerow([*row, *([""] * len(columns)), reason])
                continue
            writer.writerow([*row, *(f"{v[index]:.6g}" for v in columns.values()), ""])
            index += 1
