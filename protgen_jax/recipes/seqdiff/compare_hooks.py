"""The ``protgen compare`` hooks of a sequence-diffusion run (see ``Recipe.generate_sequences``).

- ``generate_sequences``: :func:`~protgen_jax.recipes.seqdiff.model.generate_tokens` at the requested
  lengths (capped at ``max_len``), family label or the null label, with the options ``guidance``
  (classifier-free scale ``s``: ``l_null + s (l_family - l_null)``; only with a family, unconditional
  samples use the null label alone) and ``temperature`` (``tau``: logits / tau; 0 = greedy).
- ``sequence_nll``: :func:`~protgen_jax.recipes.seqdiff.model.sequence_nll` (the bound ``evaluate``
  reports, :data:`PERPLEXITY_BOUND`) summed over all residues / residues; sequences longer than
  ``max_len`` are scored as consecutive near-equal chunks (``sequence_eval.chunk_all``), each with the
  family label where the run knows it. Its key is ``named(root_key(run seed), "compare", "nll")``.
- ``latent_interpolation``: None (no latent space).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from protgen_jax import keys
from protgen_jax.alphabet import K_AA, decode, encode
from protgen_jax.errors import DataError
from protgen_jax.recipes.base import LoadedRun
from protgen_jax.recipes.options import Option
from protgen_jax.recipes.seqdiff.model import generate_tokens, sequence_nll
from protgen_jax.sequence_eval import chunk_all

PERPLEXITY_BOUND = {
    "oadm": "exact-order likelihood, 1 order per sequence",
    "d3pm": "variational bound (T terms)",
    "relax": "embedding-diffusion bound",
}
"""What the held-out likelihood of each method is (``evaluate`` reports it as ``perplexity_bound``)."""

GUIDANCE = Option("guidance", float, 1.0, "classifier-free scale (needs --family)", low=0)
TEMPERATURE = Option("temperature", float, 1.0, "logit temperature (0 = greedy)", low=0)
SAMPLE_OPTIONS = (GUIDANCE, TEMPERATURE)
"""The options ``RUN@key=value`` a seqdiff run takes in ``protgen compare`` (``sample`` takes them too)."""


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` typed and checked against :data:`SAMPLE_OPTIONS`, defaults filled in (DataError
    naming an unknown key and the allowed ones, or a bad value)."""
    declared = {o.name: o for o in SAMPLE_OPTIONS}
    given = dict(options or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise DataError(
            f"option {unknown[0]!r} does not apply to a seqdiff run (it takes: {', '.join(declared)})"
        )
    checked = {}
    for name, option in declared.items():
        try:
            value = option.check(given.get(name))
        except DataError as err:
            raise DataError(f"option {name}: {err}") from None
        checked[name] = option.default if value is None else value
    return checked


def generate_sequences(
    self, run: LoadedRun, key: jax.Array, num: int, *, lengths: np.ndarray,
    family: str | None = None, options: dict[str, Any] | None = None, progress: bool = False,
) -> list[str]:  # fmt: skip
    """``num`` sequences of ``min(lengths, max_len)`` residues (see the module docstring)."""
    opts = check_options(options)
    label = run.data.label_of(family)
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) != num:
        raise DataError(f"generate_sequences: {len(lengths)} lengths for {num} sequences")
    if num == 0:
        return []
    if np.any(lengths < 1):
        raise DataError("generate_sequences: every length must be >= 1")
    guidance = opts["guidance"] if label >= 0 else 1.0  # the null label alone: one network pass
    tokens = generate_tokens(
        run.model, run.params, key, np.minimum(lengths, run.config.max_len), np.full(num, label),
        guidance, opts["temperature"], run.config, progress=progress,
    )  # fmt: skip
    return [decode(t) for t in tokens]


def sequence_nll_hook(
    self, run: LoadedRun, sequences: list[str], families: list[str | None], progress: bool = False
) -> tuple[float, str]:
    """Mean NLL bound per residue (nats) over all residues of ``sequences`` and what it is."""
    cfg, names = run.config, run.data.family_names
    if len(families) != len(sequences) or not sequences:
        raise DataError(f"sequence_nll: {len(sequences)} sequences and {len(families)} families")
    seqs = [encode(s) for s in sequences]
    if any(np.any(s >= K_AA) for s in seqs):
        raise DataError("sequence_nll: sequences must hold only the 20 standard amino acids")
    labels = np.array([names.index(f) if f in names else -1 for f in families], np.int32)
    pieces, piece_labels = chunk_all(seqs, labels, cfg.max_len)
    key = keys.named(keys.root_key(cfg.seed), "compare", "nll")
    nll = sequence_nll(run.model, run.params, key, pieces, piece_labels, cfg, progress=progress)
    residues = sum(len(s) for s in seqs)
    what = (
        f"{PERPLEXITY_BOUND[cfg.method]} (a Monte-Carlo estimate of an upper bound on -log p); sequences longer than max_len "
        f"{cfg.max_len} scored as consecutive chunks; family label where the run knows it "
        f"({int(np.sum(labels >= 0))} of {len(seqs)}), else the null label"
    )
    return float(np.sum(nll) / residues), what


def latent_interpolation(
    self, run: LoadedRun, key: jax.Array, family_a: str, family_b: str, steps: int, num: int
) -> None:
    """None: a sequence-diffusion model has no latent space."""
    return None
