"""Sequence VAE: mutation-effect scoring, generation, latent-space tools and the evaluation report.

Mutation effect (DeepSequence): ``score(mutant) = E[ELBO(mutant)] - E[ELBO(wild type)]``, each ELBO averaged
over ``M`` Monte-Carlo draws of ``z`` (and decoder weights), common to all sequences; ensembles average the
scores of their members. Baseline: the site-independent model fitted on the same weighted alignment.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from protgen_jax.baselines import SiteIndependentModel
from protgen_jax.checkpoint import save_json_atomic
from protgen_jax.data import Alignment, map_mutants, mutant_tokens, read_dms, write_fasta
from protgen_jax.data.alphabet import decode
from protgen_jax.errors import DataError
from protgen_jax.metrics import sequence_statistics_report, spearman
from protgen_jax.plots import plot_scatter
from protgen_jax.recipes.config import load_config
from protgen_jax.recipes.vae import VAEConfig, default_dms, load_run
from protgen_jax.recipes.vae_model import (
    VAEModel,
    batched_elbo,
    check_score_estimator,
    make_elbo_estimator,
    make_score_estimator,
)


@dataclass(frozen=True)
class DMSSet:
    """The usable mutants of a DMS file on an alignment: row 0 of ``sequences`` is the wild type."""

    mutants: list[str]
    fitness: np.ndarray  # [n_used]
    sequences: np.ndarray  # [n_used + 1, L]
    skip_reasons: dict[str, int]
    n_total: int

    def delta(self, values: np.ndarray) -> np.ndarray:
        """Per-mutant difference to the wild type of per-sequence ``values [n_used + 1]``."""
        return np.asarray(values[1:]) - values[0]


def prepare_dms(aln: Alignment, path: Path, column: str, mutant_column: str = "mutant") -> DMSSet:
    """Read a DMS CSV, map mutants onto ``aln``'s match columns and build the mutated sequences.

    Mutants with a missing fitness value or outside the match columns are skipped and counted by reason;
    a wild-type letter that disagrees with the focus sequence raises :class:`DataError`.
    """
    mutants, fitness = read_dms(path, column, mutant_column=mutant_column, skip_missing=True)
    mapping = map_mutants(mutants, aln)
    keep = mapping.kept & np.isfinite(fitness)
    reasons = Counter(
        r.split(":")[0] for r, k in zip(mapping.skip_reasons, mapping.kept, strict=True) if not k
    )
    n_nan = int((mapping.kept & ~np.isfinite(fitness)).sum())
    if n_nan:
        reasons["missing fitness value"] += n_nan
    if not keep.any():
        raise DataError(
            f"{path}: no mutant of column {column!r} falls on the alignment's match columns"
        )
    seqs = mutant_tokens(aln, mapping)[keep]
    return DMSSet(
        mutants=[m for m, k in zip(mutants, keep, strict=True) if k],
        fitness=np.asarray(fitness, np.float64)[keep],
        sequences=np.concatenate([aln.focus_tokens[None], seqs]).astype(np.int32),
        skip_reasons=dict(reasons),
        n_total=len(mutants),
    )


def default_score_batch_size() -> int:
    """Mutants per jitted scoring call: 256 on CPU; 2,048 on a GPU/TPU, where one call of 256 leaves the
    device mostly idle (H100, M=500: 1.9e6 mutant-samples/s at 256, 8.3e6 at 4,808; benchmarks/bench_score.py)."""
    return 256 if jax.default_backend() == "cpu" else 2048


def score(run_dirs: list[Path], options: dict[str, Any]) -> dict[str, Any]:
    """``protgen score``: Spearman of VAE (ensemble) scores and of the site-independent baseline.

    ``options``: ``out`` (JSON path; a scatter PNG and ``*_scores.csv`` go beside it), ``dms`` (CSV; default
    the BLAT_ECOLX scan), ``column``, ``mutant_column``, ``estimator`` (``"elbo"`` or ``"mean"``; default
    the first run's ``score_estimator``), ``samples`` (M for ``"elbo"``; default ``score_samples``),
    ``batch_size``, ``seed``, ``quiet``. Several runs are an ensemble: their score vectors are averaged.
    """
    out = Path(options["out"])
    for flag in ("samples", "batch_size"):
        if options.get(flag) is not None and int(options[flag]) < 1:
            raise DataError(f"--{flag.replace('_', '-')} must be >= 1, got {options[flag]}")
    # Settings are checked before any model is built (the run's config is only read here).
    config_path = Path(run_dirs[0]) / "config.json"
    saved_estimator = load_config(VAEConfig, config_path).score_estimator
    estimator_name = check_score_estimator(options.get("estimator") or saved_estimator)
    if estimator_name == "mean" and options.get("samples") is not None:
        raise DataError(
            f"--samples {options['samples']}: the posterior-mean estimator draws no samples "
            f"(pass --estimator elbo for M draws; {config_path} has score_estimator="
            f"{saved_estimator!r})"
        )
    dms_path = Path(options["dms"]) if options.get("dms") else default_dms()
    runs = [load_run(r) for r in run_dirs]
    config0, prep0, _, _ = runs[0]
    aln = prep0.aln
    for r, (_, prep, _, _) in zip(run_dirs[1:], runs[1:], strict=True):
        if not np.array_equal(prep.aln.column_positions, aln.column_positions):
            raise DataError(
                f"{r}: its alignment columns differ from {run_dirs[0]}; cannot ensemble"
            )
    dms = prepare_dms(
        aln, dms_path, options.get("column", "2500"), options.get("mutant_column", "mutant")
    )
    # The posterior-mean estimator is one deterministic evaluation per sequence.
    num_samples = (
        1 if estimator_name == "mean" else int(options.get("samples") or config0.score_samples)
    )
    batch_size = min(
        int(options.get("batch_size") or default_score_batch_size()), len(dms.sequences)
    )
    key = jax.random.key(int(options.get("seed", 0)))

    per_run, compile_seconds, seconds = [], 0.0, 0.0
    for run_dir, (_, _, model, params) in zip(run_dirs, runs, strict=True):
        # Compiled ahead of time so the report gives compile time apart from scoring time.
        started = time.perf_counter()
        example = jnp.zeros((batch_size, dms.sequences.shape[1]), jnp.int32)
        estimator = make_score_estimator(model, estimator_name, num_samples)
        estimator = estimator.lower(params, example, key).compile()
        compile_seconds += time.perf_counter() - started
        started = time.perf_counter()
        with tqdm(
            total=len(dms.sequences),
            desc=f"score {Path(run_dir).name} "
            + ("(posterior mean)" if estimator_name == "mean" else f"(M={num_samples})"),
            disable=bool(options.get("quiet")),
        ) as bar:
            elbo = batched_elbo(
                estimator, params, dms.sequences, key, batch_size=batch_size, progress=bar
            )
        seconds += time.perf_counter() - started
        per_run.append(dms.delta(elbo))
    ensemble = np.mean(per_run, axis=0)

    train = ~prep0.holdout
    site = SiteIndependentModel.fit(
        aln.tokens[train], prep0.weights[train], gap_token=runs[0][2].gap_token
    )
    site_scores = dms.delta(site.log_prob(dms.sequences))
    report = {
        "spearman": spearman(ensemble, dms.fitness),
        "spearman_per_run": [spearman(s, dms.fitness) for s in per_run],
        "site_independent_spearman": spearman(site_scores, dms.fitness),
        "n_used": len(dms.mutants),
        "n_skipped": dms.n_total - len(dms.mutants),
        "skipped_reasons": dms.skip_reasons,
        "estimator": estimator_name,
        "num_samples": num_samples,
        "batch_size": batch_size,
        "runs": [str(r) for r in run_dirs],
        "dms": str(dms_path),
        "column": options.get("column", "2500"),
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
    tmp = path.with_suffix(".tmp")
    lines = ["mutant,fitness,vae_score,site_independent_score"]
    lines += [
        f"{m},{f:.6g},{s:.6g},{b:.6g}"
        for m, f, s, b in zip(dms.mutants, dms.fitness, scores, site, strict=True)
    ]
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def generate(
    key: jax.Array,
    model: VAEModel,
    params: Any,
    num: int,
    temperature: float = 1.0,
    greedy: bool = False,
) -> np.ndarray:
    """Sequences ``[num, L]`` from the prior: ``z ~ N(0, I)``, decode with mean weights, then argmax
    (``greedy``) or sample each position from ``softmax(logits / temperature)``."""
    z_key, s_key = jax.random.split(key)
    z = jax.random.normal(z_key, (num, model.latent_dim))
    logits = jax.jit(lambda p, z: model.decode(p, z))(params, z)
    if greedy:
        return np.asarray(jnp.argmax(logits, -1), np.int32)
    return np.asarray(jax.random.categorical(s_key, logits / temperature), np.int32)


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


def sample(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """``protgen sample`` for a VAE run: aligned FASTA of ``num`` prior samples (match-column width)."""
    config, prep, model, params = load_run(run_dir)
    num = int(options.get("num") or 100)
    if num < 1:
        raise DataError(f"--num must be >= 1, got {num}")
    tokens = generate(
        jax.random.key(int(options.get("seed", 0))),
        model,
        params,
        num,
        float(options.get("temperature") or 1.0),
        bool(options.get("greedy")),
    )
    out = Path(options["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_fasta(out, [(f"sample_{i}", decode(t)) for i, t in enumerate(tokens)])
    return {"out": str(out), "num": num, "length": int(tokens.shape[1])}


def evaluate(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Held-out ELBO and sample statistics of a VAE run, each next to the site-independent model."""
    from protgen_jax.plots import plot_latent

    config, prep, model, params = load_run(run_dir)
    aln, weights, holdout = prep
    if options.get("data"):
        raise DataError(
            "VAE evaluation uses the run's held-out rows; --data is not supported for VAEs"
        )
    out = Path(options["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    num = int(options.get("num") or 500)
    key = jax.random.key(int(options.get("seed", 0)))
    train, held = aln.tokens[~holdout], aln.tokens[holdout]
    site = SiteIndependentModel.fit(train, weights[~holdout], gap_token=model.gap_token)

    estimator = make_elbo_estimator(model, 20)
    held_elbo = batched_elbo(estimator, params, held, key)
    vae_samples = generate(key, model, params, num)
    site_samples = site.sample(np.random.default_rng(int(options.get("seed", 0))), num)
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
