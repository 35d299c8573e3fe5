"""The command of a noisy-classifier run: ``protgen evaluate CLF --out acc.json``.

Held-out accuracy of ``argmax_y p_phi(y | x_t, t)`` at noise levels ``t`` from clean (0) to pure noise
(``T - 1``), next to the chance level of always guessing the largest family, and the signal level
``sqrt(ab_t)`` of each ``t``. A plot ``<out stem>.png`` beside the JSON shows the curve.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np

from protgen_jax.atomic import save_json_atomic
from protgen_jax.errors import DataError
from protgen_jax.recipes.base import LoadedRun, OutputPlan
from protgen_jax.recipes.classifier.recipe import ClassifierRecipe, heldout_accuracy
from protgen_jax.recipes.options import Option

COMMANDS = {
    "evaluate": (
        Option("levels", int, 11, "evenly spaced timesteps from 0 to T-1", low=2),
        Option("rows", int, None, "held-out codes per level (default: the run's eval_rows)", low=1),
    ),
}


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Accuracy vs noise level (module docstring) to ``opts.out`` (JSON) and a PNG beside it."""
    from protgen_jax.plots import plot_lines

    started = time.perf_counter()
    data, model = run.data, run.model
    T = data.num_timesteps
    levels = tuple(int(t) for t in np.unique(np.round(np.linspace(0, T - 1, int(opts.levels)))))
    rows = int(opts.rows or run.config.eval_rows)
    accuracy = heldout_accuracy(model, data, key, levels, rows)
    if accuracy is None:
        raise DataError(f"{run.run.path}: no labelled held-out codes to evaluate")
    acc = accuracy(run.params)
    train_labels = data.labels[~data.holdout & (data.labels >= 0)]
    held = data.labels[data.holdout & (data.labels >= 0)]
    majority = int(np.bincount(train_labels, minlength=len(data.family_names)).argmax())
    ab = np.asarray(model.schedule.alpha_bars)
    result = {
        "latent": str(run.config.latent),
        "num_families": len(data.family_names),
        "num_heldout": int(min(rows, len(held))),
        "chance_majority_family": float(np.mean(held == majority)),
        "levels": [
            {"t": t, "signal_sqrt_alpha_bar": float(np.sqrt(ab[t])), "accuracy": acc[t]}
            for t in levels
        ],
        "seconds": time.perf_counter() - started,
    }
    out = Path(opts.out)
    save_json_atomic(out, result)
    plot_lines(
        {"held-out accuracy": ([float(t) for t in levels], [acc[t] for t in levels])},
        out.with_suffix(".png"), "timestep t", "accuracy",
        title=f"noisy family classifier ({len(data.family_names)} families)",
        hline=("majority family", result["chance_majority_family"]),
    )  # fmt: skip
    return result


class Classifier(ClassifierRecipe):
    """Noisy family classifiers: training hooks (:class:`ClassifierRecipe`) and ``evaluate``."""

    commands = COMMANDS
    evaluate = staticmethod(evaluate)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        return OutputPlan(False, [out, out.with_suffix(".png")], [])


RECIPE = Classifier()
