"""Backbones: random rotations, zero-COM noise, sampling, derived atoms (O, virtual CB), internal
coordinates and NeRF, guidance potentials (clashes, radius of gyration), PDB writing and geometry metrics
(C-alpha and full backbone)."""

from protgen_jax.structure.atoms import nerf_place, place_oxygen, virtual_cb, with_oxygen
from protgen_jax.structure.backbone_geometry import backbone_report, backbone_stats
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
from protgen_jax.structure.internal import (
    ANGLE_NAMES,
    backbone_from_internal,
    internal_coordinates,
    random_internal,
)
from protgen_jax.structure.pdb_io import write_backbone_pdb, write_ca_pdb, write_trajectory_pdb
from protgen_jax.structure.potentials import angle_energy, clash_energy, rg_energy
from protgen_jax.structure.sampling import sample_backbones

__all__ = [
    "ANGLE_NAMES",
    "angle_energy",
    "clash_energy",
    "rg_energy",
    "backbone_from_internal",
    "backbone_report",
    "backbone_stats",
    "internal_coordinates",
    "random_internal",
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
    "nerf_place",
    "place_oxygen",
    "plot_geometry",
    "radius_of_gyration",
    "random_rotation",
    "random_rotation_np",
    "random_walk_backbone",
    "sample_backbones",
    "sse_labels",
    "virtual_cb",
    "with_oxygen",
    "wasserstein_1",
    "write_backbone_pdb",
    "write_ca_pdb",
    "write_trajectory_pdb",
]
