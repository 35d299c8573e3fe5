"""Sequence VAE commands: mutation-effect scoring, generation, latent-space tools and the evaluation.

Mutation effect (DeepSequence): ``score(mutant) = E[ELBO(mutant)] - E[ELBO(wild type)]``, each ELBO averaged
over ``M`` Monte-Carlo draws of ``z`` (and decoder weights), common to all sequences; ensembles average the
scores of their members. Baseline: the site-independent model fitted on the same weighted alignment.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from protgen_jax import keys
from protgen_jax.alphabet import decode
from protgen_jax.atomic import atomic_write, save_json_atomic
from protgen_jax.baselines import SiteIndependentModel
from protgen_jax.data import write_fasta
from protgen_jax.errors import DataError
from protgen_jax.metrics import sequence_statistics_report, spearman
from protgen_jax.plots import plot_latent, plot_scatter
from protgen_jax.recipes.base import LoadedRun, OutputPlan
from protgen_jax.recipes.options import Option
from protgen_jax.recipes.vae.dms import DMSSet, prepare_dms
from protgen_jax.recipes.vae.model import (
    SCORE_ESTIMATORS,
    VAEModel,
    batched_elbo,
    make_elbo_estimator,
    make_score_estimator,
)
from protgen_jax.recipes.vae.recipe import VAERecipe, default_dms

COMMANDS = {
    "sample": (
        Option("num", int, 100, "sequences to sample", low=1),
        Option("temperature", float, 1.0, "softmax temperature (0 = argmax)", low=0),
        Option("greedy", bool, False, "argmax decoding (same as --temperature 0)"),
    ),
    "evaluate": (Option("num", int, 500, "samples for the sample statistics", low=1),),
    "score": (
        Option("dms", str, None, "DMS CSV (default: BLAT_ECOLX Stiffler 2015)"),
        Option("column", str, "2500", "fitness column"),
        Option("mutant_column", str, "mutant", "mutant column"),
        Option("samples", int, None, "Monte-Carlo samples M (default: the run's score_samples)",
               low=1),
        Option("estimator", str, None, "elbo: delta ELBO over M draws; mean: one pass at the "
               "variational means (default: the run's score_estimator)", choices=SCORE_ESTIMATORS),
        Option("batch_size", int, None, "mutants per jitted call (default 256 on CPU, 2048 on "
               "an accelerator)", low=1),
    ),
}  # fmt: skip


def default_score_batch_size() -> int:
    """Mutants per jitted scoring call: 256 on CPU; 2,048 on a GPU/TPU, where one call of 256 leaves the
    device mostly idle (throughput by batch size: ``python -m benchmarks.bench_score``)."""
    return 256 if jax.default_backend() == "cpu" else 2048


def score(runs: list[LoadedRun], opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen score``: Spearman of VAE (ensemble) scores and of the site-independent baseline.

    Writes ``opts.out`` (JSON), a scatter PNG and ``*_scores.csv`` beside it. Several runs are an
    ensemble: their score vectors are averaged. All runs share one key (common random numbers).
    """
    out = Path(opts.out)
    first = runs[0]
    estimator_name = opts.estimator or first.config.score_estimator
    dms_path = Path(opts.dms) if opts.dms else default_dms()
    aln = first.data.aln
    for run in runs[1:]:
        if not np.array_equal(run.data.aln.column_positions, aln.column_positions):
            raise DataError(
                f"{run.run.path}: its alignment columns differ from {first.run.path}; cannot ensemble"
            )
    dms = prepare_dms(aln, dms_path, opts.column, opts.mutant_column)
    warning = dms.skipped_warning(dms_path)
    if warning:
        print(warning, file=sys.stderr)
    # The posterior-mean estimator is one deterministic evaluation per sequence.
    num_samples = 1 if estimator_name == "mean" else (opts.samples or first.config.score_samples)
    batch_size = min(opts.batch_size or default_score_batch_size(), len(dms.sequences))

    per_run, compile_seconds, seconds = [], 0.0, 0.0
    for run in runs:
        # Compiled ahead of time so the report gives compile time apart from scoring time.
        started = time.perf_counter()
        example = jnp.zeros((batch_size, dms.sequences.shape[1]), jnp.int32)
        estimator = make_score_estimator(run.model, estimator_name, num_samples)
        estimator = estimator.lower(run.params, example, key).compile()
        compile_seconds += time.perf_counter() - started
        started = time.perf_counter()
        label = "(posterior mean)" if estimator_name == "mean" else f"(M={num_samples})"
        with tqdm(
            total=len(dms.sequences), desc=f"score {run.run.path.name} {label}", disable=opts.quiet
        ) as bar:
            elbo = batched_elbo(
                estimator, run.params, dms.sequences, key, batch_size=batch_size, progress=bar
            )
        seconds += time.perf_counter() - started
        per_run.append(dms.delta(elbo))
    ensemble = np.mean(per_run, axis=0)

    train = ~first.data.holdout
    site = SiteIndependentModel.fit(
        aln.tokens[train], first.data.weights[train], gap_token=first.model.gap_token
    )
    site_scores = dms.delta(site.log_prob(dms.sequences))
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


def generate(
    key: jax.Array, model: VAEModel, params: Any, num: int, temperature: float = 1.0
) -> np.ndarray:
    """Sequences ``[num, L]`` from the prior: ``z ~ N(0, I)``, decode with mean weights, then sample
    each position from ``softmax(logits / temperature)``; ``temperature = 0`` takes the argmax."""
    if temperature < 0:
        raise DataError(f"temperature must be >= 0, got {temperature}")
    z = jax.random.normal(keys.named(key, "z"), (num, model.latent_dim))
    logits = jax.jit(lambda p, z: model.decode(p, z))(params, z)
    if temperature == 0:
        return np.asarray(jnp.argmax(logits, -1), np.int32)
    letters = jax.random.categorical(keys.named(key, "letters"), logits / temperature)
    return np.asarray(letters, np.int32)


def reconstruct(model: VAEModel, params: Any, tokens: np.ndarray) -> np.ndarray:
    """Greedy reconstruction through the posterior means: ``argmax decode(mu(x))`` -> ``[N, L]``."""
    mu, _ = model.encode(params, jnp.asarray(tokens))
    return np.asarray(jnp.argmax(model.decode(params, mu), -1), np.int32)


def interpolate(
    model: VAEModel, params: Any, a: np.ndarray, b: np.ndarray, num: int = 9
) -> np.ndarray:
    """Greedy decodes along the straight line between the latent means of sequences ``a`` and ``b``
    (``[L]`` each) -> ``[num, L]`` (first and last are the reconstructions of ``a`` and ``b``)."""
    mu, _ = model.encode(params, jnp.asarray(np.stack([a, b])))
    w = jnp.linspace(0.0, 1.0, num)[:, None]
    z = (1 - w) * mu[0][None] + w * mu[1][None]
    return np.asarray(jnp.argmax(model.decode(params, z), -1), np.int32)


def sample(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen sample``: aligned FASTA of ``opts.num`` prior samples (match-column width)."""
    temperature = 0.0 if opts.greedy else opts.temperature
    tokens = generate(key, run.model, run.params, opts.num, temperature)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_fasta(out, [(f"sample_{i}", decode(t)) for i, t in enumerate(tokens)])
    return {"out": str(out), "num": opts.num, "length": int(tokens.shape[1]),
            "temperature": temperature}  # fmt: skip


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Held-out ELBO and sample statistics of a VAE run, each next to the site-independent model;
    ``opts.out`` JSON, a latent plot and an interpolation FASTA beside it."""
    model, params = run.model, run.params
    aln, weights, holdout = run.data
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    train, held = aln.tokens[~holdout], aln.tokens[holdout]
    site = SiteIndependentModel.fit(train, weights[~holdout], gap_token=model.gap_token)

    estimator = make_elbo_estimator(model, 20)
    held_elbo = batched_elbo(estimator, params, held, keys.named(key, "holdout"))
    vae_samples = generate(keys.named(key, "samples"), model, params, opts.num)
    site_samples = site.sample(keys.numpy_rng(keys.named(key, "site_samples")), opts.num)
    recon = reconstruct(model, params, held)
    # Positions the model is judged on: all, or the residues only when it does not model gaps.
    scored = np.ones(held.shape, bool) if model.gap_token is None else held != model.gap_token
    report = {
        "num_holdout": int(len(held)),
        "holdout_neg_elbo_per_seq": float(-held_elbo.mean()),
        "site_independent_holdout_nll_per_seq": float(-site.log_prob(held).mean()),
        "models_gaps": model.gap_token is None,
        "holdout_reconstruction_accuracy": float((recon == held)[scored].mean()),
        "vae_samples": sequence_statistics_report(vae_samples, held, train),
        "site_independent_samples": sequence_statistics_report(site_samples, held, train),
    }
    mu, _ = model.encode(params, jnp.asarray(aln.tokens[:5000]))
    plot_latent(np.asarray(mu), holdout[:5000], out.with_name(out.stem + "_latent.png"))
    far = int(np.argmin((held == aln.focus_tokens[None]).mean(1))) if len(held) else 0
    path = interpolate(
        model, params, aln.focus_tokens, held[far] if len(held) else aln.focus_tokens
    )
    write_fasta(
        out.with_name(out.stem + "_interpolation.fasta"),
        [(f"interp_{i}", decode(t)) for i, t in enumerate(path)],
    )
    save_json_atomic(out, report)
    return report


class VAE(VAERecipe):
    """The sequence VAE: training hooks (:class:`VAERecipe`) and the commands below."""

    commands = COMMANDS

    def check_command(self, command: str, opts: SimpleNamespace, runs: list) -> None:
        if command != "score":
            return
        saved = self.read_config(runs[0].config).score_estimator
        if (opts.estimator or saved) == "mean" and opts.samples is not None:
            raise DataError(
                f"--samples {opts.samples}: the posterior-mean estimator draws no samples "
                f"(pass --estimator elbo for M draws; {runs[0].config} has score_estimator="
                f"{saved!r})"
            )

    score = staticmethod(score)
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        """score: the JSON, ``<stem>_scores.csv`` and a PNG; evaluate: the JSON, a latent plot and an
        interpolation FASTA; sample: the FASTA."""
        if command == "score":
            return OutputPlan(
                False, [out, out.with_name(out.stem + "_scores.csv"), out.with_suffix(".png")], []
            )
        if command == "evaluate":
            beside = [out.with_name(out.stem + s) for s in ("_latent.png", "_interpolation.fasta")]
            return OutputPlan(False, [out, *beside], [])
        return OutputPlan(False, [out], [])


RECIPE = VAE()
