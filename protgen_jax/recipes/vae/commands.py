"""Sequence VAE commands: generation, latent-space tools and the evaluation; the options of every command
and the family class :class:`VAE`. Mutation scoring (``score``, ``predict``) is in
:mod:`protgen_jax.recipes.vae.scoring`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import keys
from protgen_jax.alphabet import decode
from protgen_jax.atomic import save_json_atomic
from protgen_jax.baselines import SiteIndependentModel
from protgen_jax.data import write_fasta
from protgen_jax.errors import DataError
from protgen_jax.metrics import sequence_statistics_report
from protgen_jax.plots import plot_latent
from protgen_jax.recipes.base import LoadedRun, OutputPlan
from protgen_jax.recipes.options import Option
from protgen_jax.recipes.vae.model import (
    VAEModel,
    batched_elbo,
    make_elbo_estimator,
)
from protgen_jax.recipes.vae.recipe import VAERecipe
from protgen_jax.recipes.vae.scoring import DMS_ONLY, SCORING, predict, score

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
        *SCORING,
    ),
    "predict": (
        Option("all_singles", bool, False, "every single substitution of the focus at every match "
               "column (19 x L mutants, like A24C in the alignment's numbering)"),
        Option("dms", str, None, "CSV of mutants to score, every row kept (ProteinGym columns: "
               "mutant like A24C or A24C:G50D, optional DMS_score)"),
        Option("mutant_column", str, None, "mutant column of --dms (default mutant)"),
        Option("score_column", str, None, "label column of --dms (default DMS_score when the CSV "
               "has it; without labels no metrics)"),
        Option("offset", int, None, "added to the --dms residue numbers to reach the alignment's "
               "(default 0)"),
        Option("threshold", float, None, "labels >= it are fit, for AUC and MCC (default: the "
               "median label)"),
        *SCORING,
    ),
}  # fmt: skip


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
        if command not in ("score", "predict"):
            return
        if command == "predict":
            if bool(opts.all_singles) == bool(opts.dms):
                raise DataError("predict needs exactly one of --all-singles and --dms CSV")
            given = [name for name in DMS_ONLY if getattr(opts, name) is not None]
            if opts.all_singles and given:
                flag = "--" + given[0].replace("_", "-")
                raise DataError(f"{flag} applies to --dms, not --all-singles")
        saved = self.read_config(runs[0].config).score_estimator
        if (opts.estimator or saved) == "mean" and opts.samples is not None:
            raise DataError(
                f"--samples {opts.samples}: the posterior-mean estimator draws no samples "
                f"(pass --estimator elbo for M draws; {runs[0].config} has score_estimator="
                f"{saved!r})"
            )

    score = staticmethod(score)
    predict = staticmethod(predict)
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        """score: the JSON, ``<stem>_scores.csv`` and a PNG; predict: the CSV, ``<stem>_metrics.json``
        and ``<stem>_heatmap.png`` (the two it may write); evaluate: the JSON, a latent plot and an
        interpolation FASTA; sample: the FASTA."""
        if command == "score":
            return OutputPlan(
                False, [out, out.with_name(out.stem + "_scores.csv"), out.with_suffix(".png")], []
            )
        if command == "predict":
            beside = [out.with_name(out.stem + s) for s in ("_metrics.json", "_heatmap.png")]
            return OutputPlan(False, [out, *beside], [])
        if command == "evaluate":
            beside = [out.with_name(out.stem + s) for s in ("_latent.png", "_interpolation.fasta")]
            return OutputPlan(False, [out, *beside], [])
        return OutputPlan(False, [out], [])


RECIPE = VAE()
