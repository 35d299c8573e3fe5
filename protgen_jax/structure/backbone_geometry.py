"""Host-side (NumPy) geometry of full N-CA-C backbones: bonds, bond angles, torsions, Ramachandran
regions, phi/psi secondary structure, and sample-vs-natural comparison; plots.

A backbone is an object with ``.backbone`` [L, 3, 3] (N, CA, C in Å; NaN for a missing atom) and
``.breaks`` (indices i where residues i and i + 1 are not bonded), or a bare [L, 3, 3] / [L, 4, 3] array (no
breaks; an O column is ignored). Every measure skips what spans a break or touches a missing atom
(:func:`protgen_jax.structure.internal.internal_coordinates`).

Measures (pooled over a set):
  - bond lengths N-CA, CA-C (within a residue) and C-N (peptide bond to the next residue), Å, and the
    fraction within ``BOND_LENGTH_TOLERANCE`` of Engh & Huber's values;
  - bond angles N-CA-C, CA-C-N, C-N-CA and the torsions phi, psi, omega, degrees;
  - Ramachandran: the fraction of residues with (phi, psi) in the populated regions ``RAMA_REGIONS``
    (boxes around the right-handed helix, the beta / polyproline basin and the left-handed helix; uniform
    random torsions fall in them 46% of the time, natural residues ~95%);
  - secondary structure from phi/psi ("DSSP-like" by torsions only, no hydrogen bonds): a residue is
    helix when it and its neighbours form a run of >= 4 residues in the helix box, strand when in a run of
    >= 3 in the beta box (``phi_psi_sse``).
Distances to the natural set are 1-Wasserstein (circular for torsions), in the unit of the measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protgen_jax.structure.geometry import circular_wasserstein_1, wasserstein_1
from protgen_jax.structure.internal import ANGLE_NAMES, BOND_LENGTHS, internal_coordinates

__all__ = [
    "BOND_LENGTH_TOLERANCE",
    "RAMA_REGIONS",
    "BackboneStats",
    "backbone_report",
    "backbone_stats",
    "phi_psi_sse",
    "plot_contact_maps",
    "plot_ramachandran",
    "rama_region",
]

BOND_LENGTH_TOLERANCE = 0.05
"""Å; a backbone bond counts as ideal within this distance of ``BOND_LENGTHS``."""

RAMA_REGIONS = {
    "alpha_R": ((-180.0, -20.0), (-120.0, 50.0)),
    "beta": ((-180.0, -40.0), (90.0, 180.0)),
    "beta_wrap": ((-180.0, -40.0), (-180.0, -150.0)),
    "alpha_L": ((20.0, 110.0), (-30.0, 100.0)),
}
"""(phi range, psi range) in degrees of each populated Ramachandran box (``beta_wrap``: the beta basin
across psi = +-180)."""


def rama_region(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """[N] int per residue: 0 alpha_R, 1 beta (either box), 2 alpha_L, -1 outside (degrees in)."""
    out = np.full(np.shape(phi), -1)
    for code, names in ((2, ("alpha_L",)), (1, ("beta", "beta_wrap")), (0, ("alpha_R",))):
        for name in names:
            (p0, p1), (s0, s1) = RAMA_REGIONS[name]
            out[(phi >= p0) & (phi <= p1) & (psi >= s0) & (psi <= s1)] = code
    return out


def _runs(flags: np.ndarray, min_run: int) -> np.ndarray:
    """[L] bool: True where ``flags`` is True inside a run of at least ``min_run`` Trues."""
    out = np.zeros_like(flags)
    start = None
    for i, f in enumerate(np.append(flags, False)):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= min_run:
                out[start:i] = True
            start = None
    return out


def phi_psi_sse(phi: np.ndarray, psi: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """[L] labels 'a' helix, 'b' strand, 'c' coil from torsions (module docstring); degrees in."""
    region = np.where(defined, rama_region(phi, psi), -1)
    helix = _runs(region == 0, 4)
    strand = _runs(region == 1, 3) & ~helix
    return np.where(helix, "a", np.where(strand, "b", "c"))


def _as_backbone(item: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(item, "backbone"):
        bb, breaks = item.backbone, getattr(item, "breaks", ())
    else:
        bb, breaks = item, ()
    bb = np.asarray(bb, np.float64)[:, :3]
    if bb.ndim != 3 or bb.shape[1:] != (3, 3):
        raise ValueError(f"a full backbone must be [L, 3 or 4, 3], got {bb.shape}")
    return bb, np.asarray(breaks, np.int64).reshape(-1)


@dataclass(frozen=True)
class BackboneStats:
    """Pooled measures of a set: ``bonds`` {name: Å}, ``angles`` {ANGLE_NAMES: degrees}, ``phi_psi``
    [N, 2] degrees of the residues with both torsions, ``region`` [N] their Ramachandran region,
    ``sse_counts`` [n, 3] phi/psi helix, strand, coil residues per backbone."""

    bonds: dict[str, np.ndarray]
    angles: dict[str, np.ndarray]
    phi_psi: np.ndarray
    region: np.ndarray
    sse_counts: np.ndarray


def backbone_stats(backbones: Sequence[Any]) -> BackboneStats:
    """Measure every backbone of a set (module docstring); at least one."""
    if len(backbones) == 0:
        raise ValueError("backbone_stats needs at least one backbone")
    bonds = {k: [] for k in BOND_LENGTHS}
    angles = {k: [] for k in ANGLE_NAMES}
    pairs, sse = [], []
    for item in backbones:
        bb, breaks = _as_backbone(item)
        n, ca, c = bb[:, 0], bb[:, 1], bb[:, 2]
        bonded = np.ones(len(bb) - 1, bool)
        bonded[breaks] = False
        for name, d in (
            ("n_ca", np.linalg.norm(ca - n, axis=-1)),
            ("ca_c", np.linalg.norm(c - ca, axis=-1)),
            ("c_n", np.linalg.norm(n[1:] - c[:-1], axis=-1)[bonded]),
        ):
            bonds[name].append(d[np.isfinite(d)])
        a, m = internal_coordinates(bb, breaks)
        deg = np.degrees(a.astype(np.float64))
        for j, name in enumerate(ANGLE_NAMES):
            angles[name].append(deg[m[:, j], j])
        both = m[:, 0] & m[:, 1]
        pairs.append(deg[both][:, :2])
        labels = phi_psi_sse(deg[:, 0], deg[:, 1], both)
        sse.append([np.count_nonzero(labels == code) for code in "abc"])
    phi_psi = np.concatenate(pairs).reshape(-1, 2)
    return BackboneStats(
        {k: np.concatenate(v) for k, v in bonds.items()},
        {k: np.concatenate(v) for k, v in angles.items()},
        phi_psi,
        rama_region(phi_psi[:, 0], phi_psi[:, 1]),
        np.asarray(sse).reshape(-1, 3),
    )


def _summary(stats: BackboneStats) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, values in stats.bonds.items():
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std())
        out[f"{name}_fraction"] = float(
            np.mean(np.abs(values - BOND_LENGTHS[name]) <= BOND_LENGTH_TOLERANCE)
        )
    for name in ("n_ca_c", "ca_c_n", "c_n_ca"):
        out[f"{name}_mean"] = float(stats.angles[name].mean())
        out[f"{name}_std"] = float(stats.angles[name].std())
    omega = stats.angles["omega"]
    out["omega_trans_fraction"] = float(np.mean(np.abs(omega) >= 150.0))
    region = stats.region
    out["rama_populated_fraction"] = float(np.mean(region >= 0))
    for code, name in ((0, "alpha_R"), (1, "beta"), (2, "alpha_L")):
        out[f"rama_{name}_fraction"] = float(np.mean(region == code))
    sse = stats.sse_counts.sum(axis=0) / max(stats.sse_counts.sum(), 1)
    out["phi_psi_helix_fraction"] = float(sse[0])
    out["phi_psi_strand_fraction"] = float(sse[1])
    out["phi_psi_coil_fraction"] = float(sse[2])
    return out


def backbone_report(
    samples: BackboneStats | Sequence[Any], reference: BackboneStats | Sequence[Any] | None = None
) -> dict[str, dict[str, float]]:
    """``{"samples": summary, "reference": summary, "distances": ...}`` (module docstring); distances:
    ``<bond>_w1`` (Å), ``<angle>_w1`` (degrees; circular for phi, psi, omega) and the absolute
    differences ``*_diff`` of the Ramachandran and phi/psi secondary-structure fractions."""
    s = samples if isinstance(samples, BackboneStats) else backbone_stats(samples)
    report = {"samples": _summary(s)}
    if reference is None:
        return report
    r = reference if isinstance(reference, BackboneStats) else backbone_stats(reference)
    report["reference"] = _summary(r)
    dist: dict[str, float] = {}
    for name in BOND_LENGTHS:
        dist[f"{name}_w1"] = wasserstein_1(s.bonds[name], r.bonds[name])
    for name in ANGLE_NAMES:
        w1 = circular_wasserstein_1 if name in ("phi", "psi", "omega") else wasserstein_1
        dist[f"{name}_w1"] = w1(s.angles[name], r.angles[name])
    for key in ("rama_populated_fraction", "phi_psi_helix_fraction", "phi_psi_strand_fraction"):
        dist[f"{key}_diff"] = abs(report["samples"][key] - report["reference"][key])
    report["distances"] = dist
    return report


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_ramachandran(panels: dict[str, BackboneStats], path: str | Path) -> None:
    """Save side-by-side (phi, psi) 2-D histograms (counts, log colour scale), one panel per named set,
    with the populated boxes."""
    from matplotlib.colors import LogNorm

    fig = _figure(4.2 * len(panels), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    bins = np.linspace(-180, 180, 73)
    for ax, (name, stats) in zip(axes, panels.items(), strict=True):
        ax.hist2d(*stats.phi_psi.T, bins=[bins, bins], cmap="Blues", norm=LogNorm(), cmin=1)
        for (p0, p1), (s0, s1) in RAMA_REGIONS.values():
            ax.plot([p0, p1, p1, p0, p0], [s0, s0, s1, s1, s0], color="C3", lw=0.8)
        populated = 100 * float(np.mean(stats.region >= 0))
        ax.set_title(f"{name}: {populated:.1f}% in populated regions")
        ax.set_xlabel("phi (°)")
        ax.set_ylabel("psi (°)")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def plot_contact_maps(
    rows: list[tuple[str, np.ndarray]], path: str | Path, cutoff: float = 8.0
) -> None:
    """Save CA contact maps (|CA_i - CA_j| < cutoff Å), one panel per ``(title, ca [L, 3])``, in two
    rows (the first half above the second: samples above natural chains of the same lengths)."""
    cols = max(1, (len(rows) + 1) // 2)
    fig = _figure(3.0 * cols, 6.2)
    axes = np.asarray(fig.subplots(2, cols)).reshape(2, cols)
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, (title, ca) in enumerate(rows):
        ax = axes[k // cols, k % cols]
        ca = np.asarray(ca, np.float64)
        d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
        ax.imshow(d < cutoff, cmap="Greys", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_on()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
