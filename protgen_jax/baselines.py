"""Baselines computed by the same code as the models they judge.

``UnigramBaseline``: the uniform (20), global-unigram and per-family-unigram models of unaligned
sequences, fitted on a training split with a pseudocount; they score held-out residues by the same
per-residue NLL sum as the diffusion models' bounds, so the perplexities compare directly.
``KmerNaiveBayes``: a multinomial naive Bayes family classifier on overlapping k-mer counts.

``SiteIndependentModel``: independent categorical distributions per alignment column, fitted from
(weighted) counts with a pseudocount. It is the "site-independent model" of the DMS literature
(Hopf et al. 2017; Riesselman et al. 2018): it scores a mutant by ``sum_l log f_l(x_l)`` differences and
samples each column independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from protgen_jax.alphabet import K_AA
from protgen_jax.metrics import kmer_counts


@dataclass(frozen=True)
class SiteIndependentModel:
    """Per-column log-probabilities ``log_f [L, K]``; with ``gap_token`` set, gaps are not modelled
    (``f_l(gap) = 0``, never sampled, and gap positions are skipped by ``log_prob``), matching a VAE
    trained with ``model_gaps=False``."""

    log_f: np.ndarray
    gap_token: int | None = None

    @classmethod
    def fit(
        cls,
        tokens: np.ndarray,
        weights: np.ndarray | None = None,
        num_tokens: int = 21,
        pseudocount: float = 0.5,
        gap_token: int | None = None,
    ) -> SiteIndependentModel:
        """Fit from ``tokens [N, L]`` with optional sequence weights; ``pseudocount`` is added per letter,
        in units of effective sequences."""
        tokens = np.asarray(tokens)
        w = np.ones(len(tokens)) if weights is None else np.asarray(weights, np.float64)
        counts = np.einsum("n,nlk->lk", w, np.eye(num_tokens)[tokens]) + pseudocount
        if gap_token is not None:
            counts[:, gap_token] = 0.0
        with np.errstate(divide="ignore"):
            return cls(np.log(counts / counts.sum(-1, keepdims=True)), gap_token)

    def log_prob(self, tokens: np.ndarray) -> np.ndarray:
        """``log p(x) = sum_l log f_l(x_l)`` over the modelled positions of ``tokens [N, L]`` -> ``[N]``."""
        tokens = np.asarray(tokens)
        picked = np.take_along_axis(self.log_f[None], tokens[..., None], -1)[..., 0]
        if self.gap_token is not None:
            picked = np.where(tokens == self.gap_token, 0.0, picked)
        return picked.sum(-1)

    def sample(self, rng: np.random.Generator, num: int) -> np.ndarray:
        """``[num, L]`` int32 samples, each column drawn independently."""
        p = np.exp(self.log_f)
        cdf = np.cumsum(p, -1)
        u = rng.random((num, p.shape[0], 1))
        return np.minimum((u > cdf[None]).sum(-1), p.shape[1] - 1).astype(np.int32)


@dataclass(frozen=True)
class UnigramBaseline:
    """``log_p [F + 1, 20]``: row f is family f's composition, row F the global one (pseudocount 1)."""

    log_p: np.ndarray

    @classmethod
    def fit(cls, seqs: list[np.ndarray], labels: np.ndarray, num_families: int) -> UnigramBaseline:
        """Counts per family (labels -1 count only globally) + 1 pseudocount per letter."""
        counts = np.ones((num_families + 1, K_AA))
        for seq, label in zip(seqs, labels, strict=True):
            c = np.bincount(seq, minlength=K_AA)[:K_AA]
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
