"""Foundation benchmarks: DDPM/DDIM sampler wall time and train-step throughput.

    python benchmarks/bench_core.py [--quick]

Samplers: an MLP denoiser on ``[B, 192]`` vectors (192 = a 64-residue C-alpha backbone, flattened), the whole
reverse loop one jitted ``lax.scan``; DDIM uses ``T / 10`` steps. Train steps: the lecture ProteinVAE and the
DeepSequence VAE at L = 253 (BLAT_ECOLX), batch 128 (one shared weight draw per step, and the local
reparameterization's per-example output-layer draws), and the MLP denoiser, batch 256. Compile time (first
call minus steady time) is reported apart from steady-state time.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import Partial

from benchmarks.timing import measure, print_table
from protgen_jax import diffusion as dif
from protgen_jax import vae
from protgen_jax.nn import MLPDenoiser, ProteinVAE
from protgen_jax.nn.deepsequence import SequenceVAE
from protgen_jax.train import TrainState, make_train_step

DIM = 192


def bench_samplers(ts, batches):
    model = MLPDenoiser(hidden_widths=(512, 512, 512), time_embed_dim=128)
    params = model.init(jax.random.key(0), jnp.zeros((1, DIM)), jnp.zeros((1,), jnp.int32))
    fn = Partial(model.apply, params)
    rows = []
    for T in ts:
        schedule = dif.linear_schedule(T)
        for batch in batches:
            for name, call in [
                (
                    "ddpm",
                    lambda s=schedule, b=batch: dif.ddpm_sample(jax.random.key(1), fn, s, (b, DIM)),
                ),
                (
                    "ddim",
                    lambda s=schedule, b=batch, T=T: dif.ddim_sample(
                        jax.random.key(1), fn, s, (b, DIM), num_steps=T // 10
                    ),
                ),
            ]:
                first, steady = measure(call, repeats=2)
                steps = T if name == "ddpm" else T // 10
                rows.append((name, T, steps, batch, first - steady, steady, steady / steps * 1e3))
    print_table(
        "Sampler wall time (MLP denoiser, x in R^192)",
        ["sampler", "T", "steps", "batch", "compile s", "sample s", "ms/step"],
        rows,
    )


def _vae_step(model, batch_size, seq_len, local=False):
    tokens = jax.random.randint(jax.random.key(0), (batch_size, seq_len), 0, 21)
    latent = model.latent_dim
    if isinstance(model, SequenceVAE):
        params = model.init(
            {"params": jax.random.key(1), "weights": jax.random.key(2)},
            tokens[:1],
            jnp.zeros((1, latent)),
        )
    else:
        params = model.init(jax.random.key(1), tokens[:1], jnp.zeros((1, latent)))
    opt = optax.adam(1e-3)
    state = TrainState.create(model.apply, params, opt)

    def loss_fn(p, batch, key):
        k1, k2 = jax.random.split(key)
        eps = jax.random.normal(k1, (batch.shape[0], latent))
        if isinstance(model, SequenceVAE):
            logits, mu, logvar = model.apply(p, batch, eps, True, local, rngs={"weights": k2})
            extra = model.apply(p, method=model.weight_kl) / 2500.0
        else:
            logits, mu, logvar = model.apply(p, batch, eps)
            extra = 0.0
        return jnp.mean(vae.negative_elbo(logits, batch, mu, logvar).loss) + extra, {}

    return state, make_train_step(loss_fn, opt), tokens


def bench_train_steps(n_steps):
    rows = []
    configs = [
        (
            "ProteinVAE 1500-1500/100-500 z30",
            ProteinVAE(253, encoder_widths=(1500, 1500), decoder_widths=(100, 500), latent_dim=30),
            128,
            False,
        ),
        ("DeepSequence VAE (Bayesian sparse), one weight draw", SequenceVAE(253), 128, False),
        ("same, local reparameterization", SequenceVAE(253), 128, True),
    ]
    for name, model, batch, local in configs:
        state, step, tokens = _vae_step(model, batch, 253, local=local)
        holder = {"state": state}

        def run(step=step, tokens=tokens, holder=holder):
            for i in range(n_steps):
                holder["state"], m = step(holder["state"], tokens, jax.random.key(i))
            return m["loss"]

        first, steady = measure(run, repeats=2)
        rows.append((name, batch, first - steady, steady / n_steps * 1e3, batch * n_steps / steady))

    model = MLPDenoiser(hidden_widths=(512, 512, 512))
    params = model.init(jax.random.key(0), jnp.zeros((1, DIM)), jnp.zeros((1,), jnp.int32))
    opt = optax.adam(1e-3)
    schedule = dif.linear_schedule()

    def loss_fn(p, batch, key):
        return jnp.mean(dif.diffusion_loss(key, Partial(model.apply, p), schedule, batch)), {}

    step = make_train_step(loss_fn, opt)
    holder = {"state": TrainState.create(model.apply, params, opt)}
    x = jax.random.normal(jax.random.key(0), (256, DIM))

    def run_mlp():
        for i in range(n_steps):
            holder["state"], m = step(holder["state"], x, jax.random.key(i))
        return m["loss"]

    first, steady = measure(run_mlp, repeats=2)
    rows.append(
        (
            "MLP denoiser 512x3 (DDPM loss)",
            256,
            first - steady,
            steady / n_steps * 1e3,
            256 * n_steps / steady,
        )
    )
    print_table(
        f"Train-step throughput ({n_steps} steps per timing)",
        ["model", "batch", "compile s", "ms/step", "examples/s"],
        rows,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="T=100 and batch 16 only")
    args = parser.parse_args()
    bench_samplers([100] if args.quick else [100, 1000], [16] if args.quick else [16, 256])
    bench_train_steps(5 if args.quick else 20)


if __name__ == "__main__":
    main()
