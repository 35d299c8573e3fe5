"""Checkpoints: a small wrapper around orbax's `CheckpointManager`, the only module importing orbax.

A run folder holds one sub-folder per saved step, `<dir>/<step>/{state, metadata}`: `state` is any
pytree of arrays (e.g. a `protgen_jax.train.TrainState`, whose static fields such as `apply_fn` are
not saved and come back from the restore target) and `metadata` a JSON dict written alongside
(config, data digest, ...).

Crash safety. Orbax writes a step into `<dir>/<step>.orbax-checkpoint-tmp/` (older versions append
`-<timestamp>`) and renames it to `<dir>/<step>/` only once every file is written (an atomic rename
on a local or POSIX file system; on object stores orbax writes a `commit_success.txt` marker
instead). A process killed mid-save therefore leaves the previous steps untouched and a temporary
folder that `latest_step()` ignores; the first `save` of the next `Checkpointer` opened on the
folder (the resumed run) deletes it (`cleanup_tmp_directories=True`), as does a new save of the same
step. Saving is synchronous: files exist when `save` returns.

Damaged steps. A complete step can still be unreadable later (a truncated or overwritten file, a
full disk, a copy that missed files). `restore_or_none` then warns on stderr, one line per step,
and falls back to the next older step; only when no step can be read does it raise `DataError`
(and then nothing is touched: the cause may be a target that no longer matches, e.g. a changed
model config, not damage). Reading never changes the folder: the damaged steps newer than the
restored one are moved aside to `<step>.corrupt` (saying so) by the first `save` of the same
`Checkpointer`, so the resumed run can write those step numbers again; orbax ignores these folders.

Example:
    >>> with Checkpointer("/tmp/run/checkpoints", max_to_keep=2) as ckpt:  # doctest: +SKIP
    ...     ckpt.save(100, state, metadata={"model": "vae"})
    ...     restored = ckpt.restore_or_none(state)
    ...     state, metadata = restored if restored is not None else (state, {})
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import jax
import orbax.checkpoint as ocp

from protgen_jax.errors import DataError

PyTree = Any

_STATE = "state"
_METADATA = "metadata"


def _abstract_leaf(leaf: Any) -> Any:
    """A restore target leaf: arrays become `ShapeDtypeStruct`s that keep (or get) a sharding.

    A concrete `jax.Array` keeps its own sharding; a `ShapeDtypeStruct` without one is placed on the
    default device; other leaves (NumPy arrays, Python scalars) are passed through.
    """
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
    return leaf


def abstract_target(target: PyTree) -> PyTree:
    """`target` with every array replaced by a `jax.ShapeDtypeStruct(shape, dtype, sharding)`.

    Restoring onto this places each leaf with the target's sharding, whatever the sharding or device
    count at save time.

    Args:
        target: a pytree of `jax.Array` / `jax.ShapeDtypeStruct` (and other leaves, passed through).

    Returns:
        The abstract pytree, same structure.
    """
    return jax.tree.map(_abstract_leaf, target)


def _short_reason(err: BaseException, limit: int = 160) -> str:
    """One line saying why a step could not be read: the exception type and the gist of its message
    (for a tensorstore status such as `OUT_OF_RANGE: Error opening ...: <cause>`, the final cause;
    otherwise the first sentence), cut to about `limit` characters."""
    lines = str(err).strip().strip("'\"").splitlines()  # (KeyError quotes its message)
    text = lines[0].split(" [tensorstore_spec", 1)[0] if lines else ""
    if re.match(r"[A-Z_]+: ", text):  # an absl status chain: the root cause comes last
        text = text.rsplit(": ", 1)[-1]
    else:
        text = text.split(". ", 1)[0]
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Checkpointer:
    """Keep-the-last-N checkpoints of a pytree state plus a JSON metadata dict, in one folder.

    Args:
        directory: the checkpoint folder (created if missing).
        max_to_keep: number of most recent steps kept; older ones are deleted after each save
            (None keeps all).
        save_interval_steps: `save` only writes steps that are multiples of this (unless `force`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
    ) -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps must be >= 1, got {save_interval_steps}")
        self.directory = Path(directory).expanduser().resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_interval_steps,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(_STATE, _METADATA)
        )
        self._broken: set[int] = set()  # steps `restore_or_none` could not read; moved at `save`

    def save(
        self,
        step: int,
        state: PyTree,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Save `state` and `metadata` as `step`; returns whether a checkpoint was written.

        Nothing is written when `step` is not a multiple of `save_interval_steps` (unless `force`)
        or when `step` is not above the latest saved step (even with `force`: existing steps are
        never overwritten and `max_to_keep` always drops the oldest steps). The files are complete
        on disk when this returns; the oldest steps beyond `max_to_keep` are then deleted. Steps
        `restore_or_none` found unreadable are first moved aside to `<step>.corrupt` (see the
        module docstring).

        Args:
            step: the training step, an int >= 0.
            state: any pytree of arrays, e.g. a `TrainState` (its static fields are not saved).
            metadata: a JSON-serialisable dict saved alongside (empty if None).
            force: save even if `step` is off the save interval.

        Returns:
            True if the checkpoint was written.

        Raises:
            TypeError: `metadata` is not JSON-serialisable (checked before anything is written).
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        metadata = dict(metadata or {})
        json.dumps(metadata)  # fail on the host, before orbax creates any folder
        self._set_aside_broken()
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            return False
        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardSave(state),
                _METADATA: ocp.args.JsonSave(metadata),
            }
        )
        saved = self._manager.save(step, args=args, force=force)
        self._manager.wait_until_finished()
        return bool(saved)

    def _set_aside_broken(self) -> None:
        """Move the steps `restore_or_none` could not read to `<step>.corrupt` (`-N` if taken)."""
        for step in sorted(self._broken):
            folder = self.directory / str(step)
            if folder.is_dir():
                aside = folder.with_name(f"{step}.corrupt")
                count = 0
                while aside.exists():
                    count += 1
                    aside = folder.with_name(f"{step}.corrupt-{count}")
                folder.rename(aside)
                print(
                    f"warning: moved the unreadable checkpoint {folder} aside to {aside.name} "
                    "(delete it once you no longer need it)",
                    file=sys.stderr,
                )
        if self._broken:
            self._broken.clear()
            self._manager.reload()

    def latest_step(self) -> int | None:
        """The most recent complete step in the folder (re-read from disk), or None if none.

        Steps this `Checkpointer` found unreadable are left out.
        """
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        """All complete steps in the folder (re-read from disk), ascending; steps this
        `Checkpointer` found unreadable are left out."""
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps() if int(s) not in self._broken)

    def restore(self, target: PyTree, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """Restore `(state, metadata)` from `step` (default: the latest) onto `target`'s structure.

        `target` gives the pytree structure, shapes, dtypes and shardings: a concrete state (e.g. a
        fresh `TrainState.create(...)`, whose static fields are reused) or an abstract one of
        `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`. Each leaf is placed with the target's
        sharding, so a checkpoint saved on 8 devices restores onto 1 device and vice versa.

        Args:
            target: pytree of arrays or `ShapeDtypeStruct`s with the saved state's structure.
            step: the step to restore; None for the latest.

        Returns:
            `(state, metadata)`: the restored pytree (same type as `target`) and the metadata dict.

        Raises:
            FileNotFoundError: there is no checkpoint (or not the requested step) in the folder.
        """
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}")
            step = steps[-1]
        elif int(step) not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (available: {steps})"
            )
        target, dropped = self._with_placeholders(target, int(step))
        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardRestore(abstract_target(target)),
                _METADATA: ocp.args.JsonRestore(),
            }
        )
        restored = self._manager.restore(int(step), args=args)
        metadata = restored[_METADATA]
        state = restored[_STATE]
        if dropped:
            state = state.replace(**{name: None for name in dropped})
        return state, dict(metadata) if metadata is not None else {}

    def _with_placeholders(self, target: PyTree, step: int) -> tuple[PyTree, list[str]]:
        """``target`` with a shape-only placeholder for every field it holds as None but the saved
        state of ``step`` has (read, then dropped): a checkpoint written before a state stopped
        keeping that field (e.g. ``TrainState.ema_params`` of a run without EMA) still restores.
        Only for dataclass targets (``replace``); others are returned unchanged."""
        names = [
            name
            for name in getattr(target, "__dataclass_fields__", {})
            if getattr(target, name) is None
        ]
        if not names or not hasattr(target, "replace"):
            return target, []
        try:
            saved = self._manager.item_metadata(step)[_STATE]
            saved = {name: saved[name] for name in names if name in saved}
        except Exception:  # no readable metadata: let the restore itself report the problem
            return target, []
        saved = {name: tree for name, tree in saved.items() if tree is not None}
        if not saved:
            return target, []
        shapes = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved)
        return target.replace(**shapes), list(shapes)

    def restore_or_none(self, target: PyTree) -> tuple[PyTree, dict[str, Any]] | None:
        """`restore(target)` from the latest readable step, or None when the folder holds no
        checkpoint.

        A step that fails to restore (any exception while reading it: a truncated, missing or
        overwritten file) is skipped for the next older one, with a one-line warning on stderr
        naming the step folder and the reason; this `Checkpointer` then treats the skipped steps
        as absent and moves them aside at its next `save` (see the module docstring).

        Raises:
            DataError: no step can be read (nothing is moved aside then).
        """
        steps = self.all_steps()
        if not steps:
            return None
        failures: list[tuple[int, str]] = []
        for step in reversed(steps):
            try:
                restored = self.restore(target, step=step)
            except Exception as err:  # whatever orbax raises on a damaged step
                failures.append((step, _short_reason(err)))
                continue
            for bad, reason in failures:
                print(
                    f"warning: skipping unreadable checkpoint {self.directory / str(bad)} "
                    f"({reason}); using step {step}",
                    file=sys.stderr,
                )
                self._broken.add(bad)
            return restored
        newest, reason = failures[0]
        tried = ", ".join(str(s) for s, _ in failures)
        raise DataError(
            f"{self.directory}: no checkpoint can be read (tried steps {tried}; step {newest}: "
            f"{reason}); if the model config changed since they were written, train into another "
            "--out"
        )

    def wait(self) -> None:
        """Block until any outstanding save has finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish outstanding work and release the manager's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
