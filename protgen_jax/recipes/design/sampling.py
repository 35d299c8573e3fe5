"""Designing sequences for backbones with a trained inverse-folding model, and scoring them.

:func:`design_sequences` decodes one residue per step in a random order (fixed positions first, as
ProteinMPNN does), inside one ``lax.scan``: at step s the residue o_s is drawn from

    p_T(a) ∝ exp((logit_a(o_s | s_{o_<s}, X) + bias[o_s, a]) / T)

(``T = 0``: the argmax), and a fixed position keeps its given amino acid. Only the decoded residue's row of
each decoder layer is computed (:meth:`InverseFoldingModel.decode_position`). :func:`sequence_scores` gives
ProteinMPNN's score of a sequence: the mean of -log p(s_i | s_<i, X) (T = 1, no bias) over the designed
residues, in the order the sequence was decoded.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from protgen_jax import alphabet
from protgen_jax.keys import named as keys_named
from protgen_jax.nn.mpnn import InverseFoldingModel
from protgen_jax.recipes.design.recipe import model_inputs, random_rank, residue_nll

__all__ = ["Designs", "design_sequences", "omit_bias"]

_NEG = -1e9


class Designs(NamedTuple):
    """``tokens`` [B, L] int32 designed amino acids (0..19 at real residues); ``rank`` [B, L] the
    decoding order used; ``nll`` [B, L] -log p(s_i | s_<i, X) at T = 1; ``score`` [B] the mean of ``nll``
    over the designed (real, not fixed) residues."""

    tokens: jax.Array
    rank: jax.Array
    nll: jax.Array
    score: jax.Array


def omit_bias(letters: str, shape: tuple[int, ...]) -> jax.Array:
    """A bias [*shape, 20] that forbids the amino acids in ``letters`` (-1e9) and leaves the rest (0)."""
    row = jnp.array([_NEG if a in letters else 0.0 for a in alphabet.AMINO_ACIDS], jnp.float32)
    return jnp.broadcast_to(row, (*shape, alphabet.K_AA))


def _decode(
    model, atom_set, params, coords, mask, positions, row_keys, temperature, bias, fixed, native
):
    batch, length = mask.shape
    enc = model.apply(params, model_inputs(coords, atom_set), mask, positions, method=model.encode)
    order_keys = jax.vmap(lambda k: keys_named(k, "order"))(row_keys)
    draw_keys = jax.vmap(lambda k: keys_named(k, "draws"))(row_keys)
    rank = jax.vmap(lambda k, m, f: random_rank(k, m[None], f[None])[0])(order_keys, mask, fixed)
    order = jnp.argsort(rank, axis=-1).T  # [L, B]: the residue decoded at each step
    cache = jnp.zeros((model.num_decoder_layers + 1, *enc.nodes.shape), enc.nodes.dtype)
    cache = cache.at[0].set(enc.nodes)
    tokens = jnp.full((batch, length), alphabet.MASK, jnp.int32)
    decoded = jnp.zeros((batch, length), bool)
    rows = jnp.arange(batch)

    def step(carry, inputs):
        tokens, decoded, cache = carry
        position, index = inputs
        logits, hidden = model.apply(
            params, enc, cache, tokens, decoded, mask, position, method=model.decode_position
        )
        logits = logits + bias[rows, position]
        scaled = logits / jnp.maximum(temperature, 1e-6)
        drawn = jax.vmap(lambda k, row: jax.random.categorical(jax.random.fold_in(k, index), row))(
            draw_keys, scaled
        )
        token = jnp.where(temperature > 0, drawn, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
        token = jnp.where(fixed[rows, position], native[rows, position], token)
        tokens = tokens.at[rows, position].set(token)
        decoded = decoded.at[rows, position].set(True)
        cache = cache.at[1:, rows, position].set(hidden)
        return (tokens, decoded, cache), None

    carry = (tokens, decoded, cache)
    (tokens, _, _), _ = jax.lax.scan(step, carry, (order, jnp.arange(length)))
    tokens = jnp.where(mask, tokens, alphabet.PAD)
    return tokens, rank


def design_sequences(
    model: InverseFoldingModel,
    atom_set: str,
    params,
    coords: jax.Array,
    mask: jax.Array,
    positions: jax.Array,
    key: jax.Array,
    *,
    temperature: float = 0.1,
    bias: jax.Array | None = None,
    fixed: jax.Array | None = None,
    native: jax.Array | None = None,
) -> Designs:
    """Design one sequence per row (module docstring).

    Args:
      model, atom_set: the run's network and its atom set.
      params: its parameters.
      coords: [B, L, 3, 3] N, CA, C in Å (for ``atom_set="ca"`` only the CA column is read).
      mask: [B, L] bool; positions: [B, L] int32 chain positions.
      key: randomness of the decoding order and of the draws: one typed key (split into B), or [B]
        keys, one per row, so that a row's design does not depend on the rows batched with it.
      temperature: T >= 0 (0: argmax).
      bias: [B, L, 20] added to the logits (e.g. :func:`omit_bias`); default none.
      fixed: [B, L] bool positions that keep ``native`` (decoded first); default none.
      native: [B, L] int32 amino acids of the fixed positions.

    Returns:
      :class:`Designs`.
    """
    batch, length = mask.shape
    row_keys = jax.random.split(key, batch) if key.shape == () else key
    bias = jnp.zeros((batch, length, alphabet.K_AA)) if bias is None else bias
    fixed = jnp.zeros((batch, length), bool) if fixed is None else fixed & mask
    native = jnp.zeros((batch, length), jnp.int32) if native is None else native
    tokens, rank, nll = _design_jit(
        model, atom_set, params, coords, mask, positions, row_keys,
        jnp.float32(temperature), bias, fixed, native,
    )  # fmt: skip
    designed = (mask & ~fixed).astype(jnp.float32)
    score = jnp.sum(nll * designed, -1) / jnp.maximum(designed.sum(-1), 1.0)
    return Designs(tokens, rank, nll, score)


def _design(
    model, atom_set, params, coords, mask, positions, keys, temperature, bias, fixed, native
):
    tokens, rank = _decode(
        model, atom_set, params, coords, mask, positions, keys, temperature, bias, fixed, native
    )
    logits = model.apply(params, model_inputs(coords, atom_set), mask, positions, tokens, rank)
    return tokens, rank, residue_nll(logits, tokens)


_design_jit = jax.jit(_design, static_argnums=(0, 1))


def sequence_nll(model: InverseFoldingModel, atom_set: str) -> Partial:
    """``nll(params, coords, mask, positions, tokens, rank) -> [B, L]`` (teacher forcing, jitted)."""
    return Partial(jax.jit(_teacher_forced, static_argnums=(0, 1)), model, atom_set)


def _teacher_forced(model, atom_set, params, coords, mask, positions, tokens, rank):
    known = mask & (tokens < alphabet.K_AA)
    logits = model.apply(
        params, model_inputs(coords, atom_set), mask, positions,
        jnp.where(known, tokens, alphabet.MASK), rank,
    )  # fmt: skip
    return residue_nll(logits, tokens)
