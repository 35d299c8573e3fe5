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

The base owns, once: the run folder (:class:`RunDir`), data parallelism and compute dtype choices, the
``metrics.jsonl`` / curves / ``summary.json`` files, :meth:`Recipe.load_run` (one return type), the EMA
choice and the key tree (``protgen_jax.keys``: ``init``, ``train``, ``eval`` for training; ``sample``,
``evaluate``, ``score`` for commands, all from one root key). The training loop itself (device-side
steps, resume, time budget, NaN guard) is :func:`protgen_jax.fit.fit`, usable without a recipe.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from protgen_jax import alphabet, keys
from protgen_jax.atomic import save_json_atomic
from protgen_jax.checkpoint import Checkpointer
from protgen_jax.config import config_to_dict, load_config
from protgen_jax.errors import DataError
from protgen_jax.fit import (
    BatchGroup,
    TrainConfig,
    check_train_config,
    device_count,
    fit,
    read_metrics,
)
from protgen_jax.recipes.options import Option, resolve_options
from protgen_jax.train import TrainState


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
    lock_file = property(lambda self: self.path / ".lock")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's writer lock (``.lock``, created with the folder if missing) for the block.

        One process writes a run at a time: a second writer gets a DataError naming the holder's
        pid (written into ``.lock``). The lock is a ``flock`` on the open file, so the kernel
        releases it when the holder exits in any way, ``kill -9`` included: a ``.lock`` left
        behind by a killed run is no obstacle and is never deleted. Readers (``sample``,
        ``evaluate``, ``score``) take no lock. Not reentrant: a second ``lock()`` in the same
        process is refused too.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise DataError(
                    f"{self.path} is being written by another protgen process (pid {holder}); "
                    "wait for it or use another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

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


class OutputPlan(NamedTuple):
    """What a command writes for ``--out``: ``files`` (the report and the files beside or inside it),
    ``numbered`` folders it fills with ``sample_*.pdb``; ``folder``: ``--out`` is a folder. The CLI
    checks them before any model is loaded (never inside a run folder, no silent replacement)."""

    folder: bool
    files: list[Path]
    numbered: list[Path]


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
        return (
            state.ema_params if config.ema_decay and state.ema_params is not None else state.params
        )

    # ---------------------------------------------------------------- train
    def train(self, config: Any, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
        """Train, or resume, the run in ``run_dir``; returns the summary (also ``summary.json``).

        The run's writer lock (:meth:`RunDir.lock`) is held for the whole call: a second ``train``
        of the same folder is refused with a DataError while this one runs.
        """
        config = self.check(config)
        run = RunDir(run_dir)
        with run.lock():  # released when this returns or raises (or the process dies)
            started = time.perf_counter()
            fresh = not run.file(self.data_file).exists()
            data = self.prepare(config, progress) if fresh else self.load_data(run)
            model = self.build_model(config, data)
            groups = self.batches(config, data)
            num_devices = device_count(config, groups)
            if fresh:  # saved once every check has passed: a failed call leaves no stale data
                self.save_data(run, data)
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
                if config.init and ckpt.latest_step() is None:  # fine-tuning starts, once
                    state = self.warm_start(state, config.init)
                state, stopped = fit(
                    config, state, groups, self.loss_fn(model, config, data),
                    self.optimizer(config), ckpt, run.metrics, keys.named(root, "train"),
                    eval_fn=eval_fn, eval_params=lambda s: self.chosen_params(s, config),
                    num_devices=num_devices, started=started, progress=progress,
                    desc=f"train {self.model_name(config)}",
                )  # fmt: skip
            return self._finish(config, run, data, state, stopped, started)

    def adapt_init_leaf(self, name: str, source: np.ndarray, fresh: jax.Array) -> np.ndarray | None:
        """Fine-tuning: a source parameter whose shape differs from this model's (e.g. a table of
        per-family rows); return a value of ``fresh``'s shape, or None to keep ``fresh``. Optional."""
        return None

    def warm_start(self, state: TrainState, init_run: str | Path) -> TrainState:
        """``state`` with the chosen (EMA) weights of the run ``init_run`` of this family copied into
        every parameter of the same tree path and shape; the others keep their fresh values (listed on
        stderr). EMA params start equal to the params; optimizer state and step are untouched."""
        recipe = RunDir(init_run).read_info().get("recipe")
        if recipe != self.family:
            raise DataError(
                f"--init {init_run} is a {recipe!r} run; a {self.family!r} run needs one of its own family"
            )
        source = self.load_run(init_run)
        given = {
            jax.tree_util.keystr(p): leaf
            for p, leaf in jax.tree_util.tree_leaves_with_path(source.params)
        }
        fresh: list[str] = []

        def pick(path, leaf):
            name = jax.tree_util.keystr(path)
            old = given.get(name)
            if old is not None and old.shape != leaf.shape:
                old = self.adapt_init_leaf(name, np.asarray(old), leaf)
            if old is None or old.shape != leaf.shape:
                fresh.append(name)
                return leaf
            return jnp.asarray(old, leaf.dtype)

        params = jax.tree_util.tree_map_with_path(pick, state.params)
        total = len(jax.tree_util.tree_leaves(params))
        if len(fresh) == total:
            raise DataError(
                f"--init {init_run}: no parameter matches this model's; same family and sizes?"
            )
        note = f"; fresh: {', '.join(fresh)}" if fresh else ""
        print(
            f"init: {total - len(fresh)} of {total} parameter arrays from {init_run}{note}",
            file=sys.stderr,
        )
        ema = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
        return state.replace(params=params, ema_params=ema)

    def _finish(self, config, run, data, state, stopped, started) -> dict[str, Any]:
        from protgen_jax.plots import plot_curves

        records = read_metrics(run.metrics)
        described = self.describe_data(config, data)
        keys_present = [k for k in self.curve_names(config) if any(k in r for r in records)]
        title = f"{self.model_name(config)}: " + ", ".join(
            f"{k}={v}" for k, v in described.items() if isinstance(v, int | str)
        )
        plot_curves(records, keys_present, run.curves, title=textwrap.fill(title, 90))
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
        gets ``keys.named(root, command)``, except ``predict``, which gets ``score``'s key so that both
        draw the same Monte-Carlo samples. ``score`` and ``predict`` take several runs (an ensemble).
        """
        opts = self.options(command, given)
        self.check_command(command, opts, [RunDir(r) for r in run_dirs])
        runs = [self.load_run(r) for r in run_dirs]
        seed = opts.seed if opts.seed is not None else runs[0].config.seed
        key = keys.named(keys.root_key(seed), "score" if command == "predict" else command)
        if command in ("score", "predict"):  # several runs: an ensemble
            return getattr(self, command)(runs, opts, key)
        if len(runs) != 1:
            raise DataError(f"`{command}` takes one run, got {len(runs)}")
        return getattr(self, command)(runs[0], opts, key)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        """The files ``command`` writes for ``--out`` (default: the one file ``out``)."""
        return OutputPlan(False, [out], [])

    def check_command(self, command: str, opts: SimpleNamespace, runs: list[RunDir]) -> None:
        """Checks of a command's options against the run folders, before any model is built; optional (none by default)."""
        return None

    # ---------------------------------------------------------------- `protgen compare` hooks
    def generate_sequences(
        self, run: LoadedRun, key: jax.Array, num: int, *, lengths: np.ndarray,
        family: str | None = None, options: dict[str, Any] | None = None, progress: bool = False,
    ) -> list[str]:  # fmt: skip
        """``num`` sequences as amino-acid strings (the 20 standard letters) for ``protgen compare``.

        ``lengths [num]`` int: target lengths for models that need them (models with their own length
        ignore it); ``family``: a family of the run's vocabulary for conditional sampling (None =
        unconditional; DataError when the run is not conditional or lacks the family); ``options``: the
        family's sampling options from ``RUN@key=value`` (unknown keys: DataError naming the key and the
        allowed ones). ``num = 0`` checks ``family`` and ``options`` and returns ``[]`` (compare calls it
        so before any sampling). Optional: by default a DataError (the family does not sample strings).
        """
        raise DataError(f"{self.family} runs cannot generate sequences for `protgen compare`")

    def sequence_nll(
        self, run: LoadedRun, sequences: list[str], families: list[str | None],
        progress: bool = False,
    ) -> tuple[float, str] | None:  # fmt: skip
        """``(mean NLL in nats per residue over all residues of sequences, what it is)`` or None.

        The value may be an upper bound (the string says which and how long sequences are treated);
        each sequence is scored with its family label where the run knows it (else the null label).
        None: the model defines no likelihood. Optional: by default a DataError.
        """
        raise DataError(f"{self.family} runs cannot score sequences for `protgen compare`")

    def latent_interpolation(
        self, run: LoadedRun, key: jax.Array, family_a: str, family_b: str, steps: int, num: int
    ) -> list[list[str]] | None:
        """Latent models: ``steps`` points on the line between the mean latent codes (encoder means) of
        the two families' training sequences, ``num`` decoded sequences per point -> ``steps`` lists of
        ``num`` strings; None for models without a latent space. Optional: by default a DataError."""
        raise DataError(f"{self.family} runs cannot interpolate latents for `protgen compare`")


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


def replace_config(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for configs (kept here so families import one module)."""
    return dataclasses.replace(config, **changes)
