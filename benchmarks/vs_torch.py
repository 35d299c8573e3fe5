"""protgen_jax side by side with the lecture's PyTorch code: the same models, workloads and sizes.

    python -m benchmarks.vs_torch [--quick] [--out benchmarks/results] [--no-torch] [--ablations]
                                  [--families vae,oadm,backbone]

The PyTorch half is the lecture's code written out for the benchmark (eager mode): ``ProteinVAE`` with
``vae_loss`` and Adam; the MLP noise predictor (sinusoidal time embedding concatenated to the flattened
C-alpha coordinates, then Linear-SiLU-Linear-SiLU-Linear) with ``diffusion_training_loss`` and the
``ddpm_sample`` loop. The JAX half runs the same workloads through protgen_jax's public API
(``nn.ProteinVAE``, ``vae.negative_elbo``, ``nn.ConcatMLPDenoiser``, ``diffusion.diffusion_loss``,
``diffusion.ddpm_sample``, ``train.TrainState`` / ``train.make_scan_train_step`` as the training loop
runs them: a batch drawn on the device, the metrics pulled to the host after every call). Parameter
counts are checked equal and printed.

Rows: a GEMM row (the machine's measured float32 matmul peak in each framework; the large-batch rows
report their matmul GFLOP/s as a fraction of the better of the two); VAE train step at L=263, B=128
with one update per call and ``k`` updates per call (one ``lax.scan``); VAE sampling of 10k sequences
(greedy decode); MLP DDPM train step (N=128 C-alpha, B=64); DDPM sampling with T=1000 at batch 16 and
256. ``--ablations`` adds JAX-only rows: the training step as the loop ran it before (an EMA copy
updated every step, decay 0, and the gradient norm every step). ``--families`` appends the project's
own families' training throughput from ``benchmarks.bench_train`` (JAX only).

Timing: every row's first call (JAX: tracing + compilation) is timed apart; then ``repeats`` timed
blocks alternate JAX and torch (interleaved, so both see the same machine load), each block long enough
(``--min-block`` seconds) and blocked until ready; the tables give medians and the spread
``(max - min) / median`` over the blocks. ``ratio`` = torch time / JAX time (above 1: JAX faster).
torch runs with the faster of one thread and its default count on a short probe (``--torch-threads``
to force one): on a CPU shared with other jobs its OpenMP threads stall at every op's barrier. Results
go to ``<out>/vs_torch.json`` and ``<out>/vs_torch.md``. torch is optional (the ``bench`` extra); without
it the JAX rows run alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from protgen_jax import diffusion as dif
from protgen_jax import vae
from protgen_jax.nn import ConcatMLPDenoiser, ProteinVAE
from protgen_jax.train import TrainState, make_scan_train_step

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    """Workload sizes and timing settings (the defaults are the issue's workloads)."""

    seq_len: int = 263  # L, VAE
    vocab: int = 21  # K
    vae_hidden: int = 256  # the lecture's hidden_dim
    latent: int = 32  # the lecture's latent_dim
    vae_batch: int = 128
    scan_steps: int = 10  # k updates per call
    vae_samples: int = 10_000
    residues: int = 128  # N C-alpha atoms: x in R^{3N}
    ddpm_hidden: int = 256
    time_dim: int = 128
    ddpm_batch: int = 64
    T: int = 1000
    sample_batches: tuple[int, ...] = (16, 256)
    gemm: int = 1024
    data_rows: int = 4096  # rows of the synthetic training sets batches are drawn from
    repeats: int = 7
    min_block: float = 0.25  # seconds per timed block (several calls when one is shorter)


QUICK = dict(repeats=3, min_block=0.1, T=200)  # a smoke run: T=200 samplers, 3 repeats
TINY = Sizes(
    seq_len=8, vae_hidden=16, latent=4, vae_batch=8, scan_steps=2, vae_samples=64, residues=4,
    ddpm_hidden=16, time_dim=8, ddpm_batch=4, T=10, sample_batches=(2, 4), gemm=64, data_rows=32,
    repeats=2, min_block=0.0,
)  # fmt: skip


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Seconds per call: the first call and the steady calls of each timed block."""

    first: float
    blocks: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.blocks)

    @property
    def spread(self) -> float:
        """``(max - min) / median`` over the timed blocks."""
        return (max(self.blocks) - min(self.blocks)) / self.median if self.blocks else 0.0

    @property
    def compile(self) -> float:
        """First call minus a steady call (tracing + compilation for JAX; warm-up for torch)."""
        return max(self.first - self.median, 0.0)


def _first_call(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - t0


def _block(call: Callable[[], Any], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        out = call()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / inner


def time_interleaved(
    calls: dict[str, Callable[[], Any]], repeats: int, min_block: float
) -> dict[str, Timing]:
    """Time each callable of ``calls`` (one per framework) in alternation: first calls, one
    calibration call each, then ``repeats`` rounds of one block per framework. A call must return
    something ``jax.block_until_ready`` accepts (a JAX array, or anything already computed)."""
    timings = {name: Timing(_first_call(call)) for name, call in calls.items()}
    inner = {}
    for name, call in calls.items():
        once = _block(call, 1)
        inner[name] = max(1, math.ceil(min_block / max(once, 1e-6)))
    for _ in range(repeats):
        for name, call in calls.items():
            timings[name].blocks.append(_block(call, inner[name]))
    return timings


# ----------------------------------------------------------------------------- torch (lecture code)


def import_torch() -> Any | None:
    """The torch module, or None (with a note on stderr) when it is not installed."""
    try:
        import torch
    except ImportError:
        print(
            "torch is not installed: the PyTorch rows are skipped (pip install 'protgen_jax[bench]' "
            "with a CPU wheel, e.g. --index-url https://download.pytorch.org/whl/cpu)",
            file=sys.stderr,
        )
        return None
    return torch


def choose_torch_threads(torch: Any, requested: int = 0) -> dict[str, Any]:
    """Set torch's intra-op threads: ``requested`` if > 0, else whichever of 1 and torch's default
    runs a probe (a 256 x 512 @ 512 x 512 Linear) faster. On a CPU shared with other jobs torch's
    OpenMP threads can stall each other at every op's barrier (10x slower eager ops were seen on
    the 2 shared cores), so the default is not always torch's best; the choice and the probe times
    are recorded."""
    default = torch.get_num_threads()
    if requested > 0:
        torch.set_num_threads(requested)
        return {"threads": requested, "default": default, "probe_ms": {}}
    x = torch.randn(256, 512)
    layer = torch.nn.Linear(512, 512)
    probe = {}
    with torch.no_grad():
        for n in sorted({1, default}):
            torch.set_num_threads(n)
            for _ in range(5):
                layer(x)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(10):
                    layer(x)
                times.append((time.perf_counter() - t0) / 10 * 1e3)
            probe[n] = statistics.median(times)
    best = min(probe, key=probe.get)
    torch.set_num_threads(best)
    return {"threads": best, "default": default, "probe_ms": probe}


def torch_models(torch: Any) -> dict[str, Any]:
    """The lecture's PyTorch code: ProteinVAE + vae_loss, the schedule, the MLP denoiser, the loss
    and the DDPM loop (written out here; torch is only a benchmark extra)."""
    nn = torch.nn

    class ProteinVAETorch(nn.Module):
        def __init__(self, seq_len, vocab_size=21, hidden_dim=256, latent_dim=32):
            super().__init__()
            self.seq_len, self.vocab_size = seq_len, vocab_size
            input_dim = seq_len * vocab_size
            self.encoder = nn.Sequential(
                nn.Linear(input_dim, hidden_dim), nn.ReLU(),
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            )  # fmt: skip
            self.fc_mu = nn.Linear(hidden_dim, latent_dim)
            self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                nn.Linear(hidden_dim, input_dim),
            )  # fmt: skip

        def encode(self, x):
            x_onehot = nn.functional.one_hot(x, self.vocab_size).float()
            h = self.encoder(x_onehot.view(x.size(0), -1))
            return self.fc_mu(h), self.fc_logvar(h)

        def decode(self, z):
            return self.decoder(z).view(-1, self.seq_len, self.vocab_size)

        def forward(self, x):
            mu, logvar = self.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return self.decode(z), mu, logvar

        @torch.no_grad()
        def sample(self, n_samples):
            z = torch.randn(n_samples, self.fc_mu.out_features)
            return torch.argmax(self.decode(z), dim=-1)

    def vae_loss(recon_logits, x, mu, logvar, beta=1.0):
        recon = nn.functional.cross_entropy(
            recon_logits.reshape(-1, recon_logits.size(-1)), x.reshape(-1), reduction="mean"
        )
        kl = (-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)).mean()
        return recon + beta * kl

    class Schedule:
        def __init__(self, T=1000, beta_start=1e-4, beta_end=0.02):
            self.T = T
            self.betas = torch.linspace(beta_start, beta_end, T)
            self.alphas = 1.0 - self.betas
            self.alpha_bars = torch.cumprod(self.alphas, dim=0)
            self.sqrt_alpha_bars = torch.sqrt(self.alpha_bars)
            self.sqrt_one_minus_alpha_bars = torch.sqrt(1.0 - self.alpha_bars)

        def add_noise(self, x0, t, noise):
            shape = (-1,) + (1,) * (x0.dim() - 1)
            return (
                self.sqrt_alpha_bars[t].view(shape) * x0
                + self.sqrt_one_minus_alpha_bars[t].view(shape) * noise
            )

    class SinusoidalTimestepEmbedding(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dim = dim

        def forward(self, t):
            half = self.dim // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
            args = t[:, None].float() * freqs[None, :]
            return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)

    class MLPDenoiserTorch(nn.Module):
        """concat(x, time embedding) -> Linear-SiLU-Linear-SiLU-Linear, on flattened coordinates."""

        def __init__(self, dim, hidden_dim=256, time_dim=128):
            super().__init__()
            self.time_embed = SinusoidalTimestepEmbedding(time_dim)
            self.net = nn.Sequential(
                nn.Linear(dim + time_dim, hidden_dim), nn.SiLU(),
                nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                nn.Linear(hidden_dim, dim),
            )  # fmt: skip

        def forward(self, x, t):
            h = torch.cat([x.reshape(x.shape[0], -1), self.time_embed(t)], dim=-1)
            return self.net(h).reshape(x.shape)

    def diffusion_training_loss(model, x0, schedule):
        t = torch.randint(0, schedule.T, (x0.shape[0],))
        noise = torch.randn_like(x0)
        return nn.functional.mse_loss(model(schedule.add_noise(x0, t, noise), t), noise)

    @torch.no_grad()
    def ddpm_sample(model, schedule, shape):
        x = torch.randn(shape)
        for t in reversed(range(schedule.T)):
            noise_pred = model(x, torch.full((shape[0],), t, dtype=torch.long))
            alpha, alpha_bar, beta = schedule.alphas[t], schedule.alpha_bars[t], schedule.betas[t]
            mean = (1.0 / torch.sqrt(alpha)) * (
                x - (beta / torch.sqrt(1.0 - alpha_bar)) * noise_pred
            )
            x = mean + torch.sqrt(beta) * torch.randn_like(x) if t > 0 else mean
        return x

    return dict(
        ProteinVAE=ProteinVAETorch, vae_loss=vae_loss, Schedule=Schedule,
        MLPDenoiser=MLPDenoiserTorch, diffusion_training_loss=diffusion_training_loss,
        ddpm_sample=ddpm_sample,
    )  # fmt: skip


def torch_param_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- workloads


def param_count(params: Any) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


@dataclass
class Row:
    """One workload: per-call callables, the work one call does, and its matmul FLOPs."""

    name: str
    unit: str  # "steps/s", "seq/s" or "s"
    work: float  # updates / sequences per call (rates), 1 for "s"
    flops: float  # matmul FLOPs per call (0: not counted)
    jax_call: Callable[[], Any]
    torch_call: Callable[[], Any] | None = None
    params: tuple[int, int | None] = (0, None)  # (JAX, torch) parameter counts
    note: str = ""
    torch_work: float | None = None  # work of one torch call when it differs from ``work``


def _vae_flops(s: Sizes, batch: int, train: bool) -> float:
    lk, h, d = s.seq_len * s.vocab, s.vae_hidden, s.latent
    decoder = d * h + h * h + h * lk
    if not train:
        return 2.0 * batch * decoder
    encoder = lk * h + h * h + 2 * h * d
    return 3 * 2.0 * batch * (encoder + decoder)  # forward + two backward matmuls


def _mlp_flops(s: Sizes, batch: int) -> float:
    c, h = 3 * s.residues, s.ddpm_hidden
    return 2.0 * batch * ((c + s.time_dim) * h + h * h + h * c)


def vae_rows(s: Sizes, torch: Any | None, ablations: bool) -> list[Row]:
    model = ProteinVAE(
        seq_len=s.seq_len, vocab_size=s.vocab, encoder_widths=(s.vae_hidden,) * 2,
        decoder_widths=(s.vae_hidden,) * 2, latent_dim=s.latent,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, s.vocab, (s.data_rows, s.seq_len)).astype(np.int32)
    eps0 = jnp.zeros((1, s.latent))
    params = model.init(jax.random.key(0), jnp.asarray(tokens[:1]), eps0)
    optimizer = optax.adam(1e-3)

    def loss_fn(params, batch, key):
        eps = jax.random.normal(key, (batch["tokens"].shape[0], s.latent))
        logits, mu, logvar = model.apply(params, batch["tokens"], eps)
        return jnp.mean(vae.negative_elbo(logits, batch["tokens"], mu, logvar).loss), {}

    def draw(data, key, step):
        return {"tokens": data[jax.random.randint(key, (s.vae_batch,), 0, data.shape[0])]}

    data = jax.device_put(tokens)

    def loop_call(n: int, ema_decay: float = 0.0, grad_norm: bool = False) -> Callable[[], Any]:
        step = make_scan_train_step(loss_fn, optimizer, draw, steps_per_call=n, grad_norm=grad_norm)
        fresh = jax.tree.map(jnp.copy, params)  # the step donates the state's buffers
        holder = [TrainState.create(model.apply, fresh, optimizer, ema_decay=ema_decay)]
        key = jax.random.key(1)

        def call():
            holder[0], metrics = step(holder[0], data, key)
            return jax.device_get(metrics)  # the loop pulls the metrics after every call

        return call

    torch_step = torch_sample = None
    counts: tuple[int, int | None] = (param_count(params), None)
    if torch is not None:
        lecture = torch_models(torch)
        net = lecture["ProteinVAE"](s.seq_len, s.vocab, s.vae_hidden, s.latent)
        counts = (counts[0], torch_param_count(net))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        tdata = torch.from_numpy(tokens.astype(np.int64))

        def torch_step():
            x = tdata[torch.randint(0, tdata.shape[0], (s.vae_batch,))]
            opt.zero_grad(set_to_none=True)
            logits, mu, logvar = net(x)
            loss = lecture["vae_loss"](logits, x, mu, logvar)
            loss.backward()
            opt.step()
            return loss.item()

        def torch_sample():
            return net.sample(s.vae_samples)

    @jax.jit
    def sample(params, key):
        z = jax.random.normal(key, (s.vae_samples, s.latent))
        return jnp.argmax(model.apply(params, z, method="decode"), axis=-1)

    step_flops = _vae_flops(s, s.vae_batch, True)
    k = s.scan_steps
    rows = [
        Row(f"VAE train step, L={s.seq_len}, B={s.vae_batch}, 1 step per call", "steps/s", 1,
            step_flops, loop_call(1), torch_step, counts),
        Row(f"VAE train step, {k} steps per call (lax.scan)", "steps/s", k, k * step_flops,
            loop_call(k), torch_step, counts, "torch: the same eager loop", torch_work=1),
    ]  # fmt: skip
    if ablations:
        rows += [
            Row("  ablation: 1 per call, EMA copy (decay 0) + grad norm (the old loop)", "steps/s",
                1, step_flops, loop_call(1, 1e-9, True), None, counts),
            Row(f"  ablation: {k} per call, EMA copy (decay 0) + grad norm (the old loop)",
                "steps/s", k, k * step_flops, loop_call(k, 1e-9, True), None, counts),
            Row(f"  ablation: {k} per call, grad norm only", "steps/s", k, k * step_flops,
                loop_call(k, 0.0, True), None, counts),
        ]  # fmt: skip
    key = jax.random.key(2)
    rows.append(
        Row(f"VAE sampling, {s.vae_samples} sequences", "seq/s", s.vae_samples,
            _vae_flops(s, s.vae_samples, False), lambda: sample(params, key), torch_sample, counts)
    )  # fmt: skip
    return rows


def ddpm_rows(s: Sizes, torch: Any | None, ablations: bool) -> list[Row]:
    c = 3 * s.residues
    model = ConcatMLPDenoiser(hidden_widths=(s.ddpm_hidden,) * 2, time_embed_dim=s.time_dim)
    params = model.init(jax.random.key(0), jnp.zeros((1, c)), jnp.zeros((1,), jnp.int32))
    schedule = dif.linear_schedule(s.T)
    optimizer = optax.adam(1e-3)
    rng = np.random.default_rng(1)  # C-alpha traces: random walks of 3.8 A steps, centred, / 10 A
    steps = rng.normal(size=(s.data_rows, s.residues, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
    coords = np.cumsum(steps, axis=1)
    coords = ((coords - coords.mean(axis=1, keepdims=True)) / 10.0).astype(np.float32)
    data = jax.device_put(coords)

    def apply_flat(params, x, t, mask=None, cond=None):
        return model.apply(params, x.reshape(x.shape[0], -1), t).reshape(x.shape)

    def loss_fn(params, batch, key):
        denoise = Partial(apply_flat, params)
        return jnp.mean(dif.diffusion_loss(key, denoise, schedule, batch["x"])), {}

    def draw(data, key, step):
        return {"x": data[jax.random.randint(key, (s.ddpm_batch,), 0, data.shape[0])]}

    def loop_call(ema_decay: float = 0.0, grad_norm: bool = False) -> Callable[[], Any]:
        step = make_scan_train_step(loss_fn, optimizer, draw, grad_norm=grad_norm)
        fresh = jax.tree.map(jnp.copy, params)  # the step donates the state's buffers
        holder = [TrainState.create(model.apply, fresh, optimizer, ema_decay=ema_decay)]
        tkey = jax.random.key(1)

        def call():
            holder[0], metrics = step(holder[0], data, tkey)
            return jax.device_get(metrics)

        return call

    counts: tuple[int, int | None] = (param_count(params), None)
    torch_step = None
    torch_samplers: dict[int, Callable[[], Any]] = {}
    if torch is not None:
        lecture = torch_models(torch)
        net = lecture["MLPDenoiser"](c, s.ddpm_hidden, s.time_dim)
        counts = (counts[0], torch_param_count(net))
        tschedule = lecture["Schedule"](s.T)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        tdata = torch.from_numpy(coords)

        def torch_step():
            x0 = tdata[torch.randint(0, tdata.shape[0], (s.ddpm_batch,))]
            opt.zero_grad(set_to_none=True)
            loss = lecture["diffusion_training_loss"](net, x0, tschedule)
            loss.backward()
            opt.step()
            return loss.item()

        for b in s.sample_batches:
            torch_samplers[b] = lambda b=b: lecture["ddpm_sample"](
                net, tschedule, (b, s.residues, 3)
            )

    denoise = Partial(apply_flat, params)
    train_flops = 3 * _mlp_flops(s, s.ddpm_batch)
    rows = [
        Row(f"MLP DDPM train step, N={s.residues}, B={s.ddpm_batch}", "steps/s", 1, train_flops,
            loop_call(), torch_step, counts)
    ]  # fmt: skip
    if ablations:
        rows.append(
            Row("  ablation: EMA copy (decay 0) + grad norm (the old loop)", "steps/s", 1,
                train_flops, loop_call(1e-9, True), None, counts)
        )  # fmt: skip
    for b in s.sample_batches:
        key = jax.random.key(3)
        rows.append(
            Row(f"DDPM sampling T={s.T}, batch {b}", "s", 1, s.T * _mlp_flops(s, b),
                lambda b=b, key=key: dif.ddpm_sample(key, denoise, schedule, (b, s.residues, 3)),
                torch_samplers.get(b), counts)
        )  # fmt: skip
        if ablations:
            for unroll in (4, 10):
                rows.append(
                    Row(f"  ablation: batch {b}, lax.scan unroll={unroll}", "s", 1,
                        s.T * _mlp_flops(s, b),
                        lambda b=b, key=key, u=unroll: dif.ddpm_sample(
                            key, denoise, schedule, (b, s.residues, 3), unroll=u),
                        None, counts)
                )  # fmt: skip
    return rows


def gemm_row(s: Sizes, torch: Any | None) -> Row:
    n = s.gemm
    rng = np.random.default_rng(2)
    a, b = (rng.normal(size=(n, n)).astype(np.float32) for _ in range(2))
    ja, jb = jax.device_put(a), jax.device_put(b)
    matmul = jax.jit(jnp.matmul)
    torch_call = None
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)

        def torch_call():
            return torch.matmul(ta, tb)

    return Row(f"GEMM roofline, {n}x{n} float32 matmul", "GFLOP/s", 2.0 * n**3 / 1e9, 2.0 * n**3,
               lambda: matmul(ja, jb), torch_call)  # fmt: skip


# ----------------------------------------------------------------------------- run and report


def _rate(row: Row, seconds: float, torch: bool = False) -> float:
    work = row.torch_work if torch and row.torch_work is not None else row.work
    return seconds if row.unit == "s" else work / seconds


def measure_rows(rows: list[Row], s: Sizes, progress: bool = True) -> list[dict[str, Any]]:
    results = []
    for row in rows:
        calls = {"jax": row.jax_call}
        if row.torch_call is not None:
            calls["torch"] = row.torch_call
        timings = time_interleaved(calls, s.repeats, s.min_block)
        jt, tt = timings["jax"], timings.get("torch")
        per_torch = row.work / row.torch_work if row.torch_work else 1.0  # torch calls per JAX call
        if tt is not None and row.params[1] is not None and row.params[0] != row.params[1]:
            raise AssertionError(f"{row.name}: parameter counts differ: {row.params}")
        result = {
            "workload": row.name, "unit": row.unit, "note": row.note,
            "params_jax": row.params[0] or None, "params_torch": row.params[1],
            "jax": _rate(row, jt.median), "jax_spread": jt.spread, "jax_compile_s": jt.compile,
            "jax_blocks_s": jt.blocks,
            "jax_gflops": row.flops / jt.median / 1e9 if row.flops else None,
            "torch": _rate(row, tt.median, torch=True) if tt else None,
            "torch_spread": tt.spread if tt else None, "torch_blocks_s": tt.blocks if tt else None,
            "torch_gflops": row.flops / per_torch / tt.median / 1e9 if tt and row.flops else None,
            "ratio": (tt.median * per_torch) / jt.median if tt else None,
        }  # fmt: skip
        results.append(result)
        if progress:
            print(f"  {row.name}: jax {_fmt(result['jax'])} {row.unit}"
                  + (f", torch {_fmt(result['torch'])}" if tt else ""), file=sys.stderr)  # fmt: skip
    peak = max(
        (r[k] for r in results if r["unit"] == "GFLOP/s" for k in ("jax", "torch") if r[k]),
        default=None,
    )
    for r in results:
        r["jax_fraction_of_peak"] = r["jax_gflops"] / peak if peak and r["jax_gflops"] else None
        r["torch_fraction_of_peak"] = (
            r["torch_gflops"] / peak if peak and r["torch_gflops"] else None
        )
    return results


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown(results: list[dict[str, Any]], env: dict[str, Any]) -> str:
    head = [
        "workload", "unit", "torch eager", "protgen_jax", "ratio", "spread torch / jax",
        "jax compile s", "params", "GFLOP/s torch / jax", "of GEMM peak torch / jax",
    ]  # fmt: skip
    lines = [
        f"protgen_jax vs the lecture's PyTorch code ({env['machine']}; jax {env['jax']}, "
        f"torch {env['torch'] or 'absent'} eager, {_threads(env)}; medians of {env['repeats']} "
        "interleaved blocks)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in results:
        spread = f"{_pct(r['torch_spread'])} / {_pct(r['jax_spread'])}"
        gflops = f"{_fmt(r['torch_gflops'])} / {_fmt(r['jax_gflops'])}"
        frac = f"{_pct(r['torch_fraction_of_peak'])} / {_pct(r['jax_fraction_of_peak'])}"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        params = _fmt(r["params_jax"]) if r["params_jax"] else "-"
        if r["params_torch"] is not None:
            params += " = " + _fmt(r["params_torch"])
        lines.append(
            f"| {r['workload']} | {r['unit']} | {_fmt(r['torch'])} | {_fmt(r['jax'])} | {ratio} | "
            f"{spread} | {_fmt(r['jax_compile_s'])} | {params} | {gflops} | {frac} |"
        )
    lines += ["", "ratio = torch time / JAX time (above 1: JAX faster); unit s: seconds per run."]
    return "\n".join(lines) + "\n"


def _threads(env: dict[str, Any]) -> str:
    info = env["torch_threads"]
    if not info:
        return "no torch threads"
    probe = ", ".join(f"{n}: {ms:.2f} ms" for n, ms in info["probe_ms"].items())
    return f"{info['threads']} torch thread(s)" + (f" (probe {probe})" if probe else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def environment(torch: Any | None, s: Sizes, threads: dict[str, Any]) -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "machine": f"{device.device_kind}, {os.cpu_count()} CPU cores",
        "platform": platform.platform(),
        "jax": jax.__version__,
        "torch": getattr(torch, "__version__", None),
        "torch_threads": threads,
        "repeats": s.repeats,
        "sizes": dataclasses.asdict(s),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def run(
    s: Sizes,
    *,
    use_torch: bool = True,
    ablations: bool = False,
    out: Path | None = RESULTS,
    progress: bool = True,
    torch_threads: int = 0,
) -> dict[str, Any]:
    """Build and time every row; write ``vs_torch.json`` / ``vs_torch.md`` under ``out`` (None:
    nothing written); return the report (``environment``, ``rows``, ``markdown``)."""
    torch = import_torch() if use_torch else None
    threads: dict[str, Any] = {}
    if torch is not None:
        torch.manual_seed(0)
        threads = choose_torch_threads(torch, torch_threads)
        if progress:
            print(f"torch threads: {threads}", file=sys.stderr)
    rows = [gemm_row(s, torch)] + vae_rows(s, torch, ablations) + ddpm_rows(s, torch, ablations)
    for row in rows:
        if row.params[0] and progress:
            print(f"params {row.name}: jax {row.params[0]}, torch {row.params[1]}", file=sys.stderr)
    results = measure_rows(rows, s, progress)
    env = environment(torch, s, threads)
    report = {"environment": env, "rows": results, "markdown": markdown(results, env)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "vs_torch.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "vs_torch.md").write_text(report["markdown"])
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a smoke run ({QUICK})")
    parser.add_argument("--out", default=str(RESULTS), help="folder for vs_torch.json / .md")
    parser.add_argument("--no-torch", action="store_true", help="JAX rows only")
    parser.add_argument("--ablations", action="store_true", help="JAX-only before/after rows")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--torch-threads", type=int, default=0,
        help="torch intra-op threads (0: the faster of 1 and torch's default on a probe)",
    )  # fmt: skip
    parser.add_argument("--min-block", type=float, default=None, help="seconds per timed block")
    parser.add_argument(
        "--families", default="", help="also time these families' training (bench_train), e.g. vae"
    )
    args = parser.parse_args(argv)
    s = Sizes(**QUICK) if args.quick else Sizes()
    if args.repeats is not None:
        s = dataclasses.replace(s, repeats=args.repeats)
    if args.min_block is not None:
        s = dataclasses.replace(s, min_block=args.min_block)
    started = time.perf_counter()
    report = run(
        s, use_torch=not args.no_torch, ablations=args.ablations, out=Path(args.out),
        torch_threads=args.torch_threads,
    )  # fmt: skip
    print()
    print(report["markdown"])
    if args.families:
        from benchmarks.bench_train import bench_family
        from benchmarks.timing import print_table

        rows = []
        for name in args.families.split(","):
            rows += bench_family(name, 20, args.quick)
        print_table(
            "Training throughput of the project's families (benchmarks.bench_train)",
            ["model", "how", "dtype", "batch", "steps/call", "compile s", "ms/step"],
            rows,
        )
    print(f"\n{time.perf_counter() - started:.0f} s; written to {args.out}/vs_torch.{{json,md}}")


if __name__ == "__main__":
    main()
