"""Tests for backbone diffusion: zero-COM noise, the BackboneDenoiser, and the backbone recipe + CLI."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from biotite.structure.io import pdb
from jax.tree_util import Partial

from protgen_jax import cli
from protgen_jax.config import config_to_dict, load_config
from protgen_jax.data.structures import (
    COORD_SCALE,
    Chain,
    ChainSet,
    bucket_for,
    chain_positions,
    load_chain,
)
from protgen_jax.diffusion import cosine_schedule, linear_schedule, sqrt_snr, with_noise_level
from protgen_jax.errors import DataError
from protgen_jax.fit import read_metrics
from protgen_jax.nn.backbone import BackboneDenoiser, local_geometry_features
from protgen_jax.recipes import backbone as bb
from protgen_jax.recipes.base import RunDir
from protgen_jax.structure.frames import random_rotation_np
from protgen_jax.structure.geometry import kabsch_rmsd
from protgen_jax.structure.noise import centred_denoise_fn, masked_center, zero_com_noise

REPO = Path(__file__).resolve().parents[1]
B, REAL = 2, 12

# Tiny network and schedule: every test that trains or samples compiles in seconds.
TINY = dict(
    extra_data="",
    num_layers=1,
    num_heads=2,
    model_dim=16,
    mlp_ratio=2.0,
    pair_dim=8,
    num_rbf=8,
    output_heads=2,
    timesteps=10,
    buckets=(64,),
    max_length=64,
    batch_tokens=128,
    holdout_fraction=0.0,
    log_every=1,
    eval_every=1,
    checkpoint_every=1,
    sample_batch=4,
    eval_num=3,
    eval_min_length=20,
    eval_max_length=30,
    devices=1,
)


# --------------------------------------------------------------------------- zero-COM noise


def test_zero_com_noise_has_zero_masked_mean_and_the_subspace_variance():
    rng = np.random.default_rng(0)
    noise = jnp.asarray(rng.standard_normal((400, 10, 3)), jnp.float32)
    mask = jnp.asarray(np.arange(10)[None] < rng.integers(2, 11, (400, 1)))
    out = np.asarray(zero_com_noise(noise, mask), np.float64)
    m = np.asarray(mask)
    np.testing.assert_allclose((out * m[..., None]).sum(axis=1), 0.0, atol=1e-5)
    np.testing.assert_array_equal(out[~m], 0.0)
    # Each real coordinate has variance 1 - 1/n: normalised squares average to 1 (SE ~ 0.01).
    n = m.sum(axis=1, keepdims=True)
    scaled = (out**2 / (1.0 - 1.0 / n)[..., None])[m]
    assert abs(scaled.mean() - 1.0) < 0.05
    # Real residues equal the noise minus its masked mean.
    mean = (np.asarray(noise) * m[..., None]).sum(1, keepdims=True) / n[..., None]
    np.testing.assert_allclose(out[m], (np.asarray(noise) - mean)[m], atol=1e-5)


# --------------------------------------------------------------------------- the denoiser


def _cosine_sqrt_snr() -> np.ndarray:
    """sqrt(ab_t / (1 - ab_t)) [1000] of the cosine schedule, by hand in float64, rounded to float32."""
    ab = np.asarray(cosine_schedule(1000).alpha_bars, np.float64)
    return np.sqrt(ab / (1.0 - ab)).astype(np.float32)


def _random_params(model, *args, seed: int = 0):
    """Random params with init's shapes (NumPy draws; zero-initialized layers become nonzero)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "kernel" else 0.3
        return jnp.asarray(std * rng.standard_normal(leaf.shape) + (name == "scale"), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def denoiser():
    model = BackboneDenoiser(
        num_layers=1,
        num_heads=2,
        model_dim=16,
        pair_dim=8,
        num_rbf=8,
        output_heads=4,
    )
    x = jnp.zeros((B, REAL, 3))
    t = jnp.array([3, 700])
    jitted = jax.jit(model.apply)
    table = _cosine_sqrt_snr()

    def apply(params, x, t, mask=None, cond=None):
        """model.apply with every argument given and noise_level = sqrt(SNR_t) of cosine(1000) (one
        compiled program per shape)."""
        length = x.shape[1]
        mask = np.ones((B, length), bool) if mask is None else mask
        cond = np.broadcast_to(np.arange(length), (B, length)) if cond is None else cond
        x, mask, cond = jnp.asarray(x), jnp.asarray(mask), jnp.asarray(cond, jnp.int32)
        return jitted(params, x, t, mask, cond, noise_level=jnp.asarray(table[np.asarray(t)]))

    return model, _random_params(model, x, t), apply, t


def _trace(seed: int) -> np.ndarray:
    """[B, REAL, 3] centred random-walk CA traces in model units."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((B, REAL, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
    x = np.cumsum(steps, axis=1) / COORD_SCALE
    return (x - x.mean(axis=1, keepdims=True)).astype(np.float32)


def test_denoiser_shapes_zero_mean_and_padding_invariance(denoiser):
    _, params, apply, t = denoiser
    x = _trace(0)
    ref = np.asarray(apply(params, x, t))
    assert ref.shape == (B, REAL, 3) and ref.dtype == np.float32
    assert np.abs(ref).max() > 1e-2  # random params give a non-trivial output
    np.testing.assert_allclose(ref.sum(axis=1), 0.0, atol=1e-4)
    for length in (20,):
        padded = 50.0 * np.random.default_rng(length).standard_normal((B, length, 3))
        padded[:, :REAL] = x
        mask = np.broadcast_to(np.arange(length) < REAL, (B, length))
        out = np.asarray(apply(params, padded.astype(np.float32), t, mask))
        np.testing.assert_allclose(out[:, :REAL], ref, atol=2e-5)
        np.testing.assert_array_equal(out[:, REAL:], 0.0)
    # Without the mask the garbage changes the real residues (the check above can fail).
    out = np.asarray(apply(params, padded.astype(np.float32), t))
    assert np.abs(out[:, :REAL] - ref).max() > 1e-3


def test_denoiser_is_rotation_equivariant_translation_invariant_not_mirror_symmetric(denoiser):
    _, params, apply, t = denoiser
    x = _trace(1)
    ref = np.asarray(apply(params, x, t), np.float64)
    rot = random_rotation_np(np.random.default_rng(2), 1)[0]
    rotated = np.asarray(apply(params, x @ rot.T, t), np.float64)
    np.testing.assert_allclose(rotated, ref @ rot.T, atol=1e-4 * np.abs(ref).max())
    shifted = np.asarray(apply(params, x + np.float32(0.7), t), np.float64)
    np.testing.assert_allclose(shifted, ref, atol=1e-4 * np.abs(ref).max())
    # The virtual dihedrals make it chiral: a mirrored input does not give the mirrored output.
    mirror = np.diag([-1.0, 1.0, 1.0]).astype(np.float32)
    mirrored = np.asarray(apply(params, x @ mirror, t), np.float64)
    assert np.abs(mirrored - ref @ mirror).max() > 1e-2 * np.abs(ref).max()


def test_self_conditioned_denoiser_reads_the_estimate_and_stays_equivariant():
    model = BackboneDenoiser(num_layers=1, num_heads=2, model_dim=16, pair_dim=8, num_rbf=8,
                             output_heads=4, self_condition=True)  # fmt: skip
    x, estimate = _trace(4), _trace(5)
    t = jnp.array([3, 700])
    params = _random_params(model, jnp.asarray(x), t)
    assert "pair_self_cond" in params["params"]
    level = jnp.asarray(_cosine_sqrt_snr()[np.asarray(t)])
    apply = jax.jit(lambda x, sc: model.apply(params, x, t, noise_level=level, self_cond=sc))
    ref = np.asarray(apply(x, estimate), np.float64)
    # The estimate matters, and None means zeros.
    assert np.abs(ref - np.asarray(apply(x, np.zeros_like(x)))).max() > 1e-2 * np.abs(ref).max()
    none = model.apply(params, x, t, noise_level=level)
    np.testing.assert_allclose(none, apply(x, np.zeros_like(x)), rtol=1e-5, atol=1e-5)
    # Rotating the input and the estimate together rotates the output.
    rot = random_rotation_np(np.random.default_rng(6), 1)[0].astype(np.float32)
    rotated = np.asarray(apply(x @ rot.T, estimate @ rot.T), np.float64)
    np.testing.assert_allclose(rotated, ref @ rot.T, atol=1e-4 * np.abs(ref).max())


def test_denoiser_uses_time_and_chain_positions(denoiser):
    _, params, apply, t = denoiser
    x = _trace(3)
    ref = np.asarray(apply(params, x, t))
    assert np.abs(np.asarray(apply(params, x, t + 100)) - ref).max() > 1e-3
    gap = np.broadcast_to(np.arange(REAL) + 5 * (np.arange(REAL) >= 6), (B, REAL))
    out = np.asarray(apply(params, x, t, None, gap))
    assert np.abs(out - ref).max() > 1e-3
    # Only differences of positions matter.
    shifted = np.asarray(apply(params, x, t, None, gap + 40))
    np.testing.assert_allclose(shifted, out, atol=1e-5)


def test_local_term_is_scaled_by_sqrt_snr(denoiser):
    """With only the local x0 gain nonzero: eps_i = sqrt(SNR_t) sum_k b_k (x_i - x_{i+k}) - mean."""
    model, params, apply, t = denoiser
    params = jax.tree.map(jnp.zeros_like, params)
    b = np.array([0.3, -0.2, 0.1, 0.05, -0.4, 0.2], np.float32)  # offsets +1, -1, +2, -2, +3, -3
    params["params"]["local_x0_gain"]["bias"] = jnp.asarray(b)
    x = _trace(4)
    out = np.asarray(apply(params, x, t), np.float64)
    ab = np.asarray(cosine_schedule(1000).alpha_bars, np.float64)[np.asarray(t)]
    expected = np.zeros_like(out)
    for j, k in enumerate((1, -1, 2, -2, 3, -3)):
        for i in range(REAL):
            if 0 <= i + k < REAL:
                expected[:, i] += b[j] * (x[:, i] - x[:, i + k])
    expected *= np.sqrt(ab / (1 - ab))[:, None, None]
    expected -= expected.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_sqrt_snr_table_and_noise_level_wrapper(denoiser):
    """The schedule's table is sqrt(ab / (1 - ab)); the wrapper feeds table[t] to the network, which is
    what the network computed from its own schedule before it took the level as an input."""
    for schedule in (cosine_schedule(1000), linear_schedule(10)):
        ab = np.asarray(schedule.alpha_bars, np.float64)
        table = np.asarray(sqrt_snr(schedule))
        assert table.shape == (schedule.num_steps,) and table.dtype == np.float32
        np.testing.assert_array_equal(table, np.sqrt(ab / (1.0 - ab)).astype(np.float32))
    # Independently of Schedule: linear betas 1e-4 .. 0.02 (float32 alpha_bars: ~1e-3 near t = 0).
    ab = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 10))
    np.testing.assert_allclose(sqrt_snr(linear_schedule(10)), np.sqrt(ab / (1 - ab)), rtol=1e-3)

    model, params, apply, t = denoiser
    params = jax.tree.map(jnp.asarray, params)
    rng = np.random.default_rng(5)
    for name in ("kernel", "bias"):  # nonzero by hand (model.init leaves this layer zero)
        leaf = params["params"]["local_x0_gain"][name]
        params["params"]["local_x0_gain"][name] = jnp.asarray(
            0.1 * rng.normal(size=leaf.shape), jnp.float32
        )
    x, mask = jnp.asarray(_trace(6)), jnp.ones((B, REAL), bool)
    cond = jnp.broadcast_to(jnp.arange(REAL), (B, REAL))
    fn = with_noise_level(jax.tree_util.Partial(model.apply, params), cosine_schedule(1000))
    assert isinstance(fn, jax.tree_util.Partial)
    wrapped = np.asarray(jax.jit(lambda f, x: f(x, t, mask, cond))(fn, x))
    explicit = np.asarray(apply(params, x, t))  # noise_level = the hand-computed table at t
    np.testing.assert_allclose(wrapped, explicit, rtol=1e-5, atol=1e-5 * np.abs(explicit).max())
    ones = np.asarray(model.apply(params, x, t, mask, cond))  # noise_level=None: ones
    assert np.abs(wrapped - ones).max() > 1e-2 * np.abs(wrapped).max()
    # The level enters only through local_x0_gain: with it zero, every level gives the same output.
    params["params"]["local_x0_gain"] = jax.tree.map(
        jnp.zeros_like, params["params"]["local_x0_gain"]
    )
    fn = with_noise_level(jax.tree_util.Partial(model.apply, params), cosine_schedule(1000))
    np.testing.assert_allclose(
        fn(x, t, mask, cond), model.apply(params, x, t, mask, cond), atol=1e-6
    )


def test_local_geometry_features_of_an_ideal_trace():
    """Bond distance features read 3.8 Å and the bond validity follows the mask."""
    i = np.arange(REAL)
    helix = np.stack([2.3 * np.cos(1.745 * i), 2.3 * np.sin(1.745 * i), 1.5 * i], -1)
    mask = jnp.asarray(np.arange(REAL)[None] < 9)
    feats, bond_ok = local_geometry_features(jnp.asarray(helix[None], jnp.float32), mask, 8)
    feats, bond_ok = np.asarray(feats), np.asarray(bond_ok)
    np.testing.assert_array_equal(bond_ok[0], np.arange(REAL) < 8)
    bond = np.linalg.norm(helix[1] - helix[0])
    np.testing.assert_allclose(feats[0, :8, 8], bond / 10, rtol=1e-5)  # d_{i,i+1} / 10 column
    np.testing.assert_array_equal(feats[0, 9:], 0.0)


# --------------------------------------------------------------------------- recipe helpers


def test_chain_positions_jump_at_breaks():
    ca = np.zeros((6, 3), np.float32)
    chain = Chain("x_A", ca, "AAAAAA", np.array([1, 2, 3, 10, 11, 11]), "A", np.array([2, 4]))
    np.testing.assert_array_equal(chain_positions(chain), [0, 1, 2, 9, 10, 12])
    # A saved ChainSet gives the breaks back (where positions jump) for the geometry report.
    (trace,) = ChainSet.of([chain], 8).traces()
    np.testing.assert_array_equal(trace.breaks, [2, 4])
    assert trace.ca.shape == (6, 3)


def test_centred_denoise_fn_adds_the_exact_centre_of_mass_part():
    schedule = cosine_schedule(10)
    zero = jax.tree_util.Partial(lambda x, t, mask, cond: jnp.zeros_like(x))
    fn = centred_denoise_fn(zero, schedule)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 3)), jnp.float32)
    mask = jnp.asarray(np.arange(5)[None] < np.array([[5], [3]]))
    t = jnp.array([2, 7])
    out = np.asarray(fn(x, t, mask, None))
    com = (np.asarray(x) - np.asarray(masked_center(x, mask)))[:, :1]
    expected = com / np.asarray(schedule.sqrt_one_minus_alpha_bars)[[2, 7], None, None]
    np.testing.assert_allclose(out[0], np.broadcast_to(expected[0], (5, 3)), rtol=1e-5)
    np.testing.assert_allclose(out[1, :3], np.broadcast_to(expected[1], (3, 3)), rtol=1e-5)
    np.testing.assert_array_equal(out[1, 3:], 0.0)
    np.testing.assert_allclose(np.asarray(fn(masked_center(x, mask), t, mask, None)), 0, atol=1e-5)


# --------------------------------------------------------------------------- training, sampling, CLI


@pytest.fixture(scope="module")
def chain_folder(shared_data, tmp_path_factory) -> Path:
    """Five of the shortest real chains (40-50 residues, no breaks)."""
    folder = tmp_path_factory.mktemp("chains")
    names = ["1K9Q_A", "1SAK_A", "1W4E_A", "1NVO_A", "1GUU_A"]
    for name in names:
        shutil.copy(shared_data / "structures" / "pdb" / f"{name}.pdb", folder)
    return folder


def _tiny(folder: Path, **kw) -> bb.BackboneConfig:
    return dataclasses.replace(
        bb.RECIPE.make_config("backbone"), data=str(folder), **{**TINY, **kw}
    )


def _sample(run: Path, **given):
    return bb.RECIPE.run_command("sample", [run], given)


def _evaluate(run: Path, **given):
    return bb.RECIPE.run_command("evaluate", [run], given)


@pytest.fixture(scope="module")
def run_dir(chain_folder, tmp_path_factory) -> Path:
    """A tiny run trained for 1 step, then resumed to 2 steps (the resume test checks the log)."""
    run = tmp_path_factory.mktemp("run")
    first = bb.RECIPE.train(_tiny(chain_folder, steps=1), run, progress=False)
    assert first["steps"] == 1 and first["num_train"] == 5
    second = bb.RECIPE.train(_tiny(chain_folder, steps=2), run, progress=False)
    assert second["steps"] == 2
    return run


def test_train_writes_the_run_folder_and_resumes(run_dir):
    for name in ("config.json", "run.json", "data.json", "data.npz", "summary.json", "curves.png"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "run.json").read_text())["family"] == "backbone"
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in records] == [1, 2]  # the resumed call did one step, not two
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    loaded = bb.RECIPE.load_run(run_dir)
    assert loaded.config.steps == 2 and bb.make_schedule(loaded.config).num_steps == 10
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(loaded.params))


def test_extra_data_is_pooled_and_a_manifest_folder_keeps_its_own_split(
    chain_folder, shared_data, tmp_path
):
    # A cgdms-like second folder: three real cgdms chains and a manifest holding one of them out.
    extra = tmp_path / "cgdms" / "pdb"
    extra.mkdir(parents=True)
    rows = ["name,split"]
    names = sorted(p.stem for p in (shared_data / "structures_cgdms" / "pdb").glob("*.pdb"))[:3]
    for i, name in enumerate(names):
        shutil.copy(shared_data / "structures_cgdms" / "pdb" / f"{name}.pdb", extra)
        rows.append(f"{name},{'val' if i == 0 else 'train'}")
    (extra.parent / "manifest.csv").write_text("\n".join(rows) + "\n")
    config = _tiny(chain_folder, extra_data=str(extra), min_length=20, max_length=128,
                   buckets=(64, 128))  # fmt: skip
    data = bb.RECIPE.prepare(config, progress=False)
    assert data.folders == [str(chain_folder), str(extra)]
    held = set(data.holdout.names.tolist())
    trained = set(data.train.names.tolist())
    # holdout_fraction 0 holds nothing of the first folder; the manifest holds out exactly names[0].
    assert {n.rsplit("_", 1)[0] for n in held} | held >= {names[0]} and len(held) == 1
    assert len(trained) == 5 + 2 and not held & trained


def test_data_round_trips_and_device_batches_draw_rows_of_their_bucket_only(chain_folder, tmp_path):
    # Lengths 40, 42 fall in bucket 44; 45, 48, 50 in bucket 64.
    config = _tiny(chain_folder, buckets=(44, 64), batch_tokens=176)
    data = bb.RECIPE.prepare(config, progress=False)
    bb.RECIPE.save_data(RunDir(tmp_path), data)
    loaded = bb.RECIPE.load_data(RunDir(tmp_path))
    assert loaded.folders == data.folders and loaded.skipped == data.skipped
    for split in ("train", "holdout"):
        for field in ChainSet.FIELDS:
            np.testing.assert_array_equal(
                getattr(getattr(loaded, split), field), getattr(getattr(data, split), field)
            )
    assert bb.RECIPE.describe_data(config, loaded) == {
        "num_train": 5, "num_holdout": 0, "num_skipped": 0
    }  # fmt: skip
    train = loaded.train
    assert train.x0.shape == (5, 64, 3) and sorted(train.lengths) == [40, 42, 45, 48, 50]
    groups = bb.RECIPE.batches(config, loaded)
    assert [g.name for g in groups] == ["L44", "L64"]
    assert [g.batch_size for g in groups] == [4, 2]  # batch_tokens // bucket
    assert [g.weight for g in groups] == [2.0, 3.0]  # chains per bucket
    key = jax.random.key(0)
    for group, bucket in zip(groups, (44, 64), strict=True):
        members = [i for i, n in enumerate(train.lengths) if bucket_for(int(n), (44, 64)) == bucket]
        draw = jax.jit(group.draw)
        seen = set()
        for step in range(20):
            batch = jax.device_get(draw(group.arrays, jax.random.fold_in(key, step), step))
            x0, mask, positions = batch["x0"], batch["mask"], batch["positions"]
            assert x0.shape == (group.batch_size, bucket, 3) and x0.dtype == np.float32
            assert mask.shape == positions.shape == (group.batch_size, bucket)
            assert mask.dtype == bool and positions.dtype == np.int32
            for row in range(group.batch_size):
                length = int(mask[row].sum())
                np.testing.assert_array_equal(mask[row], np.arange(bucket) < length)
                np.testing.assert_array_equal(positions[row, :length], np.arange(length))
                np.testing.assert_array_equal(positions[row, length:], 0)
                np.testing.assert_array_equal(x0[row, length:], 0.0)
                np.testing.assert_allclose(x0[row, :length].mean(0), 0.0, atol=1e-5)
                match = [i for i in members if np.array_equal(train.x0[i, :bucket], x0[row])]
                assert len(match) == 1, "a drawn row is not a chain of this bucket"
                seen.add(match[0])
        assert seen == set(members)  # uniform draws with replacement reach every chain


def test_steps_per_call_does_not_change_training(chain_folder, tmp_path):
    """Two updates in one scan (steps_per_call=2) equal two calls of one update each."""
    kw = dict(steps=2, log_every=2, eval_every=0, checkpoint_every=2)
    params, losses = [], []
    for n in (1, 2):
        run = tmp_path / f"spc{n}"
        summary = bb.RECIPE.train(_tiny(chain_folder, steps_per_call=n, **kw), run, progress=False)
        assert summary["steps"] == 2
        params.append(bb.RECIPE.load_run(run).params)
        losses.append(summary["last_train"]["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_command_options_are_typed_and_foreign_flags_refused():
    opts = bb.RECIPE.options("sample", {"out": "o"})
    assert (opts.num, opts.length, opts.sampler, opts.steps) == (8, None, "ddpm", None)
    assert opts.noise_scale is None and opts.trajectory is False and opts.seed is None
    with pytest.raises(DataError, match="--family does not apply to sample"):
        bb.RECIPE.options("sample", {"out": "o", "family": "X"})
    with pytest.raises(DataError, match="--temperature"):
        bb.RECIPE.options("sample", {"out": "o", "temperature": 0.5})
    with pytest.raises(DataError, match="--motif does not apply to evaluate"):
        bb.RECIPE.options("evaluate", {"out": "o", "motif": "x"})
    with pytest.raises(DataError, match="--num must be >= 1"):
        bb.RECIPE.options("sample", {"out": "o", "num": 0})
    with pytest.raises(DataError, match="--sampler must be one of ddpm, ddim"):
        bb.RECIPE.options("sample", {"out": "o", "sampler": "x"})
    with pytest.raises(DataError, match="--length must be <= 1024"):
        bb.RECIPE.options("sample", {"out": "o", "length": 2000})
    assert bb.RECIPE.options("evaluate", {"out": "o", "noise_scale": 0}).noise_scale == 0.0


@pytest.mark.parametrize("name", ["config.json", "improved.json"])
def test_experiment_config_trains_one_step(name, chain_folder, tmp_path):
    """experiments/backbone_ca/*.json: every key is a config field, and one step runs."""
    path = REPO / "experiments" / "backbone_ca" / name
    keys = set(json.loads(path.read_text()))
    assert keys <= set(config_to_dict(bb.RECIPE.make_config("backbone")))
    config = load_config(bb.BackboneConfig, path)
    config = dataclasses.replace(
        config, data=str(chain_folder), extra_data="", steps=1, buckets=(64,), max_length=64,
        batch_tokens=128, devices=1, eval_every=0,
    )  # fmt: skip
    summary = bb.RECIPE.train(config, tmp_path, progress=False)
    assert summary["steps"] == 1 and np.isfinite(summary["last_train"]["loss"])


def test_self_conditioned_x0_term_run_trains_samples_and_evaluates(chain_folder, tmp_path):
    config = _tiny(chain_folder, steps=2, self_condition=True, x0_loss_weight=1.0, eval_every=2)
    summary = bb.RECIPE.train(config, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["last_train"]["loss"])
    loaded = bb.RECIPE.load_run(tmp_path / "run")
    assert loaded.model.self_condition and "pair_self_cond" in loaded.params["params"]
    out = tmp_path / "eval.json"
    report = _evaluate(tmp_path / "run", out=str(out), num=2, data=str(chain_folder))
    assert np.isfinite(report["heldout_bound"]["bits_per_coordinate"])
    assert all(np.isfinite(report["model"][k]) for k in ("bond_fraction", "rg_mean"))


def test_sample_writes_pdbs_of_the_requested_length(run_dir, tmp_path):
    out = tmp_path / "samples"
    summary = _sample(run_dir, num=3, length=24, out=str(out), trajectory=True)
    files = sorted(out.glob("sample_*.pdb"))
    assert len(files) == 3 and summary["num"] == 3
    for path in files:
        chain = load_chain(path, min_length=1)
        assert chain.length == 24 and np.isfinite(chain.ca).all()
    frames = pdb.PDBFile.read(str(out / "trajectories" / "sample_0000.pdb")).get_structure()
    assert frames.stack_depth() == 10 and frames.array_length() == 24  # T=10 steps, stride 1
    # The last frame is the written sample (up to the PDB's 3 decimals).
    np.testing.assert_allclose(frames.coord[-1], load_chain(files[0], min_length=1).ca, atol=2e-3)
    ddim = _sample(run_dir, num=2, length=20, out=str(tmp_path / "d"), sampler="ddim", steps=4)
    assert ddim["steps"] == 4 and len(list((tmp_path / "d").glob("*.pdb"))) == 2
    # Reduced noise: same key and start noise, less noise per step -> a different, valid sample.
    calm = _sample(run_dir, num=3, length=24, out=str(tmp_path / "n"), noise_scale=0.5)
    assert calm["noise_scale"] == 0.5 and summary["noise_scale"] == 1.0
    calm_ca = load_chain(tmp_path / "n" / "sample_0000.pdb", min_length=1).ca
    assert np.isfinite(calm_ca).all()
    assert not np.allclose(calm_ca, load_chain(files[0], min_length=1).ca, atol=1e-2)
    with pytest.raises(DataError, match="--noise-scale must be >= 0"):
        _sample(run_dir, num=1, length=24, out=str(tmp_path / "m"), noise_scale=-1)
    with pytest.raises(DataError, match="--noise-scale must be <= 2"):
        _sample(run_dir, num=1, length=24, out=str(tmp_path / "m"), noise_scale=3)
    with pytest.raises(DataError, match=r"--steps must be in \[1, 10\]"):
        _sample(run_dir, num=1, out=str(tmp_path / "m"), sampler="ddim", steps=11)


def test_motif_scaffolding_keeps_the_motif(run_dir, chain_folder, tmp_path):
    source = load_chain(chain_folder / "1GUU_A.pdb")
    first, last = int(source.residue_ids[10]), int(source.residue_ids[19])
    spec = f"{chain_folder / '1GUU_A.pdb'}:A:{first}-{last}@6"
    out = tmp_path / "motif"
    summary = _sample(run_dir, num=2, length=30, out=str(out), motif=spec)
    motif = source.ca[10:20]
    for path in sorted(out.glob("sample_*.pdb")):
        x = load_chain(path, min_length=1).ca
        assert kabsch_rmsd(motif, x[5:15]) < 5e-3  # exact up to the PDB's 3 decimals
        # Kept as a rigid body: the motif is only translated (centred), never rotated or bent.
        np.testing.assert_allclose(x[5:15] - x[5:15].mean(0), motif - motif.mean(0), atol=5e-3)
    metrics = summary["motif"]
    assert metrics["motif_rmsd_max"] < 1e-3
    assert metrics["num_junctions"] == 4 and np.isfinite(metrics["junction_distance_mean"])
    assert metrics["segments"] == [
        {"motif": f"1GUU_A.pdb:A:{first}-{last}", "start": 6, "length": 10}
    ]


def test_motif_spec_errors(chain_folder):
    path = chain_folder / "1GUU_A.pdb"  # residues 40-89, no breaks
    with pytest.raises(DataError, match="FILE:CHAIN:START-END"):
        bb.parse_motif("nonsense", 50)
    with pytest.raises(DataError, match="chain 'Z' not found"):
        bb.parse_motif(f"{path}:Z:45-50", 50)
    with pytest.raises(DataError, match="no residues"):
        bb.parse_motif(f"{path}:A:5-10", 50)
    with pytest.raises(DataError, match="do not fit"):
        bb.parse_motif(f"{path}:A:45-54@45", 50)
    with pytest.raises(DataError, match="give @POS"):
        bb.parse_motif(f"{path}:A:45-50;{path}:A:60-65", 50)
    with pytest.raises(DataError, match="overlap"):
        bb.parse_motif(f"{path}:A:45-50@1;{path}:A:60-65@4", 50)
    with pytest.raises(DataError, match="more than 1 bonds can span"):
        bb.parse_motif(f"{path}:A:45-50@1;{path}:A:80-85@7", 50)
    two = bb.parse_motif(f"{path}:A:60-65@30;{path}:A:45-50@1", 50)
    np.testing.assert_array_equal(two.indices, list(range(0, 6)) + list(range(29, 35)))
    source = load_chain(path)
    np.testing.assert_array_equal(two.coords, np.concatenate([source.ca[5:11], source.ca[20:26]]))
    single = bb.parse_motif(f"{path}:A:45-54", 50)  # centred by default
    np.testing.assert_array_equal(single.indices, np.arange(20, 30))


def test_evaluate_writes_the_report(run_dir, chain_folder, tmp_path):
    out = tmp_path / "eval" / "eval.json"
    report = _evaluate(run_dir, out=str(out), num=3, data=str(chain_folder))
    saved = json.loads(out.read_text())
    for key in (
        "natural",
        "model",
        "random_walk",
        "model_vs_natural",
        "random_walk_vs_natural",
        "gap_closed",
        "targets",
        "heldout_bound",
    ):
        assert key in saved, key
    assert saved["num_samples"] == 3 and saved["num_reference"] == 5
    assert saved["random_walk"]["bond_fraction"] == 1.0  # the floor has ideal bonds by construction
    assert set(saved["model_vs_natural"]) == set(saved["gap_closed"])
    assert np.isfinite(report["heldout_bound"]["bits_per_coordinate"])
    assert (tmp_path / "eval" / "eval_geometry.png").exists()
    assert (tmp_path / "eval" / "eval_random_walk.png").exists()
    assert len(list((tmp_path / "eval" / "eval_samples").glob("*.pdb"))) == 3
    # Without --data the reference is the run's saved holdout (empty here: holdout_fraction=0).
    with pytest.raises(DataError, match="the holdout split: 0 reference"):
        _evaluate(run_dir, out=str(tmp_path / "e.json"), num=1)


def test_cli_end_to_end(chain_folder, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    args = ["--quiet", "train", "backbone", "--data", str(chain_folder), "--out", str(run)]
    assert cli.main(args + ["--steps", "1"] + [a for s in sets for a in ("--set", s)]) == 0
    out = tmp_path / "pdbs"
    assert (
        cli.main(["--quiet", "sample", str(run), "--num", "2", "--length", "16", "--out", str(out)])
        == 0
    )
    assert len(list(out.glob("sample_*.pdb"))) == 2
    report = tmp_path / "eval.json"
    eval_args = ["--quiet", "evaluate", str(run), "--out", str(report), "--num", "2"]
    assert cli.main(eval_args + ["--data", str(chain_folder)]) == 0
    assert json.loads(report.read_text())["num_samples"] == 2
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--num", "1", "--length", "3", "--out", str(out)]) == 2
    assert "--length must be >= 8" in capsys.readouterr().err
    assert cli.main(["sample", str(run), "--num", "1", "--out", str(out), "--sampler", "x"]) == 2


def test_sample_backbones_respects_lengths_motif_and_trajectory_frames():
    from protgen_jax.structure.sampling import TRAJECTORY_FRAMES, sample_backbones

    schedule = cosine_schedule(20)
    zero_eps = Partial(lambda x_t, t, mask, cond: jnp.zeros_like(x_t))
    rng = np.random.default_rng(0)
    motif_coords = rng.normal(0.0, 5.0, (3, 3)).astype(np.float32)
    motif = (np.array([2, 3, 7]), motif_coords)
    samples, trajectories = sample_backbones(
        jax.random.key(0), zero_eps, schedule, [9, 12, 10], batch_size=2, motif=motif,
        trajectory=True, progress=False,
    )  # fmt: skip
    assert [s.shape for s in samples] == [(9, 3), (12, 3), (10, 3)]
    assert all(t.shape[0] <= TRAJECTORY_FRAMES and t.shape[1:] == s.shape
               for t, s in zip(trajectories, samples, strict=True))  # fmt: skip
    want = np.linalg.norm(motif_coords[:, None] - motif_coords[None], axis=-1)
    for s in samples:  # the motif is kept rigidly (up to the final re-centring)
        got = s[motif[0]]
        np.testing.assert_allclose(
            np.linalg.norm(got[:, None] - got[None], axis=-1), want, atol=1e-3
        )
    again, _ = sample_backbones(
        jax.random.key(0),
        zero_eps,
        schedule,
        [9, 12, 10],
        batch_size=2,
        motif=motif,
        progress=False,
    )
    np.testing.assert_array_equal(again[2], samples[2])  # same key, same chunking: same samples
