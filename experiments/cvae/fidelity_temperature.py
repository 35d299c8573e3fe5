"""Family fidelity of conditional samples at two temperatures (the table in experiments/cvae/README.md).

    PYTHONPATH=. python experiments/cvae/fidelity_temperature.py RUN

For the 8 largest training families, 16 samples each through the comparison hook
``RECIPE.generate_sequences`` (prior ``z``, the family label, properties of a random training record
of the family), classified by the 3-mer naive Bayes classifier fitted on the run's training split.
"""

import json
import sys

import jax
import numpy as np

from protgen_jax.alphabet import AMINO_ACIDS
from protgen_jax.baselines import KmerNaiveBayes
from protgen_jax.recipes.cvae import RECIPE, load_vae


def main(run_dir: str) -> None:
    run, vae = RECIPE.load_run(run_dir), load_vae(run_dir)
    data = vae.data
    train = data.split(False)
    seqs = [data.sequences.sequence(i) for i in train]
    labels = data.sequences.labels[train]
    classifier = KmerNaiveBayes.fit(seqs, labels, len(vae.family_names))
    families = np.argsort(-np.bincount(labels, minlength=len(vae.family_names)))[:8]
    out = {}
    for temperature in (1.0, 0.5):
        hits = {}
        for f in families:
            name = vae.family_names[f]
            samples = RECIPE.generate_sequences(
                run, jax.random.key(int(f) + 100), 16, lengths=np.zeros(16, int), family=name,
                options={"temperature": temperature},
            )  # fmt: skip
            tokens = [np.array([AMINO_ACIDS.index(c) for c in s] or [0]) for s in samples]
            hits[name] = float(np.mean(classifier.predict(tokens) == f))
        out[f"temperature_{temperature:g}"] = {"mean": float(np.mean(list(hits.values()))), **hits}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
