"""Training throughput per model family, as the shared loop runs it.

    python -m benchmarks.bench_train [--families vae,oadm,backbone] [--calls N] [--quick]

For each family's default config on its default data (the registry's files), the batch group that
training draws most often, and:

- ``jitted step``: ``train.make_train_step`` on one batch already on the device (the step alone);
- ``loop, n = 1``: ``train.make_scan_train_step`` with one update per host call, its batch drawn on the
  device, the metrics pulled to the host after every call (what the loop does each call);
- ``loop, n = default``: the same with the config's ``steps_per_call`` updates per call in one scan;
- each of the loop rows in float32 and with ``dtype=bfloat16`` compute.

Compile time (first call minus a steady call) is reported apart; steady times are the best of a few
repeats after a warm-up, each blocked until ready.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from benchmarks.timing import print_table
from protgen_jax import keys
from protgen_jax.recipes import recipe_for_model
from protgen_jax.train import make_scan_train_step, make_train_step

QUICK = {
    "vae": dict(encoder_widths=(256, 256), decoder_widths=(64, 128)),
    "oadm": dict(num_layers=2, model_dim=64),
    "backbone": dict(num_layers=2, model_dim=32),
}


def _time_calls(call, calls: int, repeats: int = 3) -> tuple[float, float]:
    """(first-call seconds, best seconds of ``calls`` steady calls), blocked until ready."""
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = call()
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    return first, best


def bench_family(model_name: str, calls: int, quick: bool) -> list[tuple]:
    recipe = recipe_for_model(model_name)
    config = recipe.make_config(model_name)
    if quick:
        config = dataclasses.replace(config, **QUICK[model_name])
    data = recipe.prepare(config, progress=False)
    rows = []
    for dtype in ("float32", "bfloat16"):
        cfg = dataclasses.replace(config, dtype=dtype, devices=1)
        model = recipe.build_model(cfg, data)
        groups = recipe.batches(cfg, data)
        group = groups[int(np.argmax([g.weight for g in groups]))]
        arrays = jax.device_put(group.arrays)
        loss_fn, optimizer = recipe.loss_fn(model, cfg, data), recipe.optimizer(cfg)
        root = keys.root_key(0)

        def fresh(cfg=cfg, model=model, root=root):
            return recipe.init_state(model, cfg, data, keys.named(root, "init"))

        if dtype == "float32":
            step = make_train_step(loss_fn, optimizer, donate=False)
            batch = jax.jit(group.draw)(arrays, keys.named(root, "batch"), 0)
            state = fresh()
            args = (state, batch, root)
            first, best = _time_calls(lambda step=step, args=args: step(*args)[1], calls)
            rows.append((model_name, "jitted step (fixed batch)", dtype, group.batch_size, 1,
                         first - best / calls, best / calls * 1e3))  # fmt: skip
        for n in sorted({1, cfg.steps_per_call}):
            scan = make_scan_train_step(loss_fn, optimizer, group.draw, steps_per_call=n)
            holder = [fresh()]

            def call(scan=scan, holder=holder, arrays=arrays, root=root):
                holder[0], metrics = scan(holder[0], arrays, root)
                return jax.device_get(metrics)  # the loop pulls the metrics once per call

            per_call = max(1, calls // n)
            first, best = _time_calls(call, per_call)
            ms = best / (per_call * n) * 1e3
            rows.append((model_name, f"loop, {n} per call", dtype, group.batch_size, n,
                         first - best / per_call, ms))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="vae,oadm,backbone")
    parser.add_argument("--calls", type=int, default=20, help="updates per timed repeat")
    parser.add_argument("--quick", action="store_true", help="smaller networks (a smoke run)")
    args = parser.parse_args()
    rows = []
    for name in args.families.split(","):
        rows += bench_family(name, args.calls, args.quick)
    print_table(
        "Training throughput (default configs; batch = the most drawn bucket)",
        ["model", "how", "dtype", "batch", "steps/call", "compile s", "ms/step"],
        [(*r[:-1], r[-1]) for r in rows],
    )
    print("\nsteps/s = 1000 / ms/step")


if __name__ == "__main__":
    main()
