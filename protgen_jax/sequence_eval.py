"""Evaluations of any generator of unaligned sequences, each next to a baseline computed by the same code.

A model enters as two callables over lists of int token arrays (``protgen_jax.alphabet``, 0..19):

- ``nll(seqs, labels, key) -> [N]`` per-sequence negative log-likelihood (or an upper bound), nats;
- ``generate(key, lengths [N], labels [N], guidance, temperature, fixed) -> N arrays``: one sequence per
  requested length and family label (-1 = none); ``fixed`` (or None) gives per request
  ``(tokens [L_i], keep [L_i] bool)`` whose kept positions the sampler must copy (inpainting).

Reports (host-side NumPy; every random draw from the given key, split by name with ``protgen_jax.keys``):

- ``perplexity_report``: ``exp(sum NLL / residues)`` of the model, with and without family labels, and of
  the uniform (20), unigram and per-family unigram models on the same residues.
- ``sample_quality``: composition distance (total variation) to UniRef50 and to training, 3-mer spectrum
  distance, diversity ``1 - mean pairwise identity`` and novelty (identity to the nearest training
  sequence), for samples and for natural held-out sequences as the reference.
- ``conditional_report``: the fraction of family-conditional samples that a k-mer naive Bayes classifier
  assigns to the requested family, per guidance scale; its accuracy on natural sequences as the reference.
- ``inpainting_report``: recovery of hidden residues (random positions or one span) by sampling and by
  greedy filling, against the per-family unigram's draw (in expectation) and mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from protgen_jax import keys
from protgen_jax.alphabet import K_AA
from protgen_jax.baselines import KmerNaiveBayes, UnigramBaseline
from protgen_jax.data.sequences import SequenceSet, chunk_sequence
from protgen_jax.metrics import (
    composition,
    kmer_spectrum,
    mean_alignment_identity,
    nearest_identity,
    perplexity,
    total_variation,
)

NllFn = Callable[[list[np.ndarray], np.ndarray, jax.Array], np.ndarray]
GenerateFn = Callable[..., list[np.ndarray]]
INPAINT_FRACTIONS = (0.15, 0.30)

__all__ = [
    "INPAINT_FRACTIONS",
    "chunk_all",
    "conditional_report",
    "inpaint_masks",
    "inpainting_report",
    "perplexity_report",
    "sample_quality",
]


def chunk_all(
    seqs: Sequence[np.ndarray], labels: np.ndarray, max_len: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Split each sequence into ``ceil(L / max_len)`` near-equal consecutive pieces; labels follow."""
    pieces, piece_labels = [], []
    for seq, label in zip(seqs, labels, strict=True):
        for piece in chunk_sequence(seq, max_len):
            pieces.append(piece)
            piece_labels.append(int(label))
    return pieces, np.asarray(piece_labels, np.int32)


def perplexity_report(
    nll: NllFn,
    seqs: list[np.ndarray],
    labels: np.ndarray,
    key: jax.Array,
    baseline: UnigramBaseline,
) -> dict[str, Any]:
    """Per-residue perplexities of the model and of the baselines on ``seqs`` ``[N]`` (labels ``[N]``).

    ``perplexity = exp(sum_n nll_n / residues)``. When some labels are known the model is also scored
    with every label -1 (``perplexity_unconditional``) under the same ``key``: paired estimates that
    differ only by the label.
    """
    residues = float(sum(len(s) for s in seqs))
    total = float(np.sum(nll(seqs, labels, key)))
    report: dict[str, Any] = {
        "perplexity": perplexity(total, residues),
        "nll_per_residue": total / residues,
        "num_residues": int(residues),
        "num_chunks": len(seqs),
        "num_with_known_family": int(np.sum(labels >= 0)),
    }
    if np.any(labels >= 0):
        none = np.full(len(seqs), -1, np.int32)
        report["perplexity_unconditional"] = perplexity(
            float(np.sum(nll(seqs, none, key))), residues
        )
    report["baselines"] = {
        "uniform": perplexity(residues * np.log(K_AA), residues),
        "unigram": perplexity(baseline.nll(seqs, None), residues),
        "family_unigram": perplexity(baseline.nll(seqs, labels), residues),
    }
    return report


def sample_quality(
    samples: list[np.ndarray],
    natural: list[np.ndarray],
    train_seqs: list[np.ndarray],
    train_counts: Any,
    reference_composition: np.ndarray,
) -> dict[str, Any]:
    """Composition / 3-mer distances, diversity and novelty of ``samples`` and of ``natural``.

    ``train_counts``: ``metrics.kmer_counts(train_seqs)``; ``reference_composition [20]``: e.g. UniRef50.
    """
    train_comp, train_kmers = composition(train_seqs), kmer_spectrum(train_seqs)

    def stats(seqs: list[np.ndarray]) -> dict[str, float]:
        novelty = nearest_identity(seqs, train_seqs, train_counts)
        return {
            "num": len(seqs),
            "mean_length": float(np.mean([len(s) for s in seqs])),
            "composition_tv_uniref50": total_variation(composition(seqs), reference_composition),
            "composition_tv_train": total_variation(composition(seqs), train_comp),
            "kmer3_tv_train": total_variation(kmer_spectrum(seqs), train_kmers),
            "diversity": 1.0 - mean_alignment_identity(seqs),
            "novelty_identity_mean": float(novelty.mean()),
            "novelty_identity_median": float(np.median(novelty)),
            "fraction_identity_above_0.9": float(np.mean(novelty > 0.9)),
        }

    return {"samples": stats(samples), "natural_heldout": stats(natural)}


def conditional_report(
    generate: GenerateFn,
    train: SequenceSet,
    classifier: KmerNaiveBayes,
    natural: list[np.ndarray],
    natural_labels: np.ndarray,
    key: jax.Array,
    *,
    num_families: int,
    samples_per_family: int,
    scales: Sequence[float],
    max_len: int,
) -> dict[str, Any]:
    """Family fidelity of conditional samples of the ``num_families`` largest training families.

    Lengths (drawn from each family's training lengths, capped at ``max_len``) from
    ``named(key, "lengths")``; scale ``s`` samples at temperature 1 from ``named(key, f"guidance_{s:g}")``.
    """
    counts = np.bincount(train.labels[train.labels >= 0], minlength=len(train.family_names))
    families = np.argsort(-counts)[:num_families]
    rng = keys.numpy_rng(keys.named(key, "lengths"))
    labels = np.repeat(families, samples_per_family)
    lengths = np.concatenate(
        [np.minimum(rng.choice(train.lengths[train.labels == f], samples_per_family), max_len)
         for f in families]
    )  # fmt: skip
    report: dict[str, Any] = {
        "families": [train.family_names[f] for f in families],
        "samples_per_family": samples_per_family,
        "classifier": "3-mer multinomial naive Bayes fitted on the training split",
        "classifier_accuracy_natural_heldout": float(
            np.mean(classifier.predict(natural) == natural_labels)
        ),
    }
    for scale in scales:
        seqs = generate(
            keys.named(key, f"guidance_{scale:g}"), lengths, labels, float(scale), 1.0, None
        )
        report[f"fraction_assigned_guidance_{scale:g}"] = float(
            np.mean(classifier.predict(seqs) == labels)
        )
    return report


def inpaint_masks(
    lengths: np.ndarray, fraction: float, span: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per sequence a bool ``[L]`` of hidden positions: ``max(1, round(fraction L))`` of them, at random
    positions or as one contiguous span."""
    masks = []
    for length in lengths:
        n = max(1, int(round(fraction * length)))
        hide = np.zeros(length, bool)
        if span:
            start = int(rng.integers(0, length - n + 1))
            hide[start : start + n] = True
        else:
            hide[rng.choice(length, size=n, replace=False)] = True
        masks.append(hide)
    return masks


def inpainting_report(
    generate: GenerateFn,
    seqs: list[np.ndarray],
    labels: np.ndarray,
    key: jax.Array,
    baseline: UnigramBaseline,
    fractions: Sequence[float] = INPAINT_FRACTIONS,
) -> dict[str, Any]:
    """Recovery of hidden residues, model (sampled at temperature 1 and greedy) vs per-family unigram.

    Setting ``name`` (e.g. ``random_15``) hides positions drawn from ``named(key, name, "hide")`` and fills
    them from ``named(key, name, "sample")`` and ``named(key, name, "greedy")``. Recovery is the fraction of
    hidden residues equal to the truth; the unigram's sampled recovery is its expectation
    ``mean p_family(x_true)``, its mode recovery ``mean [argmax p_family = x_true]``.
    """
    lengths = np.array([len(s) for s in seqs])
    report: dict[str, Any] = {"num_sequences": len(seqs)}
    for fraction in fractions:
        for span in (False, True):
            name = f"{'span' if span else 'random'}_{int(round(100 * fraction))}"
            hidden = inpaint_masks(
                lengths, fraction, span, keys.numpy_rng(keys.named(key, name, "hide"))
            )
            fixed = [(s, ~h) for s, h in zip(seqs, hidden, strict=True)]
            truth = np.concatenate([s[h] for s, h in zip(seqs, hidden, strict=True)])
            recovery, kept_ok = {}, True
            for metric, temperature, purpose in (
                ("model_recovery", 1.0, "sample"),
                ("model_recovery_greedy", 0.0, "greedy"),
            ):
                filled = generate(
                    keys.named(key, name, purpose), lengths, labels, 1.0, temperature, fixed
                )
                pred = np.concatenate([f[h] for f, h in zip(filled, hidden, strict=True)])
                recovery[metric] = float(np.mean(pred == truth))
                kept_ok &= all(
                    np.array_equal(f[~h], s[~h])
                    for f, s, h in zip(filled, seqs, hidden, strict=True)
                )
            log_p = np.concatenate(
                [
                    np.repeat(baseline.row(int(lab))[None], h.sum(), 0)
                    for lab, h in zip(labels, hidden, strict=True)
                ]
            )
            report[name] = {
                "num_hidden": int(len(truth)),
                **recovery,
                "family_unigram_mode_recovery": float(np.mean(log_p.argmax(-1) == truth)),
                "family_unigram_sampled_recovery": float(
                    np.mean(np.exp(np.take_along_axis(log_p, truth[:, None], -1)))
                ),
                "unmasked_positions_kept": bool(kept_ok),
            }
    return report
