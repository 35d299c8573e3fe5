"""The property-tracking report of ``protgen evaluate`` on a cvae run, and the sampling it shares
with ``protgen sample``.

For the ``property_families`` largest families (the null label for a run without families) and
``property_grid`` values from the training 10th to 90th percentile of each built-in property,
``property_samples`` samples each, the other properties at their training mean: Pearson and Spearman
correlation of requested vs achieved, the mean achieved per requested value, the per-family Pearson,
the fraction assigned to the requested family by the 3-mer classifier, and a scatter plot per
property (``OUT_<property>.png`` beside the JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from protgen_jax import keys
from protgen_jax.baselines import KmerNaiveBayes
from protgen_jax.data.fixed_width import END, cut_at_end
from protgen_jax.metrics import spearman
from protgen_jax.properties import BUILTIN, builtin_properties
from protgen_jax.recipes.cvae.api import TrainedVAE, sample_tokens

__all__ = ["achieved", "generate_rows", "pearson", "property_tracking"]


def generate_rows(
    vae: TrainedVAE, key: jax.Array, labels: np.ndarray, properties: np.ndarray | None,
    temperature: float,
) -> np.ndarray:  # fmt: skip
    """Rows ``[B, W]``: ``z`` from ``named(key, "z")``, letters from ``named(key, "letters")``."""
    z = np.asarray(jax.random.normal(keys.named(key, "z"), (len(labels), vae.latent_dim)))
    return sample_tokens(vae, keys.named(key, "letters"), z, labels, properties, temperature)


def achieved(rows: np.ndarray) -> np.ndarray:
    """Built-in properties ``[B, len(BUILTIN)]`` of sampled rows (the residues before the first END)."""
    cut = np.where(np.cumsum(rows == END, -1) > 0, END, rows)
    return builtin_properties(cut, BUILTIN)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def property_tracking(
    vae: TrainedVAE, key: jax.Array, classifier: KmerNaiveBayes | None, out: Path
) -> dict[str, Any] | None:
    """The property-tracking report of the module docstring (None without built-in properties)."""
    from protgen_jax.plots import plot_scatter

    cfg, data = vae.config, vae.data
    if not data.builtin:
        return None
    train = data.split(False)
    labels = data.sequences.labels[train]
    if vae.conditional:
        counts = np.bincount(labels[labels >= 0], minlength=len(vae.family_names))
        families = list(np.argsort(-counts)[: max(cfg.property_families, 1)])
    else:
        families = [vae.null_family]
    report: dict[str, Any] = {
        "families": [vae.family_names[f] if f < vae.null_family else None for f in families],
        "samples_per_value": cfg.property_samples,
        "other_properties": "training mean",
    }
    for j, name in enumerate(vae.property_names):
        values = data.properties[train, j]
        grid = np.percentile(values, np.linspace(10, 90, cfg.property_grid))
        req_labels = np.repeat(families, cfg.property_grid * cfg.property_samples).astype(np.int32)
        req_values = np.tile(np.repeat(grid, cfg.property_samples), len(families))
        props = np.tile(vae.property_mean, (len(req_labels), 1))
        props[:, j] = req_values
        rows = generate_rows(vae, keys.named(key, name), req_labels, props, 1.0)
        got = achieved(rows)[:, BUILTIN.index(name)]
        seqs = cut_at_end(rows)
        entry: dict[str, Any] = {
            "requested_grid": [float(g) for g in grid],
            "mean_achieved": [float(got[req_values == g].mean()) for g in grid],
            "pearson": pearson(req_values, got),
            "spearman": spearman(req_values, got),
            "per_family_pearson": {
                str(report["families"][k]): pearson(
                    req_values[req_labels == f], got[req_labels == f]
                )
                for k, f in enumerate(families)
            },
            "num_empty": int(sum(len(s) == 0 for s in seqs)),
        }
        if classifier is not None and vae.conditional:
            pred = classifier.predict([s if len(s) else np.zeros(1, np.int32) for s in seqs])
            entry["fraction_assigned_requested_family"] = float(np.mean(pred == req_labels))
        jitter = keys.numpy_rng(keys.named(key, name, "jitter")).uniform(-0.02, 0.02, len(got))
        span = float(grid[-1] - grid[0]) or 1.0
        plot_scatter(
            req_values + jitter * span, got, out.with_name(f"{out.stem}_{name}.png"),
            f"requested {name}", f"achieved {name}",
            f"{name}: pearson {entry['pearson']:.2f}, spearman {entry['spearman']:.2f}",
        )  # fmt: skip
        report[name] = entry
    return report
