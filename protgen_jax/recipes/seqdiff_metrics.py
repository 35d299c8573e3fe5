"""Host-side statistics for unaligned sequences: baselines, composition, k-mers, identity, a family classifier.

Sequences are lists of int token arrays (``protgen_jax.discrete.tokens``, 0..19), of any lengths.

- :class:`UnigramBaseline`: the uniform (20), global-unigram and per-family-unigram models, fitted on the
  training split with a pseudocount; they score held-out residues by the same per-residue NLL sum as the
  diffusion models' bounds, so the perplexities compare directly.
- :class:`KmerNaiveBayes`: a multinomial naive Bayes family classifier on overlapping k-mer counts.
- :func:`alignment_identity`: identity after an optimal global alignment (BLOSUM62, gaps -10/-1, free end
  gaps; biotite) as matches divided by the *first* sequence's length; :func:`nearest_identity` finds each
  sample's nearest training sequence among the ``top_k`` sharing most k-mers.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from protgen_jax.discrete import tokens as vocab
from protgen_jax.errors import DataError

K = vocab.K_AA


def composition(seqs: list[np.ndarray]) -> np.ndarray:
    """Amino-acid frequencies ``[20]`` pooled over all residues."""
    counts = np.bincount(np.concatenate(seqs).astype(np.int64), minlength=K)[:K]
    return counts / max(counts.sum(), 1)


def read_composition_csv(path: str | Path) -> np.ndarray:
    """A one-row CSV of letter counts (header = letters) -> frequencies ``[20]`` over the 20 amino acids.

    Non-standard columns (X, B, Z, J, O, U) are ignored; a missing amino acid is a DataError.
    """
    path = Path(path)
    try:
        with path.open() as handle:
            rows = list(csv.reader(handle))
        header, values = rows[0], rows[1]
        counts = dict(zip([h.strip() for h in header], [float(v) for v in values], strict=True))
        freq = np.array([counts[a] for a in vocab.AMINO_ACIDS], np.float64)
    except (OSError, IndexError, ValueError, KeyError) as err:
        raise DataError(
            f"{path}: expected a header of letters and one row of counts ({err})"
        ) from err
    return freq / freq.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """``0.5 * sum |p - q|`` in [0, 1]."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def kmer_ids(seq: np.ndarray, k: int = 3) -> np.ndarray:
    """Overlapping k-mers of one sequence as integers in ``[0, 20^k)``: ``[max(L - k + 1, 0)]``."""
    seq = np.asarray(seq, np.int64)
    if len(seq) < k:
        return np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(seq, k)
    return windows @ (K ** np.arange(k - 1, -1, -1))


def kmer_counts(seqs: list[np.ndarray], k: int = 3) -> sparse.csr_matrix:
    """Sparse k-mer count matrix ``[N, 20^k]`` (float64)."""
    ids = [kmer_ids(s, k) for s in seqs]
    rows = np.repeat(np.arange(len(seqs)), [len(i) for i in ids])
    cols = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    data = np.ones(len(cols))
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(seqs), K**k))


def kmer_spectrum(seqs: list[np.ndarray], k: int = 3) -> np.ndarray:
    """Pooled k-mer frequencies ``[20^k]``."""
    counts = np.asarray(kmer_counts(seqs, k).sum(0)).ravel()
    return counts / max(counts.sum(), 1.0)


@dataclass(frozen=True)
class UnigramBaseline:
    """``log_p [F + 1, 20]``: row f is family f's composition, row F the global one (pseudocount 1)."""

    log_p: np.ndarray

    @classmethod
    def fit(cls, seqs: list[np.ndarray], labels: np.ndarray, num_families: int) -> UnigramBaseline:
        """Counts per family (labels -1 count only globally) + 1 pseudocount per letter."""
        counts = np.ones((num_families + 1, K))
        for seq, label in zip(seqs, labels, strict=True):
            c = np.bincount(seq, minlength=K)[:K]
            counts[num_families] += c
            if label >= 0:
                counts[label] += c
        return cls(np.log(counts / counts.sum(-1, keepdims=True)))

    def row(self, label: int) -> np.ndarray:
        """Log-probabilities ``[20]`` of family ``label`` (the global row for -1)."""
        return self.log_p[label if label >= 0 else len(self.log_p) - 1]

    def nll(self, seqs: list[np.ndarray], labels: np.ndarray | None) -> float:
        """Total ``-sum log p(x_l)`` over all residues: per family (global for -1), or global if None."""
        total = 0.0
        for i, seq in enumerate(seqs):
            label = -1 if labels is None else int(labels[i])
            total -= float(self.row(label)[seq].sum())
        return total


@dataclass(frozen=True)
class KmerNaiveBayes:
    """Multinomial naive Bayes over k-mer counts: ``argmax_f log pi_f + sum_m n_m log theta_{f,m}``."""

    log_prior: np.ndarray
    log_theta: np.ndarray
    k: int

    @classmethod
    def fit(
        cls,
        seqs: list[np.ndarray],
        labels: np.ndarray,
        num_families: int,
        k: int = 3,
        alpha: float = 0.1,
    ) -> KmerNaiveBayes:
        """Fit on labelled sequences (labels -1 ignored) with additive smoothing ``alpha``."""
        labels = np.asarray(labels)
        keep = np.flatnonzero(labels >= 0)
        counts = kmer_counts([seqs[i] for i in keep], k)
        onehot = sparse.csr_matrix(
            (np.ones(len(keep)), (labels[keep], np.arange(len(keep)))),
            shape=(num_families, len(keep)),
        )
        per_family = np.asarray((onehot @ counts).todense()) + alpha
        prior = np.bincount(labels[keep], minlength=num_families) + 1.0
        return cls(
            np.log(prior / prior.sum()),
            np.log(per_family / per_family.sum(-1, keepdims=True)),
            k,
        )

    def predict(self, seqs: list[np.ndarray]) -> np.ndarray:
        """Most probable family ``[N]`` int."""
        scores = kmer_counts(seqs, self.k) @ self.log_theta.T + self.log_prior
        return np.asarray(scores).argmax(-1)


def _aligner():
    import biotite.sequence as bseq
    import biotite.sequence.align as balign

    return bseq, balign, balign.SubstitutionMatrix.std_protein_matrix()


def alignment_identity(a: np.ndarray, b: np.ndarray) -> float:
    """Identical aligned residues / len(a) after a global alignment with free end gaps."""
    bseq, balign, matrix = _aligner()
    sa = bseq.ProteinSequence(vocab.decode(a))
    sb = bseq.ProteinSequence(vocab.decode(b))
    alignment = balign.align_optimal(
        sa, sb, matrix, gap_penalty=(-10, -1), terminal_penalty=False, max_number=1
    )[0]
    trace = alignment.trace
    both = np.all(trace >= 0, axis=1)
    matches = np.sum(sa.code[trace[both, 0]] == sb.code[trace[both, 1]])
    return float(matches / max(len(a), 1))


def nearest_identity(
    samples: list[np.ndarray],
    reference: list[np.ndarray],
    reference_counts: sparse.csr_matrix | None = None,
    top_k: int = 10,
    k: int = 3,
    chunk: int = 64,
) -> np.ndarray:
    """Per sample, the highest :func:`alignment_identity` to the ``top_k`` reference sequences sharing
    the most k-mers (a prefilter; an exhaustive search would align against every reference) ``[N]``."""
    ref = reference_counts if reference_counts is not None else kmer_counts(reference, k)
    ref_t = (ref > 0).astype(np.float64).T.tocsc()
    out = np.zeros(len(samples))
    for start in range(0, len(samples), chunk):
        block = samples[start : start + chunk]
        shared = np.asarray(((kmer_counts(block, k) > 0).astype(np.float64) @ ref_t).todense())
        top = np.argsort(-shared, axis=1)[:, :top_k]
        for i, seq in enumerate(block):
            out[start + i] = max(alignment_identity(seq, reference[j]) for j in top[i])
    return out


def mean_pairwise_identity(seqs: list[np.ndarray], max_seqs: int = 100) -> float:
    """Mean :func:`alignment_identity` over ordered pairs of the first ``max_seqs`` sequences."""
    seqs = seqs[:max_seqs]
    values = [
        alignment_identity(a, b) for i, a in enumerate(seqs) for j, b in enumerate(seqs) if i != j
    ]
    return float(np.mean(values)) if values else float("nan")
