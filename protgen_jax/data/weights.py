"""Sequence reweighting for alignments (DeepSequence / EVE convention), computed blockwise on device.

Sequence i gets weight w_i = 1 / |{j : identity(i, j) > 1 - theta}|, the inverse size of its neighbourhood,
so that a cluster of near-identical sequences counts about once. With `exclude_gaps=True` (DeepSequence's
"protein" alphabet, the default) each sequence is one-hot encoded over the 20 amino acids, gaps (and
non-standard letters, token 20) giving all-zero rows, and

    identity(i, j) = <x_i, x_j> / <x_i, x_i>
                   = #{l : a_il = a_jl != gap} / #{l : a_il != gap},

normalised by the non-gap length of sequence i (so the relation is not symmetric), compared with a strict
">" exactly as DeepSequence's `helper.py` (`T.dot(X_flat, x) / T.dot(x, x) > 1 - cutoff`) and EVE's
`compute_weight` do. A sequence with no residue at all gets weight 0 (EVE; DeepSequence would divide by
zero). With `exclude_gaps=False` the gap is a 21st one-hot channel (DeepSequence's "protein_withgap"): gap-gap
agreements count as matches and the denominator is L.

The match counts are integers, and so the test is done in integers: identity > 1 - theta
<=> matches_ij >= floor((1 - theta) * n_i) + 1, with (1 - theta) * n_i rounded to 9 decimals first so that
exact ties (e.g. 4 of 5 at theta = 0.2) are not identities. The counts come from one-hot matrix products in
float32, exact for any L * K < 2**24.

Memory: tokens are split into row blocks of B <= `block_size` sequences; a jitted kernel takes one row block
and scans over all column blocks, so the device holds the [N, L] int8 tokens plus O(B * L * K + B * B)
floats, whatever N is. The host loops over row blocks.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from protgen_jax.alphabet import GAP, K_ALIGNED
from protgen_jax.errors import DataError

__all__ = ["effective_sample_size", "sequence_weights"]

_PAD_TOKEN = K_ALIGNED  # one-hot of an out-of-range index is all zeros: padding rows match nothing


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _pair_counts(
    row_tokens: jax.Array,
    row_min_matches: jax.Array,
    col_tokens: jax.Array,
    col_min_matches: jax.Array,
    num_classes: int,
) -> tuple[jax.Array, jax.Array]:
    """Neighbour counts contributed by one (row block, column block) pair, both directions.

    With M_ij = <onehot(a_i), onehot(a_j)> (symmetric), row_counts_i = sum_j [M_ij >= row_min_i] and
    col_counts_j = sum_i [M_ij >= col_min_j].

    Args:
      row_tokens: int8 [B, L] tokens of the row block.
      row_min_matches: int32 [B] smallest match count that makes a neighbour of each row.
      col_tokens: int8 [B, L] tokens of the column block.
      col_min_matches: int32 [B] the same for each column sequence.
      num_classes: K, 20 (gaps excluded) or 21.

    Returns:
      (row_counts int32 [B], col_counts int32 [B]).
    """
    block = row_tokens.shape[0]
    chex.assert_equal_shape([row_tokens, col_tokens])
    x_rows = jax.nn.one_hot(row_tokens, num_classes, dtype=jnp.float32).reshape(block, -1)
    x_cols = jax.nn.one_hot(col_tokens, num_classes, dtype=jnp.float32).reshape(block, -1)
    matches = x_rows @ x_cols.T
    chex.assert_shape(matches, (block, block))
    row_hits = matches >= row_min_matches.astype(jnp.float32)[:, None]
    col_hits = matches >= col_min_matches.astype(jnp.float32)[None, :]
    return jnp.sum(row_hits, axis=1, dtype=jnp.int32), jnp.sum(col_hits, axis=0, dtype=jnp.int32)


def sequence_weights(
    tokens: np.ndarray,
    theta: float = 0.2,
    block_size: int = 2048,
    exclude_gaps: bool = True,
) -> np.ndarray:
    """Per-sequence weights w_i = 1 / #{j : identity(i, j) > 1 - theta} (module docstring for details).

    Args:
      tokens: integer array [N, L] with values in 0..20 (20 = gap).
      theta: neighbourhood radius; 0.2 means "more than 80% identical" (DeepSequence's default for
        prokaryotic and eukaryotic families; 0.01 for viruses). Must lie in (0, 1).
      block_size: rows per device block (the block actually used is ceil(N / ceil(N / block_size)), to
        keep padding small); memory grows as block_size * L * K + block_size**2.
      exclude_gaps: True: identity over non-gap positions of sequence i (DeepSequence "protein");
        False: gap is a 21st letter and identity is matches / L.

    Returns:
      np.float32 [N] weights in [0, 1]; 0 only for a row with no residue when `exclude_gaps`.

    Raises:
      DataError: theta outside (0, 1), a non-positive block_size, or tokens outside 0..20.
    """
    tokens = np.asarray(tokens)
    chex.assert_rank(tokens, 2)
    if not 0.0 < theta < 1.0:
        raise DataError(f"sequence_weights: theta must lie in (0, 1), got {theta}")
    if block_size < 1:
        raise DataError(f"sequence_weights: block_size must be positive, got {block_size}")
    n, length = tokens.shape
    if n == 0:
        return np.zeros((0,), np.float32)
    if tokens.min() < 0 or tokens.max() > GAP:
        raise DataError(f"sequence_weights: tokens must lie in 0..{GAP}")

    if exclude_gaps:
        num_classes = GAP
        denominators = np.sum(tokens != GAP, axis=1)
    else:
        num_classes = K_ALIGNED
        denominators = np.full(n, length)
    min_matches = np.floor(np.round((1.0 - theta) * denominators, 9)).astype(np.int32) + 1
    # identity(i, i) = 1 > 1 - theta: a sequence with residues is always its own neighbour.
    min_matches = np.where(denominators > 0, np.minimum(min_matches, denominators), min_matches)

    num_blocks = math.ceil(n / block_size)
    block = math.ceil(n / num_blocks)
    padded = np.full((num_blocks * block, length), _PAD_TOKEN, np.int8)
    padded[:n] = tokens
    padded_min = np.zeros(num_blocks * block, np.int32)
    padded_min[:n] = min_matches
    token_blocks = jax.device_put(padded.reshape(num_blocks, block, length))
    min_blocks = jax.device_put(padded_min.reshape(num_blocks, block))

    # matches(i, j) is symmetric: each block pair (r, c >= r) is multiplied once and feeds both rows.
    counts = np.zeros((num_blocks, block), np.int64)
    pairs = [(r, c) for r in range(num_blocks) for c in range(r, num_blocks)]
    for r, c in tqdm(pairs, desc="sequence weights", disable=None, leave=False):
        row_counts, col_counts = _pair_counts(
            token_blocks[r], min_blocks[r], token_blocks[c], min_blocks[c], num_classes
        )
        counts[r] += np.asarray(row_counts)
        if c != r:
            counts[c] += np.asarray(col_counts)
    counts = counts.reshape(-1)
    counts = counts[:n]
    # A row with no residue matches nothing (not even itself) and gets weight 0.
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return weights.astype(np.float32)


def effective_sample_size(weights: np.ndarray) -> float:
    """N_eff = sum_i w_i over weights [N] (summed in float64)."""
    weights = np.asarray(weights)
    chex.assert_rank(weights, 1)
    return float(np.sum(weights, dtype=np.float64))
