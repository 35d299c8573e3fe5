"""How designed sequences fit their backbones: recovery, composition, secondary-structure fit, burial.

- :func:`ss_fit`: the fraction of helix-favouring (``HELIX_FAVOURING``) and strand-favouring
  (``STRAND_FAVOURING``) residues at P-SEA helix, strand and coil positions of the backbone;
- :func:`burial`: the number of other virtual C-beta atoms within ``BURIAL_RADIUS`` of a residue's, and
  :func:`residue_classes` (helix / strand / coil, exposed / intermediate / buried) for recovery by class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protgen_jax import alphabet
from protgen_jax.structure.atoms import virtual_cb

HELIX_FAVOURING = "AELMQKR"
"""Residues with high helix propensity (Chou-Fasman / Pace & Scholtz)."""
STRAND_FAVOURING = "VIYFWT"
"""Residues with high strand propensity (Chou-Fasman / Minor & Kim)."""
BURIAL_RADIUS = 10.0
"""Å: a residue's burial is the number of other virtual C-beta atoms within this distance of its own."""
BURIAL_BINS = (("exposed", 0, 10), ("intermediate", 10, 16), ("buried", 16, 10_000))
"""(name, low, high): burial classes by neighbour count, low <= n < high. The cuts are the 33rd and 75th
percentiles of the counts over the cgdms chains (small domains: median 12 neighbours, 90th percentile 20)."""


def native_recovery(designed: np.ndarray, native: np.ndarray, mask: np.ndarray) -> float | None:
    known = mask & (native < alphabet.K_AA)
    if not known.any():
        return None
    return float(np.mean(designed[known] == native[known]))


def has_sequence(chain_tokens: np.ndarray, mask: np.ndarray) -> bool:
    """A file's residues name a real sequence (not the all-glycine placeholder of a generated backbone)."""
    real = chain_tokens[mask & (chain_tokens < alphabet.K_AA)]
    return real.size > 0 and not np.all(real == alphabet.AMINO_ACIDS.index("G"))


def ss_fit(tokens: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, Any]:
    """How designed residues fit the backbone's secondary structure: the fraction of helix-favouring
    (``HELIX_FAVOURING``) and strand-favouring (``STRAND_FAVOURING``) residues at P-SEA helix ('a'),
    strand ('b') and coil ('c') positions."""
    helix_ids = np.array([alphabet.AMINO_ACIDS.index(a) for a in HELIX_FAVOURING])
    strand_ids = np.array([alphabet.AMINO_ACIDS.index(a) for a in STRAND_FAVOURING])
    seq = np.concatenate(tokens) if tokens else np.zeros(0, np.int32)
    ss = np.concatenate(labels) if labels else np.zeros(0, str)
    out: dict[str, Any] = {}
    for label, name in (("a", "helix"), ("b", "strand"), ("c", "coil")):
        at = seq[ss == label]
        out[name] = {
            "residues": int(at.size),
            "helix_favouring": float(np.isin(at, helix_ids).mean()) if at.size else None,
            "strand_favouring": float(np.isin(at, strand_ids).mean()) if at.size else None,
        }
    return out


def composition(tokens: list[np.ndarray]) -> dict[str, float]:
    seq = np.concatenate(tokens) if tokens else np.zeros(0, np.int32)
    counts = np.bincount(seq[seq < alphabet.K_AA], minlength=alphabet.K_AA)[: alphabet.K_AA]
    freq = counts / max(counts.sum(), 1)
    return {a: round(float(f), 4) for a, f in zip(alphabet.AMINO_ACIDS, freq, strict=True)}


def burial(coords: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[L] number of other virtual C-beta atoms within ``BURIAL_RADIUS`` of each residue's
    (coords [L, 3, 3] N, CA, C; for a C-alpha-only set, CA stands in for C-beta)."""
    full = np.isfinite(coords).all() and not np.allclose(coords[:, 0], coords[:, 1])
    cb = np.asarray(virtual_cb(coords)) if full else coords[:, 1]
    cb = cb[mask]
    d = np.linalg.norm(cb[:, None] - cb[None], axis=-1)
    count = (d < BURIAL_RADIUS).sum(1) - 1
    out = np.zeros(len(mask), np.int64)
    out[mask] = count
    return out


def residue_classes(ss: np.ndarray, buried: np.ndarray) -> dict[str, np.ndarray]:
    classes = {"helix": ss == "a", "strand": ss == "b", "coil": ss == "c"}
    for name, low, high in BURIAL_BINS:
        classes[name] = (buried >= low) & (buried < high)
    return classes
