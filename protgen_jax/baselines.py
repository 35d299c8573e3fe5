"""Baselines computed by the same code as the models they judge.

``SiteIndependentModel``: independent categorical distributions per alignment column, fitted from
(weighted) counts with a pseudocount. It is the "site-independent model" of the DMS literature
(Hopf et al. 2017; Riesselman et al. 2018): it scores a mutant by ``sum_l log f_l(x_l)`` differences and
samples each column independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
