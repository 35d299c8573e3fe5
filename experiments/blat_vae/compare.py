"""Plot the Spearman / validation-ELBO curves of several VAE runs against the published numbers.

python experiments/blat_vae/compare.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""

import sys
from pathlib import Path

from protgen_jax.plots import plot_runs
from protgen_jax.recipes.base import read_metrics

PUBLISHED = {"site-independent 0.61": 0.61, "EVmutation 0.72": 0.72, "DeepSequence 0.75": 0.75}


def main(argv: list[str]) -> None:
    out, *pairs = argv
    runs = {}
    for pair in pairs:
        label, run = pair.rsplit("=", 1)  # labels may contain "=" (e.g. "p=0.001"), paths rarely do
        metrics = Path(run) / "metrics.jsonl"
        if not metrics.exists():
            raise SystemExit(f"{metrics}: no such file (argument {pair!r})")
        runs[label] = read_metrics(metrics)
    plot_runs(
        runs, ["spearman", "val_neg_elbo"], Path(out), reference=PUBLISHED, title="BLAT_ECOLX VAE"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
