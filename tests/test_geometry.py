"""Tests for protgen_jax.structure.geometry and protgen_jax.structure.frames."""

import json
from pathlib import Path

import biotite.structure as struc
import jax
import numpy as np
import pytest

from protgen_jax.data.structures import Chain, load_folder, split_holdout
from protgen_jax.structure.frames import apply_rotation, random_rotation, random_rotation_np
from protgen_jax.structure.geometry import (
    bond_angles,
    ca_distances,
    circular_wasserstein_1,
    clash_counts,
    dihedral_angles,
    fit_rg_power_law,
    geometry_report,
    geometry_stats,
    kabsch_rmsd,
    plot_geometry,
    radius_of_gyration,
    random_walk_backbone,
    sse_labels,
    wasserstein_1,
)


def ideal_helix(length: int, radius=2.3, rise=1.5, twist=100.0) -> np.ndarray:
    """CA trace of an ideal right-handed alpha helix, [L, 3] in Å."""
    i = np.arange(length)
    angle = np.radians(twist * i)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), rise * i], axis=-1)


@pytest.fixture(scope="module")
def natural(shared_data: Path) -> tuple[list[Chain], list[Chain]]:
    chains, skipped = load_folder(shared_data / "structures" / "pdb", progress=False)
    assert not skipped
    return split_holdout(chains, fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def natural_stats(natural):
    train, holdout = natural
    return geometry_stats(train), geometry_stats(holdout)


def test_ideal_helix_geometry():
    helix = ideal_helix(30)
    chord = 2 * 2.3 * np.sin(np.radians(50.0))
    np.testing.assert_allclose(ca_distances(helix), np.hypot(chord, 1.5), rtol=1e-9)
    assert abs(ca_distances(helix).mean() - 3.8) < 0.05
    assert abs(bond_angles(helix).mean() - 91.0) < 1.5
    assert abs(dihedral_angles(helix).mean() - 50.0) < 2.0  # right-handed: positive
    assert abs(dihedral_angles(helix[:, [1, 0, 2]]).mean() + 50.0) < 2.0  # mirror image
    labels = sse_labels(helix)
    assert labels.shape == (30,) and np.mean(labels == "a") > 0.9


def test_angles_match_biotite_on_random_coordinates():
    ca = np.random.default_rng(0).normal(0.0, 4.0, (20, 3))
    expected_angle = np.degrees(struc.angle(ca[:-2], ca[1:-1], ca[2:]))
    expected_dihedral = np.degrees(struc.dihedral(ca[:-3], ca[1:-2], ca[2:-1], ca[3:]))
    np.testing.assert_allclose(bond_angles(ca), expected_angle, atol=1e-3)
    np.testing.assert_allclose(dihedral_angles(ca), expected_dihedral, atol=1e-3)


def test_breaks_are_skipped():
    ca = ideal_helix(12)
    ca[6:] += np.array([20.0, 0.0, 0.0])  # gap between residues 5 and 6
    breaks = np.array([5])
    assert len(ca_distances(ca)) == 11
    np.testing.assert_allclose(ca_distances(ca, breaks), ca_distances(ideal_helix(12))[:10])
    assert len(bond_angles(ca, breaks)) == 10 - 2  # triples starting at 4 and 5 span the gap
    assert len(dihedral_angles(ca, breaks)) == 9 - 3
    np.testing.assert_allclose(dihedral_angles(ca, breaks), 50.0, atol=2.0)
    assert sse_labels(ca, breaks).shape == (12,)


def test_clash_counts_separation():
    ca = np.array([[0.0, 0, 0], [3.8, 0, 0], [1.0, 1.0, 0], [5.0, 5.0, 5.0], [0.5, 0, 2.0]])
    # (0, 2) is 1.4 Å apart but |i - j| = 2; (0, 4) is 2.06 Å apart with |i - j| = 4.
    assert clash_counts(ca) == (1, 3)  # eligible pairs: (0, 3), (0, 4), (1, 4)
    assert clash_counts(ca, min_separation=2) == (3, 6)


def test_radius_of_gyration_and_power_law():
    ca = np.random.default_rng(1).normal(size=(30, 3))
    pairwise = np.sum((ca[:, None] - ca[None]) ** 2, axis=-1)
    np.testing.assert_allclose(radius_of_gyration(ca), np.sqrt(pairwise.sum() / (2 * 30**2)))
    lengths = np.array([40, 80, 160, 250])
    a, nu = fit_rg_power_law(lengths, 2.5 * lengths**0.38)
    np.testing.assert_allclose([a, nu], [2.5, 0.38], rtol=1e-9)


def test_natural_rg_exponent(natural):
    train, holdout = natural
    chains = train + holdout
    _, nu = fit_rg_power_law([c.length for c in chains], [radius_of_gyration(c.ca) for c in chains])
    assert 0.3 <= nu <= 0.45


def test_wasserstein_distances():
    rng = np.random.default_rng(2)
    a = rng.normal(size=500)
    np.testing.assert_allclose(wasserstein_1(a, a + 0.7), 0.7, rtol=1e-9)
    assert circular_wasserstein_1([179.0], [-179.0]) == pytest.approx(2.0)
    assert wasserstein_1([179.0], [-179.0]) == pytest.approx(358.0)
    # Against brute force: min over c of the integral of |F_a - F_b - c| on a fine grid.
    x, y = rng.uniform(-180, 180, 40), rng.vonmises(1.0, 2.0, 60) * 180 / np.pi
    grid = np.linspace(0.0, 360.0, 36001)[:-1] + 0.005
    diff = np.mean(np.mod(x, 360)[None] <= grid[:, None], axis=1) - np.mean(
        np.mod(y, 360)[None] <= grid[:, None], axis=1
    )
    brute = min(np.sum(np.abs(diff - c)) * 0.01 for c in np.linspace(-1, 1, 2001))
    assert circular_wasserstein_1(x, y) == pytest.approx(brute, abs=0.05)
    assert circular_wasserstein_1(x + 90.0, y + 90.0) == pytest.approx(brute, abs=0.05)


def _kabsch_reference(a: np.ndarray, b: np.ndarray) -> float:
    a0, b0 = a - a.mean(axis=0), b - b.mean(axis=0)
    u, _, vt = np.linalg.svd(b0.T @ a0)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(np.mean(np.sum((b0 @ rot - a0) ** 2, axis=-1))))


def test_kabsch_rmsd():
    rng = np.random.default_rng(3)
    a = ideal_helix(20)
    rot = random_rotation_np(rng, 1)[0].astype(np.float64)
    moved = a @ rot.T + np.array([5.0, -3.0, 10.0])
    assert kabsch_rmsd(a, moved) < 1e-4  # float32 rotation
    assert kabsch_rmsd(a, a * np.array([-1.0, 1.0, 1.0])) > 1.0  # a mirror image is not a rotation
    mask = np.arange(20) < 8
    noisy = moved.copy()
    noisy[~mask] += rng.normal(0.0, 3.0, (12, 3))
    assert kabsch_rmsd(a, noisy, mask) < 1e-4
    assert kabsch_rmsd(a, noisy) > 1.0
    b = rng.normal(size=(20, 3))
    np.testing.assert_allclose(kabsch_rmsd(a, b), _kabsch_reference(a, b), rtol=1e-6)


def test_random_rotations_are_uniform_rotations():
    num = 4000
    for rot in (
        random_rotation_np(np.random.default_rng(4), num),
        random_rotation(jax.random.key(4), num),
    ):
        rot = np.asarray(rot, dtype=np.float64)
        assert rot.shape == (num, 3, 3)
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
        np.testing.assert_allclose(
            rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5
        )
        # Haar on SO(3): every entry has mean 0 and variance 1/3 (so sd of the mean is sqrt(1/(3N))).
        np.testing.assert_allclose(rot.mean(axis=0), 0.0, atol=5 * np.sqrt(1 / (3 * num)))
        # Var(R_ij^2) = E[R^4] - 1/9 = 1/5 - 1/9 for a coordinate of a uniform unit vector.
        np.testing.assert_allclose(
            (rot**2).mean(axis=0), 1 / 3, atol=5 * np.sqrt((1 / 5 - 1 / 9) / num)
        )


def test_apply_rotation_preserves_distances():
    coords = np.random.default_rng(5).normal(size=(2, 7, 3)).astype(np.float32)
    rot = random_rotation(jax.random.key(5), 2)
    rotated = np.asarray(jax.jit(apply_rotation)(rot, coords))
    np.testing.assert_allclose(
        rotated, np.einsum("bij,blj->bli", np.asarray(rot), coords), atol=1e-5
    )
    dist = np.linalg.norm(coords[:, :, None] - coords[:, None], axis=-1)
    new_dist = np.linalg.norm(rotated[:, :, None] - rotated[:, None], axis=-1)
    np.testing.assert_allclose(new_dist, dist, atol=1e-4)


def test_random_walk_vs_natural(natural_stats):
    train_stats, holdout_stats = natural_stats
    rng = np.random.default_rng(6)
    walks = [random_walk_backbone(rng, length) for length in (60, 80, 100, 120, 150, 200) * 3]
    np.testing.assert_allclose(ca_distances(walks[0]), 3.8, rtol=1e-5)
    report = geometry_report(walks, train_stats)
    held = geometry_report(holdout_stats, train_stats)
    assert held["samples"]["bond_fraction"] > 0.95
    assert held["samples"]["clash_rate"] < 0.1
    assert report["samples"]["clash_rate"] > 0.5
    assert report["samples"]["helix_fraction"] < 0.05 < held["samples"]["helix_fraction"]
    for key in ("angle_w1", "dihedral_w1", "rg_ratio_w1", "clash_rate_diff", "helix_fraction_diff"):
        assert report["distances"][key] > 2 * held["distances"][key], key
    assert abs(held["distances"]["rg_log_ratio_mean"]) < 0.05  # held-out chains follow the fit
    json.dumps(report)


def test_report_of_reference_against_itself(natural_stats):
    train_stats, _ = natural_stats
    report = geometry_report(train_stats, train_stats)
    assert report["samples"] == report["reference"]
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in report["distances"].values())
    assert 0.3 <= report["reference"]["rg_nu"] <= 0.45
    assert set(geometry_report(train_stats)) == {"samples"}


def test_plot_geometry_writes_png(natural_stats, tmp_path: Path):
    train_stats, _ = natural_stats
    walks = [random_walk_backbone(np.random.default_rng(7), n) for n in (50, 90)]
    path = tmp_path / "plots" / "geometry.png"
    plot_geometry(walks, train_stats, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
