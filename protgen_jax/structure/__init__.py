"""Backbones: random rotations, zero-COM noise, sampling, C-alpha PDB writing and geometry metrics."""

from protgen_jax.structure.frames import apply_rotation, random_rotation, random_rotation_np
from protgen_jax.structure.geometry import (
    GeometryStats,
    bond_angles,
    ca_distances,
    circular_wasserstein_1,
    clash_counts,
    dihedral_angles,
    fit_rg_power_law,
    gap_closed,
    geometry_report,
    geometry_stats,
    kabsch_rmsd,
    plot_geometry,
    radius_of_gyration,
    random_walk_backbone,
    sse_labels,
    wasserstein_1,
)
from protgen_jax.structure.pdb_io import write_ca_pdb, write_trajectory_pdb
from protgen_jax.structure.sampling import sample_backbones

__all__ = [
    "GeometryStats",
    "apply_rotation",
    "bond_angles",
    "ca_distances",
    "circular_wasserstein_1",
    "clash_counts",
    "dihedral_angles",
    "fit_rg_power_law",
    "gap_closed",
    "geometry_report",
    "geometry_stats",
    "kabsch_rmsd",
    "plot_geometry",
    "radius_of_gyration",
    "random_rotation",
    "random_rotation_np",
    "random_walk_backbone",
    "sample_backbones",
    "sse_labels",
    "wasserstein_1",
    "write_ca_pdb",
    "write_trajectory_pdb",
]
