"""Tests for protgen_jax.checkpoint: keep-N, resharding on restore, crash safety, damaged steps,
atomic JSON."""

import json
import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from protgen_jax.atomic import atomic_write, save_json_atomic, save_npz_atomic
from protgen_jax.checkpoint import Checkpointer
from protgen_jax.errors import DataError
from protgen_jax.train import TrainState


def _apply(params, x):
    return x @ params["w"]


def _state(scale: float = 1.0) -> TrainState:
    params = {
        "w": scale * jnp.arange(16, dtype=jnp.float32).reshape(8, 2),
        "b": jnp.full((3,), scale, jnp.float32),
    }
    return TrainState.create(_apply, params, optax.adam(1e-3), ema_decay=0.9)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_keep_last_two_and_metadata(tmp_path):
    with Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        for step in range(5):
            assert ckpt.save(step, _state(float(step + 1)), metadata={"step": step, "model": "vae"})
        assert ckpt.all_steps() == [3, 4]
        assert ckpt.latest_step() == 4
        assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["3", "4"]

        state, metadata = ckpt.restore(_state(0.0))
        _assert_trees_equal(state, _state(5.0))
        assert metadata == {"step": 4, "model": "vae"}
        assert isinstance(state, TrainState) and state.apply_fn is _apply
        assert state.ema_decay == 0.9

        state3, metadata3 = ckpt.restore(_state(0.0), step=3)
        _assert_trees_equal(state3, _state(4.0))
        assert metadata3["step"] == 3

        # existing or older steps are never overwritten
        assert not ckpt.save(4, _state(9.0))
        assert not ckpt.save(2, _state(9.0), force=True)
        _assert_trees_equal(ckpt.restore(_state(0.0))[0], _state(5.0))


def test_save_interval_and_force(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=None, save_interval_steps=3) as ckpt:
        written = [ckpt.save(s, {"a": jnp.float32(s)}) for s in range(7)]
        assert written == [True, False, False, True, False, False, True]
        assert ckpt.save(7, {"a": jnp.float32(7)}, force=True)
        assert ckpt.all_steps() == [0, 3, 6, 7]
        restored, metadata = ckpt.restore({"a": jnp.float32(0)})
        assert float(restored["a"]) == 7.0 and metadata == {}


def test_restore_sharded_state_onto_one_device_and_back(tmp_path):
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    assert mesh.size == 8
    data = NamedSharding(mesh, PartitionSpec("data"))
    state = _state(2.0)
    state = state.replace(
        params={**state.params, "w": jax.device_put(state.params["w"], data)},
        ema_params={**state.ema_params, "w": jax.device_put(state.ema_params["w"], data)},
    )
    assert len(state.params["w"].addressable_shards) == 8
    expected = jax.device_get(state)

    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(10, state)

    # a fresh manager, as after a restart, onto a single-device target
    one_device = SingleDeviceSharding(jax.devices()[0])
    target = jax.device_put(_state(0.0), one_device)
    with Checkpointer(tmp_path) as ckpt:
        restored, _ = ckpt.restore(target)
    _assert_trees_equal(restored, expected)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == one_device

    # and back from the single-device checkpoint onto an abstract 8-way sharded target
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(11, restored)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                x.shape, x.dtype, sharding=NamedSharding(mesh, PartitionSpec())
            ),
            _state(0.0),
        )
        abstract = abstract.replace(
            params={
                **abstract.params,
                "w": jax.ShapeDtypeStruct((8, 2), jnp.float32, sharding=data),
            }
        )
        resharded, _ = ckpt.restore(abstract)
    _assert_trees_equal(resharded, expected)
    assert resharded.params["w"].sharding == data
    assert {s.data.shape for s in resharded.params["w"].addressable_shards} == {(1, 2)}


@pytest.mark.parametrize(
    "tmp_name",
    # orbax 0.12 names the folder `<step>.orbax-checkpoint-tmp`; older versions add `-<timestamp>`
    ["5.orbax-checkpoint-tmp", "5.orbax-checkpoint-tmp-1700000000"],
)
def test_leftover_half_written_step_is_ignored(tmp_path, tmp_name):
    ckpt_dir = tmp_path / "ckpt"
    with Checkpointer(ckpt_dir) as ckpt:
        ckpt.save(3, _state(3.0), metadata={"step": 3})

    # What a crash during `save(5)` leaves: orbax writes into the temporary folder and renames it to
    # `5` only when complete. Fake one with part of its files missing.
    tmp_step = ckpt_dir / tmp_name
    shutil.copytree(ckpt_dir / "3", tmp_step)
    shutil.rmtree(tmp_step / "state")
    (tmp_step / "commit_success.txt").unlink(missing_ok=True)

    with Checkpointer(ckpt_dir) as ckpt:
        assert ckpt.latest_step() == 3
        assert ckpt.all_steps() == [3]
        state, metadata = ckpt.restore_or_none(_state(0.0))
        _assert_trees_equal(state, _state(3.0))
        assert metadata == {"step": 3}
        # the next save completes step 5 and removes the leftover temporary folder
        assert ckpt.save(5, _state(5.0))
        assert ckpt.all_steps() == [3, 5]
        assert not tmp_step.exists()
        _assert_trees_equal(ckpt.restore(_state(0.0))[0], _state(5.0))


class _Unsaveable:
    """A pytree leaf orbax has no handler for: the save fails after it has started writing."""


def test_save_failing_midway_keeps_previous_checkpoint(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(3, {"a": jnp.arange(3.0)}, metadata={"step": 3})
        with pytest.raises(ValueError, match="Unsupported type"):
            ckpt.save(5, {"a": jnp.arange(3.0) * 2, "z": _Unsaveable()})
        leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("3",)]
        assert leftovers and all(".orbax-checkpoint-tmp" in name for name in leftovers)
        assert ckpt.latest_step() == 3
        restored, metadata = ckpt.restore({"a": jnp.zeros(3)})
        np.testing.assert_array_equal(restored["a"], [0.0, 1.0, 2.0])
        assert metadata == {"step": 3}
        # metadata that is not JSON fails before anything is written
        with pytest.raises(TypeError):
            ckpt.save(6, {"a": jnp.arange(3.0)}, metadata={"bad": object()})
        assert ckpt.save(7, {"a": jnp.arange(3.0) * 2})
        assert ckpt.all_steps() == [3, 7]
        np.testing.assert_array_equal(ckpt.restore({"a": jnp.zeros(3)})[0]["a"], [0.0, 2.0, 4.0])
    # a reopened Checkpointer (the resumed run) removes the leftover at its first save
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(8, {"a": jnp.arange(3.0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "7", "8"]


# orbax's failed tensorstore read leaves an asyncio callback that fires after its loop closed
ORBAX_FAILED_READ = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _files(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


def _truncate_largest(step_dir):
    largest = max(_files(step_dir), key=lambda p: p.stat().st_size)
    with largest.open("r+b") as handle:
        handle.truncate(largest.stat().st_size // 2)


def _empty_array_chunks(step_dir):
    chunks = [p for p in _files(step_dir / "state") if p.parent.name == "d"]
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(b"")


def _garbage_everywhere(step_dir):
    for path in _files(step_dir):
        path.write_bytes(b"garbage")


@ORBAX_FAILED_READ
@pytest.mark.parametrize("corrupt", [_truncate_largest, _empty_array_chunks, _garbage_everywhere])
def test_an_unreadable_newest_step_falls_back_and_its_step_can_be_saved_again(
    tmp_path, capsys, corrupt
):
    ckpt_dir = tmp_path / "ckpt"
    with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:
        ckpt.save(1, _state(1.0), metadata={"step": 1})
        ckpt.save(2, _state(2.0), metadata={"step": 2})
    corrupt(ckpt_dir / "2")
    capsys.readouterr()

    with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:
        state, metadata = ckpt.restore_or_none(_state(0.0))
        _assert_trees_equal(state, _state(1.0))
        assert metadata == {"step": 1}
        warning = capsys.readouterr().err.strip()
        assert len(warning.splitlines()) == 1, warning
        assert f"skipping unreadable checkpoint {ckpt_dir / '2'} (" in warning
        assert warning.endswith("; using step 1")
        # the damaged step no longer counts, but reading alone leaves the folder as it was
        assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
        assert sorted(p.name for p in ckpt_dir.iterdir()) == ["1", "2"]

        # the resumed run saves step 2 again: the damaged folder is moved aside first
        assert ckpt.save(2, _state(3.0), metadata={"step": 2})
        assert f"moved the unreadable checkpoint {ckpt_dir / '2'} aside to 2.corrupt" in (
            capsys.readouterr().err
        )
        assert ckpt.all_steps() == [1, 2]
        assert sorted(p.name for p in ckpt_dir.iterdir()) == ["1", "2", "2.corrupt"]
        _assert_trees_equal(ckpt.restore(_state(0.0))[0], _state(3.0))
    with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:  # as the next resume sees it
        state, metadata = ckpt.restore_or_none(_state(0.0))
        _assert_trees_equal(state, _state(3.0))
        assert metadata == {"step": 2} and capsys.readouterr().err == ""
        assert ckpt.save(3, _state(4.0)) and ckpt.all_steps() == [2, 3]
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["2", "2.corrupt", "3"]


@ORBAX_FAILED_READ
def test_no_readable_step_is_a_data_error_that_moves_nothing(tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    with Checkpointer(ckpt_dir) as ckpt:
        ckpt.save(1, _state(1.0))
        ckpt.save(2, _state(2.0))
    _truncate_largest(ckpt_dir / "1")
    _empty_array_chunks(ckpt_dir / "2")
    with Checkpointer(ckpt_dir) as ckpt:
        with pytest.raises(
            DataError, match=rf"^{ckpt_dir}: no checkpoint can be read \(tried steps 2, 1; step 2: "
        ):
            ckpt.restore_or_none(_state(0.0))
        assert ckpt.save(3, _state(3.0))
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["1", "2", "3"]


def test_a_target_that_no_longer_matches_moves_nothing_aside(tmp_path):
    """A changed model (not damage) fails every step: a DataError saying so, and the run intact."""
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"w": jnp.ones(3)})
        ckpt.save(2, {"w": jnp.ones(3)})
        with pytest.raises(DataError, match=r"stored shape: \(3,\).*model config changed"):
            ckpt.restore_or_none({"w": jnp.ones(5)})
        assert ckpt.all_steps() == [1, 2]
        assert ckpt.restore_or_none({"w": jnp.zeros(3)}) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_empty_folder_and_missing_step(tmp_path):
    with Checkpointer(tmp_path / "new") as ckpt:
        assert ckpt.restore_or_none(_state()) is None
        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            ckpt.restore(_state())
        ckpt.save(1, _state())
        with pytest.raises(FileNotFoundError, match="step 2"):
            ckpt.restore(_state(), step=2)
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path / "bad", max_to_keep=0)


def test_save_json_atomic(tmp_path):
    path = tmp_path / "run" / "config.json"
    save_json_atomic(path, {"lr": 1e-3, "layers": [1, 2]})
    assert json.loads(path.read_text()) == {"lr": 1e-3, "layers": [1, 2]}
    save_json_atomic(path, {"lr": 2e-3})
    assert json.loads(path.read_text()) == {"lr": 2e-3}
    with pytest.raises(TypeError):
        save_json_atomic(path, {"bad": object()})
    # a failed write leaves the previous file intact and no temporary file behind
    assert json.loads(path.read_text()) == {"lr": 2e-3}
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def test_save_json_atomic_writes_strict_json_with_normal_permissions(tmp_path):
    path = tmp_path / "report.json"
    save_json_atomic(
        path, {"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)}
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": 3}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "data.npz"
    save_npz_atomic(path, x=np.arange(3))
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(path, binary=True) as handle:
            handle.write(b"partial")
            raise RuntimeError("disk full")
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["x"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["data.npz"]


def test_save_npz_atomic_accepts_an_array_named_path(tmp_path):
    save_npz_atomic(tmp_path / "a.npz", path="source.a2m", tokens=np.arange(2))
    with np.load(tmp_path / "a.npz") as npz:
        assert str(npz["path"]) == "source.a2m"


def test_a_state_without_ema_restores_and_reads_checkpoints_that_kept_one(tmp_path):
    """ema_decay=0 keeps ema_params=None (nothing saved); a checkpoint written when every state
    kept an EMA copy still restores into such a state (the saved copy is read and dropped)."""
    with_ema = _state(2.0)
    without = TrainState.create(_apply, _state(0.0).params, optax.adam(1e-3), ema_decay=0.0)
    assert without.ema_params is None
    with Checkpointer(tmp_path / "old") as ckpt:
        ckpt.save(1, with_ema)
        for target in (without, jax.eval_shape(lambda: without)):
            state, _ = ckpt.restore(target)
            assert state.ema_params is None
            _assert_trees_equal(state.params, with_ema.params)
    with Checkpointer(tmp_path / "new") as ckpt:
        ckpt.save(1, without.replace(params=with_ema.params))
        state, _ = ckpt.restore(without)
        assert state.ema_params is None
        _assert_trees_equal(state.params, with_ema.params)
