"""Matplotlib figures written straight to PNG through an Agg canvas (no display needed).

No pyplot: figures are ``matplotlib.figure.Figure`` objects drawn by ``FigureCanvasAgg``, so importing
this module leaves matplotlib's global backend (a user's notebook or GUI) as it was.
"""

from __future__ import annotations

import itertools
import re
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


def _step_axis(ax, label: str = "step") -> None:
    """x axis labelled ``label``, thousands written as "12k" so long runs' tick labels do not run together."""
    ax.set_xlabel(label)
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


METRIC_NAMES: dict[str, tuple[str, str]] = {
    "loss": ("training objective", "loss"),
    "neg_elbo": ("negative ELBO", "nats / sequence"),
    "nll": ("reconstruction NLL", "nats / sequence"),
    "kl_z": ("KL of the latent posterior", "nats / sequence"),
    "kl_weights": ("KL of the decoder weights / N_eff", "nats / sequence"),
    "grad_norm": ("gradient norm (before clipping)", "L2 norm"),
    "bound_per_token": ("likelihood bound", "nats / token"),
    "ce_per_token": ("cross-entropy", "nats / token"),
    "mse_per_token": ("embedding MSE", "squared error / token"),
    "spearman": ("DMS Spearman (score vs fitness)", "Spearman rho"),
    "perplexity": ("perplexity", "per residue"),
    "nll_per_residue": ("sequence NLL", "nats / residue"),
    "accuracy": ("most likely amino acid = native", "fraction of residues"),
    "mse": ("noise-prediction error", "eps MSE"),
}
"""Panel title and y label of the metric keys the recipes log; other keys are shown by their name."""

_SPLIT_STYLE = {"train": ("tab:blue", "."), "eval": ("tab:orange", "o")}
_OTHER_STYLES = [("tab:green", "s"), ("tab:red", "^"), ("tab:purple", "D"), ("tab:brown", "v")]


def metric_label(key: str) -> tuple[str, str]:
    """``(panel title, y label)`` of a metric key: :data:`METRIC_NAMES`, ``val_X`` as "held-out X",
    ``val_mse_t10`` as the held-out eps MSE at t=10, and the key itself for unknown keys."""
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    match = re.fullmatch(r"(val_)?mse_t(\d+)", key)
    if match:
        where = "held-out " if match[1] else ""
        return f"{where}noise-prediction error, t={match[2]}", f"eps MSE at t={match[2]}"
    if key.startswith("val_"):
        title, ylabel = metric_label(key[4:])
        if title != key[4:]:
            return f"held-out {title}", ylabel
    return key, key


def _curve_panels(keys: Sequence[str]) -> list[list[str]]:
    """Panels of metric keys: ``X`` and ``val_X`` share one (train and held-out of one quantity)."""
    panels: list[list[str]] = []
    for key in keys:
        if key.startswith("val_") and key[4:] in keys:
            continue
        panels.append([key] + ([f"val_{key}"] if f"val_{key}" in keys else []))
    return panels


def curves_figure(
    records: Sequence[dict[str, Any]], keys: Sequence[str], title: str = ""
) -> tuple[Figure, list[Any]]:
    """The figure of :func:`plot_curves` and its panel axes (not saved)."""
    keys = [k for k in keys if any(k in r for r in records)]
    panels = _curve_panels(keys)
    width = max(len(panels), 1)
    fig, axes = _subplots(1, width, figsize=(4.2 * width, 3.4), squeeze=False)
    splits = sorted({r.get("split", "train") for r in records}, key=lambda s: (s != "train", s))
    others = itertools.cycle(_OTHER_STYLES)
    styles = {s: _SPLIT_STYLE.get(s) or next(others) for s in splits}
    for ax, panel in zip(axes[0], panels, strict=False):
        for key in panel:
            for split in splits:
                pts = [
                    (r["step"], r[key])
                    for r in records
                    if r.get("split", "train") == split and key in r
                ]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                color, marker = styles[split]
                ax.plot(
                    xs, ys, color=color, marker=marker if len(xs) < 60 else None,
                    markersize=4 if split == "train" else 5, linewidth=1.2,
                    label=split,
                )  # fmt: skip
        name, ylabel = metric_label(panel[0])
        if len(panel) == 1 and panel[0].startswith("val_") and name == panel[0]:
            name = f"held-out {panel[0][4:]}"
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel)
        _step_axis(ax, "training step")
        ax.grid(alpha=0.3)
    _shared_legend(fig, axes[0])
    if title:
        fig.suptitle(title)
    return fig, list(axes[0][: len(panels)])


def plot_curves(
    records: Sequence[dict[str, Any]], keys: Sequence[str], path: Path, title: str = ""
) -> Path:
    """Training/eval curves: one titled panel per metric (``X`` and ``val_X`` together), x = training
    step, y labelled with its unit where known (:func:`metric_label`), one colour and marker per split
    (train, eval) and one legend below the panels."""
    fig, _ = curves_figure(records, keys, title)
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


def plot_grouped_bars(
    series: dict[str, dict[str, float]], path: Path, ylabel: str, title: str = ""
) -> Path:
    """Bars of several series side by side per category: ``{series: {category: value}}`` (the
    categories of the first series, in its order)."""
    names = list(series)
    categories = list(next(iter(series.values()))) if series else []
    fig, ax = _subplots(figsize=(max(4.5, 0.9 * len(categories) + 1.5), 3.4))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(categories))
    for i, name in enumerate(names):
        values = [series[name].get(c, np.nan) for c in categories]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(categories, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
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


def plot_mutation_heatmap(
    positions: np.ndarray,
    wild_type: str,
    scores: np.ndarray,
    path: Path,
    title: str = "",
    label: str = "predicted effect",
) -> Path:
    """Single-substitution scores as a grid: x = residue ``positions [P]``, y = the 20 amino acids,
    colour = ``scores [P, 20]`` (columns in token order ``ACDEFGHIKLMNPQRSTVWY``; NaN = not scored,
    grey), diverging at 0 (blue above: fitter than the wild type, red below); a dot marks the wild-type
    letter ``wild_type[p]`` of each position."""
    from matplotlib.colors import TwoSlopeNorm

    from protgen_jax.alphabet import AMINO_ACIDS

    grid = np.ma.masked_invalid(np.asarray(scores, np.float64).T)  # [20, P]
    finite = grid.compressed()
    lo = min(float(np.percentile(finite, 1)), -1e-6) if finite.size else -1.0
    hi = max(float(np.percentile(finite, 99)), 1e-6) if finite.size else 1.0
    count = len(positions)
    fig, ax = _subplots(figsize=(min(max(6.0, 0.07 * count + 2.0), 40.0), 4.2))
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")
    image = ax.imshow(
        grid, aspect="auto", cmap=cmap, norm=TwoSlopeNorm(0.0, lo, hi), interpolation="nearest"
    )
    wt_rows = [AMINO_ACIDS.index(a) if a in AMINO_ACIDS else -1 for a in wild_type]
    marked = [(x, y) for x, y in enumerate(wt_rows) if y >= 0]
    if marked:
        xs, ys = zip(*marked, strict=True)
        ax.scatter(xs, ys, s=4 if count > 100 else 12, c="black", marker="o", linewidths=0)
    ax.set_yticks(range(len(AMINO_ACIDS)), list(AMINO_ACIDS), fontsize=7)
    step = max(1, int(np.ceil(count / 40 / 5)) * 5) if count > 40 else 1
    ticks = list(range(0, count, step))
    ax.set_xticks(ticks, [str(int(positions[t])) for t in ticks], fontsize=7, rotation=90)
    ax.set_xlabel("residue (alignment numbering); dot = wild type")
    ax.set_ylabel("substituted amino acid")
    fig.colorbar(image, ax=ax, label=label, fraction=0.02, pad=0.01)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_compare(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``protgen compare``: sequences per second (log axis), the sample metrics per row, and the
    family classifier's probabilities along each latent interpolation (rows as in ``compare.json``)."""
    paths = [r for r in rows if (r.get("interpolation") or {}).get("probability_a")]
    fig, axes = _subplots(1, 3 if paths else 2, figsize=(15 if paths else 10.5, 3.8))
    labels = [r["label"] for r in rows]
    rates = [(r.get("speed") or {}).get("sequences_per_second") or np.nan for r in rows]
    y = np.arange(len(rows))
    axes[0].barh(y, rates, color="tab:blue")
    axes[0].set_xscale("log")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("sequences per second (log)")
    for i, rate in enumerate(rates):
        if np.isfinite(rate):
            axes[0].annotate(f"{rate:,.3g}", (rate, i), xytext=(3, 0), textcoords="offset points",
                             va="center", fontsize=7)  # fmt: skip
    metrics = (
        ("kmer3_tv_heldout", "3-mer TV"),
        ("pair_tv_heldout", "pair TV"),
        ("composition_tv_heldout", "comp. TV"),
        ("diversity", "diversity"),
    )
    series = [(name, [(r.get("samples") or {}).get(key) for r in rows]) for key, name in metrics]
    assigned = [(r.get("conditional") or {}).get("fraction_assigned") for r in rows]
    series.append(("assigned", assigned))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series):
        vals = [np.nan if v is None else v for v in values]
        axes[1].barh(y + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
    axes[1].set_yticks(y)
    axes[1].set_yticklabels(labels, fontsize=8)
    axes[1].invert_yaxis()
    axes[1].set_xlim(0, 1)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[1].set_title("samples vs held-out (TV: lower is closer)", fontsize=9)
    if paths:
        ax = axes[2]
        for r in paths:
            path_info = r["interpolation"]
            t = np.linspace(0, 1, len(path_info["probability_a"]))
            (line,) = ax.plot(t, path_info["probability_a"], marker="o", label=f"{r['label']}: A")
            ax.plot(t, path_info["probability_b"], marker="s", linestyle="--",
                    color=line.get_color(), label=f"{r['label']}: B")  # fmt: skip
        first = paths[0]["interpolation"]
        ax.set_xlabel(f"latent path {first['family_a']} (0) -> {first['family_b']} (1)")
        ax.set_ylabel("classifier probability")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_lines(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    hline: tuple[str, float] | None = None,
    point_labels: dict[str, Sequence[str]] | None = None,
) -> Path:
    """Lines with markers, one per series ``{label: (x, y)}``; ``hline``: a labelled horizontal
    reference line; ``point_labels``: per series a text beside each point (e.g. the guidance scale)."""
    fig, ax = _subplots(figsize=(5.0, 3.8))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=4, label=label)
        for xi, yi, text in zip(x, y, (point_labels or {}).get(label, ()), strict=False):
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if hline is not None:
        ax.axhline(hline[1], color="0.5", ls="--", lw=1, label=hline[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
