"""The commands of a sequence-diffusion run: ``protgen sample RUN`` and ``protgen evaluate RUN``.

``sample``: unconditional or family-conditional sequences (classifier-free guidance scale ``s``:
``l_null + s (l_family - l_null)``), or inpainting of the ``#`` positions of a FASTA, to FASTA.

``evaluate`` (written to ``--out`` as JSON) runs the reports of :mod:`protgen_jax.sequence_eval` with this
run as the model: held-out per-residue perplexity (OADM from its exact-order likelihood estimate, D3PM and
the relaxation from their variational bounds: upper bounds, so the perplexities are too), with the family
label where known and with the null label, next to the uniform, unigram and per-family unigram models;
sequences longer than ``max_len`` are scored as consecutive chunks, of ``--sequences`` sequences drawn at
random (default the run's ``eval_sequences``; 0 = all). ``--temperature`` and ``--background-mix`` w
calibrate the perplexity's predictions: ``(1 - w) softmax(l / tau) + w q`` with q the run's training
composition (``model.background_mixed``). With ``--num`` > 0 also: unconditional sample
quality, family fidelity of conditional samples at each ``eval_guidance`` scale, and inpainting recovery
of 15% / 30% hidden residues. Each stage shows a progress bar (not with ``--quiet``) and the JSON is
rewritten after each one (``complete``: false, ``pending``: the stages left), so an interrupted
evaluation keeps what it finished.

Every random draw comes from the command's key, split by name (``protgen_jax.keys``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from protgen_jax.recipes.seqdiff import compare_hooks
from protgen_jax.recipes.seqdiff.compare_hooks import GUIDANCE, PERPLEXITY_BOUND, TEMPERATURE
from protgen_jax.recipes.seqdiff.model import generate_tokens, progress_bar, sequence_nll
from protgen_jax.recipes.seqdiff.recipe import SeqDiffRecipe
from protgen_jax.sequence_eval import (
    INPAINT_FRACTIONS,
    chunk_all,
    conditional_report,
    inpainting_report,
    perplexity_report,
    sample_quality,
)

# ------------------------------------------------------------------------------------ sample


COMMANDS = {
    "sample": (
        Option("num", int, 100, "sequences to generate", low=1),
        Option("length", int, None, "length of every sequence (default: training lengths)", low=1),
        Option("family", str, None, "family label to condition on"),
        GUIDANCE,
        Option("inpaint", str, None, "FASTA whose '#' positions are filled"),
        TEMPERATURE,
    ),
    "evaluate": (
        Option("num", int, 100, "unconditional samples (0 = perplexities only)", low=0),
        Option("data", str, None, "FASTA to score (default: the run's validation split)"),
        Option(
            "sequences",
            int,
            None,
            "sequences scored for the perplexity, drawn at random (default: the run's "
            "eval_sequences; 0 = all)",
            low=0,
        ),  # fmt: skip
        Option(
            "temperature",
            float,
            1.0,
            "divides the logits of the perplexity (calibration)",
            low=0.01,
        ),
        Option(
            "background_mix",
            float,
            0.0,
            "weight w of the training composition q in the perplexity's predictions, "
            "(1 - w) p_model + w q (calibration for unfamiliar sequences)",
            low=0.0,
            high=0.99,
        ),
    ),
}


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
            fixed=[(r.tokens, ~r.fill) for r in records], progress=False if opts.quiet else None,
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
    label = run.data.label_of(family)
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
        run.model, run.params, gen_key, lengths, [label] * num, guidance, temperature, config,
        progress=False if opts.quiet else None,
    )  # fmt: skip
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

EVALUATE_STAGES = ("perplexity", "unconditional", "conditional", "inpainting")
"""The parts of ``evaluate``, in the order they run; the JSON is written after each one."""


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Run every evaluation of the module docstring and write ``opts.out`` (JSON).

    Options: ``data`` (FASTA to score; default the run's validation split), ``out``, ``num``
    (unconditional samples, >= 2; 0 = perplexities only, no sampling), ``sequences`` (how many of the
    scored sequences, drawn at random; default the run's ``eval_sequences``, 0 = all), ``quiet`` (no
    progress bars). Keys: ``named(key, name)`` with name ``subset``, ``perplexity``, ``natural``,
    ``lengths``, ``unconditional``, ``conditional``, ``inpainting``.

    The JSON is rewritten after each stage (:data:`EVALUATE_STAGES`) with ``complete`` false and the
    stages still to run in ``pending``, so an interrupted evaluation leaves the finished parts;
    the last write has ``complete`` true.
    """
    started = time.perf_counter()
    cfg = run.config
    num = int(opts.num)
    if num == 1:
        raise DataError(
            f"--num must be 0 (perplexity only) or >= 2 (diversity needs pairs), got {num}"
        )
    limit = cfg.eval_sequences if opts.sequences is None else int(opts.sequences)
    names = run.data.family_names
    if opts.data:
        source = str(opts.data)
        scored = read_sequences(opts.data, family_names=names)
    else:
        source = "validation split"
        scored = run.data.validation
    order = keys.numpy_rng(keys.named(key, "subset")).permutation(len(scored))
    picked = order[: limit or len(scored)]
    seqs = [scored.sequence(i) for i in picked]
    labels = scored.labels[picked]
    stages = EVALUATE_STAGES if num else EVALUATE_STAGES[:1]
    result: dict[str, Any] = {
        "method": cfg.method,
        "transition": cfg.transition if cfg.method == "d3pm" else None,
        "data": source,
        "num_sequences_in_file": len(scored),
        "num_sequences_evaluated": len(seqs),
        "num_skipped_ambiguous": scored.num_skipped,
        "perplexity_bound": PERPLEXITY_BOUND[cfg.method],
        "complete": False,
        "pending": list(stages),
    }
    out, progress = Path(opts.out), False if opts.quiet else None

    def finished(stage: str) -> None:
        result["pending"].remove(stage)
        result["complete"] = not result["pending"]
        result["seconds"] = time.perf_counter() - started
        save_json_atomic(out, result)

    result["likelihood_temperature"] = float(opts.temperature)
    result["likelihood_background_mix"] = float(opts.background_mix)
    unigram = _unigram(run)
    background = (float(opts.background_mix), unigram.row(-1))
    pieces, piece_labels = chunk_all(seqs, labels, cfg.max_len)
    passes = 2 if np.any(piece_labels >= 0) else 1  # with the family labels, then the null label
    with progress_bar(passes * len(pieces), "held-out likelihood", progress) as bar:
        result.update(
            perplexity_report(
                lambda s, lab, k: sequence_nll(
                    run.model, run.params, k, s, lab, cfg, bar=bar, temperature=opts.temperature,
                    background=background,
                ),
                pieces, piece_labels, keys.named(key, "perplexity"), unigram,
            )
        )  # fmt: skip
    finished("perplexity")
    if num:
        for stage, report in _sampling_reports(run, seqs, labels, num, key, progress):
            result[stage] = report()
            finished(stage)
    return result


def _unigram(run: LoadedRun) -> UnigramBaseline:
    train = run.data.train
    return UnigramBaseline.fit(
        [train.sequence(i) for i in range(len(train))], train.labels, len(train.family_names)
    )


def _sampling_reports(
    run: LoadedRun, seqs, labels, num: int, key: jax.Array, progress: bool | None
) -> list[tuple[str, Callable[[], Any]]]:
    """The sampling stages, in order: ``(name, report())`` for unconditional sample quality,
    conditional family fidelity (None without family labels) and inpainting recovery; each report
    shows one progress bar over all the sequences it generates."""
    cfg, train, val = run.config, run.data.train, run.data.validation
    train_seqs = [train.sequence(i) for i in range(len(train))]
    natural_idx = keys.numpy_rng(keys.named(key, "natural")).permutation(len(val))[:num]
    natural = [val.sequence(i) for i in natural_idx]

    def generator(bar):
        def generate(gen_key, lengths, labels, guidance, temperature, fixed):
            return generate_tokens(
                run.model, run.params, gen_key, lengths, labels, guidance, temperature, cfg, fixed,
                bar=bar,
            )  # fmt: skip

        return generate

    def unconditional() -> dict[str, Any]:
        lengths = np.minimum(
            keys.numpy_rng(keys.named(key, "lengths")).choice(train.lengths, size=num),
            cfg.max_len,
        )
        with progress_bar(num, "unconditional samples", progress) as bar:
            samples = generator(bar)(
                keys.named(key, "unconditional"), lengths, np.full(num, -1), 1.0, 1.0, None
            )
        uniref = read_composition_csv(resolve("sequences", "uniref50_aa_composition.csv"))
        return sample_quality(samples, natural, train_seqs, kmer_counts(train_seqs), uniref)

    def conditional() -> dict[str, Any] | None:
        if not train.family_names:
            return None
        classifier = KmerNaiveBayes.fit(train_seqs, train.labels, len(train.family_names))
        families = min(cfg.cond_families, len(train.family_names))
        total = len(cfg.eval_guidance) * families * cfg.cond_samples
        with progress_bar(total, "conditional samples", progress) as bar:
            return conditional_report(
                generator(bar), train, classifier, natural, val.labels[natural_idx],
                keys.named(key, "conditional"), num_families=cfg.cond_families,
                samples_per_family=cfg.cond_samples, scales=cfg.eval_guidance, max_len=cfg.max_len,
            )  # fmt: skip

    def inpainting() -> dict[str, Any]:
        pieces, piece_labels = chunk_all(
            seqs[: cfg.inpaint_sequences], labels[: cfg.inpaint_sequences], cfg.max_len
        )
        total = len(INPAINT_FRACTIONS) * 2 * 2 * len(pieces)  # random/span x sampled/greedy
        with progress_bar(total, "inpainting", progress) as bar:
            return inpainting_report(
                generator(bar), pieces, piece_labels, keys.named(key, "inpainting"), _unigram(run)
            )

    return [
        ("unconditional", unconditional),
        ("conditional", conditional),
        ("inpainting", inpainting),
    ]


class SeqDiff(SeqDiffRecipe):
    """Sequence diffusion: training hooks (:class:`SeqDiffRecipe`), the commands of this module and the
    ``protgen compare`` hooks (:mod:`.compare_hooks`)."""

    commands = COMMANDS
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)
    generate_sequences = compare_hooks.generate_sequences
    sequence_nll = compare_hooks.sequence_nll_hook
    latent_interpolation = compare_hooks.latent_interpolation


RECIPE = SeqDiff()
