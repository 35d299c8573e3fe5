"""Evaluation of a sequence-diffusion run (``protgen evaluate RUN``).

1. Held-out per-residue perplexity ``exp(sum NLL / residues)``: OADM from its exact-order likelihood
   estimate, D3PM from its variational bound, the relaxation from its bound (all upper bounds on the
   NLL, so the perplexities are upper bounds too), with the family label where the run knows the family
   (``perplexity``) and with the null label (``perplexity_unconditional``). Next to them, on the same
   residues: the uniform model (20), the training unigram composition and the per-family unigram.
   Sequences longer than ``max_len`` are scored as ``ceil(L / max_len)`` consecutive chunks. At most
   ``eval_sequences`` sequences (a seeded random subset) are scored.
2. Unconditional samples (lengths drawn from training): composition distance (total variation) to the
   UniRef50 composition and to training, 3-mer spectrum distance to training, diversity (1 - mean pairwise
   identity), novelty (identity to the nearest training sequence); the same numbers for natural
   held-out sequences as a reference.
3. Family-conditional samples for the largest families at each ``eval_guidance`` scale: the fraction a
   3-mer naive Bayes classifier (trained on the training split) assigns to the requested family; the
   classifier's accuracy on natural held-out sequences as a reference.
4. Inpainting: 15% / 30% of held-out residues hidden (random positions, or one contiguous span) and
   filled by the model, sampling at temperature 1 (``model_recovery``) and greedily
   (``model_recovery_greedy``: temperature 0); recovery accuracy against the per-family unigram, a draw
   from it (``sampled``, in expectation; compare with the model's samples) or its most likely letter
   (``mode``; compare with the greedy fill).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from protgen_jax.checkpoint import save_json_atomic
from protgen_jax.data import resolve
from protgen_jax.data.sequences import bucket_index, chunk_sequence, pad_batch, read_sequences
from protgen_jax.errors import DataError
from protgen_jax.metrics import perplexity
from protgen_jax.recipes.seqdiff import LoadedRun, load_run
from protgen_jax.recipes.seqdiff_metrics import (
    KmerNaiveBayes,
    UnigramBaseline,
    composition,
    kmer_counts,
    kmer_spectrum,
    mean_pairwise_identity,
    nearest_identity,
    read_composition_csv,
    total_variation,
)
from protgen_jax.recipes.seqdiff_model import generate_tokens

INPAINT_FRACTIONS = (0.15, 0.30)


def _chunks(seqs: list[np.ndarray], labels: np.ndarray, max_len: int):
    pieces, piece_labels = [], []
    for seq, label in zip(seqs, labels, strict=True):
        for piece in chunk_sequence(seq, max_len):
            pieces.append(piece)
            piece_labels.append(int(label))
    return pieces, np.asarray(piece_labels, np.int32)


def model_nll(
    run: LoadedRun, seqs: list[np.ndarray], labels: np.ndarray, seed: int, progress: bool = True
) -> np.ndarray:
    """Per-sequence NLL bound ``[N]`` (nats) of sequences <= max_len, batched by bucket.

    labels ``[N]`` (-1 = null class). Every batch of bucket ``b`` has ``tokens_per_batch // L_b`` rows
    (the last one padded by repetition), so each bucket compiles once whatever the data. Batch ``c`` of
    bucket ``b`` uses ``fold_in(key(seed), 7919 b + c)``.
    """
    cfg, model = run.config, run.model
    lengths = np.array([len(s) for s in seqs])
    which = bucket_index(lengths, tuple(cfg.buckets))
    cond_all = np.where(labels < 0, model.null_label, labels).astype(np.int32)
    out = np.zeros(len(seqs))
    bar = tqdm(total=len(seqs), desc="likelihood", disable=not progress, dynamic_ncols=True)
    for b in np.unique(which):
        rows_all = np.flatnonzero(which == b)
        width = int(cfg.buckets[b])
        size = max(1, cfg.tokens_per_batch // width)
        for c, start in enumerate(range(0, len(rows_all), size)):
            real = rows_all[start : start + size]
            rows = np.concatenate([real, np.repeat(real[-1:], size - len(real))])
            tokens, mask = pad_batch([seqs[r] for r in rows], width)
            key = jax.random.fold_in(jax.random.key(seed), 7919 * int(b) + c)
            nll = model.nll(
                run.params, key, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(cond_all[rows])
            )
            out[real] = np.asarray(jax.device_get(nll))[: len(real)]
            bar.update(len(real))
    bar.close()
    return out


def perplexity_report(
    run: LoadedRun, seqs: list[np.ndarray], labels: np.ndarray, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Model and baseline perplexities on ``seqs`` (chunked to max_len), per residue."""
    pieces, piece_labels = _chunks(seqs, labels, run.config.max_len)
    residues = float(sum(len(p) for p in pieces))
    train = run.prep.train
    baseline = UnigramBaseline.fit(
        [train.sequence(i) for i in range(len(train))], train.labels, len(train.family_names)
    )
    nll = model_nll(run, pieces, piece_labels, seed, progress).sum()
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
            model_nll(run, pieces, none, seed, progress).sum(), residues
        )
    report["baselines"] = {
        "uniform": perplexity(residues * np.log(20.0), residues),
        "unigram": perplexity(baseline.nll(pieces, None), residues),
        "family_unigram": perplexity(baseline.nll(pieces, piece_labels), residues),
    }
    return report


def sample_quality(
    run: LoadedRun, samples: list[np.ndarray], natural: list[np.ndarray], train_seqs, train_counts
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
            "diversity": 1.0 - mean_pairwise_identity(seqs),
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
    run: LoadedRun, seqs: list[np.ndarray], labels: np.ndarray, seed: int, progress: bool
) -> dict[str, Any]:
    """Recovery of hidden residues, model vs per-family unigram (mode and sampled)."""
    train = run.prep.train
    baseline = UnigramBaseline.fit(
        [train.sequence(i) for i in range(len(train))], train.labels, len(train.family_names)
    )
    rng = np.random.default_rng(seed + 17)
    lengths = np.array([len(s) for s in seqs])
    report: dict[str, Any] = {"num_sequences": len(seqs)}
    for fraction in INPAINT_FRACTIONS:
        for span in (False, True):
            hidden = _inpaint_masks(lengths, fraction, span, rng)
            fixed = [(s, ~h) for s, h in zip(seqs, hidden, strict=True)]
            key = jax.random.key(seed + int(1000 * fraction) + int(span))
            truth = np.concatenate([s[h] for s, h in zip(seqs, hidden, strict=True)])
            recovery, kept_ok = {}, True
            for name, temperature in (("model_recovery", 1.0), ("model_recovery_greedy", 0.0)):
                filled = generate_tokens(
                    run.model, run.params, key, lengths, labels, 1.0, temperature, run.config,
                    fixed, progress,
                )  # fmt: skip
                pred = np.concatenate([f[h] for f, h in zip(filled, hidden, strict=True)])
                recovery[name] = float(np.mean(pred == truth))
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
            report[f"{'span' if span else 'random'}_{int(round(100 * fraction))}"] = {
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
    run: LoadedRun, classifier: KmerNaiveBayes, natural, natural_labels, seed: int, progress: bool
) -> dict[str, Any]:
    """Family fidelity of family-conditional samples of the largest families, per guidance scale."""
    cfg, train = run.config, run.prep.train
    counts = np.bincount(train.labels[train.labels >= 0], minlength=len(train.family_names))
    families = np.argsort(-counts)[: cfg.cond_families]
    rng = np.random.default_rng(seed + 5)
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
        key = jax.random.key(seed + 31 + int(100 * scale))
        seqs = generate_tokens(
            run.model, run.params, key, lengths, labels, float(scale), 1.0, cfg, None, progress
        )
        report[f"fraction_assigned_guidance_{scale:g}"] = float(
            np.mean(classifier.predict(seqs) == labels)
        )
    return report


def evaluate_run(run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Run every evaluation of the module docstring and write ``options["out"]`` (JSON).

    Options: ``data`` (FASTA to score; default the run's validation split), ``out``, ``num`` (unconditional
    samples, default 100; 0 = perplexities only, no sampling), ``seed``, ``quiet``.
    """
    started = time.perf_counter()
    run = load_run(run_dir)
    cfg = run.config
    seed = int(options.get("seed") or 0)
    progress = not options.get("quiet", False)
    num = int(options["num"]) if options.get("num") is not None else 100
    if num == 1 or num < 0:
        raise DataError(
            f"--num must be 0 (perplexity only) or >= 2 (diversity needs pairs), got {num}"
        )
    names = run.prep.data.family_names
    if options.get("data"):
        source = str(options["data"])
        scored = read_sequences(options["data"], family_names=names)
    else:
        source = "validation split"
        scored = run.prep.validation
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(scored))
    limit = cfg.eval_sequences or len(scored)
    picked = order[:limit]
    seqs = [scored.sequence(i) for i in picked]
    labels = scored.labels[picked]
    result: dict[str, Any] = {
        "method": cfg.method,
        "transition": cfg.transition if cfg.method == "d3pm" else None,
        "data": source,
        "num_sequences_in_file": len(scored),
        "num_sequences_evaluated": len(seqs),
        "num_skipped_ambiguous": scored.num_skipped,
        "perplexity_bound": {"oadm": "exact-order likelihood, 1 order per sequence",
                             "d3pm": "variational bound (T terms)",
                             "relax": "embedding-diffusion bound"}[cfg.method],
    }  # fmt: skip
    result.update(perplexity_report(run, seqs, labels, seed, progress))
    if num:
        result.update(_sampling_reports(run, seqs, labels, num, rng, seed, progress))
    result["seconds"] = time.perf_counter() - started
    out = options.get("out")
    if out:
        save_json_atomic(Path(out), result)
    return result


def _sampling_reports(run, seqs, labels, num, rng, seed, progress) -> dict[str, Any]:
    """Unconditional sample quality, conditional family fidelity and inpainting recovery."""
    cfg, names = run.config, run.prep.data.family_names
    result: dict[str, Any] = {}

    train = run.prep.train
    train_seqs = [train.sequence(i) for i in range(len(train))]
    train_counts = kmer_counts(train_seqs)
    val = run.prep.validation
    natural_idx = rng.permutation(len(val))[:num]
    natural = [val.sequence(i) for i in natural_idx]
    lengths = np.minimum(rng.choice(train.lengths, size=num), cfg.max_len)
    samples = generate_tokens(
        run.model, run.params, jax.random.key(seed + 1), lengths, np.full(num, -1), 1.0, 1.0, cfg,
        None, progress,
    )  # fmt: skip
    result["unconditional"] = sample_quality(run, samples, natural, train_seqs, train_counts)
    classifier = KmerNaiveBayes.fit(train_seqs, train.labels, len(names))
    result["conditional"] = conditional_report(
        run, classifier, natural, val.labels[natural_idx], seed, progress
    )
    inpaint_pieces, inpaint_labels = _chunks(
        seqs[: cfg.inpaint_sequences], labels[: cfg.inpaint_sequences], cfg.max_len
    )
    result["inpainting"] = inpainting_report(run, inpaint_pieces, inpaint_labels, seed, progress)
    return result
