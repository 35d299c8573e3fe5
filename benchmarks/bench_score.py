"""Mutation-effect scoring throughput of the DeepSequence VAE (the issue's "M=500 over 4,807 mutants" target).

    python benchmarks/bench_score.py [--quick] [--run RUN] [--num 4808] [--samples 100,500,mean]
                                     [--batch-sizes 256,1024]

Times the code path of ``protgen score``: ``make_elbo_estimator`` (one jitted program, a ``lax.scan`` over
the M Monte-Carlo draws of ``z`` and of the decoder weights) applied by ``batched_elbo`` in fixed-size
batches of mutants. The default model is ``protgen train vae``'s (BLAT_ECOLX width L = 253, randomly
initialised: throughput does not depend on the weights' values); ``--run`` takes a trained run's model and
parameters instead. Tokens are random rows of the alphabet. Compile time (first call minus steady) is
reported apart; the steady time is the best of the repeats, and ``batched_elbo`` returns host arrays, so
every call has finished on the device when it is timed. Throughput = N mutants x M samples / seconds.
``mean`` in ``--samples`` times ``protgen score --estimator mean`` (``make_posterior_mean_estimator``: one
deterministic pass per mutant, so its throughput counts M = 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from benchmarks.timing import measure, print_table
from protgen_jax.recipes.vae import (
    RECIPE,
    VAEConfig,
    batched_elbo,
    build_model,
    make_score_estimator,
)

BLAT_COLUMNS = 253


def _m(text: str) -> int | str:
    return "mean" if text == "mean" else int(text)


def bench_score(model, params, tokens, samples, batch_sizes, repeats):
    rows = []
    key = jax.random.key(0)
    for m in samples:
        name, num_samples = ("mean", 1) if m == "mean" else ("elbo", m)
        estimator = make_score_estimator(model, name, num_samples)
        for batch in batch_sizes:
            first, steady = measure(
                lambda e=estimator, b=batch: batched_elbo(e, params, tokens, key, batch_size=b),
                repeats=repeats,
            )
            n = len(tokens)
            rows.append((m, batch, n, first - steady, steady, n * num_samples / steady))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="M=20 and mean, 512 mutants, batch 256 only"
    )
    parser.add_argument("--run", help="a trained VAE run folder (its model and parameters)")
    parser.add_argument("--num", type=int, default=4808, help="mutants (4,807 + wild type)")
    parser.add_argument(
        "--samples",
        default="100,500,mean",
        help="comma-separated M values; 'mean' = posterior mean",
    )
    parser.add_argument("--batch-sizes", default="256,1024", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    if args.run:
        loaded = RECIPE.load_run(Path(args.run))
        prep, model, params = loaded.data, loaded.model, loaded.params
        width, label = prep.aln.num_columns, f"run {args.run}"
    else:
        width, label = BLAT_COLUMNS, "default config, random init"
        model = build_model(VAEConfig(), width)
        params = model.init(jax.random.key(0), width)
    samples = [20, "mean"] if args.quick else [_m(s) for s in args.samples.split(",")]
    batches = [256] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    num = 512 if args.quick else args.num
    tokens = np.random.default_rng(0).integers(0, 21, (num, width)).astype(np.int32)
    rows = bench_score(model, params, tokens, samples, batches, args.repeats)
    print_table(
        f"DeepSequence VAE scoring, L = {width} ({label})",
        ["M", "batch", "mutants", "compile s", "score s", "mutant-samples/s"],
        rows,
    )


if __name__ == "__main__":
    main()
