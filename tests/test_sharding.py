"""Tests for protgen_jax.sharding on 8 fake CPU devices (see tests/conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from protgen_jax.errors import DataError
from protgen_jax.sharding import data_sharding, make_mesh, replicated, shard_batch
from protgen_jax.train import TrainState, make_train_step

RNG = np.random.default_rng(0)


def test_make_mesh():
    mesh = make_mesh()
    assert mesh.size == len(jax.devices()) == 8
    assert mesh.axis_names == ("data",)
    small = make_mesh(4, axis_name="batch")
    assert small.size == 4 and small.axis_names == ("batch",)
    assert list(small.devices) == jax.devices()[:4]
    for bad in (0, 9):
        with pytest.raises(ValueError, match="num_devices"):
            make_mesh(bad)


def test_shard_batch_splits_leading_axis():
    mesh = make_mesh()
    batch = {
        "x": RNG.normal(size=(16, 5)).astype(np.float32),
        "mask": np.ones((16, 5), bool),
    }
    sharded = shard_batch(batch, mesh)
    for name, leaf in sharded.items():
        assert leaf.sharding == data_sharding(mesh)
        assert leaf.sharding.spec == PartitionSpec("data")
        assert {s.data.shape for s in leaf.addressable_shards} == {(2, 5)}
        np.testing.assert_array_equal(np.asarray(leaf), batch[name])
    # device i holds examples 2i, 2i+1
    shard3 = next(s for s in sharded["x"].addressable_shards if s.device == mesh.devices[3])
    np.testing.assert_array_equal(np.asarray(shard3.data), batch["x"][6:8])


def test_replicated_holds_full_copy_everywhere():
    mesh = make_mesh()
    w = jax.device_put(jnp.arange(6.0).reshape(2, 3), replicated(mesh))
    assert len(w.addressable_shards) == 8
    for shard in w.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), np.arange(6.0).reshape(2, 3))


def _per_example(w, x):
    """[B, C] -> [B]: sum_c tanh(x @ w)."""
    return jnp.sum(jnp.tanh(x @ w), axis=-1)


def test_jitted_per_example_function_on_sharded_batch():
    mesh = make_mesh()
    w = RNG.normal(size=(5, 4)).astype(np.float32)
    x = RNG.normal(size=(24, 5)).astype(np.float32)
    expected = _per_example(jnp.asarray(w), jnp.asarray(x))
    out = jax.jit(_per_example)(jax.device_put(w, replicated(mesh)), shard_batch(x, mesh))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert out.shape == (24,)
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, PartitionSpec("data")), 1)
    assert {s.data.shape for s in out.addressable_shards} == {(3,)}


def test_shard_batch_errors():
    mesh = make_mesh()
    with pytest.raises(DataError, match=r"B=12.*divisible by the 8 devices"):
        shard_batch({"x": np.zeros((12, 3))}, mesh)
    with pytest.raises(DataError, match="scalar"):
        shard_batch({"x": np.zeros((8, 3)), "n": np.float32(1.0)}, mesh)
    with pytest.raises(DataError, match="disagree"):
        shard_batch({"x": np.zeros((8, 3)), "y": np.zeros((16,))}, mesh)


def test_data_parallel_train_step_matches_single_device():
    def loss_fn(params, batch, key):
        del key
        err = batch["x"] @ params["w"] - batch["y"]
        return jnp.mean(err**2), {}

    x = RNG.normal(size=(16, 3)).astype(np.float32)
    y = RNG.normal(size=(16,)).astype(np.float32)
    opt = optax.adam(0.1)

    def init():
        return TrainState.create(lambda p, x: x @ p["w"], {"w": jnp.ones((3,))}, opt)

    step = make_train_step(loss_fn, opt)
    single, m_single = step(init(), {"x": jnp.asarray(x), "y": jnp.asarray(y)}, jax.random.key(0))

    mesh = make_mesh()
    state = jax.device_put(init(), replicated(mesh))
    parallel, m_parallel = step(state, shard_batch({"x": x, "y": y}, mesh), jax.random.key(0))
    np.testing.assert_allclose(parallel.params["w"], single.params["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_parallel["loss"], m_single["loss"], rtol=1e-5)
    assert parallel.params["w"].sharding.is_equivalent_to(replicated(mesh), 1)
