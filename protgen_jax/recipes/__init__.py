"""Model families, one package each, all on the shared skeleton :mod:`protgen_jax.recipes.base`.

Each family package (``recipes/<family>/``) exposes ``RECIPE``, an instance of its
:class:`~protgen_jax.recipes.base.Recipe` subclass, and the family's public names. ``MODELS`` maps the
model names of ``protgen train MODEL`` to the package that trains them; a run folder's ``run.json``
names the model, so :func:`recipe_for_run` finds the recipe of any run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from protgen_jax.errors import DataError
from protgen_jax.recipes.base import Recipe, RunDir

MODELS: dict[str, str] = {
    "vae": "protgen_jax.recipes.vae",
    "backbone": "protgen_jax.recipes.backbone",
    "foldingdiff": "protgen_jax.recipes.foldingdiff",
    "oadm": "protgen_jax.recipes.seqdiff",
    "d3pm": "protgen_jax.recipes.seqdiff",
    "relax": "protgen_jax.recipes.seqdiff",
    "design": "protgen_jax.recipes.design",
    "cvae": "protgen_jax.recipes.cvae",
    "latent": "protgen_jax.recipes.latent",
    "classifier": "protgen_jax.recipes.classifier",
}


def recipe_for_model(model: str) -> Recipe:
    """The recipe of ``protgen train MODEL``."""
    if model not in MODELS:
        raise DataError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    return importlib.import_module(MODELS[model]).RECIPE


def recipe_for_run(run_dir: str | Path) -> Recipe:
    """The recipe that wrote ``run_dir`` (its ``run.json`` names the model)."""
    info = RunDir(run_dir).read_info()
    if "family" not in info:
        raise DataError(f"{RunDir(run_dir).info}: unreadable run info (no 'family')")
    return recipe_for_model(info["family"])


def all_recipes() -> dict[str, Recipe]:
    """Every family's recipe, by family name (imports each family package)."""
    out: dict[str, Recipe] = {}
    for model in MODELS:
        recipe = recipe_for_model(model)
        out.setdefault(recipe.family, recipe)
    return out
