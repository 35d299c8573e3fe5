"""Full-backbone atoms: N/CA/C read from files, O and virtual C-beta derived, N-CA-C-O PDB round trip."""

from pathlib import Path

import biotite.structure as struc
import jax
import numpy as np
from biotite.structure.io import pdb

from protgen_jax.data.structures import load_chain
from protgen_jax.structure import nerf_place, place_oxygen, virtual_cb, with_oxygen
from protgen_jax.structure.geometry import dihedral_angles
from protgen_jax.structure.pdb_io import write_backbone_pdb


def _file_atoms(path: Path, name: str) -> np.ndarray:
    atoms = pdb.PDBFile.read(str(path)).get_structure(model=1)
    atoms = atoms[struc.filter_amino_acids(atoms) & (atoms.atom_name == name)]
    return atoms[atoms.chain_id == atoms.chain_id[0]].coord


def test_backbone_atoms_read_and_bonded(shared_data: Path):
    path = shared_data / "structures_cgdms" / "pdb" / "1AHO_A.pdb"
    chain = load_chain(path, min_length=20)
    assert chain.backbone.shape == (64, 3, 3) and chain.backbone.dtype == np.float32
    np.testing.assert_array_equal(chain.backbone[:, 0], _file_atoms(path, "N"))
    np.testing.assert_array_equal(chain.backbone[:, 1], chain.ca)
    np.testing.assert_array_equal(chain.backbone[:, 2], _file_atoms(path, "C"))
    peptide = np.linalg.norm(chain.backbone[1:, 0] - chain.backbone[:-1, 2], axis=-1)
    assert np.all(np.abs(peptide - 1.33) < 0.05)


def test_missing_backbone_atoms_are_nan(shared_data: Path):
    # 1H7M_A: a terminal residue with only N (no CA) is skipped; every kept residue has its N and C.
    chain = load_chain(shared_data / "structures" / "pdb" / "1H7M_A.pdb")
    assert chain.backbone.shape == (chain.length, 3, 3)
    assert np.isfinite(chain.backbone).all()


def test_oxygen_matches_deposited_carbonyls(shared_data: Path):
    path = shared_data / "structures" / "pdb" / "1A0F_A.pdb"
    chain = load_chain(path)
    placed = np.asarray(place_oxygen(chain.backbone))
    error = np.linalg.norm(placed - _file_atoms(path, "O")[: chain.length], axis=-1)
    assert np.median(error[:-1]) < 0.1 and np.percentile(error[:-1], 99) < 0.3
    assert np.allclose(np.linalg.norm(placed - chain.backbone[:, 2], axis=-1), 1.231, atol=1e-4)


def test_virtual_cb_is_tetrahedral_on_ideal_geometry():
    n = np.array([1.458, 0.0, 0.0])
    ca = np.zeros(3)
    angle = np.deg2rad(111.0)
    c = 1.525 * np.array([np.cos(angle), np.sin(angle), 0.0])
    cb = np.asarray(virtual_cb(np.stack([n, ca, c])[None]))[0]
    assert abs(np.linalg.norm(cb - ca) - 1.52) < 0.03
    for other in (n, c):
        cos = np.dot(cb - ca, other - ca) / np.linalg.norm(cb - ca) / np.linalg.norm(other - ca)
        assert abs(np.degrees(np.arccos(cos)) - 110.0) < 2.0
    # L-amino acids: the improper dihedral N-CA-C-CB is positive (about +123 degrees).
    chi = float(dihedral_angles(np.stack([n, ca, c, cb]))[0])
    assert 115 < abs(chi) < 130


def test_nerf_place_reaches_requested_internal_coordinates():
    a, b, c = np.array([0.0, 1.0, 0.0]), np.zeros(3), np.array([1.5, 0.0, 0.0])
    for torsion in (-2.0, 0.3, np.pi):
        d = np.asarray(nerf_place(a, b, c, 1.33, np.deg2rad(116.0), torsion))
        assert abs(np.linalg.norm(d - c) - 1.33) < 1e-5
        cos = np.dot(b - c, d - c) / np.linalg.norm(b - c) / np.linalg.norm(d - c)
        assert abs(np.degrees(np.arccos(cos)) - 116.0) < 1e-3
        got = np.deg2rad(float(dihedral_angles(np.stack([a, b, c, d]))[0]))
        assert abs(np.angle(np.exp(1j * (got - torsion)))) < 1e-4
    batched = jax.vmap(lambda t: nerf_place(a, b, c, 1.33, 2.0, t))(np.linspace(-3, 3, 4))
    assert batched.shape == (4, 3)


def test_write_backbone_pdb_round_trip(shared_data: Path, tmp_path: Path):
    chain = load_chain(shared_data / "structures_cgdms" / "pdb" / "1AHO_A.pdb", min_length=20)
    out = tmp_path / "bb.pdb"
    write_backbone_pdb(out, with_oxygen(chain.backbone), chain.sequence)
    back = load_chain(out, min_length=20)
    assert back.sequence == chain.sequence
    np.testing.assert_allclose(back.backbone, chain.backbone, atol=1e-3)
    atoms = pdb.PDBFile.read(str(out)).get_structure(model=1)
    assert atoms.atom_name[:4].tolist() == ["N", "CA", "C", "O"]
    assert set(atoms.element.tolist()) == {"N", "C", "O"}
