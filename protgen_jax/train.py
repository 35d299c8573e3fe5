"""Training plumbing: a `TrainState` with an EMA copy of the params and jitted train / eval steps.

The loss contract shared by every model family is

    loss_fn(params, batch, key) -> (loss, aux)

with `loss` a scalar (the caller of the per-example `[B]` losses reduces them, usually with a mean)
and `aux` a flat dict of scalars to log. `make_train_step` turns it into one XLA program

    step(state, batch, key) -> (new_state, metrics)

that takes the gradient, applies the optax update, refreshes the EMA (when the state keeps one) and
returns float32 metrics ("loss", the aux entries, and "grad_norm" when asked for with
`grad_norm=True`: the global norm costs one more pass over every gradient per update). With
`steps_per_call=n` the batch carries a leading axis `n` and the `n` updates run inside one
`jax.lax.scan`, which amortises the host round trip on fast accelerators.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> def loss_fn(params, batch, key):
    ...     err = batch["x"] @ params["w"] - batch["y"]
    ...     return jnp.mean(err**2), {}
    >>> params = {"w": jnp.zeros((3,))}
    >>> opt = optax.sgd(0.1)
    >>> state = TrainState.create(apply_fn=lambda p, x: x @ p["w"], params=params, optimizer=opt)
    >>> step = make_train_step(loss_fn, opt)
    >>> batch = {"x": jnp.ones((4, 3)), "y": jnp.ones((4,))}
    >>> state, metrics = step(state, batch, jax.random.key(0))
    >>> int(state.step)
    1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any
LossFn = Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]

_RESERVED_METRICS = ("loss", "grad_norm")


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
    """EMA decay used for the update made at `step` (the number of updates already applied).

    With warm-up, `decay_s = min(decay, (1 + s) / (10 + s))` (the schedule of TensorFlow's
    `ExponentialMovingAverage(num_updates=...)`): 0.1 at the first update, 0.5 at s = 8, reaching
    `decay` after about `9 / (1 - decay)` updates. Without warm-up, `decay_s = decay`.

    Args:
        step: scalar int, updates applied before this one.
        decay: the asymptotic decay in [0, 1].
        warmup: whether to apply the warm-up schedule.

    Returns:
        Scalar float32 decay.
    """
    chex.assert_rank(step, 0)
    decay = jnp.float32(decay)
    if not warmup:
        return decay
    s = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


class TrainState(struct.PyTreeNode):
    """Parameters, their EMA copy and the optimizer state, as one pytree that jit can donate.

    Attributes:
        step: int32 scalar, number of updates applied.
        params: the model parameters (any pytree of arrays).
        ema_params: exponential moving average of `params`, same structure:
            `ema <- d_s * ema + (1 - d_s) * params` after each update, `d_s = ema_decay_at(s, ...)`;
            None when `ema_decay == 0` (no EMA: no copy in memory or in checkpoints, no work in the
            step; `ema_apply_fn` then uses `params`).
        opt_state: the optax optimizer state for `params`.
        apply_fn: static; the network's apply function, e.g. `module.apply`.
        ema_decay: static; the asymptotic EMA decay.
        ema_warmup: static; whether the decay warms up as `min(ema_decay, (1 + s) / (10 + s))`. On
            by default: short runs (smoke tests, small data) then get an EMA that has moved away
            from the random initialisation, while long runs see the plain `ema_decay` after about
            `9 / (1 - ema_decay)` updates (9000 for 0.999).

    The optimizer is not stored (it is given to `make_train_step`), so the state holds only arrays
    plus the static fields above, and checkpoints hold only arrays.
    """

    step: jax.Array
    params: PyTree
    ema_params: PyTree
    opt_state: optax.OptState
    apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
    ema_decay: float = struct.field(pytree_node=False, default=0.999)
    ema_warmup: bool = struct.field(pytree_node=False, default=True)

    @classmethod
    def create(
        cls,
        apply_fn: Callable[..., Any],
        params: PyTree,
        optimizer: optax.GradientTransformation,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
    ) -> TrainState:
        """A state at step 0: `ema_params` a copy of `params` (None when `ema_decay == 0`),
        `opt_state = optimizer.init(params)`.

        The EMA copy owns its own buffers (`jnp.copy`), so donating the state never donates one
        buffer twice. Note that the first donated step consumes the buffers of `params` itself.

        Args:
            apply_fn: the network's apply function, `apply_fn(params, *inputs)`.
            params: the initial parameters.
            optimizer: the optax transformation that `make_train_step` will be given.
            ema_decay: asymptotic EMA decay in [0, 1]; 0 keeps no EMA.
            ema_warmup: use the warm-up schedule `min(ema_decay, (1 + s) / (10 + s))`.

        Returns:
            The new `TrainState`.
        """
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1], got {ema_decay}")
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            ema_params=jax.tree.map(jnp.copy, params) if ema_decay > 0 else None,
            opt_state=optimizer.init(params),
            apply_fn=apply_fn,
            ema_decay=float(ema_decay),
            ema_warmup=bool(ema_warmup),
        )

    @property
    def ema_apply_fn(self) -> jax.tree_util.Partial:
        """`Partial(apply_fn, ema_params)`: the EMA network as a pytree callable for samplers
        (`params` when the state keeps no EMA)."""
        params = self.params if self.ema_params is None else self.ema_params
        return jax.tree_util.Partial(self.apply_fn, params)

    @property
    def params_apply_fn(self) -> jax.tree_util.Partial:
        """`Partial(apply_fn, params)`: the raw (non-EMA) network as a pytree callable."""
        return jax.tree_util.Partial(self.apply_fn, self.params)

    def apply_gradients(self, grads: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
        """One optimizer update followed by the EMA update (none when `ema_params` is None).

        `params' = params + optimizer.update(grads, opt_state, params)`,
        `ema' = d_s * ema + (1 - d_s) * params'`, `step' = step + 1`.

        Args:
            grads: gradients, same structure as `params`.
            optimizer: the transformation whose state is `opt_state`.

        Returns:
            The updated state.
        """
        chex.assert_trees_all_equal_structs(grads, self.params)
        updates, opt_state = optimizer.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        ema_params = None
        if self.ema_params is not None:
            d = ema_decay_at(self.step, self.ema_decay, self.ema_warmup)
            ema_params = jax.tree.map(
                lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), self.ema_params, params
            )
        return self.replace(
            step=self.step + 1, params=params, ema_params=ema_params, opt_state=opt_state
        )


def _float32_metrics(loss: jax.Array, aux: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """`{"loss": loss, **aux}` as float32 scalars, refusing aux keys that shadow reserved names."""
    chex.assert_rank(loss, 0)
    clash = [k for k in aux if k in _RESERVED_METRICS]
    if clash:
        raise ValueError(f"loss_fn aux may not use the reserved metric names {clash}")
    metrics = {"loss": jnp.asarray(loss, jnp.float32)}
    for name, value in aux.items():
        chex.assert_rank(value, 0)
        metrics[name] = jnp.asarray(value, jnp.float32)
    return metrics


def _update(
    grad_fn: Callable,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    batch: PyTree,
    key: jax.Array,
    grad_norm: bool,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update: gradient of the loss, optimizer step, EMA; metrics are the loss, its aux entries
    and, with ``grad_norm``, ``grad_norm = sqrt(sum_i g_i^2)`` (before any clipping inside
    ``optimizer``), all float32."""
    (loss, aux), grads = grad_fn(state.params, batch, key)
    metrics = _float32_metrics(loss, aux)
    if grad_norm:
        metrics["grad_norm"] = optax.tree.norm(grads).astype(jnp.float32)
    return state.apply_gradients(grads, optimizer), metrics


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    steps_per_call: int = 1,
    donate: bool = True,
    grad_norm: bool = False,
) -> Callable[[TrainState, PyTree, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted `step(state, batch, key) -> (new_state, metrics)` running `steps_per_call` updates.

    One update: `(loss, aux), g = value_and_grad(loss_fn, has_aux=True)(params, batch, key)`, then
    `state.apply_gradients(g, optimizer)`; metrics are `loss`, the aux entries and, with
    `grad_norm=True`, `grad_norm = sqrt(sum_i g_i^2)` (the global norm before any clipping inside
    `optimizer`), all float32 scalars.

    With `steps_per_call = n > 1` every leaf of `batch` has a leading axis `n` (one slice per
    update); the `n` updates run inside one `jax.lax.scan`, update `i` draws its randomness from
    `jax.random.fold_in(key, i)`, and each metric is the mean over the `n` updates. So one call with
    `n` equals `n` calls with `steps_per_call=1` given batches `batch[i]` and keys `fold_in(key,
    i)`. With `n = 1` the batch has no extra axis and `key` is passed to `loss_fn` unchanged.

    Args:
        loss_fn: `loss_fn(params, batch, key) -> (scalar loss, dict of scalar aux metrics)`.
        optimizer: the optax transformation whose state lives in `state.opt_state`.
        steps_per_call: number of updates per call, `n >= 1`.
        donate: donate the input state's buffers to the output (`donate_argnums=0`); the caller must
            not use the old state after the call.
        grad_norm: also return the global gradient norm (one more pass over the gradients).

    Returns:
        The jitted step function.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def one_update(
        state: TrainState, batch: PyTree, key: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        return _update(grad_fn, optimizer, state, batch, key, grad_norm)

    def multi_update(
        state: TrainState, batch: PyTree, key: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        chex.assert_tree_shape_prefix(batch, (steps_per_call,))

        def body(
            carry: TrainState, xs: tuple[jax.Array, PyTree]
        ) -> tuple[TrainState, dict[str, jax.Array]]:
            i, batch_i = xs
            return one_update(carry, batch_i, jax.random.fold_in(key, i))

        indices = jnp.arange(steps_per_call, dtype=jnp.int32)
        state, metrics = jax.lax.scan(body, state, (indices, batch))
        return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

    step = one_update if steps_per_call == 1 else multi_update
    return jax.jit(step, donate_argnums=(0,) if donate else ())


@jax.jit
def all_finite(tree: PyTree) -> jax.Array:
    """Scalar bool: every element of every (floating) leaf of ``tree`` is finite.

    One read of each leaf; the training loop runs it once per host call on the updated params (a
    cheap guard against a finite loss whose update made the params NaN, when the per-update
    gradient norm is not computed).
    """
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def make_eval_step(
    loss_fn: LossFn,
) -> Callable[[PyTree, PyTree, jax.Array], dict[str, jax.Array]]:
    """A jitted `eval_step(params, batch, key) -> metrics` with no update.

    `metrics = {"loss": loss, **aux}` as float32 scalars from `loss_fn(params, batch, key)`. Pass
    `state.params` or `state.ema_params` to evaluate either copy with the same compiled program.

    Args:
        loss_fn: `loss_fn(params, batch, key) -> (scalar loss, dict of scalar aux metrics)`.

    Returns:
        The jitted evaluation function.
    """

    def eval_step(params: PyTree, batch: PyTree, key: jax.Array) -> dict[str, jax.Array]:
        loss, aux = loss_fn(params, batch, key)
        return _float32_metrics(loss, aux)

    return jax.jit(eval_step)


DrawBatch = Callable[[PyTree, jax.Array, jax.Array], PyTree]


def make_scan_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    draw_batch: DrawBatch,
    *,
    steps_per_call: int = 1,
    batch_sharding: jax.sharding.Sharding | None = None,
    donate: bool = True,
    grad_norm: bool = False,
) -> Callable[[TrainState, PyTree, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """A jitted `step(state, data, key) -> (new_state, metrics)` that draws its own batches.

    The whole inner loop runs on the device: for each of the `n = steps_per_call` updates, with
    `s = state.step` the number of updates already applied,

        k_batch, k_loss = split(fold_in(key, s))
        batch = draw_batch(data, k_batch, s)
        state = update(state, batch, k_loss)

    inside one `jax.lax.scan`. `data` is a pytree of device-resident arrays (the training set, passed
    as an argument so it is not baked into the program as a constant); `draw_batch` must be pure. The
    randomness of update `s` depends only on `(key, s)`, so any split of a run into calls, and a run
    resumed from a checkpoint, replays exactly the same updates.

    With `batch_sharding` (e.g. `sharding.data_sharding(mesh)`) every drawn batch leaf of rank >= 1
    is constrained to that layout (scalars, such as a KL weight, stay replicated) (leading axis split over the devices) and jit inserts the gradient all-reduce; the
    state and `data` should then be replicated on the mesh.

    Args:
        loss_fn: `loss_fn(params, batch, key) -> (scalar loss, dict of scalar aux metrics)`.
        optimizer: the optax transformation whose state lives in `state.opt_state`.
        draw_batch: `(data, key, step) -> batch`, jittable, static shapes.
        steps_per_call: updates per call, `n >= 1`.
        batch_sharding: optional sharding for every leaf of the drawn batch.
        donate: donate the input state's buffers to the output.
        grad_norm: also return the global gradient norm of every update (metric `grad_norm`).

    Returns:
        The jitted step; its metrics are stacked per update, `[n]` float32 each.
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def call(
        state: TrainState, data: PyTree, key: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        def body(state: TrainState, _: None) -> tuple[TrainState, dict[str, jax.Array]]:
            batch_key, loss_key = jax.random.split(jax.random.fold_in(key, state.step))
            batch = draw_batch(data, batch_key, state.step)
            if batch_sharding is not None:
                batch = jax.tree.map(
                    lambda x: jax.lax.with_sharding_constraint(x, batch_sharding) if x.ndim else x,
                    batch,
                )
            return _update(grad_fn, optimizer, state, batch, loss_key, grad_norm)

        if steps_per_call == 1:  # no loop: a length-1 scan costs XLA a copy of the carried state
            state, metrics = body(state, None)
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(body, state, None, length=steps_per_call)

    return jax.jit(call, donate_argnums=(0,) if donate else ())
