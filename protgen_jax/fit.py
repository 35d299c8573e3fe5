"""The training loop every model family runs: device-side steps, resume, time budget, NaN guard, logs.

``fit`` trains a :class:`~protgen_jax.train.TrainState` from ``config.steps`` and a list of
:class:`BatchGroup` (device-resident arrays + a pure ``draw(arrays, key, step) -> batch``):

- each host call runs ``n <= steps_per_call`` updates in one ``lax.scan`` (``train.make_scan_train_step``)
  on one batch group, chosen from ``fold_in(named(train_key, "group"), step)`` with the groups' weights;
  update ``s`` uses ``fold_in(train_key, s)``, so any split into calls, and a resume, replay the same
  updates;
- calls stop at every ``log_every`` (the mean metrics go to ``metrics.jsonl``), ``eval_every`` (``eval_fn``)
  and ``checkpoint_every`` boundary (a checkpoint);
- resume: the latest checkpoint is restored and metrics written after it are dropped;
- time budget: after a checkpoint, stop if the next segment (timed as the last one) would pass
  ``time_limit_minutes``; the same call resumes later;
- a non-finite loss, or non-finite params after a call (a finite loss whose update was not; with
  ``log_grad_norm`` a non-finite gradient norm names the update), raises ``TrainingError`` before
  anything of that call is saved;
- ``num_devices > 1`` replicates the state and splits every batch over a 1-D mesh (``sharding``).

:class:`TrainConfig` holds the keys every family shares; family configs subclass it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from protgen_jax import keys
from protgen_jax.atomic import atomic_write, strict_json
from protgen_jax.checkpoint import Checkpointer
from protgen_jax.diffusion.schedules import Schedule, get_schedule
from protgen_jax.errors import DataError, TrainingError
from protgen_jax.sharding import data_sharding, make_mesh, replicated
from protgen_jax.train import LossFn, TrainState, all_finite, make_scan_train_step

__all__ = [
    "DTYPES",
    "BatchGroup",
    "TrainConfig",
    "check_train_config",
    "compute_dtype",
    "device_count",
    "fit",
    "read_metrics",
    "require_at_least",
    "require_between",
    "require_choice",
    "uniform_draw",
    "warmup_cosine_adamw",
]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    """Keys every family has (a family's config subclasses this and may change the defaults).

    ``steps_per_call``: updates per host call, inside one ``lax.scan`` on the device.
    ``dtype``: compute dtype of the networks (``float32`` or ``bfloat16``); parameters, optimizer state
    and losses stay float32.
    ``devices``: data parallelism over local devices: 0 = as many as divide every batch size (all of
    them when they do), 1 = one device, n = exactly n (an error if a batch size is not a multiple).
    ``time_limit_minutes``: stop at the last checkpoint before the budget of this call would be passed
    (0 = no limit); the same command resumes.
    ``ema_decay``: 0 keeps no EMA copy (no memory, no work per update); > 0 keeps one and commands
    use it.
    ``log_grad_norm``: compute and log the global gradient norm of every update (one more pass over
    the gradients per update; off by default).
    ``init``: fine-tuning: the first call copies the (EMA) weights of that run into every parameter of
    the same path and shape (others, e.g. a family embedding of another size, stay freshly initialised);
    the optimizer state and the step count start fresh.
    """

    data: str = ""
    steps: int = 1000
    seed: int = 0
    ema_decay: float = 0.0
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    time_limit_minutes: float = 0.0
    steps_per_call: int = 10
    dtype: str = "float32"
    devices: int = 0
    init: str = ""  # a run folder of the same family to start from (its weights, fresh optimizer)
    log_grad_norm: bool = False


def require_at_least(config: Any, names: tuple[str, ...], low: float) -> None:
    """DataError naming the first config key among ``names`` whose value is below ``low``."""
    for name in names:
        if getattr(config, name) < low:
            raise DataError(f"{name} must be >= {low:g}, got {getattr(config, name)}")


def require_choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    """DataError unless ``config.<name>`` is one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise DataError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def require_between(
    config: Any,
    name: str,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """DataError unless ``low <= config.<name> <= high`` (``low <`` with ``open_low``, ``< high``
    with ``open_high``)."""
    value = getattr(config, name)
    above = low < value if open_low else low <= value
    below = value < high if open_high else value <= high
    if not (above and below):
        raise DataError(
            f"{name} must lie in {'(' if open_low else '['}{low:g}, {high:g}"
            f"{')' if open_high else ']'}, got {value}"
        )


def configured_schedule(config: Any) -> Schedule:
    """The noise schedule named by ``config.schedule`` with ``config.timesteps`` steps.

    Raises:
      DataError: fewer than 2 steps, or an unknown schedule name.
    """
    if config.timesteps < 2:
        raise DataError(f"timesteps must be >= 2, got {config.timesteps}")
    try:
        return get_schedule(config.schedule, config.timesteps)
    except ValueError as err:
        raise DataError(str(err)) from err


def validation_timesteps(schedule: Schedule, fractions: tuple[float, ...]) -> list[int]:
    """The distinct timesteps ``int(f * (T - 1))`` for ``f`` in ``fractions``, ascending."""
    return sorted({int(f * (schedule.num_steps - 1)) for f in fractions})


def check_train_config(config: TrainConfig) -> None:
    """Host-side checks of the shared keys; DataError names the key and the value."""
    require_at_least(config, ("steps", "log_every", "checkpoint_every", "steps_per_call"), 1)
    require_at_least(config, ("eval_every", "seed", "devices", "time_limit_minutes"), 0)
    require_between(config, "ema_decay", 0.0, 1.0, open_high=True)
    require_choice(config, "dtype", tuple(DTYPES))


def compute_dtype(config: TrainConfig) -> Any:
    """The networks' compute dtype named by ``config.dtype``."""
    return DTYPES[config.dtype]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (missing file: empty list; a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (written after the checkpoint a run resumes from)."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    with atomic_write(path) as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in kept))


class BatchGroup(NamedTuple):
    """Batches of one shape: ``draw(arrays, key, step) -> batch`` (pure, jittable) over ``arrays``
    (a pytree of host arrays, put on the device once). ``weight`` is the chance that a call uses this
    group; ``batch_size`` the leading size of every batch leaf (data parallelism splits it)."""

    arrays: Any
    draw: Callable[[Any, jax.Array, jax.Array], Any]
    batch_size: int
    weight: float = 1.0
    name: str = ""


def warmup_cosine_adamw(config: Any, end_fraction: float = 0.05) -> optax.GradientTransformation:
    """AdamW after global-norm clipping (``grad_clip``, ``weight_decay``); the learning rate warms up
    linearly from 0 over ``warmup_steps`` (at least 1, at most ``steps - 1``) and decays by a cosine to
    ``end_fraction * learning_rate`` at ``steps``."""
    lr = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        max(1, min(config.warmup_steps, config.steps - 1)),
        max(config.steps, 2),
        end_value=end_fraction * config.learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(lr, weight_decay=config.weight_decay),
    )


def uniform_draw(batch_size: int) -> Callable[[Any, jax.Array, jax.Array], Any]:
    """``draw(arrays, key, step) -> batch``: ``batch_size`` rows of a group's arrays, uniform with
    replacement (``jax.random.randint``), the same rows for every leaf."""

    def draw(arrays, key, step):
        del step
        num = jax.tree.leaves(arrays)[0].shape[0]
        rows = jax.random.randint(key, (batch_size,), 0, num)
        return jax.tree.map(lambda a: jnp.take(a, rows, axis=0), arrays)

    return draw


def device_count(config: TrainConfig, groups: list[BatchGroup]) -> int:
    """How many devices the batches are split over (see :class:`TrainConfig`): every process's
    devices after ``jax.distributed.initialize()``, else this host's."""
    available = jax.device_count()
    sizes = [g.batch_size for g in groups]
    if config.devices == 0:
        return max(d for d in range(1, available + 1) if all(s % d == 0 for s in sizes))
    if config.devices > available:
        raise DataError(f"devices={config.devices} but only {available} devices are visible")
    bad = [s for s in sizes if s % config.devices]
    if bad:
        raise DataError(
            f"devices={config.devices} does not divide the batch size(s) {sorted(set(bad))}; "
            "choose a batch size that is a multiple of it, or devices=0"
        )
    return config.devices


def fit(
    config: TrainConfig,
    state: TrainState,
    groups: list[BatchGroup],
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    ckpt: Checkpointer,
    metrics_path: Path,
    train_key: jax.Array,
    *,
    eval_fn: Callable[[Any, int], dict[str, float]] | None = None,
    eval_params: Callable[[TrainState], Any] = lambda state: state.params,
    num_devices: int = 1,
    started: float | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[TrainState, bool]:
    """Train (or resume) to ``config.steps``; see the module docstring. Returns ``(state, stopped)``,
    ``stopped`` True when the time budget ended the call early.

    ``eval_fn(params, step) -> metrics`` gets ``eval_params(state)`` (e.g. the EMA params);
    ``started``: ``time.perf_counter()`` at the start of the call (the budget counts from it).
    """
    started = time.perf_counter() if started is None else started
    restored = ckpt.restore_or_none(state)
    start = 0
    if restored is not None:
        state = restored[0]
        start = int(jax.device_get(state.step))
        _truncate_metrics(metrics_path, start)
    if start >= config.steps:
        return state, False

    batch_sharding = None
    if num_devices > 1:
        mesh = make_mesh(num_devices)
        state = jax.device_put(state, replicated(mesh))
        batch_sharding = data_sharding(mesh)
        place = lambda a: jax.device_put(a, replicated(mesh))  # noqa: E731
    else:
        place = jax.device_put
    group_arrays = [place(g.arrays) for g in groups]
    step_fns: dict[tuple[int, int], Callable] = {}

    def step_fn(group: int, n: int) -> Callable:
        if (group, n) not in step_fns:
            step_fns[(group, n)] = make_scan_train_step(
                loss_fn, optimizer, groups[group].draw, steps_per_call=n,
                batch_sharding=batch_sharding, grad_norm=config.log_grad_norm,
            )  # fmt: skip
        return step_fns[(group, n)]

    group_key = keys.named(train_key, "group")
    weights = np.array([g.weight for g in groups], np.float64)
    weights /= weights.sum()
    boundaries = [config.checkpoint_every, config.log_every] + (
        [config.eval_every] if eval_fn is not None and config.eval_every else []
    )
    deadline = started + 60.0 * config.time_limit_minutes if config.time_limit_minutes else None
    t0 = time.perf_counter()
    pending: list[dict[str, np.ndarray]] = []
    segment_seconds = 0.0
    segment_start = time.perf_counter()
    step, stopped = start, False
    bar = tqdm(
        total=config.steps, initial=start, desc=desc,
        disable=not progress, dynamic_ncols=True,
    )  # fmt: skip
    with Path(metrics_path).open("a") as log:
        while step < config.steps:
            next_stop = min(
                [config.steps] + [(step // b + 1) * b for b in boundaries if b > 0]
            )  # the next step at which something is logged, evaluated or saved
            n = min(config.steps_per_call, next_stop - step)
            group = 0
            if len(groups) > 1:  # the batch group of this call: a pure function of (key, step)
                rng = keys.numpy_rng(jax.random.fold_in(group_key, step))
                group = int(rng.choice(len(groups), p=weights))
            state, metrics = step_fn(group, n)(state, group_arrays[group], train_key)
            host = jax.device_get(metrics)
            # a NaN/inf loss, or gradient norm (a finite loss whose update made the params NaN);
            # without the norm, the params after the call are checked (once per call, not update)
            loss_ok = np.isfinite(np.asarray(host["loss"]))
            finite = loss_ok & np.isfinite(np.asarray(host.get("grad_norm", 0.0)))
            if np.all(finite) and "grad_norm" not in host and not bool(all_finite(state.params)):
                finite[-1] = False  # the last update of the call, or an earlier one's unused params
            if not np.all(finite):
                first = int(np.argmin(finite))
                bad = step + first + 1
                what = "loss" if not loss_ok[first] else "gradient norm"
                if "grad_norm" not in host and loss_ok[first]:
                    what = "parameters"
                last = ckpt.latest_step()
                raise TrainingError(
                    f"{Path(metrics_path).parent}: the training {what} became non-finite at step {bad}; nothing after "
                    f"step {last or 0} was saved (the last good checkpoint is intact). Lower "
                    "learning_rate, or use dtype=float32, then run the same command to resume"
                )
            pending.append(host)
            step += n
            bar.update(n)
            if step % config.log_every == 0 or step == config.steps:
                record = {k: float(np.mean(np.concatenate([p[k] for p in pending]))) for k in host}
                pending.clear()
                bar.set_postfix(loss=f"{record['loss']:.4g}")
                elapsed = time.perf_counter() - t0
                log.write(
                    json.dumps(
                        strict_json({"step": step, "split": "train", "time": elapsed, **record})
                    )
                )
                log.write("\n")
                log.flush()
            if (
                eval_fn is not None
                and config.eval_every
                and (step % config.eval_every == 0 or step == config.steps)
            ):
                out = eval_fn(eval_params(state), step)
                log.write(json.dumps(strict_json({"step": step, "split": "eval", **out})) + "\n")
                log.flush()
            if step % config.checkpoint_every == 0 or step == config.steps:
                ckpt.save(step, state)
                now = time.perf_counter()
                segment_seconds, segment_start = now - segment_start, now
                if deadline is not None and step < config.steps:
                    remaining = min(config.checkpoint_every, config.steps - step)
                    predicted = segment_seconds * remaining / max(config.checkpoint_every, 1)
                    if now + predicted > deadline:
                        stopped = True
                        break
    bar.close()
    return state, stopped
