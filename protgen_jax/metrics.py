"""Evaluation statistics shared by the model families (host-side NumPy/SciPy): their one home.

Aligned sequences are int token arrays ``[N, L]`` (same width; tokens of ``protgen_jax.alphabet``, 20 = gap):
column frequencies, pair covariances, identity, novelty. Unaligned sequences are lists of int token
arrays of any lengths (amino-acid tokens 0..19): composition, k-mer spectra, identity
after an optimal global alignment (BLOSUM62, gaps -10/-1, free end gaps; biotite) as matches divided
by the *first* sequence's length, and each sample's nearest training sequence among the ``top_k``
sharing most k-mers.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy import sparse, stats

from protgen_jax.alphabet import AMINO_ACIDS, K_AA, decode
from protgen_jax.errors import DataError


def spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (NaN pairs dropped)."""
    predicted = np.asarray(predicted, np.float64)
    measured = np.asarray(measured, np.float64)
    ok = np.isfinite(predicted) & np.isfinite(measured)
    if ok.sum() < 3:
        return float("nan")
    return float(stats.spearmanr(predicted[ok], measured[ok]).statistic)


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores [N]`` for the boolean labels ``positive [N]``.

    ``AUC = P(s_i > s_j) + P(s_i = s_j) / 2`` over positive ``i`` and negative ``j``, computed from
    mid-ranks: ``AUC = (sum_{i pos} rank_i - P (P + 1) / 2) / (P Q)`` for ``P`` positives and ``Q``
    negatives (the Mann-Whitney U over ``P Q``). NaN when a class is empty.
    """
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = stats.rankdata(np.asarray(scores, np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def matthews_correlation(positive: np.ndarray, predicted: np.ndarray) -> float:
    """Matthews correlation of two boolean arrays ``[N]`` (truth, prediction):
    ``(TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))``, 0 when a factor is 0."""
    t, p = np.asarray(positive, bool), np.asarray(predicted, bool)
    tp, tn = float((t & p).sum()), float((~t & ~p).sum())
    fp, fn = float((~t & p).sum()), float((t & ~p).sum())
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def ndcg(measured: np.ndarray, scores: np.ndarray, top_fraction: float = 0.1) -> float:
    """ProteinGym's NDCG of the top ``k = max(1, floor(top_fraction N))`` predictions.

    Gains are the min-max scaled measurements ``g = (y - min y) / (max y - min y)``; with ``r_i`` the
    rank of item ``i`` by descending score (1 = best; ties by order),
    ``DCG = sum_{r_i <= k} g_i / log2(r_i + 1)``, and ``IDCG`` is the same sum with the items ranked
    by ``g``: ``NDCG = DCG / IDCG`` in [0, 1] (NaN when every measurement is equal).
    """
    y, s = np.asarray(measured, np.float64), np.asarray(scores, np.float64)
    spread = y.max() - y.min()
    if not spread:
        return float("nan")
    gains = (y - y.min()) / spread
    k = max(1, math.floor(top_fraction * len(y)))
    discount = 1.0 / np.log2(np.arange(2, k + 2))  # ranks 1..k

    def dcg(order: np.ndarray) -> float:
        return float(gains[order[:k]] @ discount)

    return dcg(np.argsort(-s, kind="stable")) / dcg(np.argsort(-gains, kind="stable"))


def top_recall(measured: np.ndarray, scores: np.ndarray, top_fraction: float = 0.1) -> float:
    """Fraction of the true top ``top_fraction`` found in the predicted top ``top_fraction``
    (ProteinGym): ``|T & P| / |T|`` with ``T = {y >= q_y}``, ``P = {s >= q_s}`` and ``q`` the
    ``1 - top_fraction`` quantile (linear interpolation) of each array."""
    y, s = np.asarray(measured, np.float64), np.asarray(scores, np.float64)
    true_top = y >= np.quantile(y, 1 - top_fraction)
    predicted_top = s >= np.quantile(s, 1 - top_fraction)
    return float((true_top & predicted_top).sum() / true_top.sum())


def fitness_metrics(
    scores: np.ndarray, measured: np.ndarray, threshold: float | None = None
) -> dict[str, float | None]:
    """Spearman, AUC, MCC, NDCG and top-10% recall of predicted ``scores [N]`` against ``measured [N]``
    (pairs with a non-finite value dropped), ProteinGym's conventions: a variant is positive when
    ``measured >= threshold`` (default: the median of ``measured``); AUC ranks ``scores``; MCC compares
    the positives with ``scores >= median(scores)``."""
    s, y = np.asarray(scores, np.float64), np.asarray(measured, np.float64)
    ok = np.isfinite(s) & np.isfinite(y)
    s, y = s[ok], y[ok]
    if len(y) < 2:
        return {"n": int(len(y))}
    cut = float(np.median(y)) if threshold is None else float(threshold)
    positive = y >= cut
    return {
        "n": int(len(y)),
        "spearman": spearman(s, y),
        "auc": roc_auc(positive, s),
        "mcc": matthews_correlation(positive, s >= np.median(s)),
        "ndcg": ndcg(y, s),
        "top10_recall": top_recall(y, s),
        "threshold": cut,
        "n_positive": int(positive.sum()),
    }


def perplexity(total_nll: float, num_tokens: float) -> float:
    """``exp(total negative log-likelihood in nats / number of tokens)``."""
    return float(math.exp(total_nll / max(num_tokens, 1)))


def column_frequencies(
    tokens: np.ndarray, num_tokens: int = 21, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted per-column token frequencies ``f [L, K]`` (rows sum to 1)."""
    tokens = np.asarray(tokens)
    w = np.ones(len(tokens)) if weights is None else np.asarray(weights, np.float64)
    one_hot = np.eye(num_tokens)[tokens]  # [N, L, K]
    f = np.einsum("n,nlk->lk", w, one_hot)
    return f / w.sum()


def pair_covariances(
    tokens: np.ndarray, num_tokens: int = 21, weights: np.ndarray | None = None
) -> np.ndarray:
    """Connected pair correlations ``C_ij(a,b) = f_ij(a,b) - f_i(a) f_j(b)`` for ``i < j``, flattened."""
    tokens = np.asarray(tokens)
    n, length = tokens.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    one_hot = np.eye(num_tokens, dtype=np.float32)[tokens].reshape(n, length * num_tokens)
    f1 = w @ one_hot
    f2 = (one_hot * w[:, None].astype(np.float32)).T @ one_hot
    cov = f2 - np.outer(f1, f1)
    cov = cov.reshape(length, num_tokens, length, num_tokens)
    i, j = np.triu_indices(length, k=1)
    return cov[i, :, j, :].ravel()


def identity_matrix(a: np.ndarray, b: np.ndarray, ignore_gap: int | None = 20) -> np.ndarray:
    """Fraction of identical positions between every row of ``a [N, L]`` and ``b [M, L]`` -> ``[N, M]``.

    With ``ignore_gap``, positions where the ``a`` row has that token are excluded from its denominator.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    k = int(max(a.max(initial=0), b.max(initial=0))) + 1
    oa = np.eye(k, dtype=np.float32)[a]
    ob = np.eye(k, dtype=np.float32)[b]
    if ignore_gap is not None and ignore_gap < k:
        oa[..., ignore_gap] = 0.0
        ob[..., ignore_gap] = 0.0
    matches = oa.reshape(len(a), -1) @ ob.reshape(len(b), -1).T
    if ignore_gap is None:
        return matches / a.shape[1]
    lengths = np.maximum((a != ignore_gap).sum(1), 1)
    return matches / lengths[:, None]


def novelty(samples: np.ndarray, reference: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Identity of each sample to its nearest reference sequence, ``[N]`` (lower = more novel)."""
    out = np.empty(len(samples))
    for start in range(0, len(samples), chunk):
        out[start : start + chunk] = identity_matrix(samples[start : start + chunk], reference).max(
            1
        )
    return out


def mean_pairwise_identity(samples: np.ndarray, max_samples: int = 1000) -> float:
    """Average identity over distinct pairs of samples (diversity = 1 - this)."""
    s = np.asarray(samples)[:max_samples]
    m = identity_matrix(s, s)
    n = len(s)
    return float((m.sum() - np.trace(m)) / max(n * (n - 1), 1))


def sequence_statistics_report(
    samples: np.ndarray,
    reference: np.ndarray,
    training: np.ndarray,
    num_tokens: int = 21,
    reference_weights: np.ndarray | None = None,
) -> dict[str, float]:
    """How sample statistics match a held-out reference: the numbers behind "samples look natural".

    Returns a dict with
      ``column_freq_pearson``: Pearson r of per-column token frequencies (samples vs reference);
      ``pair_cov_pearson``: Pearson r of connected pair correlations ``C_ij``;
      ``novelty_mean``: mean identity of each sample to its nearest *training* sequence;
      ``diversity``: 1 - mean pairwise identity among samples;
      ``reference_diversity``: the same for the reference.
    """
    f_s = column_frequencies(samples, num_tokens)
    f_r = column_frequencies(reference, num_tokens, reference_weights)
    c_s = pair_covariances(samples, num_tokens)
    c_r = pair_covariances(reference, num_tokens, reference_weights)
    return {
        "column_freq_pearson": float(np.corrcoef(f_s.ravel(), f_r.ravel())[0, 1]),
        "pair_cov_pearson": float(np.corrcoef(c_s, c_r)[0, 1]),
        "novelty_mean": float(novelty(samples, training).mean()),
        "diversity": 1.0 - mean_pairwise_identity(samples),
        "reference_diversity": 1.0 - mean_pairwise_identity(reference),
    }


# ----------------------------------------------------------------- unaligned sequences


def composition(seqs: list[np.ndarray]) -> np.ndarray:
    """Amino-acid frequencies ``[20]`` pooled over all residues."""
    counts = np.bincount(np.concatenate(seqs).astype(np.int64), minlength=K_AA)[:K_AA]
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
        freq = np.array([counts[a] for a in AMINO_ACIDS], np.float64)
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
    return windows @ (K_AA ** np.arange(k - 1, -1, -1))


def kmer_counts(seqs: list[np.ndarray], k: int = 3) -> sparse.csr_matrix:
    """Sparse k-mer count matrix ``[N, 20^k]`` (float64)."""
    ids = [kmer_ids(s, k) for s in seqs]
    rows = np.repeat(np.arange(len(seqs)), [len(i) for i in ids])
    cols = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    data = np.ones(len(cols))
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(seqs), K_AA**k))


def kmer_spectrum(seqs: list[np.ndarray], k: int = 3) -> np.ndarray:
    """Pooled k-mer frequencies ``[20^k]``."""
    counts = np.asarray(kmer_counts(seqs, k).sum(0)).ravel()
    return counts / max(counts.sum(), 1.0)


def _aligner():
    import biotite.sequence as bseq
    import biotite.sequence.align as balign

    return bseq, balign, balign.SubstitutionMatrix.std_protein_matrix()


def alignment_identity(a: np.ndarray, b: np.ndarray) -> float:
    """Identical aligned residues / len(a) after a global alignment with free end gaps."""
    bseq, balign, matrix = _aligner()
    sa = bseq.ProteinSequence(decode(a))
    sb = bseq.ProteinSequence(decode(b))
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


def mean_alignment_identity(seqs: list[np.ndarray], max_seqs: int = 100) -> float:
    """Mean :func:`alignment_identity` over ordered pairs of the first ``max_seqs`` sequences."""
    seqs = seqs[:max_seqs]
    values = [
        alignment_identity(a, b) for i, a in enumerate(seqs) for j, b in enumerate(seqs) if i != j
    ]
    return float(np.mean(values)) if values else float("nan")
