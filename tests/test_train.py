"""Tests for protgen_jax.train: exact SGD step, EMA by hand, scan == loop, donation, no retrace."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from protgen_jax.train import (
    TrainState,
    all_finite,
    ema_decay_at,
    make_eval_step,
    make_scan_train_step,
    make_train_step,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 3)).astype(np.float32)  # [B, C]
Y = RNG.normal(size=(6,)).astype(np.float32)  # [B]
W0 = np.array([0.5, -1.0, 2.0], np.float32)  # [C]


def _apply(params, x):
    return x @ params["w"] + params["b"]


def _regression_loss(params, batch, key):
    """0.5 * mean_b (x_b . w + b - y_b)^2, with aux the mean residual."""
    del key
    err = _apply(params, batch["x"]) - batch["y"]
    return 0.5 * jnp.mean(err**2), {"mean_err": jnp.mean(err)}


def _noisy_loss(params, batch, key):
    """A loss that uses its key, so the per-update key schedule matters."""
    noise = 0.3 * jax.random.normal(key, batch["y"].shape)
    err = _apply(params, batch["x"]) - batch["y"] + noise
    return jnp.mean(err**2), {"noise_mean": jnp.mean(noise)}


def _params():
    return {"w": jnp.asarray(W0), "b": jnp.asarray(0.25, jnp.float32)}


def test_one_sgd_step_is_exact():
    lr = 0.1
    opt = optax.sgd(lr)
    state = TrainState.create(_apply, _params(), opt)
    step = make_train_step(_regression_loss, opt, grad_norm=True)
    new_state, metrics = step(state, {"x": jnp.asarray(X), "y": jnp.asarray(Y)}, jax.random.key(0))

    err = X.astype(np.float64) @ W0 + 0.25 - Y
    grad_w = (err[:, None] * X).mean(axis=0)
    grad_b = err.mean()
    np.testing.assert_allclose(new_state.params["w"], W0 - lr * grad_w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_state.params["b"], 0.25 - lr * grad_b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], 0.5 * np.mean(err**2), rtol=1e-6)
    np.testing.assert_allclose(
        metrics["grad_norm"], np.sqrt(np.sum(grad_w**2) + grad_b**2), rtol=1e-6
    )
    np.testing.assert_allclose(metrics["mean_err"], err.mean(), rtol=1e-5, atol=1e-6)
    assert set(metrics) == {"loss", "grad_norm", "mean_err"}
    assert all(m.dtype == jnp.float32 and m.shape == () for m in metrics.values())
    assert int(new_state.step) == 1 and new_state.step.dtype == jnp.int32


def _linear_loss(params, batch, key):
    """sum(c * w): constant gradient c, so SGD gives w_k = w_0 - k * lr * c exactly."""
    del key
    return jnp.sum(batch["c"] * params["w"]), {}


@pytest.mark.parametrize(
    ("decay", "warmup", "d0", "d1"),
    [
        (0.9, False, 0.9, 0.9),
        # warm-up min(decay, (1+s)/(10+s)): s=0 -> 0.1, s=1 -> min(0.15, 2/11) = 0.15
        (0.15, True, 0.1, 0.15),
        (0.99, True, 0.1, 2.0 / 11.0),
    ],
)
def test_ema_after_two_steps_by_hand(decay, warmup, d0, d1):
    lr, c = 0.5, np.array([1.0, -2.0], np.float32)
    w0 = np.array([3.0, 4.0], np.float32)
    opt = optax.sgd(lr)
    state = TrainState.create(
        _apply, {"w": jnp.asarray(w0)}, opt, ema_decay=decay, ema_warmup=warmup
    )
    step = make_train_step(_linear_loss, opt)
    batch = {"c": jnp.asarray(c)}
    for i in range(2):
        state, _ = step(state, batch, jax.random.key(i))

    w1, w2 = w0 - lr * c, w0 - 2 * lr * c
    ema1 = d0 * w0 + (1 - d0) * w1
    ema2 = d1 * ema1 + (1 - d1) * w2
    np.testing.assert_allclose(state.params["w"], w2, rtol=1e-6)
    np.testing.assert_allclose(state.ema_params["w"], ema2, rtol=1e-6)
    assert not np.allclose(ema2, w2)


def _count_primitives(jaxpr, name: str) -> int:
    """Occurrences of primitive ``name`` in ``jaxpr`` and its sub-jaxprs (scan / pjit bodies)."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _count_primitives(sub, name)
    return count


def test_no_ema_and_no_grad_norm_by_default_cost_nothing():
    """ema_decay=0 keeps no EMA copy (None: nothing stored, donated or updated) and the gradient
    norm is computed only when asked for: the step's program has no square root then."""
    opt = optax.sgd(0.1)
    batch = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
    plain = TrainState.create(_apply, _params(), opt, ema_decay=0.0)
    assert plain.ema_params is None
    assert len(jax.tree.leaves(plain)) == len(jax.tree.leaves(_params())) + 1  # params + step
    step = make_train_step(_regression_loss, opt, donate=False)
    new, metrics = step(plain, batch, jax.random.key(0))
    assert new.ema_params is None and set(metrics) == {"loss", "mean_err"}
    np.testing.assert_allclose(
        new.ema_apply_fn(batch["x"]), _apply(new.params, batch["x"]), rtol=1e-6
    )
    key = jax.random.key(0)
    lean = jax.make_jaxpr(step)(plain, batch, key).jaxpr
    with_norm = jax.make_jaxpr(make_train_step(_regression_loss, opt, grad_norm=True))
    with_ema = TrainState.create(_apply, _params(), opt, ema_decay=0.5)
    assert _count_primitives(lean, "sqrt") == 0
    assert _count_primitives(with_norm(plain, batch, key).jaxpr, "sqrt") == 1
    # the EMA blend: d * ema + (1 - d) * params, two multiplications per leaf more
    n_mul = _count_primitives(jax.make_jaxpr(step)(with_ema, batch, key).jaxpr, "mul")
    assert n_mul >= _count_primitives(lean, "mul") + 2 * len(jax.tree.leaves(_params()))
    # the loop's step too
    draw = lambda data, k, s: data  # noqa: E731
    scan = make_scan_train_step(_regression_loss, opt, draw, steps_per_call=2, donate=False)
    state, metrics = scan(plain, batch, key)
    assert state.ema_params is None and set(metrics) == {"loss", "mean_err"}
    scan_norm = make_scan_train_step(_regression_loss, opt, draw, grad_norm=True, donate=False)
    assert metrics["loss"].shape == (2,) and "grad_norm" in scan_norm(plain, batch, key)[1]


def test_all_finite():
    assert bool(all_finite({"a": jnp.ones(3), "b": jnp.zeros((2, 2)), "i": jnp.arange(3)}))
    assert not bool(all_finite({"a": jnp.ones(3), "b": jnp.array([0.0, jnp.nan])}))
    assert not bool(all_finite([jnp.array([jnp.inf])]))
    assert bool(all_finite({}))


def test_ema_decay_schedule_values():
    steps = jnp.array([0, 8, 10_000], jnp.int32)
    got = [float(ema_decay_at(s, 0.999, True)) for s in steps]
    np.testing.assert_allclose(got, [0.1, 0.5, 0.999], rtol=1e-6)
    assert float(ema_decay_at(steps[0], 0.999, False)) == pytest.approx(0.999)


def test_steps_per_call_scan_equals_loop():
    n = 4
    opt = optax.adam(0.05)
    xs = RNG.normal(size=(n, 6, 3)).astype(np.float32)  # [n, B, C]
    ys = RNG.normal(size=(n, 6)).astype(np.float32)  # [n, B]
    key = jax.random.key(42)

    state_loop = TrainState.create(_apply, _params(), opt, ema_decay=0.5)
    single = make_train_step(_noisy_loss, opt, grad_norm=True)
    loop_metrics = []
    for i in range(n):
        batch_i = {"x": jnp.asarray(xs[i]), "y": jnp.asarray(ys[i])}
        state_loop, m = single(state_loop, batch_i, jax.random.fold_in(key, i))
        loop_metrics.append(m)

    state_scan = TrainState.create(_apply, _params(), opt, ema_decay=0.5)
    multi = make_train_step(_noisy_loss, opt, steps_per_call=n, grad_norm=True)
    state_scan, scan_metrics = multi(state_scan, {"x": jnp.asarray(xs), "y": jnp.asarray(ys)}, key)

    assert int(state_scan.step) == n
    for a, b in zip(jax.tree.leaves(state_scan), jax.tree.leaves(state_loop), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for name in ("loss", "grad_norm", "noise_mean"):
        expected = np.mean([float(m[name]) for m in loop_metrics])
        np.testing.assert_allclose(scan_metrics[name], expected, rtol=1e-6, atol=1e-6)
    # the keys matter: the noise differs between updates
    assert len({float(m["noise_mean"]) for m in loop_metrics}) == n


def test_steps_per_call_rejects_missing_leading_axis():
    opt = optax.sgd(0.1)
    state = TrainState.create(_apply, _params(), opt)
    multi = make_train_step(_regression_loss, opt, steps_per_call=4, donate=False)
    with pytest.raises(AssertionError):
        multi(state, {"x": jnp.asarray(X), "y": jnp.asarray(Y)}, jax.random.key(0))
    with pytest.raises(ValueError, match="steps_per_call"):
        make_train_step(_regression_loss, opt, steps_per_call=0)


def test_donation_consumes_state_and_no_retrace():
    traces = []

    def counting_loss(params, batch, key):
        traces.append(1)  # runs only while tracing
        return _regression_loss(params, batch, key)

    opt = optax.adam(1e-2)
    state = TrainState.create(_apply, _params(), opt)
    step = make_train_step(counting_loss, opt)
    batch = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
    old_leaves = jax.tree.leaves(state)
    state, _ = step(state, batch, jax.random.key(0))
    assert all(leaf.is_deleted() for leaf in old_leaves)
    batch2 = {"x": jnp.asarray(X + 1.0), "y": jnp.asarray(Y - 1.0)}
    state, _ = step(state, batch2, jax.random.key(1))
    assert len(traces) == 1
    assert int(state.step) == 2

    kept = TrainState.create(_apply, _params(), opt)
    no_donate = make_train_step(_regression_loss, opt, donate=False)
    no_donate(kept, batch, jax.random.key(0))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(kept))


def test_eval_step_and_ema_apply_fn():
    opt = optax.sgd(0.1)
    state = TrainState.create(_apply, _params(), opt)
    batch = {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
    eval_step = make_eval_step(_regression_loss)
    metrics = eval_step(state.params, batch, jax.random.key(0))
    err = X.astype(np.float64) @ W0 + 0.25 - Y
    np.testing.assert_allclose(metrics["loss"], 0.5 * np.mean(err**2), rtol=1e-6)
    assert set(metrics) == {"loss", "mean_err"}

    state, _ = make_train_step(_regression_loss, opt)(state, batch, jax.random.key(0))
    fn = state.ema_apply_fn
    assert isinstance(fn, jax.tree_util.Partial)
    np.testing.assert_allclose(fn(batch["x"]), _apply(state.ema_params, batch["x"]), rtol=1e-6)
    np.testing.assert_allclose(
        state.params_apply_fn(batch["x"]), _apply(state.params, batch["x"]), rtol=1e-6
    )


def test_reserved_aux_name_is_rejected():
    def bad_loss(params, batch, key):
        loss, _ = _regression_loss(params, batch, key)
        return loss, {"grad_norm": loss}

    opt = optax.sgd(0.1)
    state = TrainState.create(_apply, _params(), opt)
    with pytest.raises(ValueError, match="reserved"):
        make_train_step(bad_loss, opt, donate=False)(
            state, {"x": jnp.asarray(X), "y": jnp.asarray(Y)}, jax.random.key(0)
        )
    with pytest.raises(ValueError, match="ema_decay"):
        TrainState.create(_apply, _params(), opt, ema_decay=1.5)
