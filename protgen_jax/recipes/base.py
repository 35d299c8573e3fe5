"""The skeleton every model family shares: a run folder, training on the device, loading, commands.

A family is a subclass of :class:`Recipe` that fills in hooks and copies nothing:

==========================  ====================================================================
hook                        what the family supplies
==========================  ====================================================================
``config_type``             a frozen dataclass subclassing :class:`TrainConfig` (defaults)
``validate(config)``        host-side checks of the family's own keys (DataError)
``prepare(config)``         read the source files into the run's data (any object)
``save_data / load_data``   store it in the run folder and read it back (never re-read sources)
``build_model(config, d)``  the model object (networks + the math they plug into)
``init_params``             ``(model, config, data, key) -> params``
``optimizer(config)``       the optax transformation
``loss_fn(model, c, d)``    ``loss(params, batch, key) -> (scalar, aux)`` (``train.LossFn``)
``batches(config, data)``   :class:`BatchGroup` s: device-resident arrays + a pure batch draw
``make_eval``               optional ``(params, step) -> metrics`` run every ``eval_every`` steps
``sample / evaluate``       the commands, given a :class:`LoadedRun`, typed options and a key
==========================  ====================================================================

The base owns, once: the run folder (:class:`RunDir`), resume, the time budget, data parallelism,
compute dtype, the NaN guard, ``metrics.jsonl``, curves, ``summary.json``, :meth:`Recipe.load_run`
(one return type), the EMA choice and the key tree (``protgen_jax.keys``: ``init``, ``train``,
``eval`` for training; ``sample``, ``evaluate``, ``score`` for commands, all from one root key).

Training runs ``steps_per_call`` updates per host call inside one ``lax.scan`` that draws its own
batches on the device (``train.make_scan_train_step``); the host picks a batch group (a length bucket)
per call, pulls the metrics once per call and writes them every ``log_every`` steps.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from protgen_jax import alphabet, keys
from protgen_jax.checkpoint import Checkpointer, save_json_atomic
from protgen_jax.errors import DataError, TrainingError
from protgen_jax.recipes.config import config_to_dict, load_config
from protgen_jax.recipes.options import Option, resolve_options
from protgen_jax.sharding import data_sharding, make_mesh, replicated
from protgen_jax.train import TrainState, make_scan_train_step

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


def require_at_least(config: Any, names: tuple[str, ...], low: float) -> None:
    """DataError naming the first config key among ``names`` whose value is below ``low``."""
    for name in names:
        if getattr(config, name) < low:
            raise DataError(f"{name} must be >= {low:g}, got {getattr(config, name)}")


def check_train_config(config: TrainConfig) -> None:
    """Host-side checks of the shared keys; DataError names the key and the value."""
    require_at_least(config, ("steps", "log_every", "checkpoint_every", "steps_per_call"), 1)
    require_at_least(config, ("eval_every", "seed", "devices", "time_limit_minutes"), 0)
    if not 0.0 <= config.ema_decay < 1.0:
        raise DataError(f"ema_decay must lie in [0, 1), got {config.ema_decay}")
    if config.dtype not in DTYPES:
        raise DataError(f"dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")


def compute_dtype(config: TrainConfig) -> Any:
    """The networks' compute dtype named by ``config.dtype``."""
    return DTYPES[config.dtype]


class RunDir:
    """A run folder and the files it holds."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.json")
    info = property(lambda self: self.path / "run.json")
    summary = property(lambda self: self.path / "summary.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    curves = property(lambda self: self.path / "curves.png")
    checkpoints = property(lambda self: self.path / "checkpoints")

    def file(self, name: str) -> Path:
        """Another file of the run (the family's data file, reports)."""
        return self.path / name

    def read_info(self) -> dict[str, Any]:
        """``run.json`` (DataError when the folder is not a run)."""
        if not self.info.exists():
            raise DataError(
                f"{self.path}: not a run folder (no run.json); train one with `protgen train`"
            )
        try:
            return json.loads(self.info.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{self.info}: unreadable run info ({err})") from err


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
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(path)


class BatchGroup(NamedTuple):
    """Batches of one shape: ``draw(arrays, key, step) -> batch`` (pure, jittable) over ``arrays``
    (a pytree of host arrays, put on the device once). ``weight`` is the chance that a call uses this
    group; ``batch_size`` the leading size of every batch leaf (data parallelism splits it)."""

    arrays: Any
    draw: Callable[[Any, jax.Array, jax.Array], Any]
    batch_size: int
    weight: float = 1.0
    name: str = ""


class LoadedRun(NamedTuple):
    """What commands need from a trained run: ``params`` are the EMA params when the run keeps them."""

    run: RunDir
    config: Any
    data: Any
    model: Any
    params: Any


def padded_map(
    fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], batch_size: int, progress: Any = None
) -> np.ndarray:
    """``fn(*batch) -> [b, ...]`` over ``arrays`` (same leading size N) in fixed-size batches: the last
    batch is padded by repeating its final row, so ``fn`` compiles once. Returns the ``[N, ...]``
    concatenation (as NumPy). ``progress``: an optional tqdm bar updated by rows."""
    n = len(arrays[0])
    outs = []
    for start in range(0, n, batch_size):
        chunk = [a[start : start + batch_size] for a in arrays]
        real = len(chunk[0])
        if real < batch_size:
            chunk = [np.concatenate([c, np.repeat(c[-1:], batch_size - real, 0)]) for c in chunk]
        outs.append(np.asarray(fn(*chunk))[:real])
        if progress is not None:
            progress.update(real)
    return np.concatenate(outs) if outs else np.zeros((0,))


def _device_count(config: TrainConfig, groups: list[BatchGroup]) -> int:
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


class Recipe(abc.ABC):
    """Base of every model family; see the module docstring for the hooks."""

    family: ClassVar[str] = ""
    models: ClassVar[tuple[str, ...]] = ()
    config_type: ClassVar[type] = TrainConfig
    data_file: ClassVar[str] = "data.npz"
    curve_keys: ClassVar[tuple[str, ...]] = ("loss",)
    commands: ClassVar[dict[str, tuple[Option, ...]]] = {}

    # ---------------------------------------------------------------- hooks (families override)
    def make_config(self, model: str) -> Any:
        """The defaults of ``protgen train MODEL``."""
        if model not in self.models:
            raise DataError(f"the {self.family} recipe trains {self.models}, not {model!r}")
        return self.config_type()

    def validate(self, config: Any) -> None:
        """Host-side checks of the family's own keys; optional (none by default)."""
        return None

    @abc.abstractmethod
    def prepare(self, config: Any, progress: bool) -> Any:
        """A training hook every family fills in (see the module docstring)."""

    @abc.abstractmethod
    def save_data(self, run: RunDir, data: Any) -> None:
        """A training hook every family fills in (see the module docstring)."""

    @abc.abstractmethod
    def load_data(self, run: RunDir) -> Any:
        """A training hook every family fills in (see the module docstring)."""

    @abc.abstractmethod
    def build_model(self, config: Any, data: Any) -> Any:
        """A training hook every family fills in (see the module docstring)."""

    @abc.abstractmethod
    def init_params(self, model: Any, config: Any, data: Any, key: jax.Array) -> Any:
        """A training hook every family fills in (see the module docstring)."""

    @abc.abstractmethod
    def optimizer(self, config: Any) -> optax.GradientTransformation:
        """A training hook every family fills in (see the module docstring)."""

    @abc.abstractmethod
    def loss_fn(self, model: Any, config: Any, data: Any) -> Callable:
        """A training hook every family fills in (see the module docstring)."""

    @abc.abstractmethod
    def batches(self, config: Any, data: Any) -> list[BatchGroup]:
        """A training hook every family fills in (see the module docstring)."""

    def make_eval(
        self, model: Any, config: Any, data: Any, key: jax.Array
    ) -> Callable[[Any, int], dict[str, float]] | None:
        """Optional in-training evaluation ``(params, step) -> metrics`` on the chosen params."""
        return None

    def model_name(self, config: Any) -> str:
        """The ``protgen train`` model name a config trains (``run.json``'s ``family``)."""
        return self.models[0]

    def describe_data(self, config: Any, data: Any) -> dict[str, Any]:
        """Counts for ``summary.json`` and the curves' title."""
        return {}

    def extra_run_files(self, run: RunDir, config: Any, data: Any) -> None:
        """Write family-specific run files next to ``config.json`` (for example the split); optional (none by default)."""
        return None

    def curve_names(self, config: Any) -> tuple[str, ...]:
        """The metrics ``curves.png`` plots (those present in ``metrics.jsonl``)."""
        return self.curve_keys

    # ---------------------------------------------------------------- configs
    def check(self, config: Any) -> Any:
        """``config`` after the shared and the family checks."""
        if not isinstance(config, self.config_type):
            raise DataError(f"expected a {self.config_type.__name__}, got {type(config).__name__}")
        check_train_config(config)
        self.validate(config)
        return config

    def read_config(self, path: Path) -> Any:
        return load_config(self.config_type, path)

    # ---------------------------------------------------------------- state
    def init_state(self, model: Any, config: Any, data: Any, key: jax.Array) -> TrainState:
        """A fresh state: params from ``init_params`` and the optimizer state, built in one jitted
        program (eagerly, every initializer op would compile on its own)."""

        def create(key: jax.Array) -> TrainState:
            params = self.init_params(model, config, data, key)
            return TrainState.create(
                self.apply_fn(model), params, self.optimizer(config), ema_decay=config.ema_decay
            )

        return jax.jit(create)(key)

    def apply_fn(self, model: Any) -> Callable:
        """The ``apply_fn`` stored in the TrainState (only used by ``state.ema_apply_fn``)."""
        module = getattr(model, "module", model)
        return module.apply

    def restore_target(self, model: Any, config: Any, data: Any) -> TrainState:
        """An abstract (shape-only) state to restore a checkpoint into."""
        return jax.eval_shape(lambda: self.init_state(model, config, data, jax.random.key(0)))

    @staticmethod
    def chosen_params(state: TrainState, config: Any) -> Any:
        """The params commands and evaluations use: the EMA copy when the run keeps one."""
        return state.ema_params if config.ema_decay else state.params

    # ---------------------------------------------------------------- train
    def train(self, config: Any, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
        """Train, or resume, the run in ``run_dir``; returns the summary (also ``summary.json``)."""
        config = self.check(config)
        run = RunDir(run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if run.file(self.data_file).exists():
            data = self.load_data(run)
        else:
            data = self.prepare(config, progress)
            self.save_data(run, data)
        model = self.build_model(config, data)
        groups = self.batches(config, data)
        num_devices = _device_count(config, groups)
        save_json_atomic(run.config, config_to_dict(config))
        save_json_atomic(
            run.info,
            {
                "family": self.model_name(config),
                "recipe": self.family,
                "devices": num_devices,
                "platform": jax.devices()[0].platform,
                "dtype": config.dtype,
                "steps_per_call": config.steps_per_call,
                "alphabet": alphabet.LAYOUT,
            },
        )
        self.extra_run_files(run, config, data)
        root = keys.root_key(config.seed)
        state = self.init_state(model, config, data, keys.named(root, "init"))
        eval_fn = self.make_eval(model, config, data, keys.named(root, "eval"))
        with Checkpointer(run.checkpoints, max_to_keep=2) as ckpt:
            state, stopped = _fit(
                self, config, run, state, model, data, groups, num_devices, eval_fn, ckpt,
                keys.named(root, "train"), started, progress,
            )  # fmt: skip
        return self._finish(config, run, data, state, stopped, started)

    def _finish(self, config, run, data, state, stopped, started) -> dict[str, Any]:
        from protgen_jax.plots import plot_curves

        records = read_metrics(run.metrics)
        described = self.describe_data(config, data)
        keys_present = [k for k in self.curve_names(config) if any(k in r for r in records)]
        title = f"{self.model_name(config)}: " + ", ".join(
            f"{k}={v}" for k, v in described.items() if isinstance(v, int | str)
        )
        plot_curves(records, keys_present, run.curves, title=title[:90])
        trains = [r for r in records if r.get("split") == "train"]
        evals = [r for r in records if r.get("split") == "eval"]
        summary = {
            **described,
            "steps": int(jax.device_get(state.step)),
            "target_steps": config.steps,
            "stopped_by_time_limit": stopped,
            "train_seconds_this_call": time.perf_counter() - started,
            "last_train": trains[-1] if trains else None,
            "last_eval": evals[-1] if evals else None,
        }
        save_json_atomic(run.summary, summary)
        return summary

    # ---------------------------------------------------------------- load and commands
    def load_run(self, run_dir: str | Path) -> LoadedRun:
        """Config, data, model and the chosen params (EMA when kept) of a trained run."""
        run = RunDir(run_dir)
        run.read_info()
        config = self.read_config(run.config)
        data = self.load_data(run)
        model = self.build_model(config, data)
        target = self.restore_target(model, config, data)
        with Checkpointer(run.checkpoints) as ckpt:
            restored = ckpt.restore_or_none(target)
        if restored is None:
            raise DataError(f"{run.path}: no checkpoint to load (train first)")
        return LoadedRun(run, config, data, model, self.chosen_params(restored[0], config))

    def options(self, command: str, given: dict[str, Any]) -> SimpleNamespace:
        """The typed, checked options of ``command`` (DataError for a flag this family lacks)."""
        if command not in self.commands:
            raise DataError(f"{self.family} runs have no `{command}` command")
        return resolve_options(self.family, command, self.commands[command], given)

    def run_command(self, command: str, run_dirs: list[Path], given: dict[str, Any]) -> Any:
        """Check the options, load the run(s) and call the family's command with its key.

        The command's root key is ``--seed`` when given, else the (first) run's ``seed``; the command
        gets ``keys.named(root, command)``.
        """
        opts = self.options(command, given)
        self.check_command(command, opts, [RunDir(r) for r in run_dirs])
        runs = [self.load_run(r) for r in run_dirs]
        seed = opts.seed if opts.seed is not None else runs[0].config.seed
        key = keys.named(keys.root_key(seed), command)
        if command == "score":  # several runs: an ensemble
            return self.score(runs, opts, key)
        if len(runs) != 1:
            raise DataError(f"`{command}` takes one run, got {len(runs)}")
        return getattr(self, command)(runs[0], opts, key)

    def check_command(self, command: str, opts: SimpleNamespace, runs: list[RunDir]) -> None:
        """Checks of a command's options against the run folders, before any model is built; optional (none by default)."""
        return None


def _fit(
    recipe: Recipe, config, run, state, model, data, groups, num_devices, eval_fn, ckpt, train_key,
    started, progress,
):  # fmt: skip
    """The training loop: resume, segments between checkpoints under the time budget, device steps.

    Returns ``(state, stopped_by_time_limit)``.
    """
    restored = ckpt.restore_or_none(state)
    start = 0
    if restored is not None:
        state = restored[0]
        start = int(jax.device_get(state.step))
        _truncate_metrics(run.metrics, start)
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
    loss_fn = recipe.loss_fn(model, config, data)
    optimizer = recipe.optimizer(config)
    step_fns: dict[tuple[int, int], Callable] = {}

    def step_fn(group: int, n: int) -> Callable:
        if (group, n) not in step_fns:
            step_fns[(group, n)] = make_scan_train_step(
                loss_fn, optimizer, groups[group].draw, steps_per_call=n,
                batch_sharding=batch_sharding,
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
        total=config.steps, initial=start, desc=f"train {recipe.model_name(config)}",
        disable=not progress, dynamic_ncols=True,
    )  # fmt: skip
    with run.metrics.open("a") as log:
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
            losses = np.asarray(host["loss"])
            if not np.all(np.isfinite(losses)):
                bad = step + int(np.argmin(np.isfinite(losses))) + 1
                last = ckpt.latest_step()
                raise TrainingError(
                    f"{run.path}: the training loss became non-finite at step {bad}; nothing after "
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
                log.write(json.dumps({"step": step, "split": "train", "time": elapsed, **record}))
                log.write("\n")
                log.flush()
            if (
                eval_fn is not None
                and config.eval_every
                and (step % config.eval_every == 0 or step == config.steps)
            ):
                out = eval_fn(recipe.chosen_params(state, config), step)
                log.write(json.dumps({"step": step, "split": "eval", **out}) + "\n")
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


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


def replace_config(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for configs (kept here so families import one module)."""
    return dataclasses.replace(config, **changes)
