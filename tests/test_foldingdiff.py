"""FoldingDiff: internal coordinates and NeRF, torus diffusion math, the network, the family end to end."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.data.structures import load_chain
from protgen_jax.diffusion import get_schedule
from protgen_jax.diffusion.torus import (
    torus_ddpm_sample,
    wrap,
    wrapped_noise_loss,
    wrapped_q_sample,
)
from protgen_jax.errors import DataError
from protgen_jax.nn.angles import AngleDenoiser
from protgen_jax.recipes import recipe_for_model
from protgen_jax.recipes.foldingdiff import RECIPE
from protgen_jax.recipes.structure_split import manifest_holdout
from protgen_jax.structure.backbone_geometry import backbone_report, phi_psi_sse, rama_region
from protgen_jax.structure.geometry import kabsch_rmsd
from protgen_jax.structure.internal import (
    BOND_LENGTHS,
    IDEAL_ANGLES,
    backbone_from_internal,
    internal_coordinates,
    random_internal,
)

CGDMS_FILES = ("1A92_A.pdb", "1ABA_A.pdb", "1AHO_A.pdb", "1AJJ_A.pdb", "1AVS_A.pdb", "1AIE_A.pdb")


@pytest.fixture(scope="module")
def cgdms(shared_data):
    return shared_data / "structures_cgdms"


def _chain(cgdms, name):
    return load_chain(cgdms / "pdb" / name, None, 1, 1000)


# ---------------------------------------------------------------- internal coordinates and NeRF
def test_round_trip_on_real_chains_is_exact_up_to_bond_lengths(cgdms):
    for name in CGDMS_FILES[:4]:
        chain = _chain(cgdms, name)
        assert not len(chain.breaks)
        angles, mask = internal_coordinates(chain.backbone)
        assert angles.shape == mask.shape == (chain.length, 6)
        assert not mask[0, 0] and mask[1:, 0].all()  # phi undefined at the N terminus
        assert not mask[-1, [1, 2, 4, 5]].any() and mask[1:-1].all()  # psi... at the C terminus
        rebuilt = np.asarray(backbone_from_internal(angles))
        rmsd = kabsch_rmsd(chain.backbone.reshape(-1, 3), rebuilt.reshape(-1, 3))
        assert rmsd < 0.15, (name, rmsd)
        again, mask2 = internal_coordinates(rebuilt)  # angles are reproduced exactly
        d = np.abs(wrap(jnp.asarray(again - angles)))[mask & mask2]
        assert float(d.max()) < 2e-3
        bonds = np.linalg.norm(rebuilt[:, 1] - rebuilt[:, 0], axis=-1)
        np.testing.assert_allclose(bonds, BOND_LENGTHS["n_ca"], atol=1e-4)


def test_breaks_and_missing_atoms_are_masked():
    rng = np.random.default_rng(0)
    bb = np.array(backbone_from_internal(random_internal(rng, 12)))
    bb[7, 2] = np.nan  # C of residue 7 missing
    _, mask = internal_coordinates(bb, breaks=np.array([3]))
    assert not mask[4, 0] and not mask[3, [1, 2, 4, 5]].any()  # across the break
    assert not mask[7, [0, 1, 2, 3, 4]].any() and not mask[8, 0]  # every angle using C_7
    assert mask[5, :].all()


def test_batched_reconstruction_matches_single_and_jits():
    rng = np.random.default_rng(1)
    angles = np.stack([random_internal(rng, 9) for _ in range(3)])
    batched = jax.jit(backbone_from_internal)(angles)
    assert batched.shape == (3, 9, 3, 3)
    np.testing.assert_allclose(batched[1], backbone_from_internal(angles[1]), atol=1e-5)


# ---------------------------------------------------------------- torus diffusion
def test_wrapped_forward_process_and_loss():
    schedule = get_schedule("cosine", 100)
    x0 = jnp.full((4, 5, 6), 3.0)
    noise = jax.random.normal(jax.random.key(0), x0.shape)
    t = jnp.array([0, 10, 50, 99])
    x_t = wrapped_q_sample(schedule, x0, t, noise)
    assert float(x_t.min()) >= -np.pi and float(x_t.max()) < np.pi
    sab, s1ab = schedule.sqrt_alpha_bars, schedule.sqrt_one_minus_alpha_bars
    np.testing.assert_allclose(x_t[1], wrap(sab[10] * x0[1] + s1ab[10] * noise[1]), atol=1e-6)
    assert float(jnp.abs(wrap(x_t[0] - x0[0])).max()) < 0.1  # t = 0: barely noised
    mask = jnp.ones(x0.shape, bool).at[1].set(False)
    loss = wrapped_noise_loss(noise + 2 * jnp.pi, noise, mask)  # a whole turn costs nothing
    assert loss.shape == (4,) and float(jnp.abs(loss).max()) < 1e-5
    loss = wrapped_noise_loss(noise + 1.0, noise, mask)
    np.testing.assert_allclose(loss, [1.0 - 0.05 * np.pi, 0.0, *([1.0 - 0.05 * np.pi] * 2)], 1e-5)


def test_torus_sampler_with_the_oracle_reaches_a_point_mass():
    """Data = one angle vector a0: the oracle eps = wrap(x_t - sqrt(ab) a0) / sqrt(1 - ab) takes the
    sampler to a0 (up to the last steps' noise) from a uniform start, across the wrap at +-pi."""
    schedule = get_schedule("cosine", 200)
    a0 = jnp.array([3.0, -3.0, 0.5, 1.9, 2.0, -1.0])
    sab = schedule.sqrt_alpha_bars
    s1ab = schedule.sqrt_one_minus_alpha_bars

    def oracle(x_t, t, mask, cond):
        return wrap(x_t - sab[t][:, None, None] * a0[None, None]) / s1ab[t][:, None, None]

    mask = jnp.ones((16, 3), bool).at[:, 2].set(False)
    out = torus_ddpm_sample(jax.random.key(3), oracle, schedule, (16, 3, 6), mask=mask)
    assert out.shape == (16, 3, 6)
    assert float(jnp.abs(out[:, 2]).max()) == 0.0  # padding stays 0
    err = jnp.abs(wrap(out[:, :2] - a0[None, None]))
    assert float(jnp.median(err)) < 0.05


# ---------------------------------------------------------------- network
def test_angle_denoiser_ignores_padding():
    model = AngleDenoiser(num_layers=1, num_heads=2, model_dim=16, max_relative_position=4)
    x = jax.random.uniform(jax.random.key(0), (2, 10, 6), minval=-3, maxval=3)
    t = jnp.array([3, 70])
    params = model.init(jax.random.key(1), x, t)
    mask = jnp.arange(10)[None] < jnp.array([[7], [10]])
    out = model.apply(params, x, t, mask)
    assert out.shape == (2, 10, 6) and float(jnp.abs(out[0, 7:]).max()) == 0.0
    changed = model.apply(params, x.at[0, 8].set(1.0), t, mask)
    np.testing.assert_allclose(out[0, :7], changed[0, :7], atol=1e-5)


# ---------------------------------------------------------------- evaluation measures
def test_backbone_measures_on_natural_chains_and_the_floor(cgdms):
    chains = [_chain(cgdms, n) for n in CGDMS_FILES]
    rng = np.random.default_rng(0)
    floor = [np.asarray(backbone_from_internal(random_internal(rng, 60))) for _ in range(4)]
    report = backbone_report(floor, chains)
    natural, walk = report["reference"], report["samples"]
    assert natural["rama_populated_fraction"] > 0.9 and walk["rama_populated_fraction"] < 0.6
    assert walk["c_n_fraction"] == 1.0 and walk["omega_trans_fraction"] == 1.0
    assert natural["n_ca_fraction"] > 0.9
    assert report["distances"]["phi_w1"] > 10.0
    helix = np.degrees(np.tile(IDEAL_ANGLES[:2], (8, 1)))
    labels = phi_psi_sse(helix[:, 0], helix[:, 1], np.ones(8, bool))
    assert "".join(labels) == "aaaaaaaa"
    assert rama_region(
        np.array([-120.0, 60.0, 100.0]), np.array([130.0, 40.0, -100.0])
    ).tolist() == [
        1,
        2,
        -1,
    ]


def test_manifest_split_is_cgdms_validation_list(cgdms):
    stems = manifest_holdout(cgdms / "pdb")
    assert len(stems) == 200


# ---------------------------------------------------------------- the family end to end
TINY = dict(
    extra_data="",
    holdout_fraction=0.34,
    buckets=(64, 128),
    batch_tokens=128,
    timesteps=20,
    num_layers=1,
    num_heads=2,
    model_dim=16,
    steps=2,
    steps_per_call=1,
    log_every=1,
    eval_every=2,
    checkpoint_every=2,
    warmup_steps=1,
    ema_decay=0.0,
    sample_batch=4,
    eval_num=3,
    eval_min_length=30,
    eval_max_length=40,
)


def test_train_sample_evaluate_end_to_end(cgdms, tmp_path):
    folder = tmp_path / "pdb"
    folder.mkdir()
    for name in CGDMS_FILES:
        shutil.copy(cgdms / "pdb" / name, folder / name)
    assert recipe_for_model("foldingdiff") is RECIPE
    config = RECIPE.make_config("foldingdiff").__class__(data=str(folder), **TINY)
    run = tmp_path / "run"
    summary = RECIPE.train(config, run, progress=False)
    assert summary["steps"] == 2 and summary["num_train"] + summary["num_holdout"] == 6
    assert np.isfinite(summary["last_train"]["loss"])
    data = json.loads((run / "data.json").read_text())
    assert set(data["offset_degrees"]) == {"phi", "psi", "omega", "n_ca_c", "ca_c_n", "c_n_ca"}

    out = tmp_path / "samples"
    result = RECIPE.run_command("sample", [run], {"out": str(out), "num": 3, "length": 33})
    assert result["num"] == 3
    for i in range(3):
        chain = load_chain(out / f"sample_{i:04d}.pdb", None, 1, 1000)
        assert chain.length == 33 and np.isfinite(chain.backbone).all()
        bb = chain.backbone.astype(np.float64)
        for (a, b), ideal in (((0, 1), "n_ca"), ((1, 2), "ca_c")):
            d = np.linalg.norm(bb[:, b] - bb[:, a], axis=-1)
            np.testing.assert_allclose(d, BOND_LENGTHS[ideal], atol=2e-3)
        c_n = np.linalg.norm(bb[1:, 0] - bb[:-1, 2], axis=-1)
        np.testing.assert_allclose(c_n, BOND_LENGTHS["c_n"], atol=2e-3)
        text = (out / f"sample_{i:04d}.pdb").read_text()
        assert text.count(" O  ") >= 33  # carbonyl oxygens written

    RECIPE.run_command("sample", [run], {"out": str(tmp_path / "s2"), "num": 3, "length": 33})
    first, second = ((p / "sample_0002.pdb").read_text() for p in (out, tmp_path / "s2"))
    assert first == second  # the same root key draws the same backbones

    guided = RECIPE.run_command(
        "sample",
        [run],
        {"out": str(tmp_path / "s3"), "num": 3, "length": 33, "clash_guidance": 5.0,
         "rg_guidance": 1.0, "guide_from": 0.5},
    )  # fmt: skip
    assert guided["guidance"]["clash_weight"] == 5.0 and guided["guidance"]["guide_from"] == 0.5
    assert result["guidance"]["clash_weight"] == 0.0  # the default: unguided
    third = (tmp_path / "s3" / "sample_0002.pdb").read_text()
    assert third != first  # the same key, moved by the potentials
    chain = load_chain(tmp_path / "s3" / "sample_0002.pdb", None, 1, 1000)
    n_ca = np.linalg.norm(chain.backbone[:, 1] - chain.backbone[:, 0], axis=-1)
    np.testing.assert_allclose(n_ca, BOND_LENGTHS["n_ca"], atol=2e-3)  # still ideal bonds

    report_path = tmp_path / "eval.json"
    report = RECIPE.run_command("evaluate", [run], {"out": str(report_path), "num": 3})
    saved = json.loads(report_path.read_text())
    assert saved["num_samples"] == 3 and set(saved["targets"]) == set(report["targets"])
    for key in ("ca", "backbone"):
        assert {"natural", "model", "random_walk", "gap_closed"} <= set(saved[key])
    assert saved["backbone"]["model"]["c_n_fraction"] == 1.0
    for suffix in ("geometry", "ramachandran", "contacts"):
        assert (tmp_path / f"eval_{suffix}.png").stat().st_size > 0
    assert len(list((tmp_path / "eval_samples").glob("*.pdb"))) == 3


def test_sample_options_are_checked():
    opts = RECIPE.options("sample", {"out": "o"})
    assert opts.num == 8 and opts.length is None
    with pytest.raises(DataError):
        RECIPE.options("sample", {"out": "o", "length": 2})
    with pytest.raises(DataError):
        RECIPE.options("sample", {"out": "o", "motif": "x"})
    opts = RECIPE.options("evaluate", {"out": "o"})
    assert opts.clash_guidance == 0.0 and opts.rg_guidance == 0.0 and opts.guide_from == 1.0
    for bad in ({"clash_guidance": -1.0}, {"guide_from": 1.5}, {"guide_clip": 0.0}):
        with pytest.raises(DataError):
            RECIPE.options("evaluate", {"out": "o", **bad})
