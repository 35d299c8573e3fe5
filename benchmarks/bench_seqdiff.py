"""Sampling throughput of the sequence-diffusion methods: B sequences of length L in one jitted scan.

For each method the whole sampler (``SeqDiffModel.generate``: OADM's L unmasking steps, D3PM's T reverse
steps, or the relaxation's T DDPM steps + rounding) is one ``jax.jit`` program. Its compile time is
measured apart (``jit(...).lower(...).compile()``), then it runs ``--warmup`` times untimed and
``--repeats`` times timed, each ending with ``block_until_ready``. Parameters are the default network of
``protgen train METHOD`` (random init, or a trained run's with ``--run``); speed does not depend on their
values. Example::

    python -m benchmarks.bench_seqdiff --batch 256 --length 128 --methods oadm,d3pm,relax
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.timing import print_table
from protgen_jax import keys
from protgen_jax.recipes.seqdiff import RECIPE, build_model

NUM_FAMILIES = 40  # the shared domain data


def bench_method(method: str, batch: int, length: int, warmup: int, repeats: int, run: str | None):
    """Compile / run times (seconds) of one ``batch x length`` sampling call of ``method``."""
    if run:
        loaded = RECIPE.load_run(run)
        if loaded.config.method != method:
            raise SystemExit(f"--run {run} is a {loaded.config.method} run, not {method}")
        model, params, config = loaded.model, loaded.params, loaded.config
    else:
        config = RECIPE.make_config(method)
        model = build_model(config, NUM_FAMILIES)
        params = model.init(keys.named(keys.root_key(0), "init"))
    mask = jnp.ones((batch, length), bool)
    cond = jnp.full((batch,), model.null_label, jnp.int32)

    def sample(params, key):
        return model.generate(params, key, (batch, length), mask, cond)

    root = keys.named(keys.root_key(0), "sample")
    t0 = time.perf_counter()
    compiled = jax.jit(sample).lower(params, root).compile()
    compile_s = time.perf_counter() - t0
    for i in range(warmup):
        compiled(params, jax.random.fold_in(keys.named(root, "warmup"), i)).block_until_ready()
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = compiled(params, jax.random.fold_in(keys.named(root, "timed"), i))
        out = out.block_until_ready()
        times.append(time.perf_counter() - t0)
    assert out.shape == (batch, length) and int(out.max()) < 20
    steps = length if method == "oadm" else config.num_timesteps
    run_s = statistics.median(times)
    return {
        "method": method + (f"-{config.transition}" if method == "d3pm" else ""),
        "network_calls": steps,
        "compile_s": compile_s,
        "run_s": run_s,
        "sequences_per_s": batch / run_s,
        "ms_per_network_call": 1000 * run_s / steps,
    }


def main() -> None:
    """Parse the flags, benchmark each method and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="oadm,d3pm,relax")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--run", help="a trained run folder (one method) to take params from")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = [
        bench_method(method, args.batch, args.length, args.warmup, args.repeats, args.run)
        for method in args.methods.split(",")
    ]
    print_table(
        f"Sampling B={args.batch} x L={args.length} in one jitted scan "
        f"(warm-up {args.warmup}, median of {args.repeats})",
        ["method", "network calls", "compile s", "run s", "seq/s", "ms/call"],
        [[r["method"], r["network_calls"], r["compile_s"], r["run_s"], r["sequences_per_s"],
          r["ms_per_network_call"]] for r in rows],
    )  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"batch": args.batch, "length": args.length, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
