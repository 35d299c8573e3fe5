"""Sampling, motif scaffolding and geometry evaluation of a trained backbone run.

``protgen sample RUN --num N --length L --out DIR`` writes ``DIR/sample_0000.pdb`` ... (C-alpha only,
one model each), with ``--trajectory`` also ``DIR/trajectories/sample_0000.pdb`` (about 50 models from
noise to the sample), and ``DIR/summary.json``. All backbones of one call share one jitted ``lax.scan``
per chunk of ``sample_batch`` (shorter lengths are masked padding, so mixed lengths compile once).

Motif scaffolding (``--motif SPEC``, parsed and scored in :mod:`~protgen_jax.recipes.backbone.motif`)
keeps given residues of a real chain fixed and generates the rest by replacement (``known`` /
``known_mask`` of the samplers).

``protgen evaluate RUN --out eval.json`` compares ``num`` samples (lengths uniform in
[eval_min_length, eval_max_length]) and random-walk backbones of the same lengths with the natural
held-out chains through ``geometry_report``, reports where the model lies between the two, the
held-out variational bound in bits per coordinate, and writes plots beside the JSON (the JSON first
without the bound, ``complete`` false, then with it).

Randomness: every draw comes from the command's ``key`` split by name (``protgen_jax.keys.named``):
``sample`` uses ``"backbones"``; ``evaluate`` uses ``"lengths"``, ``"backbones"``, ``"random_walks"``
and ``"bound"``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np
from jax.tree_util import Partial
from tqdm.auto import tqdm

from protgen_jax import keys
from protgen_jax.atomic import save_json_atomic
from protgen_jax.data.structures import ChainSet, load_chain, load_folder
from protgen_jax.diffusion import variational_bound
from protgen_jax.errors import DataError
from protgen_jax.recipes.backbone.motif import motif_metrics, parse_motif
from protgen_jax.recipes.backbone.recipe import (
    DDIM_STEPS,
    MAX_LENGTH,
    MIN_LENGTH,
    NOISE_SCALE_MAX,
    SAMPLE_LENGTH,
    BackboneConfig,
    BackboneRecipe,
    denoiser,
    make_schedule,
    point_denoiser,
)
from protgen_jax.recipes.base import LoadedRun, OutputPlan
from protgen_jax.recipes.options import Option
from protgen_jax.structure.geometry import (
    gap_closed,
    geometry_report,
    geometry_stats,
    plot_geometry,
    random_walk_backbone,
)
from protgen_jax.structure.noise import centred_denoise_fn
from protgen_jax.structure.pdb_io import write_ca_pdb, write_trajectory_pdb
from protgen_jax.structure.sampling import sample_backbones

NOISE_SCALE = Option(
    "noise_scale", float, None, "DDPM per-step noise scale (default: the run's)", 0.0,
    NOISE_SCALE_MAX,
)  # fmt: skip
COMMANDS = {
    "sample": (
        Option("num", int, 8, "number of backbones", low=1, high=100_000),
        Option("length", int, None, f"residues (default {SAMPLE_LENGTH})", MIN_LENGTH, MAX_LENGTH),
        Option("motif", str, None, "motif spec FILE:CHAIN:START-END[@POS][;...]"),
        Option("sampler", str, "ddpm", "reverse process", choices=("ddpm", "ddim")),
        Option("steps", int, None, f"DDIM steps (default {DDIM_STEPS})", low=1),
        NOISE_SCALE,
        Option("trajectory", bool, False, "also write multi-model trajectories"),
    ),
    "evaluate": (
        Option("num", int, None, "samples (default: the run's eval_num)", low=1, high=100_000),
        NOISE_SCALE,
        Option("data", str, None, "structure file or folder replacing the held-out split"),
    ),
}


def _progress(opts: SimpleNamespace) -> bool:
    """Progress bars unless ``--quiet``."""
    return not getattr(opts, "quiet", False)


def _sampler_settings(config: BackboneConfig) -> dict[str, Any]:
    """The run's ``sample_backbones`` settings: batch, reverse variance, x0 clipping and
    self-conditioning."""
    return dict(
        batch_size=config.sample_batch, variance=config.sample_variance,
        clip_x0=config.sample_clip or None, self_condition=config.self_condition,
    )  # fmt: skip


def _noise_scale(opts: SimpleNamespace, config: BackboneConfig) -> float:
    """``--noise-scale`` if given (bounds checked by its Option), else the run's ``sample_noise_scale``."""
    return config.sample_noise_scale if opts.noise_scale is None else float(opts.noise_scale)


def sample(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Write ``num`` backbones of ``length`` residues as PDB files into the folder ``opts.out``.

    Options (``RECIPE.commands["sample"]``): num, length (default ``SAMPLE_LENGTH``), out, sampler
    ("ddpm" | "ddim"), steps (DDIM steps, default ``DDIM_STEPS``, at most T), noise_scale (DDPM
    per-step noise; default the run's ``sample_noise_scale``), trajectory, motif (spec, see
    :mod:`~protgen_jax.recipes.backbone.motif`).
    """
    config: BackboneConfig = run.config
    length = SAMPLE_LENGTH if opts.length is None else opts.length
    ddim_steps = DDIM_STEPS if opts.steps is None else opts.steps
    schedule = make_schedule(config)
    if opts.sampler == "ddim" and not 1 <= ddim_steps <= schedule.num_steps:
        raise DataError(f"--steps must be in [1, {schedule.num_steps}], got {ddim_steps}")
    motif = parse_motif(opts.motif, length) if opts.motif else None
    noise_scale = _noise_scale(opts, config)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    samples, trajectories = sample_backbones(
        keys.named(key, "backbones"),
        denoiser(run.model, run.params, schedule),
        schedule,
        [length] * opts.num,
        **_sampler_settings(config),
        sampler=opts.sampler,
        ddim_steps=ddim_steps,
        noise_scale=noise_scale,
        motif=None if motif is None else (motif.indices, motif.coords),
        trajectory=opts.trajectory,
        progress=_progress(opts),
    )
    seconds = time.perf_counter() - started
    for i, x in enumerate(samples):
        write_ca_pdb(out / f"sample_{i:04d}.pdb", x)
    for i, frames in enumerate(trajectories or []):
        write_trajectory_pdb(out / "trajectories" / f"sample_{i:04d}.pdb", frames)
    summary = {
        "out": str(out),
        "num": opts.num,
        "length": length,
        "sampler": opts.sampler,
        "noise_scale": noise_scale if opts.sampler == "ddpm" else None,
        "steps": schedule.num_steps if opts.sampler == "ddpm" else ddim_steps,
        "sampling_seconds": seconds,
        "trajectories": bool(trajectories),
        "geometry": geometry_report(samples)["samples"],
    }
    if motif is not None:
        summary["motif"] = motif_metrics(samples, motif)
    save_json_atomic(out / "summary.json", summary)
    return summary


def load_reference(
    config: BackboneConfig, holdout: ChainSet, data: str | None, progress: bool = True
) -> ChainSet:
    """The natural chains to compare with: ``data`` (a structure file or folder, read with the run's
    length limits and padded to ``max(config.buckets)``) or the run's saved holdout.

    Raises:
      DataError: fewer than two chains of different lengths (the Rg power law needs them).
    """
    if data:
        path = Path(data)
        if path.is_dir():
            chains, _ = load_folder(path, None, config.min_length, config.max_length, progress)
        else:
            chains = [load_chain(path, None, config.min_length, config.max_length)]
        reference = ChainSet.of(chains, max(config.buckets))
    else:
        reference = holdout
    if len(set(reference.lengths.tolist())) < 2:
        raise DataError(
            f"{data or 'the holdout split'}: {len(reference)} reference chain(s); the geometry "
            "report needs at least two of different lengths (for the Rg power law)"
        )
    return reference


def heldout_bound(
    key: jax.Array,
    denoise_fn: Partial,
    config: BackboneConfig,
    schedule,
    chains: ChainSet,
    progress: bool = False,
) -> dict[str, float]:
    """Variational bound (``diffusion.variational_bound``, posterior variance) on chains, per bucket.

    The chains of bucket ``b`` form one batch ``[n_b, b, 3]`` with key ``fold_in(key, b)`` (T network
    calls each; ``progress`` shows a bar over the buckets). Returns the mean bits per coordinate
    (model units, Å / COORD_SCALE; a continuous density, so it can be negative) weighted by the
    number of coordinates, and the mean nats per chain. ``denoise_fn`` is a one-off network
    (:func:`~protgen_jax.recipes.backbone.recipe.point_denoiser`: two passes when self-conditioned).
    """
    fn = centred_denoise_fn(denoise_fn, schedule)
    bound = jax.jit(
        lambda f, k, x0, mask, pos: variational_bound(k, f, schedule, x0, mask, pos).total
    )
    nats, dims = [], []
    buckets = chains.by_bucket(config.buckets)
    bar = tqdm(buckets.items(), desc="held-out bound", unit="bucket", disable=not progress)
    for bucket, rows in bar:
        bar.set_postfix(length=bucket, chains=len(rows))
        x0, mask, positions = chains.padded(rows, bucket)
        total = bound(fn, jax.random.fold_in(key, bucket), x0, mask, positions)
        nats.extend(np.asarray(total, np.float64).tolist())
        dims.extend((3 * mask.sum(axis=1)).tolist())
    nats_arr, dims_arr = np.asarray(nats), np.asarray(dims, np.float64)
    return {
        "bits_per_coordinate": float(nats_arr.sum() / dims_arr.sum() / np.log(2.0)),
        "nats_per_chain": float(nats_arr.mean()),
        "num_chains": len(nats),
    }


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Geometry of samples and of random walks against natural chains; JSON + plots (module docstring).

    Options (``RECIPE.commands["evaluate"]``): out (JSON path; plots and ``<stem>_samples/`` go
    beside it), num (default ``config.eval_num``), data (a structure file or folder replacing the
    held-out split), noise_scale (DDPM per-step noise; default the run's ``sample_noise_scale``).

    The JSON, the plots and the sample PDBs are written once the samples are measured (``complete``
    false while the held-out bound runs), then the JSON again with ``heldout_bound`` and ``complete``
    true, so an interrupted bound leaves the geometry report.
    """
    config: BackboneConfig = run.config
    out = Path(opts.out)
    num = config.eval_num if opts.num is None else opts.num
    progress = _progress(opts)
    schedule = make_schedule(config)
    started = time.perf_counter()
    reference = load_reference(config, run.data.holdout, opts.data, progress)
    lo, hi = config.eval_min_length, config.eval_max_length
    lengths = keys.numpy_rng(keys.named(key, "lengths")).integers(lo, hi + 1, num).tolist()
    denoise_fn = denoiser(run.model, run.params, schedule)
    t0 = time.perf_counter()
    noise_scale = _noise_scale(opts, config)
    samples, _ = sample_backbones(
        keys.named(key, "backbones"), denoise_fn, schedule, lengths, **_sampler_settings(config),
        pad_to=hi, noise_scale=noise_scale, progress=progress,
    )  # fmt: skip
    sampling_seconds = time.perf_counter() - t0
    walk_rng = keys.numpy_rng(keys.named(key, "random_walks"))
    walks = [random_walk_backbone(walk_rng, n) for n in lengths]
    ref_stats = geometry_stats(reference.traces())
    sample_stats, walk_stats = geometry_stats(samples), geometry_stats(walks)
    model_report = geometry_report(sample_stats, ref_stats)
    walk_report = geometry_report(walk_stats, ref_stats)
    summary, natural = model_report["samples"], model_report["reference"]
    report: dict[str, Any] = {
        "num_samples": num,
        "sample_lengths": [lo, hi],
        "sampler": f"ddpm T={schedule.num_steps}, noise scale {noise_scale}",
        "reference": str(opts.data or "held-out split"),
        "num_reference": len(reference),
        "natural": natural,
        "model": summary,
        "random_walk": walk_report["samples"],
        "model_vs_natural": model_report["distances"],
        "random_walk_vs_natural": walk_report["distances"],
        "gap_closed": gap_closed(model_report["distances"], walk_report["distances"]),
        "targets": {
            "bond_fraction>=0.95": summary["bond_fraction"] >= 0.95,
            "clash_rate<0.05": summary["clash_rate"] < 0.05,
            "helix_within_10_points": abs(summary["helix_fraction"] - natural["helix_fraction"])
            <= 0.10,
            "strand_within_10_points": abs(summary["strand_fraction"] - natural["strand_fraction"])
            <= 0.10,
        },
        "sampling_seconds": sampling_seconds,
        "complete": not config.eval_bound,
    }
    stem = out.with_suffix("")
    plot_geometry(sample_stats, ref_stats, Path(f"{stem}_geometry.png"))
    plot_geometry(walk_stats, ref_stats, Path(f"{stem}_random_walk.png"))
    for i, x in enumerate(samples[:16]):
        write_ca_pdb(Path(f"{stem}_samples") / f"sample_{i:04d}.pdb", x)
    report["seconds"] = time.perf_counter() - started
    save_json_atomic(out, report)
    if config.eval_bound:
        report["heldout_bound"] = heldout_bound(
            keys.named(key, "bound"),
            point_denoiser(run.model, run.params, schedule, config),
            config,
            schedule,
            reference,
            progress,
        )
        report["complete"] = True
        report["seconds"] = time.perf_counter() - started
        save_json_atomic(out, report)
    return report


class Backbone(BackboneRecipe):
    """The C-alpha DDPM: training hooks (:class:`BackboneRecipe`) and the commands of this module."""

    commands = COMMANDS
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        """sample: a folder of ``sample_*.pdb`` (+ ``trajectories/``) and ``summary.json``;
        evaluate: the JSON, two plots and ``<stem>_samples/`` beside it."""
        if command == "sample":
            numbered = [out] + ([out / "trajectories"] if opts.trajectory else [])
            return OutputPlan(True, [out / "summary.json"], numbered)
        stem = str(out.with_suffix(""))
        files = [out, Path(f"{stem}_geometry.png"), Path(f"{stem}_random_walk.png")]
        return OutputPlan(False, files, [Path(f"{stem}_samples")])


RECIPE = Backbone()
