"""The commands of a sequence-diffusion run: ``protgen sample RUN`` and ``protgen evaluate RUN``.

``sample``: unconditional or family-conditional sequences (classifier-free guidance scale ``s``:
``l_null + s (l_family - l_null)``), or inpainting of the ``#`` positions of a FASTA, to FASTA.

``evaluate`` (written to ``--out`` as JSON):

1. Held-out per-residue perplexity ``exp(sum NLL / residues)``: OADM from its exact-order likelihood
   estimate, D3PM from its variational bound, the relaxation from its bound (all upper bounds on the
   NLL, so the perplexities are upper bounds too), with the family label where the run knows the family
   (``perplexity``) and with the null label (``perplexity_unconditional``; the same random orders /
   timesteps as the conditional estimate, so the two differ only by the label). Next to them, on the
   same residues: the uniform model (20), the training unigram composition and the per-family unigram.
   Sequences longer than ``max_len`` are scored as ``ceil(L / max_len)`` consecutive chunks. At most
   ``eval_sequences`` sequences (a random subset) are scored.
2. Unconditional samples (lengths drawn from training): composition distance (total variation) to the
   UniRef50 composition and to training, 3-mer spectrum distance to training, diversity (1 - mean
   pairwise identity), novelty (identity to the nearest training sequence); the same numbers for natural
   held-out sequences as a reference.
3. Family-conditional samples for the largest families at each ``eval_guidance`` scale: the fraction a
   3-mer naive Bayes classifier (trained on the training split) assigns to the requested family; the
   classifier's accuracy on natural held-out sequences as a reference.
4. Inpainting: 15% / 30% of held-out residues hidden (random positions, or one contiguous span) and
   filled by the model, sampling at temperature 1 (``model_recovery``) and greedily
   (``model_recovery_greedy``: temperature 0); recovery accuracy against the per-family unigram, a draw
   from it (``sampled``, in expectation; compare with the model's samples) or its most likely letter
   (``mode``; compare with the greedy fill).

Every random draw comes from the command's key, split by name (``protgen_jax.keys``).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import keys
from protgen_jax.alphabet import decode
from protgen_jax.baselines import KmerNaiveBayes, UnigramBaseline
from protgen_jax.checkpoint import save_json_atomic
from protgen_jax.data import resolve
from protgen_jax.data.fasta import write_fasta
from protgen_jax.data.sequences import (
    bucket_index,
    chunk_sequence,
    pad_batch,
    read_inpaint_fasta,
    read_sequences,
)
from protgen_jax.errors import DataError
from protgen_jax.metrics import (
    composition,
    kmer_counts,
    kmer_spectrum,
    mean_alignment_identity,
    nearest_identity,
    perplexity,
    read_composition_csv,
    total_variation,
)
from protgen_jax.recipes.base import LoadedRun, padded_map
from protgen_jax.recipes.options import Option
from protgen_jax.recipes.seqdiff.model import generate_tokens
from protgen_jax.recipes.seqdiff.recipe import SeqDiffRecipe

INPAINT_FRACTIONS = (0.15, 0.30)
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


def _chunks(seqs: list[np.ndarray], labels: np.ndarray, max_len: int):
    pieces, piece_labels = [], []
    for seq, label in zip(seqs, labels, strict=True):
        for piece in chunk_sequence(seq, max_len):
            pieces.append(piece)
            piece_labels.append(int(label))
    return pieces, np.asarray(piece_labels, np.int32)


def model_nll(
    run: LoadedRun,
    seqs: list[np.ndarray],
    labels: np.ndarray,
    key: jax.Array,
    progress: bool | None = None,
) -> np.ndarray:
    """Per-sequence NLL bound ``[N]`` (nats) of sequences <= max_len, batched by bucket.

    labels ``[N]`` (-1 = null class). Every batch of the bucket of length ``L_b`` has
    ``tokens_per_batch // L_b`` rows (:func:`padded_map`), so each bucket compiles once whatever the
    data. Batch ``c`` of that bucket uses ``fold_in(named(key, f"bucket{L_b}"), c)``.
    """
    from tqdm.auto import tqdm

    cfg, model = run.config, run.model
    lengths = np.array([len(s) for s in seqs])
    which = bucket_index(lengths, tuple(cfg.buckets))
    cond_all = np.where(labels < 0, model.null_label, labels).astype(np.int32)
    out = np.zeros(len(seqs))
    disable = None if progress is None else not progress
    bar = tqdm(total=len(seqs), desc="likelihood", disable=disable, dynamic_ncols=True)
    for b in np.unique(which):
        rows = np.flatnonzero(which == b)
        width = int(cfg.buckets[b])
        size = max(1, cfg.tokens_per_batch // width)
        tokens, mask = pad_batch([seqs[r] for r in rows], width)
        bucket_key = keys.named(key, f"bucket{width}")

        def nll(tokens, mask, cond, chunk, bucket_key=bucket_key):
            batch_key = jax.random.fold_in(bucket_key, int(chunk[0]))
            return model.nll(
                run.params, batch_key, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(cond)
            )

        chunks = np.arange(len(rows)) // size
        out[rows] = padded_map(nll, (tokens, mask, cond_all[rows], chunks), size, bar)
    bar.close()
    return out


def perplexity_report(
    run: LoadedRun, seqs: list[np.ndarray], labels: np.ndarray, key: jax.Array
) -> dict[str, Any]:
    """Model and baseline perplexities on ``seqs`` (chunked to max_len), per residue.

    The conditional and unconditional bounds use the same ``key`` on purpose (paired estimates).
    """
    pieces, piece_labels = _chunks(seqs, labels, run.config.max_len)
    residues = float(sum(len(p) for p in pieces))
    train = run.data.train
    baseline = UnigramBaseline.fit(
        [train.sequence(i) for i in range(len(train))], train.labels, len(train.family_names)
    )
    nll = model_nll(run, pieces, piece_labels, key).sum()
    report = {
        "perplexity": perplexity(nll, residues),
        "nll_per_residue": nll / residues,
        "num_residues": int(residues),
        "num_chunks": len(pieces),
        "num_with_known_family": int(np.sum(labels >= 0)),
    }
    if np.any(piece_labels >= 0):
        none = np.full(len(pieces), -1, np.int32)
        report["perplexity_unconditional"] = perplexity(
            model_nll(run, pieces, none, key).sum(), residues
        )
    report["baselines"] = {
        "uniform": perplexity(residues * np.log(20.0), residues),
        "unigram": perplexity(baseline.nll(pieces, None), residues),
        "family_unigram": perplexity(baseline.nll(pieces, piece_labels), residues),
    }
    return report


def sample_quality(
    samples: list[np.ndarray], natural: list[np.ndarray], train_seqs, train_counts
) -> dict[str, Any]:
    """Composition / 3-mer distances, diversity and novelty of ``samples`` and of ``natural``."""
    uniref = read_composition_csv(resolve("sequences", "uniref50_aa_composition.csv"))
    train_comp, train_kmers = composition(train_seqs), kmer_spectrum(train_seqs)

    def stats(seqs: list[np.ndarray]) -> dict[str, float]:
        novelty = nearest_identity(seqs, train_seqs, train_counts)
        return {
            "num": len(seqs),
            "mean_length": float(np.mean([len(s) for s in seqs])),
            "composition_tv_uniref50": total_variation(composition(seqs), uniref),
            "composition_tv_train": total_variation(composition(seqs), train_comp),
            "kmer3_tv_train": total_variation(kmer_spectrum(seqs), train_kmers),
            "diversity": 1.0 - mean_alignment_identity(seqs),
            "novelty_identity_mean": float(novelty.mean()),
            "novelty_identity_median": float(np.median(novelty)),
            "fraction_identity_above_0.9": float(np.mean(novelty > 0.9)),
        }

    return {"samples": stats(samples), "natural_heldout": stats(natural)}


def _inpaint_masks(
    lengths: np.ndarray, fraction: float, span: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per sequence a bool ``[L]`` of hidden positions: ``max(1, round(fraction L))`` of them."""
    masks = []
    for length in lengths:
        n = max(1, int(round(fraction * length)))
        hide = np.zeros(length, bool)
        if span:
            start = int(rng.integers(0, length - n + 1))
            hide[start : start + n] = True
        else:
            hide[rng.choice(length, size=n, replace=False)] = True
        masks.append(hide)
    return masks


def inpainting_report(
    run: LoadedRun, seqs: list[np.ndarray], labels: np.ndarray, key: jax.Array
) -> dict[str, Any]:
    """Recovery of hidden residues, model vs per-family unigram (mode and sampled).

    Setting ``name`` (e.g. ``random_15``) hides positions drawn from ``named(key, name, "hide")`` and
    fills them from ``named(key, name, "sample")`` (temperature 1) and ``named(key, name, "greedy")``.
    """
    train = run.data.train
    baseline = UnigramBaseline.fit(
        [train.sequence(i) for i in range(len(train))], train.labels, len(train.family_names)
    )
    lengths = np.array([len(s) for s in seqs])
    report: dict[str, Any] = {"num_sequences": len(seqs)}
    for fraction in INPAINT_FRACTIONS:
        for span in (False, True):
            name = f"{'span' if span else 'random'}_{int(round(100 * fraction))}"
            hidden = _inpaint_masks(
                lengths, fraction, span, keys.numpy_rng(keys.named(key, name, "hide"))
            )
            fixed = [(s, ~h) for s, h in zip(seqs, hidden, strict=True)]
            truth = np.concatenate([s[h] for s, h in zip(seqs, hidden, strict=True)])
            recovery, kept_ok = {}, True
            for metric, temperature, purpose in (
                ("model_recovery", 1.0, "sample"),
                ("model_recovery_greedy", 0.0, "greedy"),
            ):
                filled = generate_tokens(
                    run.model, run.params, keys.named(key, name, purpose), lengths, labels, 1.0,
                    temperature, run.config, fixed,
                )  # fmt: skip
                pred = np.concatenate([f[h] for f, h in zip(filled, hidden, strict=True)])
                recovery[metric] = float(np.mean(pred == truth))
                kept_ok &= all(
                    np.array_equal(f[~h], s[~h])
                    for f, s, h in zip(filled, seqs, hidden, strict=True)
                )
            rows = [
                baseline.row(int(lab))
                for lab, h in zip(labels, hidden, strict=True)
                for _ in range(h.sum())
            ]
            log_p = np.stack(rows)
            report[name] = {
                "num_hidden": int(len(truth)),
                **recovery,
                "family_unigram_mode_recovery": float(np.mean(log_p.argmax(-1) == truth)),
                "family_unigram_sampled_recovery": float(
                    np.mean(np.exp(np.take_along_axis(log_p, truth[:, None], -1)))
                ),
                "unmasked_positions_kept": bool(kept_ok),
            }
    return report


def conditional_report(
    run: LoadedRun, classifier: KmerNaiveBayes, natural, natural_labels, key: jax.Array
) -> dict[str, Any]:
    """Family fidelity of family-conditional samples of the largest families, per guidance scale.

    Lengths from ``named(key, "lengths")``; scale ``s`` samples from ``named(key, f"guidance_{s:g}")``.
    """
    cfg, train = run.config, run.data.train
    counts = np.bincount(train.labels[train.labels >= 0], minlength=len(train.family_names))
    families = np.argsort(-counts)[: cfg.cond_families]
    rng = keys.numpy_rng(keys.named(key, "lengths"))
    labels = np.repeat(families, cfg.cond_samples)
    lengths = np.concatenate(
        [np.minimum(rng.choice(train.lengths[train.labels == f], cfg.cond_samples), cfg.max_len)
         for f in families]
    )  # fmt: skip
    report: dict[str, Any] = {
        "families": [train.family_names[f] for f in families],
        "samples_per_family": cfg.cond_samples,
        "classifier": "3-mer multinomial naive Bayes fitted on the training split",
        "classifier_accuracy_natural_heldout": float(
            np.mean(classifier.predict(natural) == natural_labels)
        ),
    }
    for scale in cfg.eval_guidance:
        seqs = generate_tokens(
            run.model, run.params, keys.named(key, f"guidance_{scale:g}"), lengths, labels,
            float(scale), 1.0, cfg,
        )  # fmt: skip
        report[f"fraction_assigned_guidance_{scale:g}"] = float(
            np.mean(classifier.predict(seqs) == labels)
        )
    return report


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
    result.update(perplexity_report(run, seqs, labels, keys.named(key, "perplexity")))
    if num:
        result.update(_sampling_reports(run, seqs, labels, num, key))
    result["seconds"] = time.perf_counter() - started
    save_json_atomic(Path(opts.out), result)
    return result


def _sampling_reports(run: LoadedRun, seqs, labels, num: int, key: jax.Array) -> dict[str, Any]:
    """Unconditional sample quality, conditional family fidelity and inpainting recovery."""
    cfg, names = run.config, run.data.family_names
    result: dict[str, Any] = {}
    train = run.data.train
    train_seqs = [train.sequence(i) for i in range(len(train))]
    train_counts = kmer_counts(train_seqs)
    val = run.data.validation
    natural_idx = keys.numpy_rng(keys.named(key, "natural")).permutation(len(val))[:num]
    natural = [val.sequence(i) for i in natural_idx]
    lengths = np.minimum(
        keys.numpy_rng(keys.named(key, "lengths")).choice(train.lengths, size=num), cfg.max_len
    )
    samples = generate_tokens(
        run.model, run.params, keys.named(key, "unconditional"), lengths, np.full(num, -1), 1.0,
        1.0, cfg,
    )  # fmt: skip
    result["unconditional"] = sample_quality(samples, natural, train_seqs, train_counts)
    classifier = KmerNaiveBayes.fit(train_seqs, train.labels, len(names))
    result["conditional"] = conditional_report(
        run, classifier, natural, val.labels[natural_idx], keys.named(key, "conditional")
    )
    inpaint_pieces, inpaint_labels = _chunks(
        seqs[: cfg.inpaint_sequences], labels[: cfg.inpaint_sequences], cfg.max_len
    )
    result["inpainting"] = inpainting_report(
        run, inpaint_pieces, inpaint_labels, keys.named(key, "inpainting")
    )
    return result


class SeqDiff(SeqDiffRecipe):
    """Sequence diffusion: training hooks (:class:`SeqDiffRecipe`) and the commands of this module."""

    commands = COMMANDS

    def sample(self, run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
        return sample(run, opts, key)

    def evaluate(self, run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
        return evaluate(run, opts, key)


RECIPE = SeqDiff()
