"""Plot the M=500 Spearman of every measured seed of each VAE configuration next to the published numbers.

python experiments/blat_vae/seeds.py seeds.png

Reads the score JSONs in ``results/`` (CPU runs: one ``protgen score`` report per seed; GPU runs: the
summary ``gpu_h100_seeds_and_variants.json``; the same CPU runs scored with ``--estimator mean``:
``score_default12k_seed*_mean.json``) and draws one row per configuration, one dot per seed, the
mean as a bar and the ensemble as a star.
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PUBLISHED = {"site-independent 0.61": 0.61, "EVmutation 0.72": 0.72, "DeepSequence 0.75": 0.75}


def rows() -> list[tuple[str, list[float], float | None]]:
    """(label, per-seed Spearman, ensemble Spearman or None), top row first."""
    seed_files = [RESULTS / "score_default12k_m500.json"]  # seed 0, then seeds 1, 2, ...
    seed_files += sorted(RESULTS.glob("score_default12k_seed[0-9]*_m500.json"))
    cpu = [json.loads(path.read_text())["spearman"] for path in seed_files]
    cpu_ens = RESULTS / "score_default12k_ensemble5_m100.json"
    mean = [
        json.loads(path.read_text())["spearman"]
        for path in sorted(RESULTS.glob("score_default12k_seed[0-9]*_mean.json"))
    ]
    mean_ens = RESULTS / "score_default12k_ensemble5_mean.json"
    gpu = json.loads((RESULTS / "gpu_h100_seeds_and_variants.json").read_text())
    out = [
        (
            "default, 2-core CPU",
            cpu,
            json.loads(cpu_ens.read_text())["spearman"] if cpu_ens.exists() else None,
        ),
        (
            "same runs, --estimator mean",
            mean,
            json.loads(mean_ens.read_text())["spearman"] if mean_ens.exists() else None,
        ),
        (
            "default, H100",
            gpu["default_config"]["m500_by_seed"],
            gpu["default_config"]["ensemble_of_8_m500"],
        ),
    ]
    for label, variant in gpu["variants_seeds_0_to_3"].items():
        if not label.startswith("default"):
            out.append((f"{label}, H100", variant["m500_by_seed"], None))
    return out


def main(argv: list[str]) -> None:
    (out,) = argv
    data = rows()
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(data) + 1.4))
    for i, (_, values, ensemble) in enumerate(data):
        y = len(data) - 1 - i
        ax.scatter(values, [y] * len(values), color="tab:blue", alpha=0.7, zorder=3)
        mean = statistics.mean(values)
        ax.plot([mean, mean], [y - 0.3, y + 0.3], color="black", linewidth=2, zorder=4)
        if ensemble is not None:
            ax.scatter([ensemble], [y], marker="*", s=160, color="tab:orange", zorder=5)
        ax.annotate(f"mean {mean:.3f} (n={len(values)})", (0.7, y + 0.22), fontsize=7)
    for name, value in PUBLISHED.items():
        if value > 0.7:
            ax.axvline(value, linestyle="--", linewidth=0.8, color="gray")
            ax.annotate(name, (value, len(data) - 0.45), fontsize=7, rotation=90, va="top")
    ax.set_yticks(range(len(data)), [label for label, _, _ in reversed(data)], fontsize=8)
    ax.set_xlim(0.7, 0.77)
    ax.set_xlabel(
        "Spearman with the BLAT_ECOLX DMS (column 2500); M=500 unless 'estimator mean';"
        " bar = mean, star = ensemble"
    )
    ax.set_title("Sequence VAE: one dot per training seed")
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main(sys.argv[1:])
