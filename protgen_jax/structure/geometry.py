"""Host-side (NumPy) geometry of C-alpha backbones and sample-vs-natural comparison.

A backbone is either an [L, 3] array of CA coordinates in Å (a generated sample: no breaks) or an object
with `.ca` [L, 3] and `.breaks` (indices i where the chain is broken between residues i and i + 1, e.g.
`protgen_jax.data.structures.Chain`). Bond, angle and dihedral measures skip every tuple that spans a break,
so natural chains with missing segments are not penalised for the gap; generated samples have no breaks,
so a sample with a torn chain is.

Measures (per backbone, then pooled over a set):
  - CA-CA virtual bond d_i = |x_{i+1} - x_i| and the fraction with |d_i - 3.8| <= 0.2 Å (trans peptides);
  - virtual bond angle theta_i = angle(x_i, x_{i+1}, x_{i+2}) in degrees, [0, 180];
  - virtual dihedral phi_i = dihedral(x_i, ..., x_{i+3}) in degrees, (-180, 180] (helix ~ +50, strand ~ -170);
  - steric clashes: pairs with |i - j| >= 3 and |x_i - x_j| < 3.0 Å. Pairs with |i - j| = 2 are excluded
    because their distance is fixed by the bond angle (d = 2 * 3.8 * sin(theta / 2)), which the angle
    histogram already measures; |i - j| >= 3 pairs depend on the dihedral and long-range packing, which is
    what a clash is. Two rates: `clash_rate`, the fraction of structures with at least one clashing pair,
    and `clash_pair_rate`, clashing pairs / eligible pairs pooled over the set. In the 263 shared natural
    chains one structure has such a pair (2.8 Å); their closest |i - j| >= 3 pairs are otherwise >= 3.1 Å.
  - radius of gyration Rg = sqrt(mean_l |x_l - mean(x)|^2) and the power law Rg = a L^nu fitted by least
    squares in log-log space (natural globular chains: nu ~ 0.4, a ~ 2.1 Å on the shared data);
  - secondary structure fractions from biotite's `annotate_sse` (P-SEA, which needs only CA atoms).
Distances between sample and reference distributions are 1-Wasserstein distances, circular for dihedrals.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import biotite.structure as struc
import numpy as np
import scipy.stats

__all__ = [
    "gap_closed",
    "BOND_LENGTH",
    "BOND_TOLERANCE",
    "CLASH_DISTANCE",
    "CLASH_MIN_SEPARATION",
    "GeometryStats",
    "bond_angles",
    "ca_distances",
    "circular_wasserstein_1",
    "clash_counts",
    "dihedral_angles",
    "fit_rg_power_law",
    "geometry_report",
    "geometry_stats",
    "kabsch_rmsd",
    "plot_geometry",
    "radius_of_gyration",
    "random_walk_backbone",
    "sse_labels",
    "wasserstein_1",
]

BOND_LENGTH = 3.8
"""Å, the CA-CA distance of a trans peptide bond."""
BOND_TOLERANCE = 0.2
"""Å; a virtual bond counts as ideal when |d - BOND_LENGTH| <= BOND_TOLERANCE."""
CLASH_DISTANCE = 3.0
"""Å; non-adjacent CA pairs closer than this clash."""
CLASH_MIN_SEPARATION = 3
"""Smallest sequence separation |i - j| of a pair checked for clashes (see the module docstring)."""

Backbone = Any  # an [L, 3] array, or an object with `.ca` [L, 3] and `.breaks` [N_breaks]


def _as_trace(item: Backbone) -> tuple[np.ndarray, np.ndarray]:
    """(ca [L, 3] float64, breaks [N_breaks] int) of an array or a Chain-like object."""
    if hasattr(item, "ca"):
        ca, breaks = item.ca, getattr(item, "breaks", ())
    else:
        ca, breaks = item, ()
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[-1] != 3:
        raise ValueError(f"a backbone must be [L, 3] coordinates, got shape {ca.shape}")
    if not np.isfinite(ca).all():
        raise ValueError("backbone coordinates contain NaN or inf")
    return ca, np.asarray(breaks, dtype=np.int64).reshape(-1)


def _unbroken(length: int, breaks: np.ndarray | None, span: int) -> np.ndarray:
    """[L - span] bool: True for windows i..i+span whose `span` bonds contain no break."""
    broken = np.zeros(max(length - 1, 0), dtype=np.int64)
    if breaks is not None and len(breaks):
        broken[np.asarray(breaks, dtype=np.int64)] = 1
    cumulative = np.concatenate([[0], np.cumsum(broken)])
    return (cumulative[span:] - cumulative[:-span]) == 0


def ca_distances(ca: np.ndarray, breaks: np.ndarray | None = None) -> np.ndarray:
    """Consecutive CA-CA distances d_i = |x_{i+1} - x_i|, skipping the bonds at `breaks`.

    Args:
      ca: [L, 3] coordinates in Å.
      breaks: indices i where residues i and i + 1 are not bonded.

    Returns:
      [L - 1 - N_breaks] distances in Å.
    """
    ca = np.asarray(ca, dtype=np.float64)
    dist = np.linalg.norm(ca[1:] - ca[:-1], axis=-1)
    return dist[_unbroken(len(ca), breaks, 1)]


def bond_angles(ca: np.ndarray, breaks: np.ndarray | None = None) -> np.ndarray:
    """Virtual bond angles theta_i = arccos(u . v / |u||v|), u = x_i - x_{i+1}, v = x_{i+2} - x_{i+1}.

    Args:
      ca: [L, 3] coordinates in Å.
      breaks: indices i where residues i and i + 1 are not bonded; triples spanning one are skipped.

    Returns:
      [N] angles in degrees, N <= L - 2.
    """
    ca = np.asarray(ca, dtype=np.float64)
    u = ca[:-2] - ca[1:-1]
    v = ca[2:] - ca[1:-1]
    cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return angles[_unbroken(len(ca), breaks, 2)]


def dihedral_angles(ca: np.ndarray, breaks: np.ndarray | None = None) -> np.ndarray:
    """Virtual dihedrals of (x_i, x_{i+1}, x_{i+2}, x_{i+3}).

    With b1 = x_{i+1} - x_i, b2 = x_{i+2} - x_{i+1}, b3 = x_{i+3} - x_{i+2}, n1 = b1 x b2, n2 = b2 x b3:
    phi = atan2(|b2| b1 . n2, n1 . n2), positive for a right-handed twist (alpha helix ~ +50 degrees).

    Args:
      ca: [L, 3] coordinates in Å.
      breaks: indices i where residues i and i + 1 are not bonded; quadruples spanning one are skipped.

    Returns:
      [N] dihedrals in degrees in (-180, 180], N <= L - 3.
    """
    ca = np.asarray(ca, dtype=np.float64)
    b1, b2, b3 = ca[1:-2] - ca[:-3], ca[2:-1] - ca[1:-2], ca[3:] - ca[2:-1]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n2, axis=-1)
    x = np.sum(n1 * n2, axis=-1)
    return np.degrees(np.arctan2(y, x))[_unbroken(len(ca), breaks, 3)]


def clash_counts(
    ca: np.ndarray,
    min_separation: int = CLASH_MIN_SEPARATION,
    threshold: float = CLASH_DISTANCE,
) -> tuple[int, int]:
    """Count CA pairs with |i - j| >= min_separation closer than `threshold`.

    Args:
      ca: [L, 3] coordinates in Å.
      min_separation: smallest sequence separation checked.
      threshold: clash distance in Å.

    Returns:
      (clashing pairs, eligible pairs).
    """
    ca = np.asarray(ca, dtype=np.float64)
    rows, cols = np.triu_indices(len(ca), k=min_separation)
    dist = np.linalg.norm(ca[rows] - ca[cols], axis=-1)
    return int(np.count_nonzero(dist < threshold)), int(len(rows))


def radius_of_gyration(ca: np.ndarray) -> float:
    """Rg = sqrt(1/L sum_l |x_l - mean(x)|^2) of [L, 3] coordinates, in their unit (Å)."""
    ca = np.asarray(ca, dtype=np.float64)
    return float(np.sqrt(np.mean(np.sum((ca - ca.mean(axis=0)) ** 2, axis=-1))))


def fit_rg_power_law(lengths: np.ndarray, rgs: np.ndarray) -> tuple[float, float]:
    """Fit Rg = a L^nu by least squares on log Rg = log a + nu log L.

    Args:
      lengths: [N] chain lengths (at least two distinct values).
      rgs: [N] radii of gyration.

    Returns:
      (a, nu).
    """
    log_l = np.log(np.asarray(lengths, dtype=np.float64))
    log_rg = np.log(np.asarray(rgs, dtype=np.float64))
    if log_l.shape != log_rg.shape or np.unique(log_l).size < 2:
        raise ValueError("fit_rg_power_law needs matching [N] arrays with >= 2 distinct lengths")
    nu, log_a = np.polyfit(log_l, log_rg, 1)
    return float(np.exp(log_a)), float(nu)


def sse_labels(ca: np.ndarray, breaks: np.ndarray | None = None) -> np.ndarray:
    """P-SEA secondary structure of a CA trace via `biotite.structure.annotate_sse`.

    The trace becomes an AtomArray of CA atoms of GLY residues numbered 1..L, with the numbering jumping
    by 2 after each break so that P-SEA treats the break as a discontinuity.

    Args:
      ca: [L, 3] coordinates in Å.
      breaks: indices i where residues i and i + 1 are not bonded.

    Returns:
      [L] labels: 'a' helix, 'b' strand, 'c' coil.
    """
    ca = np.asarray(ca, dtype=np.float32)
    res_id = np.arange(1, len(ca) + 1)
    if breaks is not None and len(breaks):
        res_id = res_id + np.cumsum(np.isin(np.arange(len(ca)) - 1, breaks))
    atoms = struc.AtomArray(len(ca))
    atoms.coord = ca
    atoms.chain_id[:] = "A"
    atoms.res_id[:] = res_id
    atoms.res_name[:] = "GLY"
    atoms.atom_name[:] = "CA"
    atoms.element[:] = "C"
    return struc.annotate_sse(atoms)


def wasserstein_1(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance between two empirical distributions on the line: int |F_a - F_b| dx."""
    return float(scipy.stats.wasserstein_distance(np.ravel(a), np.ravel(b)))


def circular_wasserstein_1(a: np.ndarray, b: np.ndarray, period: float = 360.0) -> float:
    """1-Wasserstein distance on a circle of circumference `period` (e.g. dihedrals in degrees).

    W1 = min_c int_0^P |F_a(x) - F_b(x) - c| dx, minimised by c = the weighted median of F_a - F_b
    (Rabin, Delon and Gousseau 2011). A distribution near +180 and one near -180 are close, unlike the
    line distance.

    Args:
      a: [N] samples (any real values; taken modulo `period`).
      b: [M] samples.
      period: circumference.

    Returns:
      The distance, in the unit of the samples.
    """
    a = np.sort(np.mod(np.ravel(a).astype(np.float64), period))
    b = np.sort(np.mod(np.ravel(b).astype(np.float64), period))
    if a.size == 0 or b.size == 0:
        raise ValueError("circular_wasserstein_1 needs non-empty samples")
    points = np.sort(np.concatenate([a, b]))
    diff = (
        np.searchsorted(a, points, side="right") / a.size
        - np.searchsorted(b, points, side="right") / b.size
    )
    # Interval [points[k], points[k+1]) carries diff[k]; the wrap-around interval carries F_a - F_b = 0.
    widths = np.append(np.diff(points), period - (points[-1] - points[0]))
    values = np.append(diff[:-1], 0.0)
    order = np.argsort(values)
    cumulative = np.cumsum(widths[order])
    median = values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
    return float(np.sum(widths * np.abs(values - median)))


def kabsch_rmsd(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RMSD after optimally superimposing `b` onto `a` (Kabsch, proper rotations only).

    RMSD = min_{R in SO(3), t} sqrt(1/|M| sum_{l in M} |a_l - (R b_l + t)|^2), over the residues M of
    `mask` (all if None); the superposition uses the same residues (e.g. a motif in motif scaffolding).
    Uses `biotite.structure.superimpose`.

    Args:
      a: [L, 3] reference coordinates.
      b: [L, 3] coordinates to superimpose.
      mask: [L] bool, residues to fit and score.

    Returns:
      The RMSD in the unit of the coordinates.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape[-1] != 3 or a.shape != b.shape:
        raise ValueError(f"kabsch_rmsd needs two [L, 3] arrays, got {a.shape} and {b.shape}")
    mask = np.ones(len(a), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (len(a),) or not mask.any():
        raise ValueError(f"mask must be a non-empty [L] bool array, got shape {mask.shape}")
    fitted, _ = struc.superimpose(a[mask], b[mask])
    return float(np.sqrt(np.mean(np.sum((a[mask] - fitted) ** 2, axis=-1))))


def random_walk_backbone(
    rng: np.random.Generator, length: int, bond_length: float = BOND_LENGTH
) -> np.ndarray:
    """A random-walk CA trace: x_0 = 0, x_{i+1} = x_i + bond_length * u_i with u_i uniform on the sphere.

    The floor for generated backbones: perfect bond lengths, but no angle/dihedral preference, clashes
    and no secondary structure.

    Args:
      rng: a NumPy random generator.
      length: number of residues L.
      bond_length: step in Å.

    Returns:
      [L, 3] float32 coordinates in Å, centred at the origin.
    """
    steps = rng.standard_normal((length - 1, 3))
    steps *= bond_length / np.linalg.norm(steps, axis=-1, keepdims=True)
    trace = np.concatenate([np.zeros((1, 3)), np.cumsum(steps, axis=0)])
    return (trace - trace.mean(axis=0)).astype(np.float32)


@dataclass(frozen=True)
class GeometryStats:
    """Raw geometry of a set of N backbones, pooled where noted.

    Attributes:
      bonds: pooled CA-CA distances (Å).
      angles: pooled virtual bond angles (degrees).
      dihedrals: pooled virtual dihedrals (degrees).
      lengths: [N] residues per backbone.
      rgs: [N] radii of gyration (Å).
      clashes: [N] clashing pairs per backbone.
      pairs: [N] eligible (|i - j| >= CLASH_MIN_SEPARATION) pairs per backbone.
      sse_counts: [N, 3] residues labelled helix, strand, coil by P-SEA.
    """

    bonds: np.ndarray
    angles: np.ndarray
    dihedrals: np.ndarray
    lengths: np.ndarray
    rgs: np.ndarray
    clashes: np.ndarray
    pairs: np.ndarray
    sse_counts: np.ndarray


def geometry_stats(backbones: Sequence[Backbone]) -> GeometryStats:
    """Measure every backbone of a set (see the module docstring); at least one backbone."""
    if len(backbones) == 0:
        raise ValueError("geometry_stats needs at least one backbone")
    bonds, angles, dihedrals, lengths, rgs, clashes, pairs, sse = ([] for _ in range(8))
    for item in backbones:
        ca, breaks = _as_trace(item)
        bonds.append(ca_distances(ca, breaks))
        angles.append(bond_angles(ca, breaks))
        dihedrals.append(dihedral_angles(ca, breaks))
        lengths.append(len(ca))
        rgs.append(radius_of_gyration(ca))
        n_clash, n_pairs = clash_counts(ca)
        clashes.append(n_clash)
        pairs.append(n_pairs)
        labels = sse_labels(ca, breaks)
        sse.append([np.count_nonzero(labels == code) for code in "abc"])
    return GeometryStats(
        bonds=np.concatenate(bonds),
        angles=np.concatenate(angles),
        dihedrals=np.concatenate(dihedrals),
        lengths=np.asarray(lengths),
        rgs=np.asarray(rgs),
        clashes=np.asarray(clashes),
        pairs=np.asarray(pairs),
        sse_counts=np.asarray(sse).reshape(-1, 3),
    )


def _stats(items: GeometryStats | Sequence[Backbone]) -> GeometryStats:
    return items if isinstance(items, GeometryStats) else geometry_stats(items)


def _summary(stats: GeometryStats) -> dict[str, float]:
    sse = stats.sse_counts.sum(axis=0) / max(stats.sse_counts.sum(), 1)
    if np.unique(stats.lengths).size >= 2:
        rg_a, rg_nu = fit_rg_power_law(stats.lengths, stats.rgs)
    else:
        rg_a, rg_nu = float("nan"), float("nan")
    return {
        "n_structures": float(len(stats.lengths)),
        "mean_length": float(stats.lengths.mean()),
        "bond_mean": float(stats.bonds.mean()),
        "bond_std": float(stats.bonds.std()),
        "bond_fraction": float(np.mean(np.abs(stats.bonds - BOND_LENGTH) <= BOND_TOLERANCE)),
        "angle_mean": float(stats.angles.mean()),
        "angle_std": float(stats.angles.std()),
        "clash_rate": float(np.mean(stats.clashes > 0)),
        "clash_pair_rate": float(stats.clashes.sum() / max(stats.pairs.sum(), 1)),
        "rg_mean": float(stats.rgs.mean()),
        "rg_a": rg_a,
        "rg_nu": rg_nu,
        "helix_fraction": float(sse[0]),
        "strand_fraction": float(sse[1]),
        "coil_fraction": float(sse[2]),
    }


def geometry_report(
    samples: GeometryStats | Sequence[Backbone],
    reference: GeometryStats | Sequence[Backbone] | None = None,
) -> dict[str, dict[str, float]]:
    """Summarise the geometry of samples and, given a reference (natural chains), compare them.

    Distances (keys of "distances"): `bond_w1`, `angle_w1` (1-Wasserstein, Å and degrees),
    `dihedral_w1` (circular W1, degrees), `rg_ratio_w1` (W1 between the Rg / (a L^nu) of both sets, with
    (a, nu) fitted on the reference, so lengths need not match), `rg_log_ratio_mean` (mean log of the
    samples' ratio: > 0 too extended, < 0 too compact), and absolute differences `*_diff` of the bond
    fraction, the clash rate and the helix / strand fractions.

    Args:
      samples: backbones (or their precomputed `geometry_stats`).
      reference: natural backbones (or their stats); pass precomputed stats to reuse them.

    Returns:
      {"samples": summary, "reference": summary, "distances": ...} of floats (JSON-ready); only
      "samples" when reference is None.
    """
    sample_stats = _stats(samples)
    report = {"samples": _summary(sample_stats)}
    if reference is None:
        return report
    ref_stats = _stats(reference)
    ref = _summary(ref_stats)
    report["reference"] = ref
    rg_a, rg_nu = fit_rg_power_law(ref_stats.lengths, ref_stats.rgs)
    sample_ratio = sample_stats.rgs / (rg_a * sample_stats.lengths.astype(np.float64) ** rg_nu)
    ref_ratio = ref_stats.rgs / (rg_a * ref_stats.lengths.astype(np.float64) ** rg_nu)
    report["distances"] = {
        "bond_w1": wasserstein_1(sample_stats.bonds, ref_stats.bonds),
        "angle_w1": wasserstein_1(sample_stats.angles, ref_stats.angles),
        "dihedral_w1": circular_wasserstein_1(sample_stats.dihedrals, ref_stats.dihedrals),
        "rg_ratio_w1": wasserstein_1(sample_ratio, ref_ratio),
        "rg_log_ratio_mean": float(np.mean(np.log(sample_ratio))),
        **{
            f"{key}_diff": abs(report["samples"][key] - ref[key])
            for key in ("bond_fraction", "clash_rate", "helix_fraction", "strand_fraction")
        },
    }
    return report


def gap_closed(model: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """Per distance key of ``geometry_report``: ``1 - |d_model| / |d_floor|`` (1 = like the natural
    chains, 0 = no closer than the floor, e.g. random walks; NaN when the floor's distance is 0)."""
    out = {}
    for key, value in model.items():
        base = abs(floor[key])
        out[key] = float(1.0 - abs(value) / base) if base > 0 else float("nan")
    return out


def plot_geometry(
    samples: GeometryStats | Sequence[Backbone],
    reference: GeometryStats | Sequence[Backbone],
    path: str | Path,
) -> None:
    """Save a 2x2 PNG of samples vs reference: bond length, bond angle and dihedral histograms (densities
    over shared bins) and Rg against L with the reference's fitted power law.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).

    Args:
      samples: backbones or their `geometry_stats`.
      reference: natural backbones or their stats.
      path: destination PNG; parent folders are created.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sample_stats, ref_stats = _stats(samples), _stats(reference)
    fig = Figure(figsize=(10, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    panels = (
        (axes[0, 0], "bonds", np.linspace(2.5, 5.0, 51), "CA-CA distance (Å)"),
        (axes[0, 1], "angles", np.linspace(0.0, 180.0, 61), "CA virtual bond angle (°)"),
        (axes[1, 0], "dihedrals", np.linspace(-180.0, 180.0, 73), "CA virtual dihedral (°)"),
    )
    for ax, field, bins, label in panels:
        for stats, name, color in ((ref_stats, "natural", "C0"), (sample_stats, "samples", "C1")):
            values = np.clip(getattr(stats, field), bins[0], bins[-1])
            ax.hist(values, bins=bins, density=True, histtype="step", color=color, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.legend()
    ax = axes[1, 1]
    ax.scatter(ref_stats.lengths, ref_stats.rgs, s=8, color="C0", label="natural")
    ax.scatter(sample_stats.lengths, sample_stats.rgs, s=8, color="C1", label="samples")
    if np.unique(ref_stats.lengths).size >= 2:
        rg_a, rg_nu = fit_rg_power_law(ref_stats.lengths, ref_stats.rgs)
        grid = np.linspace(ref_stats.lengths.min(), ref_stats.lengths.max(), 100)
        ax.plot(grid, rg_a * grid**rg_nu, color="C0", label=f"{rg_a:.2f} L^{rg_nu:.2f}")
    ax.set_xlabel("length L")
    ax.set_ylabel("radius of gyration (Å)")
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
