"""Backbone diffusion benchmarks: sampler wall time and train-step time of the default backbone model.

    python benchmarks/bench_backbone.py [--quick] [--run RUN] [--batch 64] [--length 128] [--T 1000]

Sampling: ``batch`` backbones of ``length`` residues, the whole reverse loop (T network calls) one jitted
``lax.scan`` (``ddpm_sample`` with zero-COM noise, as ``protgen sample`` runs it), and DDIM with T / 10
steps. Train steps: one update at each length bucket with ``batch_tokens // bucket`` chains. The
network is the default ``BackboneDenoiser`` (random init, or the params ``RECIPE.load_run`` chooses
for ``--run``; the time does not depend on the values). Compile time (first call minus steady time) is reported apart; every timing blocks until
the result is ready.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import jax.numpy as jnp
from jax.tree_util import Partial

from benchmarks.timing import measure, print_table
from protgen_jax import diffusion as dif
from protgen_jax import keys
from protgen_jax.recipes import backbone as bb
from protgen_jax.structure.noise import centred_denoise_fn, zero_com_noise
from protgen_jax.train import make_train_step

ROOT = keys.root_key(0)


def bench_sampling(config, model, params, batch: int, length: int, T: int) -> None:
    schedule = dif.get_schedule(config.schedule, T)
    fn = centred_denoise_fn(bb.denoiser(model, params, schedule), schedule)
    noise = Partial(zero_com_noise)
    shape = (batch, length, 3)
    mask = jnp.ones(shape[:2], bool)
    cond = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), shape[:2])
    kw = dict(mask=mask, cond=cond, noise_transform=noise, self_condition=config.self_condition)
    calls = [
        ("ddpm", T, lambda: dif.ddpm_sample(keys.named(ROOT, "ddpm"), fn, schedule, shape, **kw)),
        (
            "ddim",
            T // 10,
            lambda: dif.ddim_sample(keys.named(ROOT, "ddim"), fn, schedule, shape, T // 10, **kw),
        ),
    ]
    rows = []
    for name, steps, call in calls:
        first, steady = measure(call, repeats=1)
        rows.append((name, T, steps, batch, length, first - steady, steady, steady / steps * 1e3))
    print_table(
        "Backbone sampling: one jitted scan (BackboneDenoiser, default config)",
        ["sampler", "T", "steps", "batch", "L", "compile s", "sample s", "ms/step"],
        rows,
    )


def bench_train(config, model) -> None:
    state = bb.RECIPE.init_state(model, config, None, keys.named(ROOT, "init"))
    loss_fn = bb.RECIPE.loss_fn(model, config, None)
    step = make_train_step(loss_fn, bb.RECIPE.optimizer(config), donate=False)
    train_key = keys.named(ROOT, "train")
    rows = []
    for bucket in config.buckets:
        size = max(1, config.batch_tokens // bucket)
        batch = {
            "x0": jnp.zeros((size, bucket, 3)),
            "mask": jnp.ones((size, bucket), bool),
            "positions": jnp.broadcast_to(jnp.arange(bucket, dtype=jnp.int32), (size, bucket)),
        }
        first, steady = measure(lambda b=batch: step(state, b, train_key), repeats=3)
        rows.append((bucket, size, first - steady, steady * 1e3, size * bucket / steady))
    print_table(
        "Backbone train step (default config)",
        ["bucket L", "batch", "compile s", "step ms", "residues/s"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T=50, batch 8, length 64")
    parser.add_argument("--run", help="a trained backbone run folder (its config and EMA params)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.length, args.T = 8, 64, 50
    if args.run:
        loaded = bb.RECIPE.load_run(Path(args.run))
        config, model, params = loaded.config, loaded.model, loaded.params
    else:
        config = bb.RECIPE.make_config("backbone")
        model = bb.RECIPE.build_model(config, None)
        params = bb.RECIPE.init_params(model, config, None, keys.named(ROOT, "init"))
    if args.quick:
        config = dataclasses.replace(config, buckets=(64,), max_length=64)
    bench_sampling(config, model, params, args.batch, args.length, args.T)
    if not args.skip_train:
        bench_train(config, model)


if __name__ == "__main__":
    main()
