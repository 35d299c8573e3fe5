"""What ``protgen compare`` measures, the same code for every row: the reference data and the statistics.

Reference (:func:`build_reference`): the held-out FASTA, and the training reference = the records of the
training FASTA (default the registry's ``sequences/family_domains_train.fasta``) minus every record whose
id or sequence is also in the held-out file. On it are fitted, by the existing code, the independent
family classifier (``baselines.KmerNaiveBayes``, 3-mer multinomial naive Bayes) and the unigram baseline
(``baselines.UnigramBaseline``); the held-out records are therefore never in their training data (the
counts of removed and remaining overlaps are reported).

Statistics of a set of sequences (:func:`sequence_statistics`), with ``TV(p, q) = 0.5 sum |p - q|``:
composition TV (20 letters) to the held-out set and to the training reference, adjacent-pair TV
(the 400 overlapping 2-mers, the pair statistic of unaligned sequences: column pair covariances need an
alignment), 3-mer TV, diversity ``1 - mean pairwise alignment identity`` and novelty (alignment identity
to the nearest training-reference sequence), all from ``protgen_jax.metrics``.

Classifier probabilities (:func:`classifier_probabilities`): the naive Bayes posterior
``p(f | x) = softmax_f(log pi_f + sum_m n_m(x) log theta_{f,m})`` ``[N, F]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import softmax

from protgen_jax.alphabet import K_AA, encode
from protgen_jax.baselines import KmerNaiveBayes, UnigramBaseline
from protgen_jax.data.sequences import SequenceSet, family_of, read_sequences
from protgen_jax.errors import DataError
from protgen_jax.fit import read_metrics
from protgen_jax.metrics import (
    composition,
    kmer_counts,
    kmer_spectrum,
    mean_alignment_identity,
    nearest_identity,
    perplexity,
    total_variation,
)


def as_list(data: SequenceSet) -> list[np.ndarray]:
    """The sequences of ``data`` as int32 token arrays."""
    return [data.sequence(i) for i in range(len(data))]


@dataclass(frozen=True)
class Reference:
    """The held-out set (labels in the classifier's vocabulary), the training reference, the
    classifier, the unigram baseline, the held-out spectra and the independence checks."""

    heldout: SequenceSet
    heldout_families: tuple[str, ...]
    train: SequenceSet
    train_seqs: list[np.ndarray]
    train_counts: sparse.csr_matrix
    classifier: KmerNaiveBayes
    unigram: UnigramBaseline
    spectra: dict[str, np.ndarray]
    independence: dict[str, Any]

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The classifier's families (label k is ``vocabulary[k]``)."""
        return self.train.family_names


def build_reference(heldout_path: Path, train_path: Path) -> Reference:
    """Read both FASTA files (``data.sequences`` letter rule), drop the held-out records from the
    training reference (same id or same sequence), fit the classifier and the unigram (see the module
    docstring). DataError for unreadable files or a training reference left without families."""
    held = read_sequences(heldout_path)
    full = read_sequences(train_path)
    held_ids = set(held.ids)
    held_seqs = {held.sequence(i).tobytes() for i in range(len(held))}
    by_id = np.array([i in held_ids for i in full.ids])
    by_seq = np.array([full.sequence(i).tobytes() in held_seqs for i in range(len(full))])
    train = full.subset(np.flatnonzero(~by_id & ~by_seq))
    if not train.family_names or len(train) == 0:
        raise DataError(f"{train_path}: no FAMILY|id headers left to train the family classifier")
    heldout = read_sequences(heldout_path, family_names=train.family_names)
    train_seqs = as_list(train)
    overlap_ids = len(held_ids & set(train.ids))
    overlap_seqs = sum(train.sequence(i).tobytes() in held_seqs for i in range(len(train)))
    independence = {
        "training_fasta": str(train_path),
        "training_records": len(full),
        "removed_same_id_as_heldout": int(by_id.sum()),
        "removed_same_sequence_as_heldout": int((by_seq & ~by_id).sum()),
        "training_reference_records": len(train),
        "heldout_ids_in_training_reference": overlap_ids,
        "heldout_sequences_in_training_reference": int(overlap_seqs),
        "heldout_records_of_unknown_family": int(np.sum(heldout.labels < 0)),
    }
    heldout_seqs = as_list(heldout)
    spectra = {
        "composition_heldout": composition(heldout_seqs),
        "composition_train": composition(train_seqs),
        "kmer2_heldout": kmer_spectrum(heldout_seqs, 2),
        "kmer3_heldout": kmer_spectrum(heldout_seqs, 3),
        "kmer3_train": kmer_spectrum(train_seqs, 3),
    }
    num_families = len(train.family_names)
    return Reference(
        heldout=heldout,
        heldout_families=tuple(family_of(i) for i in heldout.ids),
        train=train,
        train_seqs=train_seqs,
        train_counts=kmer_counts(train_seqs),
        classifier=KmerNaiveBayes.fit(train_seqs, train.labels, num_families),
        unigram=UnigramBaseline.fit(train_seqs, train.labels, num_families),
        spectra=spectra,
        independence=independence,
    )


def encode_samples(samples: list[str], what: str) -> tuple[list[np.ndarray], int]:
    """Strings of the 20 standard letters -> (token arrays of the non-empty ones, number of empty
    strings). A VAE row that ends at once decodes to "": it is counted, not measured. Any other letter is
    a DataError naming ``what`` and the sequence."""
    out = []
    for i, text in enumerate(samples):
        try:
            tokens = encode(text)
        except DataError as err:
            raise DataError(f"{what}: sequence {i}: {err}") from None
        if np.any(tokens >= K_AA):
            raise DataError(f"{what}: sequence {i} holds a non-standard letter")
        if len(tokens):
            out.append(tokens)
    if not out:
        raise DataError(f"{what}: all {len(samples)} sequences are empty")
    return out, len(samples) - len(out)


def distribution_distances(seqs: list[np.ndarray], ref: Reference) -> dict[str, float]:
    """Composition, adjacent-pair (2-mer) and 3-mer TV of ``seqs`` to the held-out set (and the
    composition and 3-mer TV to the training reference)."""
    comp, spectra = composition(seqs), ref.spectra
    kmer3 = kmer_spectrum(seqs, 3)
    return {
        "composition_tv_heldout": total_variation(comp, spectra["composition_heldout"]),
        "pair_tv_heldout": total_variation(kmer_spectrum(seqs, 2), spectra["kmer2_heldout"]),
        "kmer3_tv_heldout": total_variation(kmer3, spectra["kmer3_heldout"]),
        "composition_tv_train": total_variation(comp, spectra["composition_train"]),
        "kmer3_tv_train": total_variation(kmer3, spectra["kmer3_train"]),
    }


def diversity_novelty(seqs: list[np.ndarray], ref: Reference) -> dict[str, float]:
    """Diversity (first 100 sequences) and novelty to the training reference of ``seqs``."""
    nearest = nearest_identity(seqs, ref.train_seqs, ref.train_counts)
    return {
        "diversity": 1.0 - mean_alignment_identity(seqs),
        "novelty_identity_mean": float(nearest.mean()),
        "novelty_identity_median": float(np.median(nearest)),
        "fraction_identity_above_0.9": float(np.mean(nearest > 0.9)),
    }


def sequence_statistics(seqs: list[np.ndarray], ref: Reference) -> dict[str, float]:
    """Every statistic of the module docstring for ``seqs``."""
    return {
        "num": len(seqs),
        "mean_length": float(np.mean([len(s) for s in seqs])),
        **distribution_distances(seqs, ref),
        **diversity_novelty(seqs, ref),
    }


def classifier_probabilities(classifier: KmerNaiveBayes, seqs: list[np.ndarray]) -> np.ndarray:
    """Naive Bayes posterior ``[N, F]`` over the classifier's families (rows sum to 1)."""
    scores = np.asarray(kmer_counts(seqs, classifier.k) @ classifier.log_theta.T)
    return softmax(scores + classifier.log_prior, axis=-1)


def unigram_nll(ref: Reference, seqs: list[np.ndarray]) -> dict[str, Any]:
    """The global unigram's NLL per residue (nats, exact) of ``seqs`` and its perplexity."""
    residues = float(sum(len(s) for s in seqs))
    total = ref.unigram.nll(seqs, None)
    return {
        "nats_per_residue": total / residues,
        "perplexity": perplexity(total, residues),
        "kind": "exact likelihood of the training reference's amino-acid composition "
        "(pseudocount 1)",
        "num_sequences": len(seqs),
        "num_residues": int(residues),
    }


def unigram_sample(
    ref: Reference, lengths: np.ndarray, label: int, rng: np.random.Generator
) -> list[str]:
    """Sequences of the given lengths, residues drawn i.i.d. from the unigram row ``label`` (-1:
    global, else the family's composition)."""
    p = np.exp(ref.unigram.row(label))
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8)
    return [
        letters[rng.choice(K_AA, size=int(n), p=p / p.sum())].tobytes().decode() for n in lengths
    ]


def training_time(run_dir: Path) -> dict[str, Any]:
    """Wall time of a run's logged training: the last ``time`` of each call's train records in
    ``metrics.jsonl`` (``time`` restarts at each resumed call), summed; with the steps and the
    platform it trained on (``run.json``)."""
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "train"]
    total, last = 0.0, None
    for record in records:
        now = float(record.get("time", 0.0))
        if last is not None and now < last:  # a new call started
            total += last
        last = now
    total += last or 0.0
    info = {}
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        pass
    return {
        "seconds": total if records else None,
        "steps": int(records[-1]["step"]) if records else None,
        "platform": info.get("platform"),
        "devices": info.get("devices"),
        "source": "metrics.jsonl: the last 'time' of the train records of each call, summed",
    }
