"""`InverseFoldingModel`: a ProteinMPNN-style message-passing network (Dauparas et al. 2022) that reads a
backbone and gives, for every residue, a distribution over the 20 amino acids.

Encoder (``num_encoder_layers``), on the k-nearest-neighbour graph of `structure.graph`:

    e_ij  = LayerNorm(Dense_H([RBF(d_ab(i, j)) for atom pairs a, b] ++ Embed(clip(p_j - p_i))))  [B, L, k, H]
    h_i   = 0                                                                                [B, L, H]
    layer: m_ij = MLP_3([h_i, e_ij, h_j]);  h_i <- LN(h_i + sum_j m_ij / k);  h_i <- LN(h_i + FFN(h_i))
           e_ij <- LN(e_ij + MLP_3([h_i, e_ij, h_j]))

Decoder (``num_decoder_layers``), order-agnostic autoregressive as ProteinMPNN: every chain is decoded in
a random order; r_i is residue i's rank in it. Residue i reads its neighbour j's amino acid only if
r_j < r_i ("past"):

    past j:    u_ij = [e_ij, Embed(s_j), g^l_j]        future j (and i itself): u_ij = [e_ij, 0, h^enc_j]
    g^0 = h^enc;  g^{l+1}_i = layer(g^l_i, u_ij)  (the message layer above, without the edge update)
    p(s_i | s_{r < r_i}, X) = softmax(Dense_20(g^L_i))

so one parallel pass gives every residue's conditional for the sampled order (teacher forcing), and the
cache g^l of the residues already decoded never changes afterwards: sampling decodes one residue per step
with :meth:`InverseFoldingModel.decode_position`, which updates only that residue's row of every layer
(k neighbours, not L). Dropout on every residual branch (``dropout``).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax.alphabet import K_AA, VOCAB_SIZE
from protgen_jax.nn.backbone import rbf
from protgen_jax.nn.embeddings import Dtype
from protgen_jax.structure.graph import (
    ATOM_SETS,
    RBF_RANGE,
    edge_distances,
    gather_neighbours,
    knn_graph,
    relative_offsets,
    residue_atoms,
)

__all__ = ["Encoding", "InverseFoldingModel"]


class Encoding(NamedTuple):
    """The encoder's output: ``nodes`` [B, L, H], ``edges`` [B, L, k, H], ``neighbours`` [B, L, k]
    int32, ``edge_mask`` [B, L, k] bool."""

    nodes: jax.Array
    edges: jax.Array
    neighbours: jax.Array
    edge_mask: jax.Array


def _mlp3(dim: int, dtype: Dtype, name: str) -> nn.Sequential:
    return nn.Sequential(
        [
            nn.Dense(dim, dtype=dtype),
            nn.gelu,
            nn.Dense(dim, dtype=dtype),
            nn.gelu,
            nn.Dense(dim, dtype=dtype),
        ],
        name=name,
    )


class MessageLayer(nn.Module):
    """h_i <- LN(h_i + sum_j mask_ij MLP_3([h_i, u_ij]) / scale); h_i <- LN(h_i + FFN(h_i)); zero at padding.

    Shapes: ``h`` [..., H], ``inputs`` [..., k, C], ``edge_mask`` [..., k], ``mask`` [...] -> [..., H].
    """

    dim: int
    scale: float
    dropout: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, inputs, edge_mask, mask, deterministic: bool = True):
        own = jnp.broadcast_to(h[..., None, :], (*inputs.shape[:-1], h.shape[-1]))
        message = _mlp3(self.dim, self.dtype, "message")(jnp.concatenate([own, inputs], axis=-1))
        update = jnp.sum(message * edge_mask[..., None], axis=-2) / self.scale
        drop = nn.Dropout(self.dropout, deterministic=deterministic)
        h = nn.LayerNorm(dtype=self.dtype)(h + drop(update))
        ffn = nn.Dense(self.dim, dtype=self.dtype)(
            nn.gelu(nn.Dense(4 * self.dim, dtype=self.dtype)(h))
        )
        h = nn.LayerNorm(dtype=self.dtype)(h + drop(ffn))
        return h * mask[..., None]


class EdgeLayer(nn.Module):
    """e_ij <- LN(e_ij + MLP_3([h_i, e_ij, h_j])): ``h`` [B, L, H], ``edges`` [B, L, k, H] -> [B, L, k, H]."""

    dim: int
    dropout: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h, edges, neighbours, deterministic: bool = True):
        own = jnp.broadcast_to(h[..., None, :], edges.shape)
        other = gather_neighbours(h, neighbours)
        update = _mlp3(self.dim, self.dtype, "message")(
            jnp.concatenate([own, edges, other], axis=-1)
        )
        drop = nn.Dropout(self.dropout, deterministic=deterministic)
        return nn.LayerNorm(dtype=self.dtype)(edges + drop(update))


class InverseFoldingModel(nn.Module):
    """ProteinMPNN-style inverse folding (module docstring).

    Inputs: ``coords`` [B, L, 3, 3] N, CA, C in Å (``atom_set="full"``) or [B, L, 3] CA in Å
    (``"ca"``); ``mask`` [B, L] bool; ``positions`` [B, L] int32 chain positions (gaps at breaks);
    ``tokens`` [B, L] int32 amino acids (0..19; ``alphabet.MASK`` where unknown); ``rank`` [B, L] the
    decoding order's rank of every residue.
    """

    atom_set: str = "full"
    dim: int = 128
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    num_neighbours: int = 30
    num_rbf: int = 16
    max_offset: int = 32
    dropout: float = 0.1
    dtype: Dtype = jnp.float32

    def setup(self):
        if self.atom_set not in ATOM_SETS:
            raise ValueError(f"atom_set must be one of {tuple(ATOM_SETS)}, got {self.atom_set!r}")
        scale = float(self.num_neighbours)
        self.edge_in = nn.Dense(self.dim, dtype=self.dtype)
        self.edge_norm = nn.LayerNorm(dtype=self.dtype)
        self.offset_embed = nn.Embed(2 * self.max_offset + 1, 16)
        self.encoder = [
            MessageLayer(self.dim, scale, self.dropout, self.dtype)
            for _ in range(self.num_encoder_layers)
        ]
        self.edge_layers = [
            EdgeLayer(self.dim, self.dropout, self.dtype) for _ in range(self.num_encoder_layers)
        ]
        self.decoder = [
            MessageLayer(self.dim, scale, self.dropout, self.dtype)
            for _ in range(self.num_decoder_layers)
        ]
        self.token_embed = nn.Embed(VOCAB_SIZE, self.dim)
        self.readout = nn.Dense(K_AA, dtype=self.dtype)

    def encode(self, coords, mask, positions, deterministic: bool = True) -> Encoding:
        """The encoder: graph, edge features and ``num_encoder_layers`` message/edge updates."""
        atoms = residue_atoms(coords.astype(jnp.float32), mask, self.atom_set)
        ca = atoms[..., 0 if self.atom_set == "ca" else 1, :]
        k = min(self.num_neighbours, mask.shape[-1])
        neighbours, edge_mask = knn_graph(ca, mask, k)
        distances = rbf(edge_distances(atoms, neighbours), self.num_rbf, *RBF_RANGE)
        features = jnp.concatenate(
            [
                distances.reshape(*distances.shape[:-2], -1),
                self.offset_embed(relative_offsets(positions, neighbours, self.max_offset)),
            ],
            axis=-1,
        )
        edges = self.edge_norm(self.edge_in(features))
        h = jnp.zeros((*mask.shape, self.dim), edges.dtype)
        for node_layer, edge_layer in zip(self.encoder, self.edge_layers, strict=True):
            inputs = jnp.concatenate([edges, gather_neighbours(h, neighbours)], axis=-1)
            h = node_layer(h, inputs, edge_mask, mask, deterministic)
            edges = edge_layer(h, edges, neighbours, deterministic)
        return Encoding(h, edges, neighbours, edge_mask)

    def __call__(self, coords, mask, positions, tokens, rank, deterministic: bool = True):
        """Teacher-forced logits [B, L, 20] (float32) of every residue given the residues before it
        in the order ``rank``."""
        enc = self.encode(coords, mask, positions, deterministic)
        past = gather_neighbours(rank, enc.neighbours) < rank[..., None]  # [B, L, k]
        seq = gather_neighbours(self.token_embed(tokens), enc.neighbours)
        future = jnp.concatenate(
            [enc.edges, jnp.zeros_like(seq), gather_neighbours(enc.nodes, enc.neighbours)], axis=-1
        )
        h = enc.nodes
        for layer in self.decoder:
            known = jnp.concatenate([enc.edges, seq, gather_neighbours(h, enc.neighbours)], axis=-1)
            h = layer(
                h, jnp.where(past[..., None], known, future), enc.edge_mask, mask, deterministic
            )
        return self.readout(h).astype(jnp.float32)

    def decode_position(self, enc: Encoding, cache, tokens, decoded, mask, position):
        """One decoding step: residue ``position`` [B] of each chain, given the residues ``decoded``.

        Args:
          enc: the encoding of the chains.
          cache: [num_decoder_layers + 1, B, L, H] decoder states g^l of the residues decoded so far
            (g^0 = the encoder's nodes).
          tokens: [B, L] int32 amino acids (read only where ``decoded``).
          decoded: [B, L] bool.
          mask: [B, L] bool.
          position: [B] int32.

        Returns:
          (logits [B, 20] float32, rows [num_decoder_layers, B, H]: g^1..g^L of ``position``).
        """

        def row(a):  # a[b, position[b]]
            index = position.reshape(-1, *([1] * (a.ndim - 1)))
            return jnp.take_along_axis(a, index, axis=1)[:, 0]

        neighbours = row(enc.neighbours)  # [B, k]
        edges, edge_mask = row(enc.edges), row(enc.edge_mask)

        def at_neighbours(a):  # a [B, L, ...] -> [B, k, ...]
            index = neighbours.reshape(*neighbours.shape, *([1] * (a.ndim - 2)))
            return jnp.take_along_axis(a, index, axis=1)

        past = at_neighbours(decoded)
        seq = self.token_embed(at_neighbours(tokens))
        future = jnp.concatenate([edges, jnp.zeros_like(seq), at_neighbours(cache[0])], axis=-1)
        own_mask = row(mask)
        h = row(cache[0])
        rows = []
        for level, layer in enumerate(self.decoder):
            known = jnp.concatenate([edges, seq, at_neighbours(cache[level])], axis=-1)
            h = layer(h, jnp.where(past[..., None], known, future), edge_mask, own_mask)
            rows.append(h)
        return self.readout(h).astype(jnp.float32), jnp.stack(rows)
