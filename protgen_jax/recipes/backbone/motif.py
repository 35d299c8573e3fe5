"""Motif scaffolding specs for backbone sampling: parse them, and score how samples keep the motif.

Motif scaffolding (``--motif SPEC``) keeps given residues of a real chain fixed and generates the rest,
by replacement: after every reverse step the motif residues are overwritten with the motif forward-noised
to the new level (``known`` / ``known_mask`` of the samplers). The spec is::

    SPEC    := SEGMENT [";" SEGMENT ...]
    SEGMENT := FILE ":" CHAIN ":" START "-" END ["@" POS]

START..END are author residue numbers (inclusive) of CHAIN in the PDB/mmCIF FILE; POS is the 1-based
index in the generated chain where the segment's first residue goes (default for a single segment:
centred). Several segments keep their relative placement from FILE, so each gap between them in the
generated chain must be long enough to span their distance (checked). The motif is centred on its own
centre of mass; the sampler's denoiser pins the centre of mass of the whole predicted structure to the
origin (``centred_denoise_fn``), so the motif ends up near the centre of the generated protein.
Reported per sample: the motif RMSD after superposition (``kabsch_rmsd``; ~0 by construction, a check)
and the CA-CA distances at the junctions between scaffold and motif (3.8 Å when the scaffold joins well).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protgen_jax.data.structures import load_chain
from protgen_jax.errors import DataError
from protgen_jax.structure.geometry import BOND_LENGTH, BOND_TOLERANCE, kabsch_rmsd

__all__ = ["Motif", "motif_metrics", "parse_motif"]


@dataclass(frozen=True)
class Motif:
    """Fixed residues for scaffolding.

    Attributes:
      coords: [M, 3] CA coordinates in Å, in the frame of the source file.
      indices: [M] 0-based positions in the generated chain.
      segments: (label, first index, number of residues) per segment.
    """

    coords: np.ndarray
    indices: np.ndarray
    segments: tuple[tuple[str, int, int], ...]


def _parse_segment(text: str) -> tuple[Path, str, int, int, int | None]:
    where = f"motif segment {text!r}"
    body, _, pos = text.partition("@")
    parts = body.rsplit(":", 2)
    if len(parts) != 3:
        raise DataError(f"{where}: expected FILE:CHAIN:START-END[@POS]")
    path, chain, span = parts
    match = re.fullmatch(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*", span)
    if match is None or (pos and not re.fullmatch(r"\s*\d+\s*", pos)):
        raise DataError(f"{where}: START, END and POS must be integers")
    start, end = int(match.group(1)), int(match.group(2))
    position = int(pos) if pos else None
    if end < start:
        raise DataError(f"{where}: END {end} is before START {start}")
    return Path(path), chain, start, end, position


def parse_motif(spec: str, length: int) -> Motif:
    """Parse a motif spec (module docstring) against a generated chain of ``length`` residues.

    Raises:
      DataError: malformed spec, unreadable file, missing chain or residues, a segment spanning a chain
        break, positions outside the chain or overlapping, or segments too far apart for their gap.
    """
    segments = [s.strip() for s in spec.split(";") if s.strip()]
    if not segments:
        raise DataError("empty motif spec")
    coords, indices, labels = [], [], []
    for text in segments:
        path, chain_id, start, end, position = _parse_segment(text)
        chain = load_chain(path, chain_id or None, min_length=1, max_length=100_000)
        ids = chain.residue_ids
        first = np.flatnonzero(ids == start)
        last = np.flatnonzero(ids == end)
        if not len(first) or not len(last) or last[0] < first[0]:
            raise DataError(f"{path}: chain {chain.chain_id} has no residues {start}-{end}")
        lo, hi = int(first[0]), int(last[0])
        if np.any((chain.breaks >= lo) & (chain.breaks < hi)):
            raise DataError(
                f"{path}: residues {start}-{end} of chain {chain.chain_id} span a break"
            )
        n = hi - lo + 1
        if position is None:
            if len(segments) > 1:
                raise DataError(
                    f"motif segment {text!r}: give @POS when there are several segments"
                )
            position = (length - n) // 2 + 1
        if position < 1 or position - 1 + n > length:
            raise DataError(
                f"motif segment {text!r}: {n} residues at position {position} do not fit in {length}"
            )
        coords.append(chain.ca[lo : hi + 1])
        indices.append(np.arange(position - 1, position - 1 + n))
        labels.append((f"{path.name}:{chain.chain_id}:{start}-{end}", position - 1, n))
    order = np.argsort([first for _, first, _ in labels])
    labels = [labels[i] for i in order]
    coords = [coords[i] for i in order]
    indices = [indices[i] for i in order]
    for (name_a, first_a, n_a), (name_b, first_b, _), ca_a, ca_b in zip(
        labels[:-1], labels[1:], coords[:-1], coords[1:], strict=True
    ):
        bonds = first_b - (first_a + n_a - 1)
        if bonds < 1:
            raise DataError(f"motif segments {name_a} and {name_b} overlap")
        gap = float(np.linalg.norm(ca_b[0] - ca_a[-1]))
        if gap > (BOND_LENGTH + BOND_TOLERANCE) * bonds:
            raise DataError(
                f"motif segments {name_a} and {name_b} are {gap:.1f} Å apart, more than {bonds} "
                f"bonds can span; move them further apart in the chain"
            )
    return Motif(
        coords=np.concatenate(coords).astype(np.float32),
        indices=np.concatenate(indices),
        segments=tuple(labels),
    )


def motif_metrics(samples: list[np.ndarray], motif: Motif) -> dict[str, Any]:
    """Motif RMSD after superposition and CA-CA distances at the scaffold-motif junctions.

    Junctions are the bonds (first - 1, first) and (last, last + 1) of every segment that has a scaffold
    neighbour there. ``junction_fraction`` counts junctions within 3.8 +- 0.2 Å.
    """
    rmsd, junctions = [], []
    for x in samples:
        rmsd.append(kabsch_rmsd(motif.coords, x[motif.indices]))
        for _, first, n in motif.segments:
            for a, b in ((first - 1, first), (first + n - 1, first + n)):
                if 0 <= a and b < len(x):
                    junctions.append(float(np.linalg.norm(x[b] - x[a])))
    junctions_arr = np.asarray(junctions)
    ok = np.abs(junctions_arr - BOND_LENGTH) <= BOND_TOLERANCE
    return {
        "segments": [{"motif": m, "start": s + 1, "length": n} for m, s, n in motif.segments],
        "motif_rmsd_mean": float(np.mean(rmsd)),
        "motif_rmsd_max": float(np.max(rmsd)),
        "junction_distance_mean": float(junctions_arr.mean()) if junctions else float("nan"),
        "junction_distance_median": float(np.median(junctions_arr)) if junctions else float("nan"),
        "junction_fraction": float(ok.mean()) if junctions else float("nan"),
        "num_junctions": len(junctions),
    }
