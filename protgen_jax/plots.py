"""Matplotlib figures written straight to PNG through an Agg canvas (no display needed).

No pyplot: figures are ``matplotlib.figure.Figure`` objects drawn by ``FigureCanvasAgg``, so importing
this module leaves matplotlib's global backend (a user's notebook or GUI) as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from protgen_jax.atomic import atomic_write


def _subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a Figure on its own Agg canvas, and its axes."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_write(path, binary=True) as handle:  # bbox "tight" keeps legends outside the axes
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    return path


def _step_axis(ax) -> None:
    """x axis labelled "step", thousands written as "12k" so long runs' tick labels do not run together."""
    ax.set_xlabel("step")
    ax.xaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(
            lambda x, _: f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"
        )
    )


def _shared_legend(fig, axes) -> None:
    """One legend for all panels, below them, so it never hides a curve however many lines there are."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.tight_layout()
        fig.legend(
            handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8
        )


def plot_curves(
    records: Sequence[dict[str, Any]], keys: Sequence[str], path: Path, title: str = ""
) -> Path:
    """Training/eval curves: one panel per metric key, x = step, one line per split."""
    keys = [k for k in keys if any(k in r for r in records)]
    fig, axes = _subplots(
        1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.2), squeeze=False
    )
    for ax, key in zip(axes[0], keys, strict=False):
        for split in sorted({r.get("split", "train") for r in records}):
            pts = [
                (r["step"], r[key])
                for r in records
                if r.get("split", "train") == split and key in r
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=split)
        _step_axis(ax)
        ax.set_title(key)
    _shared_legend(fig, axes[0])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_scatter(
    x: np.ndarray, y: np.ndarray, path: Path, xlabel: str, ylabel: str, title: str = ""
) -> Path:
    """A scatter plot (e.g. predicted mutation effect vs measured fitness)."""
    fig, ax = _subplots(figsize=(4.5, 4.0))
    ax.scatter(x, y, s=4, alpha=0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_histograms(
    panels: dict[str, dict[str, np.ndarray]], path: Path, bins: int = 50, title: str = ""
) -> Path:
    """One panel per quantity, overlaid normalized histograms per source (e.g. samples vs natural)."""
    fig, axes = _subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, sources) in zip(axes[0], panels.items(), strict=True):
        values = [np.asarray(v).ravel() for v in sources.values() if np.size(v)]
        if not values:
            continue
        lo, hi = np.percentile(np.concatenate(values), [0.5, 99.5])
        for label, v in sources.items():
            if np.size(v):
                ax.hist(
                    np.ravel(v),
                    bins=bins,
                    range=(lo, hi),
                    density=True,
                    histtype="step",
                    label=label,
                )
        ax.set_title(name)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_latent(means: np.ndarray, highlight: np.ndarray, path: Path, title: str = "") -> Path:
    """2-D view of latent means ``[N, D]`` (first two principal components when ``D > 2``)."""
    x = np.asarray(means, np.float64)
    if x.shape[1] > 2:
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        x = centred @ vt[:2].T
    fig, ax = _subplots(figsize=(4.5, 4.2))
    hl = np.asarray(highlight, bool)
    ax.scatter(x[~hl, 0], x[~hl, 1], s=2, alpha=0.3, label="train")
    ax.scatter(x[hl, 0], x[hl, 1], s=4, alpha=0.8, label="held out")
    ax.set_xlabel("latent PC1" if means.shape[1] > 2 else "z1")
    ax.set_ylabel("latent PC2" if means.shape[1] > 2 else "z2")
    ax.legend(fontsize=8)
    ax.set_title(title or "latent means")
    return _save(fig, path)


def plot_runs(
    runs: dict[str, Sequence[dict[str, Any]]],
    keys: Sequence[str],
    path: Path,
    split: str = "eval",
    reference: dict[str, float] | None = None,
    title: str = "",
) -> Path:
    """Compare several runs: one panel per metric, one line per run; ``reference`` adds labelled
    horizontal lines (e.g. published numbers) to the first panel."""
    fig, axes = _subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, records in runs.items():
            pts = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", label=label)
        if reference and ax is axes[0][0]:
            for name, value in reference.items():
                ax.axhline(value, linestyle="--", linewidth=0.8, color="gray")
                ax.annotate(name, (ax.get_xlim()[0], value), fontsize=7, va="bottom")
        _step_axis(ax)
        ax.set_title(key)
    _shared_legend(fig, axes[0])
    if title:
        fig.suptitle(title)
    return _save(fig, path)
