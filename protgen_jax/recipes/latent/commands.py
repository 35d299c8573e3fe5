"""The commands of a latent-diffusion run: ``protgen sample LAT`` and ``protgen evaluate LAT``.

A sample: ``x0`` from the latent DDPM (DDIM with ``--steps`` steps, default the run's
``sample_steps``; ``--steps 0`` or ``--ddpm``: ancestral over all ``T``), ``z = m + s x0`` (undoing
the standardisation), then one fixed-width row from the VAE decoder ``softmax(logits(z) / tau)``
(``--temperature`` tau, independent per position) cut at its first END. The decoder gets the null
family by default (``--decoder-family null``: the family comes from the latent sampler alone);
``--decoder-family requested`` passes the requested family to a conditional VAE's decoder too.

Without ``--family`` the default (``--unconditional mixture``) draws each sample's family from the
training frequencies and samples ``p(z | y)`` at scale 1: the marginal ``sum_y p(y) p(z | y)``
through the conditional model, which sees ``1 - cfg_drop`` of the training batches;
``--unconditional null`` samples the null-family model (trained on the ``cfg_drop`` share).

Family conditioning: ``--family F`` with classifier-free guidance ``--guidance w`` (default 1: the
conditional model; 0: the null family) or, instead, classifier guidance ``--classifier CLF
--classifier-scale s`` with a noisy classifier trained on this run (``protgen train classifier``).

``evaluate`` (JSON at ``--out``, the guidance plot beside it as ``<stem>.png``):

- ``unconditional``: latent-diffusion samples (the null-family model, and the family mixture
  ``y ~ p_train(y)``, ``z ~ p(z | y)`` at scale 1: the same marginal through the conditional model,
  which sees 90% of the training batches), the same VAE's prior samples (``z ~ N(0, I)``) and
  natural held-out sequences, each against a disjoint held-out reference: composition and 3-mer
  total variation, Pearson r of per-position frequencies and of pair correlations of the fixed-width
  rows, plus ``sequence_eval.sample_quality`` (distances to training, diversity, novelty);
- ``conditional``: for the ``cond_families`` largest families, the fraction of samples the 3-mer
  naive Bayes of the VAE's training sequences assigns to the requested family, and the within-family
  diversity ``1 - mean pairwise identity``, at each classifier-free scale (``eval_guidance``) and,
  with ``--classifier``, each classifier scale (``eval_classifier_scales``).

The comparison hooks (:meth:`Latent.generate_sequences`, :meth:`Latent.sequence_nll`,
:meth:`Latent.latent_interpolation`) serve ``protgen compare``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import alphabet, keys
from protgen_jax.atomic import save_json_atomic
from protgen_jax.baselines import KmerNaiveBayes
from protgen_jax.data import resolve
from protgen_jax.data.fasta import write_fasta
from protgen_jax.data.fixed_width import END, cut_at_end, reconstruction_mask
from protgen_jax.errors import DataError
from protgen_jax.metrics import (
    column_frequencies,
    composition,
    kmer_counts,
    kmer_spectrum,
    mean_alignment_identity,
    pair_covariances,
    read_composition_csv,
    total_variation,
)
from protgen_jax.recipes.base import LoadedRun, OutputPlan, RunDir, padded_map
from protgen_jax.recipes.latent.model import classifier_log_prob_fn, unstandardise
from protgen_jax.recipes.latent.recipe import (
    LatentRecipe,
    fingerprint,
    load_vae_of,
)
from protgen_jax.recipes.options import Option
from protgen_jax.recipes.seqdiff.model import progress_bar
from protgen_jax.sequence_eval import sample_quality

SAMPLING = (
    Option("steps", int, None, "DDIM steps (default: the run's sample_steps; 0 = DDPM, T steps)",
           low=0),
    Option("ddpm", bool, False, "ancestral DDPM over all T steps (same as --steps 0)"),
    Option("classifier", str, None, "noisy-classifier run for classifier guidance (needs --family)"),
    Option("classifier_scale", float, None, "classifier-guidance scale s (default 1)", low=0),
    Option("temperature", float, 1.0, "VAE decoder temperature (0 = argmax)", low=0),
    Option("decoder_family", str, "null", "family given to a conditional VAE's decoder",
           choices=("null", "requested")),
    Option("unconditional", str, "mixture", "without --family: the family mixture (y ~ training "
           "frequencies, z ~ p(z | y)) or the null-family model", choices=("mixture", "null")),
)  # fmt: skip

COMMANDS = {
    "sample": (
        Option("num", int, 100, "sequences to generate", low=1),
        Option("family", str, None, "family label to condition on"),
        Option("guidance", float, None, "classifier-free scale (needs --family; default 1)", low=0),
        *SAMPLING,
    ),
    "evaluate": (
        Option("num", int, None, "unconditional samples (default: the run's eval_samples)", low=2),
        Option("classifier", str, None, "noisy-classifier run: add the classifier-guidance sweep"),
        Option("steps", int, None, "DDIM steps (default: the run's sample_steps; 0 = DDPM)", low=0),
        Option(
            "families",
            int,
            None,
            "largest families of the fidelity check (default: the run's cond_families; 0 = none)",
            low=0,
        ),
    ),
}

GENERATE_OPTIONS = (
    "guidance", "classifier", "classifier_scale", "steps", "temperature", "unconditional"
)  # fmt: skip
"""The ``options`` keys of :meth:`Latent.generate_sequences` (``protgen compare RUN@key=value``)."""


# ------------------------------------------------------------------------------ shared parts


def family_label(run: LoadedRun, family: str | None) -> int:
    """The label of ``family`` (-1 for None); DataError when the run does not know it."""
    names = run.data.family_names
    if family is None:
        return -1
    if not names:
        raise DataError(f"--family {family!r}: this run was trained without family labels")
    if family not in names:
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise DataError(f"family {family!r} is not one of the run's {len(names)} families: {shown}")
    return names.index(family)


def check_classifier(latent_dir: Path, classifier: str) -> None:
    """DataError unless ``classifier`` is a noisy-classifier run trained on this latent run's codes
    (same fingerprint: standardisation, families, code source, schedule)."""
    from protgen_jax.recipes.classifier import RECIPE as CLASSIFIER
    from protgen_jax.recipes.latent import RECIPE as LATENT

    info = RunDir(classifier).read_info()
    if info.get("recipe") != "classifier":
        raise DataError(
            f"--classifier {classifier}: a {info.get('family')!r} run, not a noisy classifier "
            "(train one with `protgen train classifier --latent LAT`)"
        )
    latent = RunDir(latent_dir)
    own = fingerprint(LATENT.read_config(latent.config), LATENT.load_data(latent))
    theirs = CLASSIFIER.load_data(RunDir(classifier)).fingerprint
    if own != theirs:
        trained_on = CLASSIFIER.read_config(RunDir(classifier).config).latent
        raise DataError(
            f"--classifier {classifier} was trained on the latent run {trained_on}, whose codes "
            f"differ from {latent_dir}'s; train a classifier with --latent {latent_dir}"
        )


def _vae(run: LoadedRun) -> Any:
    """The run's VAE (loaded once per VAE run folder and process)."""
    path = str(Path(run.config.vae).resolve())
    if path not in _VAE_CACHE:
        _VAE_CACHE[path] = load_vae_of(run.config)
    return _VAE_CACHE[path]


_VAE_CACHE: dict[str, Any] = {}


def generate_codes(
    run: LoadedRun, key: jax.Array, labels: np.ndarray, *, steps: int, guidance: float = 1.0,
    classifier: LoadedRun | None = None, classifier_scale: float = 1.0, bar: Any = None,
) -> np.ndarray:  # fmt: skip
    """Latent codes ``z [N, D]`` (unstandardised) for labels ``[N]`` (-1 = unconditional).

    Batches of ``min(sample_batch, N)`` rows through :func:`padded_map`; batch ``c`` uses
    ``fold_in(key, c)``. See :meth:`~protgen_jax.recipes.latent.model.LatentModel.sample`.
    """
    model, params = run.model, run.params
    labels = np.where(np.asarray(labels) < 0, model.null_label, labels).astype(np.int32)
    log_prob = None
    if classifier is not None:
        log_prob = classifier_log_prob_fn(classifier.model.module, classifier.params)
    size = max(1, min(int(run.config.sample_batch), len(labels)))

    def one(batch_labels, chunk):
        return model.sample(
            params, jax.random.fold_in(key, int(chunk[0])), jnp.asarray(batch_labels),
            steps=steps, guidance=guidance, log_prob_fn=log_prob,
            classifier_scale=classifier_scale,
        )  # fmt: skip

    x0 = padded_map(one, (labels, np.arange(len(labels)) // size), size, bar)
    return unstandardise(x0, run.data.mean, run.data.std)


def decode_rows(
    run: LoadedRun, key: jax.Array, z: np.ndarray, labels: np.ndarray | None,
    temperature: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """Fixed-width rows ``[N, W]`` from the VAE decoder (``labels`` None: the null family)."""
    from protgen_jax.recipes.cvae import sample_tokens

    vae = _vae(run)
    family = None
    if labels is not None:
        family = np.where(np.asarray(labels) < 0, vae.null_family, labels).astype(np.int32)
    return sample_tokens(vae, key, z, family, None, temperature)


def _steps(run: LoadedRun, opts: SimpleNamespace) -> int:
    if getattr(opts, "ddpm", False):
        if opts.steps not in (None, 0):
            raise DataError(f"--ddpm runs all T steps; drop --steps {opts.steps}")
        return 0
    steps = run.config.sample_steps if opts.steps is None else int(opts.steps)
    if steps > run.config.num_timesteps:
        raise DataError(f"--steps {steps} exceeds the run's {run.config.num_timesteps} timesteps")
    return steps


def _sample_rows(
    run: LoadedRun, key: jax.Array, num: int, label: int, *, steps: int, guidance: float,
    classifier: str | None, classifier_scale: float, temperature: float, decoder_family: str,
    unconditional: str = "mixture", bar: Any = None,
) -> np.ndarray:  # fmt: skip
    """``num`` fixed-width rows for one label (-1 = unconditional) under the sampling options.

    Unconditional rows: ``unconditional = "null"`` samples the null-family model; ``"mixture"``
    draws each row's family from the training frequencies (``named(key, "mixture_labels")``) and
    samples ``p(z | y)`` at scale 1 (the same marginal through the conditional model).
    """
    clf = None
    if classifier is not None:
        from protgen_jax.recipes.classifier import RECIPE as CLASSIFIER

        check_classifier(run.run.path, classifier)
        clf = CLASSIFIER.load_run(classifier)
    labels = np.full(num, label, np.int32)
    if label < 0 and unconditional == "mixture":
        labels = mixture_labels(run, keys.named(key, "mixture_labels"), num)
        guidance = 1.0
    z = generate_codes(
        run, keys.named(key, "codes"), labels, steps=steps, guidance=guidance, classifier=clf,
        classifier_scale=classifier_scale, bar=bar,
    )  # fmt: skip
    decoder_labels = None
    if decoder_family == "requested" and label >= 0:
        if not _vae(run).conditional:
            raise DataError(
                "--decoder-family requested: the VAE was trained without family labels "
                "(condition=none); its decoder takes only the null family"
            )
        decoder_labels = labels
    return decode_rows(run, keys.named(key, "decode"), z, decoder_labels, temperature)


def mixture_labels(run: LoadedRun, key: jax.Array, num: int) -> np.ndarray:
    """``num`` family labels drawn from the training codes' labels (-1 rows when there are none)."""
    known = run.data.labels[~run.data.holdout & (run.data.labels >= 0)]
    if not len(known):
        return np.full(num, -1, np.int32)
    return keys.numpy_rng(key).choice(known, size=num).astype(np.int32)


def _check_family_options(label: int, guidance: float | None, classifier: str | None) -> None:
    if classifier is not None and label < 0:
        raise DataError("--classifier needs --family (classifier guidance steers to a family)")
    if classifier is not None and guidance is not None:
        raise DataError("--guidance and --classifier are two kinds of guidance; give one of them")
    if guidance is not None and guidance != 1.0 and label < 0:
        raise DataError("--guidance needs --family (classifier-free guidance blends a family)")


# ------------------------------------------------------------------------------------ sample


def sample(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen sample LAT``: sequences to a FASTA (see the module docstring); rows whose first
    token is END decode to nothing and are left out (``num_empty``)."""
    started = time.perf_counter()
    label = family_label(run, opts.family)
    _check_family_options(label, opts.guidance, opts.classifier)
    if opts.classifier_scale is not None and not opts.classifier:
        raise DataError("--classifier-scale needs --classifier (the noisy classifier it scales)")
    guidance = 1.0 if opts.guidance is None else float(opts.guidance)
    scale = 1.0 if opts.classifier_scale is None else float(opts.classifier_scale)
    steps = _steps(run, opts)
    num = int(opts.num)
    with progress_bar(num, "sample", False if opts.quiet else None) as bar:
        rows = _sample_rows(
            run, keys.named(key, "generate"), num, label, steps=steps, guidance=guidance,
            classifier=opts.classifier, classifier_scale=scale,
            temperature=float(opts.temperature), decoder_family=opts.decoder_family,
            unconditional=opts.unconditional, bar=bar,
        )  # fmt: skip
    seqs = cut_at_end(rows)
    prefix = f"{opts.family}|" if opts.family else ""
    how = f"classifier_scale={scale:g}" if opts.classifier else f"guidance={guidance:g}"
    note = f" {how}" if opts.family else ""
    records = [
        (f"{prefix}sample_{i} latent steps={steps or 'ddpm'}{note} length={len(s)}",
         alphabet.decode(s))
        for i, s in enumerate(seqs) if len(s)
    ]  # fmt: skip
    write_fasta(Path(opts.out), records)
    return {
        "out": str(opts.out), "num": len(records), "num_empty": num - len(records),
        "family": opts.family, "guidance": None if opts.classifier else guidance,
        "classifier": opts.classifier, "classifier_scale": scale if opts.classifier else None,
        "steps": steps, "temperature": float(opts.temperature),
        "seconds": time.perf_counter() - started,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- evaluate


def _nonempty(rows: np.ndarray) -> list[np.ndarray]:
    return [s for s in cut_at_end(rows) if len(s)]


def _fidelity(
    rows: np.ndarray, requested: np.ndarray, classifier: KmerNaiveBayes
) -> dict[str, float]:
    """Fraction assigned to the requested family (empty rows count as misses) and the mean
    within-family diversity ``1 - mean pairwise identity``."""
    seqs = cut_at_end(rows)
    keep = np.array([len(s) > 0 for s in seqs])
    predicted = np.full(len(seqs), -1)
    if keep.any():
        predicted[keep] = classifier.predict([s for s, k in zip(seqs, keep, strict=True) if k])
    diversity = [
        1.0 - mean_alignment_identity([s for s, r in zip(seqs, requested, strict=True)
                                       if r == f and len(s)])
        for f in np.unique(requested)
    ]  # fmt: skip
    return {
        "fraction_assigned": float(np.mean(predicted == requested)),
        "within_family_diversity": float(np.nanmean(diversity)),
        "fraction_empty": float(np.mean(~keep)),
    }


def _at_equal_diversity(reference: list[dict], others: list[dict]) -> list[dict]:
    """For each entry of ``others``, the ``reference`` curve's fidelity at the same within-family
    diversity (linear interpolation between its settings; None outside their range)."""
    points = sorted((e["within_family_diversity"], e["fraction_assigned"]) for e in reference)
    out = []
    for entry in others:
        d = entry["within_family_diversity"]
        inside = bool(points) and points[0][0] <= d <= points[-1][0]
        value = float(np.interp(d, *zip(*points, strict=True))) if inside else None
        out.append({"scale": entry["scale"], "diversity": d,
                    "classifier_guidance_fraction_assigned": entry["fraction_assigned"],
                    "classifier_free_fraction_assigned": value})  # fmt: skip
    return out


def _row_statistics(rows: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Distances of fixed-width ``rows`` to ``reference`` rows: composition and 3-mer TV of the cut
    sequences, Pearson r of per-position frequencies and of pair correlations (21 classes) of the
    rows in the canonical form (END after the first END: the decoder is not trained there)."""
    rows = np.where(reconstruction_mask(rows), rows, END)
    reference = np.where(reconstruction_mask(reference), reference, END)
    seqs, ref = _nonempty(rows), _nonempty(reference)
    f_s, f_r = column_frequencies(rows, 21), column_frequencies(reference, 21)
    c_s, c_r = pair_covariances(rows, 21), pair_covariances(reference, 21)
    return {
        "composition_tv_heldout": total_variation(composition(seqs), composition(ref)),
        "kmer3_tv_heldout": total_variation(kmer_spectrum(seqs), kmer_spectrum(ref)),
        "position_freq_pearson_heldout": float(np.corrcoef(f_s.ravel(), f_r.ravel())[0, 1]),
        "pair_corr_pearson_heldout": float(np.corrcoef(c_s, c_r)[0, 1]),
        "fraction_empty": float(np.mean(rows[:, 0] == END)),
    }


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Every evaluation of the module docstring to ``opts.out`` (JSON, rewritten after each stage)
    and ``<stem>.png`` (fidelity vs diversity per guidance kind)."""
    from protgen_jax.plots import plot_lines
    from protgen_jax.recipes.cvae import heldout_arrays, training_arrays

    started = time.perf_counter()
    cfg, data = run.config, run.data
    num = int(opts.num or cfg.eval_samples)
    steps = _steps(run, opts)
    if opts.classifier:
        check_classifier(run.run.path, opts.classifier)
    vae = _vae(run)
    progress = False if opts.quiet else None
    out = Path(opts.out)
    train_rows, train_family = training_arrays(vae)[:2]
    held_rows = heldout_arrays(vae)[0]
    order = keys.numpy_rng(keys.named(key, "heldout")).permutation(len(held_rows))
    natural_rows = held_rows[order[:num]]
    reference_rows = held_rows[order[num:]]
    if len(reference_rows) < 2:
        raise DataError(
            f"--num {num}: the VAE run's held-out split ({len(held_rows)} rows) needs more rows "
            "than --num for a disjoint reference"
        )
    train_seqs = cut_at_end(train_rows)
    result: dict[str, Any] = {
        "vae": str(cfg.vae), "latent_source": cfg.latent_source, "steps": steps,
        "num_samples": num, "num_reference_heldout": int(len(reference_rows)),
        "complete": False, "pending": ["unconditional", "conditional"],
    }  # fmt: skip

    def finished(stage: str) -> None:
        result["pending"].remove(stage)
        result["complete"] = not result["pending"]
        result["seconds"] = time.perf_counter() - started
        save_json_atomic(out, result)

    # unconditional: latent diffusion vs the VAE prior vs natural held-out
    with progress_bar(num, "unconditional samples", progress) as bar:
        z = generate_codes(
            run, keys.named(key, "unconditional"), np.full(num, -1), steps=steps, guidance=0.0,
            bar=bar,
        )  # fmt: skip
    latent_rows = decode_rows(run, keys.named(key, "decode_latent"), z, None)
    # the marginal through the conditional model: y ~ training frequencies, z ~ p(z | y) (scale 1)
    drawn = mixture_labels(run, keys.named(key, "mixture_labels"), num)
    mixture_rows = None
    if np.all(drawn >= 0):
        with progress_bar(num, "family-mixture samples", progress) as bar:
            z_mix = generate_codes(
                run, keys.named(key, "mixture"), drawn, steps=steps, guidance=1.0, bar=bar
            )
        mixture_rows = decode_rows(run, keys.named(key, "decode_mixture"), z_mix, None)
    prior_z = np.asarray(jax.random.normal(keys.named(key, "prior"), (num, data.latent_dim)))
    prior_rows = decode_rows(run, keys.named(key, "decode_prior"), prior_z, None)
    uniref = read_composition_csv(resolve("sequences", "uniref50_aa_composition.csv"))
    counts = kmer_counts(train_seqs)
    natural = _nonempty(natural_rows)
    report: dict[str, Any] = {}
    sets = [("latent_diffusion", latent_rows), ("latent_diffusion_family_mixture", mixture_rows),
            ("vae_prior", prior_rows), ("natural_heldout", natural_rows)]  # fmt: skip
    for name, rows in [(n, r) for n, r in sets if r is not None]:
        stats = _row_statistics(rows, reference_rows)
        quality = sample_quality(_nonempty(rows), natural, train_seqs, counts, uniref)
        report[name] = {**stats, **quality["samples"]}
    result["unconditional"] = report
    finished("unconditional")

    # conditional: fidelity and within-family diversity per guidance setting
    names = data.family_names
    num_families = cfg.cond_families if opts.families is None else int(opts.families)
    if not names or num_families == 0:
        result["conditional"] = None
        finished("conditional")
        return result
    known = (train_family >= 0) & (train_family < len(names))
    nb = KmerNaiveBayes.fit(
        [s for s, k in zip(train_seqs, known, strict=True) if k], train_family[known], len(names)
    )
    counts_f = np.bincount(data.labels[~data.holdout & (data.labels >= 0)], minlength=len(names))
    families = np.argsort(-counts_f)[:num_families]
    requested = np.repeat(families, cfg.cond_samples).astype(np.int32)
    settings = [("classifier_free", float(s)) for s in cfg.eval_guidance]
    clf = None
    if opts.classifier:
        from protgen_jax.recipes.classifier import RECIPE as CLASSIFIER

        clf = CLASSIFIER.load_run(opts.classifier)
        settings += [("classifier", float(s)) for s in cfg.eval_classifier_scales]
    held_labels = data.labels[data.holdout]
    held_seqs = cut_at_end(held_rows)
    labelled = [i for i, lab in enumerate(held_labels) if lab >= 0 and len(held_seqs[i])]
    natural_div = [
        1.0 - mean_alignment_identity(
            [s for s, lab in zip(held_seqs, held_labels, strict=True)
             if lab == f and len(s)][: cfg.cond_samples]
        )
        for f in families
    ]  # fmt: skip
    cond: dict[str, Any] = {
        "families": [names[f] for f in families], "samples_per_family": cfg.cond_samples,
        "classifier": "3-mer multinomial naive Bayes fitted on the VAE's training sequences",
        "natural_heldout_within_family_diversity": float(np.nanmean(natural_div)),
        "classifier_accuracy_natural_heldout": float(
            np.mean(nb.predict([held_seqs[i] for i in labelled]) == held_labels[labelled])
        )
        if labelled
        else None,
        "classifier_free": [], "classifier_guidance": [],
    }  # fmt: skip
    total = len(settings) * len(requested)
    with progress_bar(total, "conditional samples", progress) as bar:
        for kind, scale in settings:
            name = f"{kind}_{scale:g}"
            z = generate_codes(
                run, keys.named(key, name), requested, steps=steps,
                guidance=scale if kind == "classifier_free" else 1.0,
                classifier=clf if kind == "classifier" else None, classifier_scale=scale,
                bar=bar,
            )  # fmt: skip
            rows = decode_rows(run, keys.named(key, name, "decode"), z, None)
            entry = {"scale": scale, **_fidelity(rows, requested, nb)}
            cond["classifier_free" if kind == "classifier_free" else "classifier_guidance"].append(
                entry
            )
    cond["classifier_free_at_equal_diversity"] = _at_equal_diversity(
        cond["classifier_free"], cond["classifier_guidance"]
    )
    result["conditional"] = cond
    series, labels = {}, {}
    for kind, title in (("classifier_free", "classifier-free"),
                        ("classifier_guidance", "classifier guidance")):  # fmt: skip
        if cond[kind]:
            series[title] = ([e["within_family_diversity"] for e in cond[kind]],
                             [e["fraction_assigned"] for e in cond[kind]])  # fmt: skip
            labels[title] = [f"{e['scale']:g}" for e in cond[kind]]
    plot_lines(
        series, out.with_suffix(".png"), "within-family diversity (1 - mean identity)",
        "fraction assigned to the requested family", title="latent diffusion: guidance",
        point_labels=labels,
    )  # fmt: skip
    finished("conditional")
    return result


# ------------------------------------------------------------------------------- the recipe


def _choice(options: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = str(options.get(name, allowed[0]))
    if value not in allowed:
        raise DataError(f"option {name}: one of {', '.join(allowed)}, got {value!r}")
    return value


class Latent(LatentRecipe):
    """Latent diffusion: training hooks (:class:`LatentRecipe`), commands and comparison hooks."""

    commands = COMMANDS
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        if command == "evaluate":
            return OutputPlan(False, [out, out.with_suffix(".png")], [])
        return OutputPlan(False, [out], [])

    def check_command(self, command: str, opts: SimpleNamespace, runs: list[RunDir]) -> None:
        """``--classifier`` must be a classifier of this run's codes (before any model loads)."""
        if getattr(opts, "classifier", None):
            check_classifier(runs[0].path, opts.classifier)

    # ---------------------------------------------------------------- comparison hooks
    def generate_sequences(
        self, run: LoadedRun, key: jax.Array, num: int, *, lengths: np.ndarray,
        family: str | None = None, options: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> list[str]:  # fmt: skip
        """``num`` sequences (``lengths`` ignored: the VAE's rows end at their END token; an empty
        row is drawn again, up to 5 rounds). ``options``: ``guidance``, ``classifier``,
        ``classifier_scale``, ``steps``, ``temperature``, ``unconditional`` (``mixture``, the
        default, or ``null``; for ``family`` None). Guidance applies to conditional samples only: with
        ``family`` None, ``guidance`` and ``classifier`` are checked and then left unused."""
        del lengths
        options = dict(options or {})
        unknown = sorted(set(options) - set(GENERATE_OPTIONS))
        if unknown:
            raise DataError(
                f"latent runs take the options {', '.join(GENERATE_OPTIONS)}; "
                f"unknown: {', '.join(unknown)}"
            )
        label = family_label(run, family)
        guidance = options.get("guidance")
        classifier = options.get("classifier")
        steps = _steps(run, SimpleNamespace(steps=options.get("steps")))
        _choice(options, "unconditional", ("mixture", "null"))
        if classifier is not None:
            check_classifier(run.run.path, classifier)
        if family is None:  # as the seqdiff hook: guidance steers conditional samples only
            guidance = classifier = None
        _check_family_options(label, guidance, classifier)
        if num == 0:  # `protgen compare` checks a spec this way before sampling anything
            return []
        out: list[str] = []
        with progress_bar(num, "latent samples", progress) as bar:
            for attempt in range(5):
                rows = _sample_rows(
                    run, keys.named(key, f"round{attempt}"), num - len(out), label, steps=steps,
                    guidance=1.0 if guidance is None else float(guidance), classifier=classifier,
                    classifier_scale=float(options.get("classifier_scale", 1.0)),
                    temperature=float(options.get("temperature", 1.0)), decoder_family="null",
                    unconditional=_choice(options, "unconditional", ("mixture", "null")), bar=bar,
                )  # fmt: skip
                out += [alphabet.decode(s) for s in cut_at_end(rows) if len(s)]
                if len(out) >= num:
                    break
        if len(out) < num:
            raise DataError(f"{run.run.path}: the VAE decoded only empty rows for {num} samples")
        return out[:num]

    def sequence_nll(
        self, run: LoadedRun, sequences: list[str], families: list[str | None],
        progress: bool = False,
    ) -> tuple[float, str] | None:  # fmt: skip
        """None: a diffusion model over a VAE's latent space defines no tractable sequence
        likelihood (``p(x) = int p_theta(x | z) p_diffusion(z) dz`` would need the diffusion's
        density of every ``z`` along an importance sampler; not implemented)."""
        return None

    def latent_interpolation(
        self, run: LoadedRun, key: jax.Array, family_a: str, family_b: str, steps: int, num: int
    ) -> list[list[str]] | None:
        """The VAE's latent space: ``steps`` points ``(1 - a) mu_A + a mu_B`` between the mean
        encoder means of the two families' training sequences, ``num`` decoded rows per point (null
        family, temperature 1; empty rows give empty strings)."""
        a, b = family_label(run, family_a), family_label(run, family_b)
        train = ~run.data.holdout
        mu = run.data.mu
        centre_a = mu[train & (run.data.labels == a)].mean(0)
        centre_b = mu[train & (run.data.labels == b)].mean(0)
        out = []
        for i, alpha in enumerate(np.linspace(0.0, 1.0, steps)):
            z = np.repeat(((1 - alpha) * centre_a + alpha * centre_b)[None], num, 0)
            rows = decode_rows(run, jax.random.fold_in(key, i), z.astype(np.float32), None)
            out.append([alphabet.decode(s) for s in cut_at_end(rows)])
        return out


RECIPE = Latent()
