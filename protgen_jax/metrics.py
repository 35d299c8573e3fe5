"""Evaluation statistics shared by the model families (host-side NumPy/SciPy).

Sequences are int token arrays ``[N, L]`` (aligned, same width) unless a docstring says otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (NaN pairs dropped)."""
    predicted = np.asarray(predicted, np.float64)
    measured = np.asarray(measured, np.float64)
    ok = np.isfinite(predicted) & np.isfinite(measured)
    if ok.sum() < 3:
        return float("nan")
    return float(stats.spearmanr(predicted[ok], measured[ok]).statistic)


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
