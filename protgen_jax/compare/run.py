"""``protgen compare``: several runs, one held-out FASTA, one table (JSON, Markdown, figure).

Every row is measured by the same code (:mod:`protgen_jax.compare.measure`); a model enters only through
the three hooks of ``recipes.base.Recipe`` (``generate_sequences``, ``sequence_nll``,
``latent_interpolation``). Rows, in order: the held-out set itself (its distances to itself are 0; TV
to the training reference, diversity and novelty of a random draw of ``num``), that draw (the
finite-sample floor of every TV at ``num`` sequences), the unigram baseline (global composition;
per-family composition for conditional samples), then one row per run spec.

Per row: sampling time (a warm-up call first, ``warmup`` sequences of the same lengths, so compilation
is reported apart; then the timed call of ``num``), the training wall time (``metrics.jsonl``), the
held-out NLL per residue or bound on ``nll_sequences`` held-out records, the statistics of the samples,
the family assignment of conditional samples (``per_family`` for each requested family, lengths drawn
from that family's held-out lengths) by the independent classifier, and for latent models the
classifier's probabilities of families A and B along the latent interpolation.

Everything is checked before any sampling: spec syntax, run folders, ``--families`` and
``--interpolate`` against the held-out file and the classifier, the output folder, then (runs loaded)
each spec's options by ``generate_sequences(num=0)``. Keys: ``named(root_key(seed), "compare")`` split
by name: ``lengths``, ``nll_subset``, ``heldout_draw``, ``family_lengths/FAM``, and per row
``row/LABEL`` -> ``warmup``, ``samples``, ``conditional/FAM``, ``interpolation``.

``DIR/compare.json`` (and ``compare.md``, ``compare.png``) is rewritten after each row, ``complete``
false and ``pending`` listing the rows left, so an interrupted compare keeps what it finished.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from protgen_jax import __version__, keys
from protgen_jax.alphabet import decode
from protgen_jax.atomic import save_json_atomic
from protgen_jax.compare.measure import (
    Reference,
    as_list,
    build_reference,
    classifier_probabilities,
    distribution_distances,
    diversity_novelty,
    encode_samples,
    sequence_statistics,
    training_time,
    unigram_nll,
    unigram_sample,
)
from protgen_jax.compare.report import write_figure, write_markdown
from protgen_jax.compare.specs import RunSpec, parse_specs
from protgen_jax.errors import DataError

OUTPUTS = ("compare.json", "compare.md", "compare.png")

Generate = Callable[[jax.Array, int, np.ndarray, str | None], list[str]]


def _families(given: str | None, ref: Reference, count: int = 8) -> list[str]:
    """``--families`` checked against the held-out file and the classifier, or the ``count`` largest
    families of the held-out file."""
    held = ref.heldout
    sizes = np.bincount(held.labels[held.labels >= 0], minlength=len(ref.vocabulary))
    if not given:
        order = sorted(np.flatnonzero(sizes), key=lambda f: (-sizes[f], ref.vocabulary[f]))
        return [ref.vocabulary[f] for f in order[:count]]
    names = [f.strip() for f in given.split(",") if f.strip()]
    for name in names:
        if name not in ref.vocabulary:
            raise DataError(f"--families: {name!r} is not a family of the training reference")
        if sizes[ref.vocabulary.index(name)] == 0:
            raise DataError(f"--families: {name!r} has no record in the held-out file")
    return names


def _interpolation_pair(given: str | None, ref: Reference) -> tuple[str, str] | None:
    if not given:
        return None
    names = [f.strip() for f in given.split(",")]
    if len(names) != 2 or names[0] == names[1]:
        raise DataError(f"--interpolate {given!r}: give two different families, FAM_A,FAM_B")
    for name in names:
        if name not in ref.vocabulary:
            raise DataError(f"--interpolate: {name!r} is not a family of the training reference")
    return names[0], names[1]


def _check_out(out: Path, specs: list[RunSpec], force: bool) -> None:
    """``--out`` is a folder (or new), outside every run folder, writable; its files exist only
    with ``force``."""
    if not str(out).strip():
        raise DataError("--out is empty; name the compare folder")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; compare writes a folder")
    real = out.resolve()
    for spec in specs:
        folder = spec.path.resolve()
        if real == folder or folder in real.parents:
            raise DataError(f"--out {out} lies inside the run folder {spec.path}; put it beside")
    existing = real
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"--out {out}: cannot write in {existing}")
    taken = [name for name in OUTPUTS if (out / name).exists()]
    if taken and not force:
        raise DataError(f"--out {out}: {taken[0]} already exists; pass --force or a new --out")


def _machine() -> dict[str, Any]:
    import flax
    import jaxlib

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "versions": {
            "protgen_jax": __version__,
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "numpy": np.__version__,
        },  # fmt: skip
    }


def _speed(num: int, warmup: int, first: float, seconds: float, lengths: np.ndarray) -> dict:
    return {
        "num": num,
        "warmup_num": warmup,
        "first_call_seconds": first,
        "compile_seconds_estimate": max(first - seconds * warmup / num, 0.0),
        "seconds": seconds,
        "seconds_per_sequence": seconds / num,
        "sequences_per_second": num / seconds if seconds > 0 else None,
        "seconds_per_1000_projected": 1000.0 * seconds / num,
        "mean_target_length": float(np.mean(lengths)),
        "backend": jax.default_backend(),
    }


class Plan:
    """What every row shares: lengths, the NLL subset, the conditional families and their lengths."""

    def __init__(self, ref: Reference, root: jax.Array, num: int, warmup: int, per_family: int,
                 families: list[str], pair: tuple[str, str] | None, steps: int,
                 nll_sequences: int):  # fmt: skip
        held = ref.heldout
        self.num, self.warmup, self.per_family = num, warmup, per_family
        self.families, self.pair, self.steps = families, pair, steps
        self.lengths = keys.numpy_rng(keys.named(root, "lengths")).choice(held.lengths, num)
        order = keys.numpy_rng(keys.named(root, "nll_subset")).permutation(len(held))
        self.nll_index = order[: nll_sequences or len(held)]
        draw = keys.numpy_rng(keys.named(root, "heldout_draw")).permutation(len(held))[:num]
        self.draw = [held.sequence(i) for i in draw]
        self.family_lengths = {}
        for name in families:
            pool = held.lengths[held.labels == ref.vocabulary.index(name)]
            rng = keys.numpy_rng(keys.named(root, "family_lengths", name))
            self.family_lengths[name] = rng.choice(pool, per_family)


def _conditional(
    generate: Generate, plan: Plan, ref: Reference, key: jax.Array, unsupported: dict[str, str]
) -> dict[str, Any]:
    """Fraction of conditional samples the classifier assigns to the requested family."""
    if len(unsupported) == len(plan.families):
        return {"fraction_assigned": None, "reason": next(iter(unsupported.values()))}
    started, by_family, hits, probs = time.perf_counter(), {}, [], []
    for name in plan.families:
        if name in unsupported:
            continue
        lengths = plan.family_lengths[name]
        samples = generate(keys.named(key, "conditional", name), len(lengths), lengths, name)
        seqs, empty = encode_samples(samples, f"conditional samples of {name}")
        target = ref.vocabulary.index(name)
        p = classifier_probabilities(ref.classifier, seqs)
        hit = np.concatenate([p.argmax(-1) == target, np.zeros(empty, bool)])  # empty: a miss
        by_family[name] = float(hit.mean())
        hits.append(hit)
        probs.append(np.concatenate([p[:, target], np.zeros(empty)]))
    return {
        "fraction_assigned": float(np.concatenate(hits).mean()),
        "mean_probability_of_requested": float(np.concatenate(probs).mean()),
        "by_family": by_family,
        "families_skipped": unsupported,
        "per_family": plan.per_family,
        "seconds": time.perf_counter() - started,
    }


def _interpolation(
    interpolate: Callable, plan: Plan, ref: Reference, key: jax.Array
) -> dict | None:
    """The classifier's mean probabilities of families A and B at each point of the latent path."""
    if plan.pair is None:
        return None
    a, b = plan.pair
    try:
        paths = interpolate(keys.named(key, "interpolation"), a, b, plan.steps, plan.per_family)
    except DataError as err:
        return {"family_a": a, "family_b": b, "reason": str(err)}
    if paths is None:
        return {"family_a": a, "family_b": b, "reason": "no latent space"}
    ia, ib = ref.vocabulary.index(a), ref.vocabulary.index(b)
    prob_a, prob_b, assigned_a, assigned_b, empty = [], [], [], [], []
    for i, point in enumerate(paths):
        seqs, num_empty = encode_samples(point, f"interpolation {i}")
        empty.append(num_empty)
        p = classifier_probabilities(ref.classifier, seqs)
        prob_a.append(float(p[:, ia].mean()))
        prob_b.append(float(p[:, ib].mean()))
        assigned_a.append(float(np.mean(p.argmax(-1) == ia)))
        assigned_b.append(float(np.mean(p.argmax(-1) == ib)))
    return {
        "family_a": a, "family_b": b, "steps": len(paths), "num_per_point": plan.per_family,
        "probability_a": prob_a, "probability_b": prob_b,
        "fraction_assigned_a": assigned_a, "fraction_assigned_b": assigned_b,
        "empty_per_point": empty, "sequences": [list(point[:2]) for point in paths],
    }  # fmt: skip


class Hooks(NamedTuple):
    """How a row's model is called: ``generate(key, num, lengths, family) -> strings``,
    ``nll(sequences, families) -> (value, kind) | None`` and
    ``interpolate(key, family_a, family_b, steps, num) -> lists of strings | None``."""

    generate: Generate
    nll: Callable[[list[str], list[str | None]], tuple[float, str] | None]
    interpolate: Callable[..., list[list[str]] | None]


def _model_hooks(
    recipe: Any, run: Any, options: dict[str, Any], progress: bool, scored: dict[Path, Any]
) -> Hooks:
    """The recipe's three ``protgen compare`` hooks bound to a loaded run and the spec's options.
    The likelihood takes no options, so it is computed once per run folder (cached in ``scored``)."""

    def generate(key, num, lengths, family):
        return recipe.generate_sequences(
            run, key, num, lengths=np.asarray(lengths), family=family, options=options,
            progress=progress,
        )  # fmt: skip

    def nll(sequences, families):
        where = run.run.path.resolve()
        if where not in scored:
            scored[where] = recipe.sequence_nll(run, sequences, families, progress=progress)
        return scored[where]

    def interpolate(key, family_a, family_b, steps, num):
        return recipe.latent_interpolation(run, key, family_a, family_b, steps, num)

    return Hooks(generate, nll, interpolate)


def _unigram_hooks(ref: Reference, plan: Plan) -> Hooks:
    """The unigram baseline as a row: i.i.d. residues of the global (or the family's) composition and
    its exact held-out NLL."""
    exact = unigram_nll(ref, [ref.heldout.sequence(i) for i in plan.nll_index])

    def generate(key, num, lengths, family):
        label = ref.vocabulary.index(family) if family else -1
        return unigram_sample(ref, np.asarray(lengths)[:num], label, keys.numpy_rng(key))

    return Hooks(
        generate, lambda seqs, fams: (exact["nats_per_residue"], exact["kind"]), lambda *a: None
    )


def _measure_row(
    row: dict[str, Any], hooks: Hooks, plan: Plan, ref: Reference, key: jax.Array,
    unsupported: dict[str, str], bar: tqdm,
) -> dict[str, Any]:  # fmt: skip
    """Speed, samples, NLL, conditional and interpolation of one row (see the module docstring)."""
    generate = hooks.generate
    bar.set_postfix_str(f"{row['label']}: sampling")
    warm = plan.lengths[: plan.warmup]
    started = time.perf_counter()
    generate(keys.named(key, "warmup"), len(warm), warm, None)
    first = time.perf_counter() - started
    started = time.perf_counter()
    samples = generate(keys.named(key, "samples"), plan.num, plan.lengths, None)
    seconds = time.perf_counter() - started
    if len(samples) != plan.num:
        raise DataError(f"{row['label']}: generate_sequences returned {len(samples)} of {plan.num}")
    row["speed"] = _speed(plan.num, len(warm), first, seconds, plan.lengths)
    seqs, empty = encode_samples(samples, f"{row['label']} samples")
    bar.set_postfix_str(f"{row['label']}: statistics")
    row["samples"] = {**sequence_statistics(seqs, ref), "num_empty": empty}
    row["examples"] = samples[:3]
    bar.set_postfix_str(f"{row['label']}: held-out likelihood")
    held = ref.heldout
    started = time.perf_counter()
    scored = hooks.nll(
        [decode(held.sequence(i)) for i in plan.nll_index],
        [ref.heldout_families[i] or None for i in plan.nll_index],
    )
    if scored is None:
        row["nll"] = {"nats_per_residue": None, "reason": "the model defines no likelihood"}
    else:
        value, kind = scored
        residues = int(held.lengths[plan.nll_index].sum())
        row["nll"] = {
            "nats_per_residue": float(value), "perplexity": float(np.exp(value)), "kind": kind,
            "num_sequences": len(plan.nll_index), "num_residues": residues,
            "seconds": time.perf_counter() - started,
        }  # fmt: skip
    bar.set_postfix_str(f"{row['label']}: conditional samples")
    row["conditional"] = _conditional(generate, plan, ref, key, unsupported)
    bar.set_postfix_str(f"{row['label']}: interpolation")
    row["interpolation"] = _interpolation(hooks.interpolate, plan, ref, key)
    return row


def _reference_rows(ref: Reference, plan: Plan) -> list[dict[str, Any]]:
    """The held-out set (all records, distances to itself) and the draw of ``num`` held-out records."""
    held = ref.heldout
    per_sequence = diversity_novelty(plan.draw, ref)
    targets = [ref.vocabulary.index(f) for f in plan.families]
    chosen = np.flatnonzero(np.isin(held.labels, targets))
    predicted = classifier_probabilities(ref.classifier, [held.sequence(i) for i in chosen])
    accuracy = float(np.mean(predicted.argmax(-1) == held.labels[chosen]))
    whole = {
        "label": f"held-out ({len(held)})",
        "kind": "reference",
        "note": "the held-out sequences themselves: TV to held-out is 0 by definition; diversity "
        f"and novelty of a random draw of {plan.num}; controllability = the classifier's accuracy "
        "on the held-out records of the requested families",
        "samples": {
            "num": len(held),
            "mean_length": float(held.lengths.mean()),
            **distribution_distances(as_list(held), ref),
            **per_sequence,
        },  # fmt: skip
        "nll": {"nats_per_residue": None, "reason": "natural sequences (no model)"},
        "conditional": {"fraction_assigned": accuracy, "num": len(chosen)},
    }
    draw = {
        "label": f"held-out draw ({plan.num})",
        "kind": "reference",
        "note": f"a random draw of {plan.num} held-out sequences: the finite-sample floor of each "
        "TV for a row of that many samples",
        "samples": sequence_statistics(plan.draw, ref),
        "nll": {"nats_per_residue": None, "reason": "natural sequences (no model)"},
    }
    return [whole, draw]


def run_compare(
    runs: list[str], data: str, out: str, *, num: int = 200, warmup: int | None = None,
    families: str | None = None, per_family: int = 8, interpolate: str | None = None,
    interpolate_steps: int = 7, nll_sequences: int = 192, train: str | None = None,
    seed: int = 0, force: bool = False, progress: bool = True, argv: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Measure every row and write ``out/compare.{json,md,png}``; returns the JSON object."""
    from protgen_jax.data import resolve
    from protgen_jax.recipes import recipe_for_run

    started = time.perf_counter()
    for name, value, low in (("--num", num, 2), ("--per-family", per_family, 1),
                             ("--interpolate-steps", interpolate_steps, 2),
                             ("--nll-sequences", nll_sequences, 0), ("--seed", seed, 0)):  # fmt: skip
        if value < low:
            raise DataError(f"{name} must be >= {low}, got {value}")
    warmup = num if warmup is None else warmup
    if not 1 <= warmup <= num:
        raise DataError(f"--warmup must lie in 1..--num ({num}), got {warmup}")
    specs = parse_specs(runs)
    recipes = {}
    for spec in specs:
        try:
            recipes[spec.label] = recipe_for_run(spec.path)
        except DataError as err:
            raise DataError(f"run spec {spec.text!r}: {err}") from None
    out_dir = Path(out)
    _check_out(out_dir, specs, force)
    train_path = Path(train) if train else resolve("sequences", "family_domains_train.fasta")
    ref = build_reference(Path(data), train_path)
    chosen = _families(families, ref)
    pair = _interpolation_pair(interpolate, ref)
    loaded: dict[Path, Any] = {}
    scored: dict[Path, Any] = {}  # held-out likelihood per run folder
    unsupported: dict[str, dict[str, str]] = {}
    for spec in specs:  # load every run and check every option before any sampling
        recipe, where = recipes[spec.label], spec.path.resolve()
        try:
            if where not in loaded:
                loaded[where] = recipe.load_run(spec.path)
            run = loaded[where]
            none = np.zeros(0, np.int64)
            recipe.generate_sequences(run, jax.random.key(0), 0, lengths=none, options=spec.options)
        except DataError as err:
            raise DataError(f"run spec {spec.text!r}: {err}") from None
        unsupported[spec.label] = {}
        for name in chosen:
            try:
                recipe.generate_sequences(
                    run, jax.random.key(0), 0, lengths=none, family=name, options=spec.options
                )
            except DataError as err:
                unsupported[spec.label][name] = str(err)
    root = keys.named(keys.root_key(seed), "compare")
    plan = Plan(ref, root, num, warmup, per_family, chosen, pair, interpolate_steps, nll_sequences)
    result: dict[str, Any] = {
        "command": "protgen " + " ".join(argv) if argv else None,
        "data": str(Path(data).resolve()),
        "num_heldout": len(ref.heldout),
        "num": num,
        "warmup": warmup,
        "seed": seed,
        "families": chosen,
        "per_family": per_family,
        "interpolate": list(pair) if pair else None,
        "nll_sequences": len(plan.nll_index),
        "classifier": {
            "kind": "3-mer multinomial naive Bayes (baselines.KmerNaiveBayes, alpha 0.1) fitted on "
            "the training reference",
            "num_families": len(ref.vocabulary),
            **ref.independence,
        },
        "pair_statistic": "TV of the overlapping adjacent-pair (2-mer) distribution to held-out; "
        "column pair covariances (metrics.pair_covariances) need aligned sequences",
        "machine": _machine(),
        "rows": [],
        "pending": [s.label for s in specs],
        "complete": False,
    }

    def save() -> None:
        result["seconds"] = time.perf_counter() - started
        result["complete"] = not result["pending"]
        save_json_atomic(out_dir / "compare.json", result)
        write_markdown(result, out_dir / "compare.md")
        write_figure(result, out_dir / "compare.png")

    with tqdm(
        total=len(specs) + 3, desc="compare", disable=not progress, dynamic_ncols=True
    ) as bar:
        bar.set_postfix_str("held-out reference")
        result["rows"].extend(_reference_rows(ref, plan))
        bar.update(2)
        unigram = {
            "label": "unigram",
            "kind": "baseline",
            "note": "residues drawn i.i.d. from the training reference's composition (conditional: "
            "the family's composition)",
        }
        _measure_row(
            unigram, _unigram_hooks(ref, plan), plan, ref, keys.named(root, "row", "unigram"), {},
            bar,
        )  # fmt: skip
        result["rows"].append(unigram)
        save()
        bar.update(1)
        for spec in specs:
            recipe, run = recipes[spec.label], loaded[spec.path.resolve()]
            info = run.run.read_info()
            row = {
                "label": spec.label, "kind": "model", "spec": spec.text, "run": str(spec.path),
                "model": info.get("family"), "recipe": recipe.family, "options": spec.options,
                "train": training_time(spec.path),
            }  # fmt: skip

            _measure_row(
                row, _model_hooks(recipe, run, spec.options, progress, scored), plan, ref,
                keys.named(root, "row", spec.label), unsupported[spec.label], bar,
            )  # fmt: skip
            result["rows"].append(row)
            result["pending"].remove(spec.label)
            save()
            bar.update(1)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    save()
    print(f"compare: wrote {out_dir}/compare.json, compare.md, compare.png", file=sys.stderr)
    return result
