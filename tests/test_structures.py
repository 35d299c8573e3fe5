"""Tests for protgen_jax.data.structures (loading, splits, batches) and protgen_jax.structure.pdb_io."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from biotite.structure.io import pdb, pdbx

from protgen_jax.data.structures import (
    COORD_SCALE,
    Chain,
    ChainSet,
    bucket_for,
    center,
    load_chain,
    load_folder,
    split_holdout,
)
from protgen_jax.errors import DataError
from protgen_jax.structure.pdb_io import write_ca_pdb, write_trajectory_pdb


def _structures(shared_data: Path) -> Path:
    return shared_data / "structures"


def _manifest(shared_data: Path) -> dict[str, dict[str, str]]:
    with open(_structures(shared_data) / "manifest.csv", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def real_chains(shared_data: Path) -> tuple[list[Chain], list[tuple[str, str]]]:
    return load_folder(_structures(shared_data) / "pdb", progress=False)


def _helix(length: int) -> np.ndarray:
    i = np.arange(length)
    angle = np.radians(100.0 * i)
    return np.stack([2.3 * np.cos(angle), 2.3 * np.sin(angle), 1.5 * i], axis=-1)


def _atom_line(serial, name, res_name, chain, res_id, xyz, hetero=False, element="C") -> str:
    record = "HETATM" if hetero else "ATOM"
    atom = name if len(name) == 4 else f" {name:<3}"
    x, y, z = (f"{v:8.3f}" for v in xyz)
    return (
        f"{record:<6}{serial:>5} {atom} {res_name:>3} {chain}{res_id:>4}    {x}{y}{z}"
        f"  1.00  0.00          {element:>2}\n"
    )


def _write_pdb(path: Path, residues: list[tuple]) -> Path:
    """residues: (chain, res_id, res_name, atom names, xyz, hetero); every atom of a residue at xyz."""
    lines, serial = [], 1
    for chain, res_id, res_name, atoms, xyz, hetero in residues:
        for atom in atoms:
            element = "O" if res_name == "HOH" else atom[0]
            lines.append(_atom_line(serial, atom, res_name, chain, res_id, xyz, hetero, element))
            serial += 1
    path.write_text("".join(lines) + "END\n")
    return path


def _protein(chain: str, length: int, offset=(0.0, 0.0, 0.0)) -> list[tuple]:
    coords = _helix(length) + np.asarray(offset)
    return [(chain, i + 1, "ALA", ["CA"], coords[i], False) for i in range(length)]


def test_load_real_chain_matches_manifest(shared_data: Path):
    manifest = _manifest(shared_data)
    chain = load_chain(_structures(shared_data) / "pdb" / "1BPI_A.pdb")
    row = manifest["1BPI_A"]
    assert chain.name == "1BPI_A" and chain.chain_id == "A"
    assert chain.length == int(row["n_res"])
    assert chain.sequence == row["seq"]
    assert chain.ca.dtype == np.float32 and chain.ca.shape == (chain.length, 3)
    assert chain.residue_ids.shape == (chain.length,)
    assert len(chain.breaks) == int(row["chain_breaks"]) == 0


def test_load_folder_matches_whole_manifest(shared_data: Path, real_chains):
    chains, skipped = real_chains
    manifest = _manifest(shared_data)
    assert skipped == []
    assert sorted(c.name for c in chains) == sorted(manifest)
    with_breaks = 0
    for chain in chains:
        row = manifest[chain.name]
        assert chain.length == int(row["n_res"]), chain.name
        assert chain.sequence == row["seq"], chain.name
        assert len(chain.breaks) == int(row["chain_breaks"]), chain.name
        with_breaks += len(chain.breaks) > 0
        gaps = np.linalg.norm(chain.ca[chain.breaks + 1] - chain.ca[chain.breaks], axis=-1)
        assert np.all(gaps > 4.2)
    assert with_breaks == 22  # PROVENANCE.md


def test_chain_with_breaks_and_missing_ca(shared_data: Path):
    manifest = _manifest(shared_data)
    name = next(n for n, row in manifest.items() if int(row["chain_breaks"]) > 0)
    chain = load_chain(_structures(shared_data) / "pdb" / f"{name}.pdb")
    assert len(chain.breaks) == int(manifest[name]["chain_breaks"]) > 0
    # 1H7M_A has two terminal residues with no CA atom (GLY -2 with only C, GLY 97 with only N).
    partial = load_chain(_structures(shared_data) / "pdb" / "1H7M_A.pdb")
    assert partial.n_missing_ca == 2
    assert partial.length == int(manifest["1H7M_A"]["n_res"])


def test_mmcif_matches_pdb(shared_data: Path, tmp_path: Path):
    source = _structures(shared_data) / "pdb" / "1CSP_A.pdb"
    atoms = pdb.PDBFile.read(str(source)).get_structure(model=1)
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    cif_path = tmp_path / "1CSP_A.cif"
    cif.write(str(cif_path))
    from_pdb, from_cif = load_chain(source), load_chain(cif_path)
    assert from_cif.name == "1CSP_A"
    assert from_cif.sequence == from_pdb.sequence
    np.testing.assert_allclose(from_cif.ca, from_pdb.ca, atol=1e-3)
    np.testing.assert_array_equal(from_cif.residue_ids, from_pdb.residue_ids)


def test_chain_selection_and_residue_names(tmp_path: Path):
    water = [("A", 1, "HOH", ["O"], (50.0, 0.0, 0.0), True)]
    chain_c = _protein("C", 50, offset=(30.0, 0.0, 0.0))
    chain_c[3] = ("C", 4, "MSE", ["N", "CA", "C"], chain_c[3][4], True)
    chain_c[7] = ("C", 8, "UNK", ["CA"], chain_c[7][4], False)
    chain_c.append(("C", 51, "CA", ["CA"], (60.0, 0.0, 0.0), True))  # calcium ion
    chain_c.append(("C", 52, "GLU", ["CA"], (70.0, 0.0, 0.0), True))  # free amino-acid ligand
    path = _write_pdb(tmp_path / "multi.pdb", water + _protein("B", 45) + chain_c)

    first = load_chain(path)
    assert first.chain_id == "B" and first.name == "multi_B" and first.length == 45
    chosen = load_chain(path, chain="C")
    assert chosen.length == 50
    assert chosen.sequence == "AAAMAAAX" + "A" * 42
    np.testing.assert_array_equal(chosen.residue_ids, np.arange(1, 51))
    with pytest.raises(DataError, match=r"chain 'Z' not found; protein chains: B, C"):
        load_chain(path, chain="Z")


def test_bad_files_raise_data_error(tmp_path: Path):
    no_protein = _write_pdb(
        tmp_path / "water.pdb", [("A", i, "HOH", ["O"], (i, 0.0, 0.0), True) for i in range(1, 5)]
    )
    with pytest.raises(DataError, match="water.pdb: no protein chain"):
        load_chain(no_protein)

    residues = _protein("A", 45)
    residues[10] = ("A", 11, "ALA", ["CA"], (float("nan"), 0.0, 0.0), False)
    with pytest.raises(
        DataError, match=r"nan.pdb: chain A: non-finite CA coordinates at residues \[11\]"
    ):
        load_chain(_write_pdb(tmp_path / "nan.pdb", residues))

    short = _write_pdb(tmp_path / "short.pdb", _protein("A", 10))
    with pytest.raises(DataError, match="short.pdb: chain A: 10 residues with CA, fewer than"):
        load_chain(short)
    assert load_chain(short, min_length=10).length == 10
    with pytest.raises(DataError, match="more than max_length=30"):
        load_chain(_write_pdb(tmp_path / "long.pdb", _protein("A", 45)), max_length=30)

    (tmp_path / "empty.pdb").write_text("REMARK nothing here\nEND\n")
    with pytest.raises(DataError, match="empty.pdb: cannot parse"):
        load_chain(tmp_path / "empty.pdb")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown structure suffix"):
        load_chain(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="file not found"):
        load_chain(tmp_path / "absent.pdb")


def test_load_folder_skips_bad_files(shared_data: Path, tmp_path: Path):
    for name in ("1BPI_A.pdb", "1CSP_A.pdb"):
        shutil.copy(_structures(shared_data) / "pdb" / name, tmp_path / name)
    _write_pdb(tmp_path / "0short.pdb", _protein("A", 10))
    (tmp_path / "readme.txt").write_text("not a structure")
    chains, skipped = load_folder(tmp_path, progress=False)
    assert [c.name for c in chains] == ["1BPI_A", "1CSP_A"]
    assert len(skipped) == 1 and skipped[0][0] == "0short.pdb"
    assert "fewer than min_length=40" in skipped[0][1]
    with pytest.raises(DataError, match="not a directory"):
        load_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no structure files"):
        load_folder(tmp_path / "empty")


def _named(names: list[str]) -> list[Chain]:
    empty = np.zeros((0, 3), np.float32)
    return [Chain(n, empty, "", np.zeros(0, np.int64), "A", np.zeros(0, np.int64)) for n in names]


def test_split_holdout_is_stable_and_near_fraction():
    chains = _named([f"P{i:04d}_A" for i in range(2000)])
    train, holdout = split_holdout(chains, fraction=0.1, seed=0)
    held = {c.name for c in holdout}
    assert held.isdisjoint(c.name for c in train) and len(train) + len(holdout) == 2000
    # Binomial(2000, 0.1): mean 200, sd 13.4; allow 4 sd.
    assert abs(len(holdout) - 200) < 4 * 13.4
    shuffled = [chains[i] for i in np.random.default_rng(1).permutation(2000)]
    assert {c.name for c in split_holdout(shuffled, 0.1, seed=0)[1]} == held
    assert {c.name for c in split_holdout(chains[:500], 0.1, seed=0)[1]} == {
        n for n in held if int(n[1:5]) < 500
    }
    assert {c.name for c in split_holdout(chains, 0.1, seed=1)[1]} != held
    with pytest.raises(DataError):
        split_holdout(chains, fraction=1.5)


def test_chain_set_centres_scales_pads_and_buckets():
    rng = np.random.default_rng(0)
    chains = [
        Chain(f"c{n}", rng.normal(5.0, 3.0, (n, 3)).astype(np.float32), "A" * n,
              np.arange(n), "A", np.zeros(0, np.int64))
        for n in (70, 100, 41)
    ]  # fmt: skip
    chain_set = ChainSet.of(chains, 128)
    assert chain_set.x0.shape == (3, 128, 3) and chain_set.x0.dtype == np.float32
    np.testing.assert_array_equal(chain_set.lengths, [70, 100, 41])
    for b, chain in enumerate(chains):
        expected = (chain.ca - chain.ca.mean(axis=0)) / COORD_SCALE
        np.testing.assert_allclose(chain_set.x0[b, : chain.length], expected, atol=1e-5)
        np.testing.assert_array_equal(
            chain_set.positions[b, : chain.length], np.arange(chain.length)
        )
    assert np.all(chain_set.x0[~chain_set.mask] == 0.0)
    assert {k: v.tolist() for k, v in chain_set.by_bucket((64, 128)).items()} == {
        64: [2],
        128: [0, 1],
    }
    assert bucket_for(64, (64, 128)) == 64 and bucket_for(65, (64, 128)) == 128
    x0, mask, _ = chain_set.padded(np.array([2]), 64)
    assert x0.shape == (1, 64, 3) and mask.sum() == 41


def test_coord_scale_gives_unit_scale_coordinates(real_chains):
    chains, _ = real_chains
    per_axis_std = np.mean([center(c.ca).std() for c in chains]) / COORD_SCALE
    assert 0.5 < per_axis_std < 1.5


def test_write_ca_pdb_round_trip(shared_data: Path, tmp_path: Path):
    chain = load_chain(_structures(shared_data) / "pdb" / "1BPI_A.pdb")
    out = tmp_path / "out" / "sample.pdb"
    write_ca_pdb(out, chain.ca, chain.sequence)
    back = load_chain(out)
    np.testing.assert_allclose(back.ca, chain.ca, atol=1e-3)
    assert back.sequence == chain.sequence and back.chain_id == "A"
    write_ca_pdb(out, chain.ca + 1.0)  # overwrite in place, GLY names
    again = load_chain(out)
    np.testing.assert_allclose(again.ca, chain.ca + 1.0, atol=1e-3)
    assert again.sequence == "G" * chain.length
    assert sorted(p.name for p in out.parent.iterdir()) == ["sample.pdb"]  # no temporary left
    bad = chain.ca.copy()
    bad[3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        write_ca_pdb(tmp_path / "bad.pdb", bad)
    with pytest.raises(DataError, match="letters for"):
        write_ca_pdb(tmp_path / "bad.pdb", chain.ca, "ACD")
    assert not (tmp_path / "bad.pdb").exists()


def test_write_trajectory_pdb(tmp_path: Path):
    frames = np.stack([_helix(12) * s for s in (1.0, 1.5, 2.0)]).astype(np.float32)
    path = tmp_path / "traj.pdb"
    write_trajectory_pdb(path, frames)
    stack = pdb.PDBFile.read(str(path)).get_structure()
    assert stack.stack_depth() == 3 and stack.array_length() == 12
    np.testing.assert_allclose(stack.coord, frames, atol=1e-3)
    assert set(stack.atom_name) == {"CA"} and set(stack.res_name) == {"GLY"}


def test_load_folder_skips_truncated_and_corrupt_files(shared_data: Path, tmp_path: Path):
    """One good file, and truncated / corrupt PDB and mmCIF files: each bad one is skipped with its
    reason (one line naming the file), the folder still loads."""
    import gzip

    source = _structures(shared_data) / "pdb" / "1CSP_A.pdb"
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(source, good / "1CSP_A.pdb")
    pdb_text = source.read_text()
    atoms = pdb.PDBFile.read(str(source)).get_structure(model=1)
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    cif.write(str(tmp_path / "whole.cif"))
    cif_text = (tmp_path / "whole.cif").read_text()
    cif_lines = cif_text.splitlines(keepends=True)
    last_atom = max(i for i, line in enumerate(cif_lines) if line.startswith("ATOM"))
    pdb_lines = pdb_text.splitlines(keepends=True)
    some_atom = [i for i, line in enumerate(pdb_lines) if line.startswith("ATOM")][300]

    bad = {
        "cut.cif": cif_text[: len(cif_text) // 2],  # mid-line, inside atom_site
        "cut_at_line.cif": "".join(cif_lines[:last_atom]),  # whole rows, no closing '#'
        "cut.pdb": pdb_text[: pdb_text.index("\n", len(pdb_text) // 2) - 30],  # mid coordinates
        "cut_record.pdb": "".join(pdb_lines[:some_atom]) + "ATO",
        "empty.cif": "",
        "noise.pdb": "hello\nthis is not a structure\n",
    }
    for name, text in bad.items():
        (good / name).write_text(text)
    (good / "packed.pdb").write_bytes(gzip.compress(pdb_text.encode()))
    (good / "random.cif").write_bytes(np.random.default_rng(0).bytes(3000))

    chains, skipped = load_folder(good, progress=False)
    assert [c.name for c in chains] == ["1CSP_A"]
    reasons = dict(skipped)
    assert sorted(reasons) == sorted([*bad, "packed.pdb", "random.cif"])
    assert all("\n" not in r and r.startswith(str(good / f)) for f, r in reasons.items())
    assert "truncated" in reasons["cut.cif"] and "truncated" in reasons["cut_at_line.cif"]
    assert "truncated ATOM record" in reasons["cut.pdb"]
    assert "ends in the middle of a record" in reasons["cut_record.pdb"]
    assert "empty file" in reasons["empty.cif"]
    assert "cannot parse PDB structure" in reasons["noise.pdb"]
    assert "gzip-compressed" in reasons["packed.pdb"]
    assert "binary data" in reasons["random.cif"]

    # complete files still load: an mmCIF, and a PDB whose last line has no newline
    (good / "whole.cif").write_text(cif_text)
    (good / "nonl.pdb").write_text(pdb_text.rstrip("\n"))
    names = [c.name for c in load_folder(good, progress=False)[0]]
    assert names == ["1CSP_A", "nonl_A", "whole_A"]
