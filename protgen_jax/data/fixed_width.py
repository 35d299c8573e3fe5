"""Fixed-width encoding of unaligned sequences for MLP sequence VAEs (one row of ``W`` tokens each).

Tokens: 0..19 = the amino acids of ``protgen_jax.alphabet``; ``END = 20`` marks the end of a sequence and
fills the row after it (index 20 is the alphabet's GAP slot: the class space is ``K_ALIGNED = 21``, the
default vocabulary of ``protgen_jax.nn.vae``; unaligned data never holds a gap, so the slot is free).

Encoding rule for a sequence of length ``L`` and width ``W``:

- ``L < W``: ``row = x_1 .. x_L, END, ..., END`` (``W - L`` END tokens);
- ``L = W``: ``row = x_1 .. x_W`` (no END: the row is full);
- ``L > W``: cropped to a window of ``W`` residues, ``x_{s+1} .. x_{s+W}`` (no END); the window start
  ``s`` is uniform in ``0 .. L - W`` in training and ``s = 0`` (the first ``W`` residues) everywhere
  else (evaluation, likelihoods, encoding for latent models).

Likelihood mask (:func:`reconstruction_mask`): positions up to and including the first END count; the
positions after it are left out, so ``log p(row | z)`` over the mask is the log-probability of the
string ``x`` followed by its end (the decoder's positions after the first END do not matter for the
decoded string). A row without END counts all ``W`` positions.

Decoding (:func:`cut_at_end`): a sampled row is cut at its first END; a row whose first token is END
gives an empty sequence (counted by the callers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protgen_jax import alphabet

__all__ = [
    "END",
    "VOCAB",
    "coverage",
    "cut_at_end",
    "encode_fixed",
    "encode_many",
    "reconstruction_mask",
    "tokens_to_strings",
]

END = alphabet.GAP
"""The end / pad token of a fixed-width row (20)."""

VOCAB = alphabet.K_ALIGNED
"""Classes of a fixed-width row: 20 amino acids + END (21)."""


def encode_fixed(sequence: np.ndarray, width: int, start: int = 0) -> np.ndarray:
    """One sequence ``[L]`` (tokens 0..19) -> row ``[W]`` int32 under the module's rule; ``start`` is the
    window start of a longer sequence (clipped to ``0 .. L - W``)."""
    sequence = np.asarray(sequence)
    row = np.full(width, END, np.int32)
    if len(sequence) > width:
        start = int(min(max(start, 0), len(sequence) - width))
        row[:] = sequence[start : start + width]
    else:
        row[: len(sequence)] = sequence
    return row


def encode_many(sequences: list[np.ndarray], width: int) -> np.ndarray:
    """Sequences -> ``[N, W]`` int32 rows, longer ones cropped to their first ``W`` residues."""
    out = np.full((len(sequences), width), END, np.int32)
    for i, seq in enumerate(sequences):
        out[i] = encode_fixed(seq, width)
    return out


def reconstruction_mask(tokens: Any) -> Any:
    """``[..., W]`` rows -> ``[..., W]`` bool: True at positions ``<=`` the first END (all when none).

    Works on NumPy and JAX arrays: ``mask_l = (number of END tokens before l) == 0``.
    """
    is_end = tokens == END
    before = is_end.cumsum(-1) - is_end  # END tokens strictly before position l
    return before == 0


def cut_at_end(tokens: np.ndarray) -> list[np.ndarray]:
    """Rows ``[N, W]`` -> N int32 arrays: each row up to (not including) its first END."""
    tokens = np.asarray(tokens)
    out = []
    for row in tokens:
        ends = np.flatnonzero(row == END)
        out.append(row[: ends[0] if len(ends) else len(row)].astype(np.int32))
    return out


def tokens_to_strings(tokens: np.ndarray) -> list[str]:
    """Rows ``[N, W]`` -> amino-acid strings cut at the first END (empty string for an END-first row)."""
    return [alphabet.decode(seq) if len(seq) else "" for seq in cut_at_end(tokens)]


def coverage(lengths: np.ndarray, width: int) -> dict[str, Any]:
    """How much of the data a width keeps: sequences that fit whole (``L <= W``) and residues kept
    (``sum min(L, W) / sum L``), as fractions."""
    lengths = np.asarray(lengths, np.int64)
    total = max(int(lengths.sum()), 1)
    return {
        "width": int(width),
        "fraction_sequences_whole": float(np.mean(lengths <= width)) if len(lengths) else 0.0,
        "fraction_residues_kept": float(np.minimum(lengths, width).sum() / total),
        "num_cropped": int(np.sum(lengths > width)),
        "max_length": int(lengths.max()) if len(lengths) else 0,
    }
