"""The commands of a sequence-diffusion run: ``protgen sample RUN`` and ``protgen evaluate RUN``.

``sample``: unconditional or family-conditional sequences (classifier-free guidance scale ``s``:
``l_null + s (l_family - l_null)``), or inpainting of the ``#`` positions of a FASTA, to FASTA.

``evaluate`` (written to ``--out`` as JSON) runs the reports of :mod:`protgen_jax.sequence_eval` with this
run as the model: held-out per-residue perplexity (OADM from its exact-order likelihood estimate, D3PM and
the relaxation from their variational bounds: upper bounds, so the perplexities are too), with the family
label where known and with the null label, next to the uniform, unigram and per-family unigram models;
sequences longer than ``max_len`` are scored as consecutive chunks, at most ``eval_sequences`` of them.
With ``--num`` > 0 also: unconditional sample quality, family fidelity of conditional samples at each
``eval_guidance`` scale, and inpainting recovery of 15% / 30% hidden residues.

Every random draw comes from the command's key, split by name (``protgen_jax.keys``).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np

from protgen_jax import keys
from protgen_jax.alphabet import decode
from protgen_jax.atomic import save_json_atomic
from protgen_jax.baselines import KmerNaiveBayes, UnigramBaseline
from protgen_jax.data import resolve
from protgen_jax.data.fasta import write_fasta
from protgen_jax.data.sequences import read_inpaint_fasta, read_sequences
from protgen_jax.errors import DataError
from protgen_jax.metrics import kmer_counts, read_composition_csv
from protgen_jax.recipes.base import LoadedRun
from protgen_jax.recipes.options import Option
from protgen_jax.recipes.seqdiff.model import generate_tokens, sequence_nll
from protgen_jax.recipes.seqdiff.recipe import SeqDiffRecipe
from protgen_jax.sequence_eval import (
    chunk_all,
    conditional_report,
    inpainting_report,
    perplexity_report,
    sample_quality,
)

PERPLEXITY_BOUND = {
    "oadm": "exact-order likelihood, 1 order per sequence",
    "d3pm": "variational bound (T terms)",
    "relax": "embedding-diffusion bound",
}


# ------------------------------------------------------------------------------------ sample


COMMANDS = {
    "sample": (
        Option("num", int, 100, "sequences to generate", low=1),
        Option("length", int, None, "length of every sequence (default: training lengths)", low=1),
        Option("family", str, None, "family label to condition on"),
        Option("guidance", float, 1.0, "classifier-free scale (needs --family)", low=0),
        Option("inpaint", str, None, "FASTA whose '#' positions are filled"),
        Option("temperature", float, 1.0, "logit temperature (0 = greedy)", low=0),
    ),
    "evaluate": (
        Option("num", int, 100, "unconditional samples (0 = perplexities only)", low=0),
        Option("data", str, None, "FASTA to score (default: the run's validation split)"),
    ),
}


def _family_label(run: LoadedRun, family: str | None) -> int:
    names = run.data.family_names
    if not family:
        return -1
    if not names:
        raise DataError(f"--family {family!r}: this run was trained without family labels")
    if family not in names:
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise DataError(f"family {family!r} is not one of the run's {len(names)} families: {shown}")
    return names.index(family)


def _sample_lengths(run: LoadedRun, label: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths drawn from the training lengths (of family ``label`` if >= 0), capped at max_len."""
    train = run.data.train
    pool = train.lengths if label < 0 else train.lengths[train.labels == label]
    return np.minimum(rng.choice(pool, size=num), run.config.max_len)


def sample(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen sample``: unconditional / family-conditional sequences, or inpainting, to FASTA.

    Options (``SeqDiffRecipe.commands["sample"]``): ``out`` (FASTA path), ``num``, ``length`` (None =
    drawn from the training lengths), ``family`` (label to condition on), ``guidance`` (classifier-free
    scale; other than 1 needs ``family``; 0 = the null label), ``inpaint`` (FASTA whose ``#`` positions
    are filled; then only ``temperature`` and ``guidance`` apply), ``temperature`` (0 = greedy).
    Keys: ``named(key, "lengths")`` for drawn lengths, ``named(key, "generate")`` for the sampler.
    """
    out, guidance, temperature = Path(opts.out), float(opts.guidance), float(opts.temperature)
    config = run.config
    started = time.perf_counter()
    gen_key = keys.named(key, "generate")
    if opts.inpaint:
        records = read_inpaint_fasta(opts.inpaint, run.data.family_names)
        too_long = [r.id for r in records if len(r.tokens) > config.max_len]
        if too_long:
            raise DataError(
                f"{opts.inpaint}: record {too_long[0]!r} is longer than the model's "
                f"max_len {config.max_len}"
            )
        filled = generate_tokens(
            run.model, run.params, gen_key, [len(r.tokens) for r in records],
            [r.label for r in records], guidance, temperature, config,
            fixed=[(r.tokens, ~r.fill) for r in records],
        )  # fmt: skip
        fasta = [
            (f"{r.id} filled={int(r.fill.sum())}", decode(s))
            for r, s in zip(records, filled, strict=True)
        ]
        write_fasta(out, fasta)
        return {
            "out": str(out),
            "num": len(fasta),
            "mode": "inpaint",
            "seconds": time.perf_counter() - started,
        }
    num, family = int(opts.num), opts.family
    label = _family_label(run, family)
    if guidance != 1.0 and label < 0:
        raise DataError(
            "--guidance needs --family (classifier-free guidance blends a family label)"
        )
    if opts.length is not None and not 1 <= int(opts.length) <= config.max_len:
        raise DataError(
            f"--length must lie in 1..{config.max_len} (the model's max_len), got {opts.length}"
        )
    if opts.length is not None:
        lengths = np.full(num, int(opts.length))
    else:
        lengths = _sample_lengths(run, label, num, keys.numpy_rng(keys.named(key, "lengths")))
    seqs = generate_tokens(
        run.model, run.params, gen_key, lengths, [label] * num, guidance, temperature, config
    )
    prefix = f"{family}|" if family else ""
    note = f" guidance={guidance:g}" if family else ""
    fasta = [
        (f"{prefix}sample_{i} method={config.method} length={len(s)}{note}", decode(s))
        for i, s in enumerate(seqs)
    ]
    write_fasta(out, fasta)
    return {
        "out": str(out), "num": num, "mode": "conditional" if family else "unconditional",
        "family": family, "guidance": guidance, "temperature": temperature,
        "seconds": time.perf_counter() - started,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- evaluate


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Run every evaluation of the module docstring and write ``opts.out`` (JSON).

    Options: ``data`` (FASTA to score; default the run's validation split), ``out``, ``num``
    (unconditional samples, >= 2; 0 = perplexities only, no sampling). Keys: ``named(key, name)``
    with name ``subset``, ``perplexity``, ``natural``, ``lengths``, ``unconditional``,
    ``conditional``, ``inpainting``.
    """
    started = time.perf_counter()
    cfg = run.config
    num = int(opts.num)
    if num == 1:
        raise DataError(
            f"--num must be 0 (perplexity only) or >= 2 (diversity needs pairs), got {num}"
        )
    names = run.data.family_names
    if opts.data:
        source = str(opts.data)
        scored = read_sequences(opts.data, family_names=names)
    else:
        source = "validation split"
        scored = run.data.validation
    order = keys.numpy_rng(keys.named(key, "subset")).permutation(len(scored))
    picked = order[: cfg.eval_sequences or len(scored)]
    seqs = [scored.sequence(i) for i in picked]
    labels = scored.labels[picked]
    result: dict[str, Any] = {
        "method": cfg.method,
        "transition": cfg.transition if cfg.method == "d3pm" else None,
        "data": source,
        "num_sequences_in_file": len(scored),
        "num_sequences_evaluated": len(seqs),
        "num_skipped_ambiguous": scored.num_skipped,
        "perplexity_bound": PERPLEXITY_BOUND[cfg.method],
    }
    pieces, piece_labels = chunk_all(seqs, labels, cfg.max_len)
    result.update(
        perplexity_report(
            lambda s, lab, k: sequence_nll(run.model, run.params, k, s, lab, cfg), pieces, piece_labels,
            keys.named(key, "perplexity"), _unigram(run),
        )
    )  # fmt: skip
    if num:
        result.update(_sampling_reports(run, seqs, labels, num, key))
    result["seconds"] = time.perf_counter() - started
    save_json_atomic(Path(opts.out), result)
    return result


def _unigram(run: LoadedRun) -> UnigramBaseline:
    train = run.data.train
    return UnigramBaseline.fit(
        [train.sequence(i) for i in range(len(train))], train.labels, len(train.family_names)
    )


def _sampling_reports(run: LoadedRun, seqs, labels, num: int, key: jax.Array) -> dict[str, Any]:
    """Unconditional sample quality, conditional family fidelity and inpainting recovery."""
    cfg, train, val = run.config, run.data.train, run.data.validation

    def generate(gen_key, lengths, labels, guidance, temperature, fixed):
        return generate_tokens(
            run.model, run.params, gen_key, lengths, labels, guidance, temperature, cfg, fixed
        )

    train_seqs = [train.sequence(i) for i in range(len(train))]
    natural_idx = keys.numpy_rng(keys.named(key, "natural")).permutation(len(val))[:num]
    natural = [val.sequence(i) for i in natural_idx]
    lengths = np.minimum(
        keys.numpy_rng(keys.named(key, "lengths")).choice(train.lengths, size=num), cfg.max_len
    )
    samples = generate(keys.named(key, "unconditional"), lengths, np.full(num, -1), 1.0, 1.0, None)
    uniref = read_composition_csv(resolve("sequences", "uniref50_aa_composition.csv"))
    classifier = KmerNaiveBayes.fit(train_seqs, train.labels, len(train.family_names))
    pieces, piece_labels = chunk_all(
        seqs[: cfg.inpaint_sequences], labels[: cfg.inpaint_sequences], cfg.max_len
    )
    return {
        "unconditional": sample_quality(
            samples, natural, train_seqs, kmer_counts(train_seqs), uniref
        ),
        "conditional": None if not train.family_names else conditional_report(
            generate, train, classifier, natural, val.labels[natural_idx],
            keys.named(key, "conditional"), num_families=cfg.cond_families,
            samples_per_family=cfg.cond_samples, scales=cfg.eval_guidance, max_len=cfg.max_len,
        ),
        "inpainting": inpainting_report(
            generate, pieces, piece_labels, keys.named(key, "inpainting"), _unigram(run)
        ),
    }  # fmt: skip


class SeqDiff(SeqDiffRecipe):
    """Sequence diffusion: training hooks (:class:`SeqDiffRecipe`) and the commands of this module."""

    commands = COMMANDS
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)


RECIPE = SeqDiff()
