"""Inverse folding (ProteinMPNN-style): residue graphs, the network's invariances and causality, the
incremental sampler against teacher forcing, and the `design` family end to end on real chains."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax import alphabet, cli
from protgen_jax.data.structures import load_chain
from protgen_jax.fit import read_metrics
from protgen_jax.nn.mpnn import InverseFoldingModel
from protgen_jax.recipes import design as ds
from protgen_jax.structure.frames import random_rotation_np
from protgen_jax.structure.geometry import sse_labels
from protgen_jax.structure.graph import edge_distances, knn_graph, residue_atoms
from protgen_jax.structure.pdb_io import write_ca_pdb

CGDMS = ["1AHO_A", "1A92_A", "1AJJ_A", "1B35_D", "1BAZ_A", "1BX7_A", "1C94_A", "1CZQ_A"]
TINY = dict(
    dim=16,
    num_encoder_layers=1,
    num_decoder_layers=2,
    num_neighbours=8,
    num_rbf=4,
    buckets=(64,),
    max_length=64,
    batch_tokens=256,
    holdout_fraction=0.3,
    log_every=1,
    eval_every=5,
    checkpoint_every=5,
    steps_per_call=5,
    design_batch=4,
    eval_designs=1,
    devices=1,
)


@pytest.fixture(scope="module")
def chain(shared_data):
    return load_chain(shared_data / "structures_cgdms" / "pdb" / "1AHO_A.pdb", min_length=20)


def _model(atom_set="full", **kw):
    return InverseFoldingModel(
        atom_set=atom_set, dim=16, num_neighbours=8, num_rbf=4, dropout=0.0, **kw
    )


def _inputs(chain, batch=2, pad=6):
    length = chain.length + pad
    coords = np.zeros((batch, length, 3, 3), np.float32)
    coords[:, : chain.length] = chain.backbone - chain.ca.mean(0)
    mask = np.zeros((batch, length), bool)
    mask[:, : chain.length] = True
    positions = np.tile(np.arange(length, dtype=np.int32), (batch, 1))
    tokens = np.zeros((batch, length), np.int32)
    tokens[:, : chain.length] = alphabet.encode(chain.sequence)
    return jnp.asarray(coords), jnp.asarray(mask), jnp.asarray(positions), jnp.asarray(tokens)


def _params(model, coords, mask, positions, tokens):
    params = model.init(jax.random.key(0), coords, mask, positions, tokens, positions)
    noise = jax.random.key(1)  # untrained LayerNorm/Dense values give flat logits: spread them
    leaves, tree = jax.tree.flatten(params)
    keys_ = jax.random.split(noise, len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys_, strict=True)]
    return jax.tree.unflatten(tree, leaves)


# ------------------------------------------------------------------------------------- graph
def test_knn_graph_nearest_first_and_padding_never_a_neighbour():
    rng = np.random.default_rng(0)
    ca = rng.normal(0, 5, (1, 10, 3)).astype(np.float32)
    mask = np.array([[True] * 7 + [False] * 3])
    idx, edge_mask = knn_graph(jnp.asarray(ca), jnp.asarray(mask), 9)
    idx, edge_mask = np.asarray(idx[0]), np.asarray(edge_mask[0])
    d = np.linalg.norm(ca[0][:, None] - ca[0][None], axis=-1)
    for i in range(7):
        assert idx[i, 0] == i
        real = idx[i][edge_mask[i]]
        assert len(real) == 7 and set(real) == set(range(7))  # every real residue, no padding
        assert np.all(np.diff(d[i, real]) >= 0)  # nearest first
    assert not edge_mask[7:].any()


def test_residue_atoms_and_edge_distances(chain):
    mask = jnp.ones((chain.length,), bool)
    full = np.asarray(residue_atoms(jnp.asarray(chain.backbone), mask, "full"))
    assert full.shape == (chain.length, 5, 3)
    np.testing.assert_allclose(full[:, :3], chain.backbone, atol=1e-5)
    ca_set = np.asarray(residue_atoms(jnp.asarray(chain.ca), mask, "ca"))
    np.testing.assert_allclose(ca_set[1:, 1], chain.ca[:-1], atol=1e-5)  # previous CA
    np.testing.assert_allclose(
        ca_set[0, 1], 2 * chain.ca[0] - chain.ca[1], atol=1e-4
    )  # extrapolated
    neighbours = jnp.asarray([[3, 10]] * chain.length)
    d = np.asarray(edge_distances(jnp.asarray(full), neighbours))
    assert d.shape == (chain.length, 2, 25)
    expect = np.linalg.norm(full[5, 2] - full[10, 4])  # C of residue 5 to C-beta of residue 10
    assert abs(d[5, 1, 2 * 5 + 4] - expect) < 1e-3


# ------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("atom_set", ["full", "ca"])
def test_logits_invariant_to_rigid_motion_and_padding(chain, atom_set):
    model = _model(atom_set)
    coords, mask, positions, tokens = _inputs(chain)
    x = coords if atom_set == "full" else coords[..., 1, :]
    params = _params(model, x, mask, positions, tokens)
    rank = jnp.tile(jnp.arange(coords.shape[1]), (2, 1))
    logits = model.apply(params, x, mask, positions, tokens, rank)
    rot = random_rotation_np(np.random.default_rng(0), 1)[0]
    moved = jnp.einsum("...j,ij->...i", x, rot) + 7.0
    logits_moved = model.apply(params, moved, mask, positions, tokens, rank)
    np.testing.assert_allclose(
        logits_moved[:, : chain.length], logits[:, : chain.length], atol=2e-3
    )
    short = model.apply(
        params, x[:, : chain.length], mask[:, : chain.length], positions[:, : chain.length],
        tokens[:, : chain.length], rank[:, : chain.length],
    )  # fmt: skip
    np.testing.assert_allclose(short, logits[:, : chain.length], atol=2e-3)


def test_decoder_reads_only_residues_earlier_in_the_order(chain):
    model = _model()
    coords, mask, positions, tokens = _inputs(chain, batch=1, pad=0)
    params = _params(model, coords, mask, positions, tokens)
    rank = jnp.asarray(np.random.default_rng(1).permutation(chain.length))[None]
    logits = model.apply(params, coords, mask, positions, tokens, rank)
    last = int(jnp.argmax(rank[0]))  # decoded last: every other residue is "past" for it
    changed = tokens.at[0, last].set((tokens[0, last] + 1) % 20)
    after = model.apply(params, coords, mask, positions, changed, rank)
    np.testing.assert_allclose(after, logits, atol=1e-5)  # nobody reads the last residue's token
    first = int(jnp.argmin(rank[0]))
    changed = tokens.at[0, first].set((tokens[0, first] + 1) % 20)
    after = model.apply(params, coords, mask, positions, changed, rank)
    np.testing.assert_allclose(after[0, first], logits[0, first], atol=1e-5)  # not itself
    assert float(jnp.max(jnp.abs(after - logits))) > 1e-3  # but its later neighbours do


def test_incremental_sampler_matches_teacher_forcing(chain):
    model = _model()
    coords, mask, positions, tokens = _inputs(chain, batch=3)
    mask = mask.at[2, 40:].set(False)
    params = _params(model, coords, mask, positions, tokens)
    greedy = ds.design_sequences(
        model, "full", params, coords, mask, positions, jax.random.key(3), temperature=0.0
    )
    logits = model.apply(params, coords, mask, positions, greedy.tokens, greedy.rank)
    chosen = np.asarray(jnp.argmax(logits, -1))
    real = np.asarray(mask)
    np.testing.assert_array_equal(chosen[real], np.asarray(greedy.tokens)[real])
    assert np.all(np.asarray(greedy.tokens)[~real] == alphabet.PAD)
    # the score is the mean NLL of the designed residues under the same order
    manual = -jax.nn.log_softmax(logits)[
        jnp.arange(3)[:, None], jnp.arange(mask.shape[1]), greedy.tokens
    ]
    expect = np.sum(np.asarray(manual) * real, 1) / real.sum(1)
    np.testing.assert_allclose(greedy.score, expect, rtol=1e-4)


def test_fixed_positions_omitted_letters_and_row_keys(chain):
    model = _model()
    coords, mask, positions, tokens = _inputs(chain, batch=4, pad=0)
    params = _params(model, coords, mask, positions, tokens)
    fixed = jnp.zeros(mask.shape, bool).at[:, :10].set(True)
    bias = ds.omit_bias("LAEG", mask.shape)
    keys_ = jax.random.split(jax.random.key(5), 4)
    out = ds.design_sequences(
        model, "full", params, coords, mask, positions, keys_, temperature=3.0, bias=bias,
        fixed=fixed, native=tokens,
    )  # fmt: skip
    designed = np.asarray(out.tokens)
    np.testing.assert_array_equal(designed[:, :10], np.asarray(tokens)[:, :10])
    banned = [alphabet.AMINO_ACIDS.index(a) for a in "LAEG"]
    assert not np.isin(designed[:, 10:], banned).any()
    assert np.all(np.asarray(out.rank)[:, :10] < 10)  # fixed residues are decoded first
    assert len({tuple(r) for r in designed}) > 1  # rows draw differently at T = 3
    # a row's design depends on its own key only, not on the rows batched with it
    alone = ds.design_sequences(
        model, "full", params, coords[1:2], mask[1:2], positions[1:2], keys_[1:2], temperature=3.0,
        bias=bias[1:2], fixed=fixed[1:2], native=tokens[1:2],
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(alone.tokens)[0], designed[1])


# ------------------------------------------------------------------------------------- family
@pytest.fixture(scope="module")
def chain_folder(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cgdms")
    for name in CGDMS:
        shutil.copy(shared_data / "structures_cgdms" / "pdb" / f"{name}.pdb", folder)
    return folder


def _tiny(folder: Path, **kw) -> ds.DesignConfig:
    return dataclasses.replace(ds.RECIPE.make_config("design"), data=str(folder), **{**TINY, **kw})


@pytest.fixture(scope="module")
def run_dir(chain_folder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("design_run")
    summary = ds.RECIPE.train(_tiny(chain_folder, steps=10), run, progress=False)
    assert summary["steps"] == 10 and summary["num_train"] + summary["num_holdout"] == len(CGDMS)
    return run


def test_train_learns_and_writes_the_run(run_dir):
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [5, 10]
    nll = [r["nll_per_residue"] for r in train]
    assert np.mean(nll[-3:]) < np.mean(nll[:3])
    assert all("val_nll_per_residue" in r for r in evals)
    assert all(0 <= r["accuracy"] <= 1 for r in train)
    assert json.loads((run_dir / "run.json").read_text())["family"] == "design"
    data = ds.RECIPE.load_run(run_dir).data
    # a residue's stored backbone is its file's (centred on the chain's CA atoms)
    row = list(data.train.names).index("1AHO_A") if "1AHO_A" in data.train.names else None
    split = data.train if row is not None else data.holdout
    row = list(split.names).index("1AHO_A")
    chain = load_chain(
        Path(json.loads((run_dir / "data.json").read_text())["folders"][0]) / "1AHO_A.pdb",
        min_length=20,
    )
    np.testing.assert_allclose(split.coords[row, :64], chain.backbone - chain.ca.mean(0), atol=1e-4)
    assert alphabet.decode(split.tokens[row, :64]) == chain.sequence


def test_design_command_writes_fasta_and_report(run_dir, chain_folder, tmp_path):
    out = tmp_path / "designs.fasta"
    code = cli.main([
        "--quiet", "design", str(run_dir), "--pdb", str(chain_folder / "1AHO_A.pdb"), "--num-seqs", "3",
        "--temperature", "0.5", "--fixed", "1-4,10", "--omit", "CW", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith(">1AHO_A_d0 score=")
    native = load_chain(chain_folder / "1AHO_A.pdb", min_length=20).sequence
    for seq in lines[1::2]:
        assert len(seq) == len(native) and seq[:4] == native[:4] and seq[9] == native[9]
        assert "C" not in seq[4:9] + seq[10:] and "W" not in seq[4:9] + seq[10:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["num_designs"] == 3 and report["backbones"][0]["native_sequence"] == native
    design0 = report["backbones"][0]["designs"][0]
    assert 0 <= design0["recovery"] <= 1 and design0["score"] > 0
    assert set(report["secondary_structure_fit"]) == {"helix", "strand", "coil"}
    native_fit = report["native_secondary_structure_fit"]
    helix = [alphabet.AMINO_ACIDS.index(a) for a in ds.HELIX_FAVOURING]
    labels = sse_labels(load_chain(chain_folder / "1AHO_A.pdb", min_length=20).ca)
    on_helix = alphabet.encode(native)[labels == "a"]
    assert native_fit["helix"]["residues"] == on_helix.size
    if on_helix.size:
        assert native_fit["helix"]["helix_favouring"] == pytest.approx(
            np.isin(on_helix, helix).mean()
        )


def test_design_refuses_bad_input_before_work(run_dir, chain_folder, tmp_path, capsys):
    pdb = str(chain_folder / "1AHO_A.pdb")
    out = str(tmp_path / "d.fasta")
    assert cli.main(["design", str(run_dir), "--pdb", pdb, "--fixed", "60-70", "--out", out]) == 2
    assert "outside residues 1-64 of 1AHO_A" in capsys.readouterr().err
    assert (
        cli.main(
            ["design", str(run_dir), "--pdb", pdb, "--omit", "ACDEFGHIKLMNPQRSTVWY", "--out", out]
        )
        == 2
    )
    assert "every amino acid" in capsys.readouterr().err
    bias = tmp_path / "bias.json"
    bias.write_text('{"3": {"Z": 1}}')
    assert (
        cli.main(["design", str(run_dir), "--pdb", pdb, "--position-bias", str(bias), "--out", out])
        == 2
    )
    assert "residue 3: 'Z' is not an amino acid" in capsys.readouterr().err
    ca_only = tmp_path / "trace.pdb"
    write_ca_pdb(ca_only, load_chain(pdb, min_length=20).ca)
    assert cli.main(["design", str(run_dir), "--pdb", str(ca_only), "--out", out]) == 2
    assert "C-alpha atoms only" in capsys.readouterr().err
    assert cli.main(["design", str(run_dir), "--pdb", str(tmp_path / "none"), "--out", out]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert cli.main(["sample", str(run_dir), "--num", "2", "--out", out]) == 2  # no such command
    assert not Path(out).exists()


def test_ca_run_designs_c_alpha_samples(chain_folder, tmp_path):
    run = tmp_path / "ca_run"
    ds.RECIPE.train(_tiny(chain_folder, steps=2, atom_set="ca", eval_every=0), run, progress=False)
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("1AHO_A", "1A92_A"):
        write_ca_pdb(
            samples / f"sample_{name}.pdb",
            load_chain(chain_folder / f"{name}.pdb", min_length=20).ca,
        )
    out = tmp_path / "ca.fasta"
    assert (
        cli.main(
            [
                "--quiet",
                "design",
                str(run),
                "--pdb",
                str(samples),
                "--num-seqs",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["num_backbones"] == 2 and report["num_designs"] == 4
    assert all(b["native_sequence"] is None for b in report["backbones"])  # GLY placeholders
    assert report["mean_recovery"] is None


def test_evaluate_reports_recovery_against_the_composition_baseline(run_dir, tmp_path):
    out = tmp_path / "eval.json"
    report = ds.RECIPE.run_command("evaluate", [run_dir], {"out": str(out), "quiet": True})
    saved = json.loads(out.read_text())
    assert saved["num_chains"] == report["num_chains"] >= 1
    assert 1 < report["perplexity"] < 40 and 1 < report["baseline"]["perplexity"] < 21
    assert 0 <= report["recovery_median"] <= 1
    assert set(report["recovery_by_class"]) <= {
        "helix",
        "strand",
        "coil",
        "exposed",
        "intermediate",
        "buried",
    }
    assert Path(str(out.with_suffix("")) + "_recovery.png").exists()
    assert report["published_recovery_cath"]["ProteinMPNN"] == 0.52


def test_experiment_config_is_a_valid_design_config():
    path = Path(__file__).resolve().parents[1] / "experiments" / "design" / "mpnn_long.json"
    config = ds.RECIPE.check(ds.RECIPE.read_config(path))
    assert config.dim == 128 and config.atom_set == "full" and config.buckets == (64, 96, 128, 256)
