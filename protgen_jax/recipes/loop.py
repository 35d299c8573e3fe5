"""The training loop every recipe shares: resume, progress bar, JSONL metrics, periodic checkpoints.

Determinism makes resume exact: the batch for step ``s`` is ``batch_fn(s)`` and the step key is
``fold_in(key, s)``, so a run killed after its last checkpoint and resumed replays the same updates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from protgen_jax.checkpoint import Checkpointer

Metrics = dict[str, float]


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
    """Drop records after ``last_step`` (written after the checkpoint we resume from)."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(path)


def fit(
    state: Any,
    train_step: Callable[[Any, Any, jax.Array], tuple[Any, dict[str, jax.Array]]],
    batch_fn: Callable[[int], Any],
    num_steps: int,
    key: jax.Array,
    run_dir: Path,
    *,
    checkpointer: Checkpointer,
    metadata: dict[str, Any] | None = None,
    log_every: int = 50,
    checkpoint_every: int = 500,
    eval_fn: Callable[[Any, int], Metrics] | None = None,
    eval_every: int = 0,
    desc: str = "train",
    progress: bool = True,
) -> Any:
    """Train ``state`` up to ``num_steps`` total updates, resuming from the latest checkpoint if any.

    Args:
      state: a freshly initialized train state (structure/sharding target for restore).
      train_step: ``(state, batch, key) -> (state, metrics)``, e.g. from ``make_train_step``.
      batch_fn: ``step -> batch``; must be a pure function of the step for exact resume.
      num_steps: total number of updates of the run (not "more steps").
      key: the run's base key; step ``s`` uses ``fold_in(key, s)``.
      run_dir: folder for ``metrics.jsonl``.
      checkpointer: where checkpoints go; the latest one is restored first.
      metadata: JSON stored with each checkpoint.
      log_every: write averaged train metrics every this many steps.
      checkpoint_every: save every this many steps (and always at the end).
      eval_fn: ``(state, step) -> metrics`` run every ``eval_every`` steps and at the end.
      desc: progress-bar label.
      progress: show a tqdm bar.

    Returns:
      The trained state (a checkpoint of it is on disk).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    restored = checkpointer.restore_or_none(state)
    start = 0
    if restored is not None:
        state, _ = restored
        start = int(jax.device_get(state.step))
        _truncate_metrics(metrics_path, start)
    if start >= num_steps:
        return state

    pending: list[dict[str, np.ndarray]] = []
    t0 = time.perf_counter()
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
    with metrics_path.open("a") as log:

        def write(record: dict[str, Any]) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()

        for step in range(start, num_steps):
            state, metrics = train_step(state, batch_fn(step), jax.random.fold_in(key, step))
            pending.append(metrics)
            done = step + 1
            if done % log_every == 0 or done == num_steps:
                host = jax.device_get(pending)
                record = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                pending.clear()
                bar.set_postfix(loss=f"{record['loss']:.4g}")
                write({"step": done, "split": "train", "time": time.perf_counter() - t0, **record})
            if eval_fn is not None and eval_every and (done % eval_every == 0 or done == num_steps):
                write({"step": done, "split": "eval", **eval_fn(state, done)})
            if done % checkpoint_every == 0 or done == num_steps:
                checkpointer.save(done, state, metadata=metadata)
            bar.update(1)
    bar.close()
    return state
