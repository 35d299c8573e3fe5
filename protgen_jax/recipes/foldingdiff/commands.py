"""Sampling and geometry evaluation of a trained FoldingDiff run.

``protgen sample RUN --num N --length L --out DIR`` writes ``DIR/sample_0000.pdb`` ... (atoms N, CA, C, O)
and ``DIR/summary.json``. One jitted program per chunk of ``sample_batch`` backbones runs the wrapped DDPM
over the angles (:func:`protgen_jax.diffusion.torus.torus_ddpm_sample`), adds the run's angle offset back,
rebuilds N, CA, C by NeRF with ideal bond lengths
(:func:`protgen_jax.structure.internal.backbone_from_internal`) and places the carbonyl O
(:func:`protgen_jax.structure.atoms.with_oxygen`); shorter lengths are masked padding of one width.

Guidance (``--clash-guidance W_C``, ``--rg-guidance W_RG``, both 0 by default: the unguided program):
each reverse step's eps is pushed down the gradient of ``W_C E_clash + W_RG E_rg``
(:mod:`protgen_jax.structure.potentials`) of the CA trace rebuilt from the model's clean estimate of the
angles (:func:`protgen_jax.diffusion.torus.torus_energy_guidance`, which gives the equation), moving phi
and psi only; ``--guide-from F`` guides the steps ``t <= F (T - 1)``, ``--guide-clip`` bounds each
residue's shift of eps.

``protgen evaluate RUN --out eval.json`` draws ``num`` lengths uniform in [eval_min_length,
eval_max_length], samples them, and measures samples, held-out natural chains of lengths in that range and
the random-torsion floor (ideal bond lengths and angles, trans omega, phi and psi uniform: a random walk
with a protein's local chemistry) by the same code: the C-alpha report
(:func:`protgen_jax.structure.geometry.geometry_report`: CA-CA bonds, clashes, P-SEA secondary structure
on CA, radius of gyration) and the full-backbone report
(:func:`protgen_jax.structure.backbone_geometry.backbone_report`: N-CA, CA-C, C-N, the three bond angles,
phi/psi/omega, Ramachandran regions, phi/psi secondary structure). Beside the JSON: ``<stem>_geometry.png``
(CA histograms), ``<stem>_ramachandran.png`` (natural, samples, floor), ``<stem>_contacts.png`` (four
samples above natural chains of the nearest lengths) and ``<stem>_samples/`` (16 PDB files).

Randomness: every draw comes from the command's ``key`` split by name: ``sample`` uses ``"backbones"``;
``evaluate`` uses ``"lengths"``, ``"backbones"`` and ``"random_walks"``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import keys
from protgen_jax.atomic import save_json_atomic
from protgen_jax.diffusion.torus import torus_ddpm_sample, torus_energy_guidance, wrap
from protgen_jax.recipes.base import LoadedRun, OutputPlan
from protgen_jax.recipes.foldingdiff.recipe import (
    MAX_LENGTH,
    MIN_LENGTH,
    NUM_ANGLES,
    SAMPLE_LENGTH,
    FoldingDiffConfig,
    FoldingDiffRecipe,
    denoiser,
    make_schedule,
)
from protgen_jax.recipes.options import Option
from protgen_jax.structure.atoms import with_oxygen
from protgen_jax.structure.backbone_geometry import (
    backbone_report,
    backbone_stats,
    plot_contact_maps,
    plot_ramachandran,
)
from protgen_jax.structure.geometry import (
    gap_closed,
    geometry_report,
    geometry_stats,
    plot_geometry,
)
from protgen_jax.structure.internal import ANGLE_NAMES, backbone_from_internal, random_internal
from protgen_jax.structure.pdb_io import write_backbone_pdb
from protgen_jax.structure.potentials import CLASH_MARGIN, RG_EXPONENT, RG_PREFACTOR, angle_energy

NOISE_SCALE = Option(
    "noise_scale", float, None, "per-step noise scale (default: the run's)", 0.0, 2.0
)
GUIDANCE = (
    Option("clash_guidance", float, 0.0, "weight of the CA clash potential (0: off)", 0.0, 1e4),
    Option(
        "rg_guidance", float, 0.0, "weight of the radius-of-gyration potential (0: off)", 0.0, 1e4
    ),
    Option("guide_from", float, 1.0, "guide the steps t <= this fraction of T", 0.0, 1.0),
    Option("guide_clip", float, 1.0, "per-residue bound on the guidance term of eps", 1e-6, 100.0),
)
GUIDED_ANGLES = ("phi", "psi")
"""The angles guidance moves (bond angles and omega keep the model's values)."""
COMMANDS = {
    "sample": (
        Option("num", int, 8, "number of backbones", low=1, high=100_000),
        Option("length", int, None, f"residues (default {SAMPLE_LENGTH})", MIN_LENGTH, MAX_LENGTH),
        NOISE_SCALE,
        *GUIDANCE,
    ),
    "evaluate": (
        Option("num", int, None, "samples (default: the run's eval_num)", low=1, high=100_000),
        NOISE_SCALE,
        *GUIDANCE,
    ),
}


def _generate(key, fn, schedule, mask, offset, noise_scale):
    angles = torus_ddpm_sample(
        key, fn, schedule, (*mask.shape, NUM_ANGLES), mask=mask, noise_scale=noise_scale
    )
    return with_oxygen(backbone_from_internal(wrap(angles + offset[None, None])))


_generate_jit = jax.jit(_generate)


def guidance_settings(opts: SimpleNamespace) -> dict[str, Any]:
    """The guidance options of a command as a JSON-ready dict (all weights 0: unguided)."""
    return {
        "clash_weight": float(getattr(opts, "clash_guidance", 0.0) or 0.0),
        "rg_weight": float(getattr(opts, "rg_guidance", 0.0) or 0.0),
        "guide_from": float(getattr(opts, "guide_from", 1.0)),
        "max_shift": float(getattr(opts, "guide_clip", 1.0)),
        "clash_margin": CLASH_MARGIN,
        "rg_target": f"{RG_PREFACTOR} * L^{RG_EXPONENT}",
        "angles": list(GUIDED_ANGLES),
    }


def guided_denoiser(run: LoadedRun, schedule: Any, guidance: dict[str, Any] | None) -> Any:
    """The run's EMA denoiser, wrapped by :func:`~protgen_jax.diffusion.torus.torus_energy_guidance`
    with the structure potentials of :func:`~protgen_jax.structure.potentials.angle_energy` (on the
    run's un-centred angles, differentiable in ``GUIDED_ANGLES`` only) when a weight is positive."""
    fn = denoiser(run.model, run.params)
    if guidance is None or (guidance["clash_weight"] <= 0 and guidance["rg_weight"] <= 0):
        return fn
    channels = np.isin(ANGLE_NAMES, GUIDED_ANGLES)
    energy = angle_energy(
        jnp.asarray(run.data.offset), guidance["clash_weight"], guidance["rg_weight"], channels
    )
    return torus_energy_guidance(
        fn, energy, schedule, 1.0, guidance["guide_from"], guidance["max_shift"]
    )


def sample_backbones(
    key: jax.Array,
    run: LoadedRun,
    lengths: list[int],
    noise_scale: float,
    width: int | None = None,
    guidance: dict[str, Any] | None = None,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """Backbones ``[L_i, 4, 3]`` (N, CA, C, O in Å) of the given lengths, in chunks of the run's
    ``sample_batch`` padded to ``width`` (default the longest length) so that every chunk is one
    compiled program; ``guidance`` (:func:`guidance_settings`) steers the sampler by the structure
    potentials (:func:`guided_denoiser`). Returns them and ``{"compile_seconds", "sampling_seconds"}``
    (sampling: the runs of the compiled program, all chunks)."""
    config: FoldingDiffConfig = run.config
    schedule = make_schedule(config)
    width = max(lengths) if width is None else width
    batch = min(config.sample_batch, len(lengths))
    fn = guided_denoiser(run, schedule, guidance)
    offset = jnp.asarray(run.data.offset)
    chunks = [lengths[i : i + batch] for i in range(0, len(lengths), batch)]
    masks = [np.arange(width)[None] < np.asarray(c + [c[-1]] * (batch - len(c)))[:, None]
             for c in chunks]  # fmt: skip
    scale = jnp.asarray(noise_scale, jnp.float32)
    started = time.perf_counter()
    compiled = _generate_jit.lower(key, fn, schedule, masks[0], offset, scale).compile()
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    out: list[np.ndarray] = []
    for i, (chunk, mask) in enumerate(zip(chunks, masks, strict=True)):
        atoms = np.asarray(compiled(jax.random.fold_in(key, i), fn, schedule, mask, offset, scale))
        out.extend(atoms[j, :n] for j, n in enumerate(chunk))
    return out, {
        "compile_seconds": compile_seconds,
        "sampling_seconds": time.perf_counter() - started,
    }


def _noise_scale(opts: SimpleNamespace, config: FoldingDiffConfig) -> float:
    return config.sample_noise_scale if opts.noise_scale is None else float(opts.noise_scale)


def sample(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Write ``num`` backbones of ``length`` residues as N-CA-C-O PDB files into ``opts.out``."""
    length = SAMPLE_LENGTH if opts.length is None else opts.length
    noise_scale = _noise_scale(opts, run.config)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    guidance = guidance_settings(opts)
    samples, timing = sample_backbones(
        keys.named(key, "backbones"), run, [length] * opts.num, noise_scale, None, guidance
    )
    for i, x in enumerate(samples):
        write_backbone_pdb(out / f"sample_{i:04d}.pdb", x)
    chains = [SimpleNamespace(backbone=x[:, :3], ca=x[:, 1], breaks=()) for x in samples]
    summary = {
        "out": str(out),
        "num": opts.num,
        "length": length,
        "noise_scale": noise_scale,
        "guidance": guidance,
        "steps": run.config.timesteps,
        **timing,
        "geometry": geometry_report(chains)["samples"],
        "backbone": backbone_report(chains)["samples"],
    }
    save_json_atomic(out / "summary.json", summary)
    return summary


def _nearest(lengths: np.ndarray, length: int, used: set[int]) -> int:
    order = np.argsort(np.abs(lengths - length), kind="stable")
    return int(next(i for i in order if int(i) not in used))


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Samples, held-out natural chains and the random-torsion floor by the same reports (module
    docstring); the JSON and the plots beside it."""
    config: FoldingDiffConfig = run.config
    out = Path(opts.out)
    num = config.eval_num if opts.num is None else opts.num
    noise_scale = _noise_scale(opts, config)
    started = time.perf_counter()
    lo, hi = config.eval_min_length, config.eval_max_length
    reference = [c for c in run.data.holdout.chains() if lo <= len(c.ca) <= hi]
    if len(reference) < 2:
        reference = run.data.holdout.chains()  # too few in range: all held-out chains
    lengths = keys.numpy_rng(keys.named(key, "lengths")).integers(lo, hi + 1, num).tolist()
    guidance = guidance_settings(opts)
    atoms, timing = sample_backbones(
        keys.named(key, "backbones"), run, lengths, noise_scale, hi, guidance
    )
    samples = [SimpleNamespace(backbone=x[:, :3], ca=x[:, 1], breaks=()) for x in atoms]
    rng = keys.numpy_rng(keys.named(key, "random_walks"))
    walk_atoms = [np.asarray(backbone_from_internal(random_internal(rng, n))) for n in lengths]
    walks = [SimpleNamespace(backbone=x, ca=x[:, 1], breaks=()) for x in walk_atoms]

    ca_ref, ca_model, ca_walk = (geometry_stats(s) for s in (reference, samples, walks))
    bb_ref, bb_model, bb_walk = (backbone_stats(s) for s in (reference, samples, walks))
    ca_model_report = geometry_report(ca_model, ca_ref)
    ca_walk_report = geometry_report(ca_walk, ca_ref)
    bb_model_report = backbone_report(bb_model, bb_ref)
    bb_walk_report = backbone_report(bb_walk, bb_ref)
    model, natural = ca_model_report["samples"], ca_model_report["reference"]
    bb_model_s, bb_natural = bb_model_report["samples"], bb_model_report["reference"]
    report: dict[str, Any] = {
        "num_samples": num,
        "sample_lengths": [lo, hi],
        "sampler": f"wrapped ddpm T={config.timesteps}, noise scale {noise_scale}",
        "guidance": guidance,
        "num_reference": len(reference),
        "reference_lengths": [
            int(min(len(c.ca) for c in reference)),
            int(max(len(c.ca) for c in reference)),
        ],  # fmt: skip
        "secondary_structure_method": (
            "helix/strand: P-SEA on CA (biotite annotate_sse, as the C-alpha report); "
            "phi_psi_*: runs of residues in the helix / beta Ramachandran boxes"
        ),
        "ca": {
            "natural": natural,
            "model": model,
            "random_walk": ca_walk_report["samples"],
            "model_vs_natural": ca_model_report["distances"],
            "random_walk_vs_natural": ca_walk_report["distances"],
            "gap_closed": gap_closed(ca_model_report["distances"], ca_walk_report["distances"]),
        },
        "backbone": {
            "natural": bb_natural,
            "model": bb_model_s,
            "random_walk": bb_walk_report["samples"],
            "model_vs_natural": bb_model_report["distances"],
            "random_walk_vs_natural": bb_walk_report["distances"],
            "gap_closed": gap_closed(bb_model_report["distances"], bb_walk_report["distances"]),
        },
        "targets": {
            "ca_bond_fraction>=0.95": model["bond_fraction"] >= 0.95,
            "clash_rate<0.05": model["clash_rate"] < 0.05,
            "helix_within_10_points": abs(model["helix_fraction"] - natural["helix_fraction"])
            <= 0.10,
            "strand_within_10_points": abs(model["strand_fraction"] - natural["strand_fraction"])
            <= 0.10,
            "rama_populated_within_10_points": abs(
                bb_model_s["rama_populated_fraction"] - bb_natural["rama_populated_fraction"]
            )
            <= 0.10,
        },
        "sampling": {"num": num, "width": hi, "batch": min(config.sample_batch, num), **timing},
    }
    stem = out.with_suffix("")
    plot_geometry(ca_model, ca_ref, Path(f"{stem}_geometry.png"))
    plot_ramachandran(
        {"natural (held out)": bb_ref, "samples": bb_model, "random torsions": bb_walk},
        Path(f"{stem}_ramachandran.png"),
    )
    ref_lengths = np.array([len(c.ca) for c in reference])
    picks, used = [], set()
    for i in range(min(4, num)):
        j = _nearest(ref_lengths, len(samples[i].ca), used) if len(used) < len(reference) else 0
        used.add(j)
        picks.append(j)
    panels = [(f"sample {i} (L={len(samples[i].ca)})", samples[i].ca) for i in range(len(picks))]
    panels += [(f"natural L={ref_lengths[j]}", reference[j].ca) for j in picks]
    plot_contact_maps(panels, Path(f"{stem}_contacts.png"))
    for i, x in enumerate(atoms[:16]):
        write_backbone_pdb(Path(f"{stem}_samples") / f"sample_{i:04d}.pdb", x)
    report["seconds"] = time.perf_counter() - started
    save_json_atomic(out, report)
    return report


class FoldingDiff(FoldingDiffRecipe):
    """FoldingDiff: training hooks (:class:`FoldingDiffRecipe`) and the commands of this module."""

    commands = COMMANDS
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        """sample: a folder of ``sample_*.pdb`` and ``summary.json``; evaluate: the JSON, three
        plots and ``<stem>_samples/`` beside it."""
        if command == "sample":
            return OutputPlan(True, [out / "summary.json"], [out])
        stem = str(out.with_suffix(""))
        files = [out] + [
            Path(f"{stem}_{name}.png") for name in ("geometry", "ramachandran", "contacts")
        ]
        return OutputPlan(False, files, [Path(f"{stem}_samples")])


RECIPE = FoldingDiff()
