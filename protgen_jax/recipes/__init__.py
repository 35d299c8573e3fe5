"""Recipes: one module per model family holding its config dataclass, training, sampling and evaluation.

Every recipe module exposes the same small interface, which the ``protgen`` command dispatches to:

``make_config(model: str) -> Config``
    Default frozen config dataclass for ``protgen train MODEL`` (fields ``data`` and ``steps`` required).
``train(config, run_dir: Path, progress: bool = True) -> dict``
    Train or resume the run in ``run_dir``; writes ``config.json``, ``run.json`` (``{"family": ...}``),
    checkpoints, ``metrics.jsonl`` and plots; returns a summary.
``sample(run_dir: Path, options: dict) -> dict``
    Write samples (FASTA or a PDB folder) to ``options["out"]``; returns a summary.
``evaluate(run_dir: Path, options: dict) -> dict``
    The family's evaluation (``options["data"]`` may name other data, ``options["out"]`` the JSON path).

``RECIPES`` maps ``protgen train`` model names to ``(module, family)``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

from protgen_jax.errors import DataError

RECIPES: dict[str, str] = {
    "vae": "protgen_jax.recipes.vae",
    "backbone": "protgen_jax.recipes.backbone",
    "oadm": "protgen_jax.recipes.seqdiff",
    "d3pm": "protgen_jax.recipes.seqdiff",
    "relax": "protgen_jax.recipes.seqdiff",
}


def recipe_for_model(model: str) -> ModuleType:
    """The recipe module for ``protgen train MODEL``."""
    if model not in RECIPES:
        raise DataError(f"unknown model {model!r}; choose one of: {', '.join(RECIPES)}")
    try:
        return importlib.import_module(RECIPES[model])
    except ModuleNotFoundError as err:
        raise DataError(f"model {model!r} is not available in this version ({err})") from err


def recipe_for_run(run_dir: Path) -> ModuleType:
    """The recipe module that wrote ``run_dir`` (read from its ``run.json``)."""
    info = Path(run_dir) / "run.json"
    if not info.exists():
        raise DataError(
            f"{run_dir}: not a run folder (no run.json); train one with `protgen train`"
        )
    try:
        family = json.loads(info.read_text())["family"]
    except (json.JSONDecodeError, KeyError) as err:
        raise DataError(f"{info}: unreadable run info ({err})") from err
    return recipe_for_model(family)
