"""The commands of a ``cvae`` run (``protgen sample`` / ``protgen evaluate``) and the comparison hooks.

Generation: ``z ~ N(0, I)``, the decoder's logits for the requested family label (the null label when
none) and property vector, one token per position from ``softmax(logits / T)``, each row cut at its
first END (an END-first row is an empty sequence, counted). Properties that are not requested are
drawn jointly with a random training record (of the requested family when there is one), so an
unconditional sample follows the training distribution of properties.

``evaluate`` (JSON at ``--out``, a property-tracking plot per property beside it):

- held-out negative ELBO per residue (the first ``W`` residues of every held-out record, or of every
  record of ``--data``, the END token's cost included, ``--draws`` posterior draws averaged), with the
  family labels and with the null label, next to the unigram and per-family unigram baselines on the
  same residues (``--num 0`` stops here);
- sample statistics (``sequence_eval.sample_quality``) of unconditional samples vs held-out sequences;
- family fidelity: the fraction of family-conditional samples that the 3-mer naive Bayes classifier
  (fitted on the training split) assigns to the requested family (``sequence_eval.conditional_report``);
- property tracking (built-in properties of the run): :mod:`.property_report`.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import numpy as np

from protgen_jax import keys
from protgen_jax.alphabet import AMINO_ACIDS
from protgen_jax.alphabet import encode as encode_letters
from protgen_jax.atomic import save_json_atomic
from protgen_jax.baselines import KmerNaiveBayes, UnigramBaseline
from protgen_jax.data import resolve
from protgen_jax.data.fasta import write_fasta
from protgen_jax.data.fixed_width import (
    cut_at_end,
    encode_many,
    reconstruction_mask,
    tokens_to_strings,
)
from protgen_jax.data.sequences import read_sequences
from protgen_jax.errors import DataError
from protgen_jax.metrics import kmer_counts, read_composition_csv
from protgen_jax.properties import BUILTIN
from protgen_jax.recipes.base import LoadedRun, OutputPlan
from protgen_jax.recipes.cvae.api import (
    TrainedVAE,
    decode_logits,
    encode,
    sample_tokens,
    trained_vae,
    training_arrays,
    zscore,
)
from protgen_jax.recipes.cvae.property_report import achieved, generate_rows, property_tracking
from protgen_jax.recipes.cvae.recipe import CVAERecipe
from protgen_jax.recipes.options import Option
from protgen_jax.sequence_eval import conditional_report, perplexity_report, sample_quality
from protgen_jax.vae import gaussian_kl, reparameterize_with_noise, token_log_probs

COMMANDS = {
    "sample": (
        Option("num", int, 100, "sequences to generate", low=1),
        Option("family", str, None, "family label to condition on (conditional runs)"),
        Option("property", str, None, "requested properties, NAME=VALUE[,NAME=VALUE] in raw units"),
        Option("temperature", float, 1.0, "softmax temperature (0 = argmax)", low=0),
    ),
    "evaluate": (
        Option(
            "num",
            int,
            200,
            "unconditional samples for the sample statistics (0 = likelihood only)",
            low=0,
        ),
        Option("draws", int, 4, "posterior draws per scored sequence in the ELBO", low=1),
        Option("data", str, None, "FASTA to score (default: the run's held-out split)"),
    ),
}

GENERATE_OPTIONS = ("temperature",)


def vae_of(run: LoadedRun) -> TrainedVAE:
    return trained_vae(run.config, run.data, run.model, run.params)


def family_label(vae: TrainedVAE, family: str | None) -> int:
    """The label of ``family`` (``null_family`` for None); DataError when the run cannot use it."""
    if not family:
        return vae.null_family
    if not vae.conditional:
        raise DataError(
            f"--family {family!r}: this run was trained without family labels (condition=none)"
        )
    if family not in vae.family_names:
        shown = ", ".join(vae.family_names[:12]) + (" ..." if len(vae.family_names) > 12 else "")
        raise DataError(
            f"family {family!r} is not one of the run's {len(vae.family_names)} families: {shown}"
        )
    return vae.family_names.index(family)


def parse_property_request(vae: TrainedVAE, text: str | None) -> dict[str, float]:
    """``"net_charge=3,hydrophobic_fraction=0.4"`` -> ``{name: value}`` (names of the run)."""
    if not text:
        return {}
    if not vae.property_names:
        raise DataError("--property: this run was trained without properties")
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in vae.property_names:
            raise DataError(
                f"--property {part!r}: expected NAME=VALUE with NAME one of "
                f"{', '.join(vae.property_names)}"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise DataError(f"--property {part!r}: {value!r} is not a number") from None
    return out


def draw_properties(
    vae: TrainedVAE, label: np.ndarray, requested: dict[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Raw properties ``[B, P]``: those of a random training record of the family ``label[i]`` (any
    record for the null label), with the ``requested`` ones replaced."""
    data = vae.data
    train = data.split(False)
    labels = data.sequences.labels[train]
    out = np.zeros((len(label), len(vae.property_names)), np.float32)
    for i, lab in enumerate(label):
        pool = train if lab == vae.null_family else train[labels == lab]
        out[i] = data.properties[rng.choice(pool if len(pool) else train)]
    for name, value in requested.items():
        out[:, vae.property_names.index(name)] = value
    return out


def sample(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen sample``: FASTA of ``--num`` sequences; headers record the requested family and
    properties and the achieved built-in properties."""
    vae, started = vae_of(run), time.perf_counter()
    num = int(opts.num)
    label = family_label(vae, opts.family)
    requested = parse_property_request(vae, opts.property)
    labels = np.full(num, label, np.int32)
    props = None
    if vae.property_names:
        props = draw_properties(vae, labels, requested, keys.numpy_rng(keys.named(key, "props")))
    rows = generate_rows(vae, keys.named(key, "generate"), labels, props, float(opts.temperature))
    strings, got = tokens_to_strings(rows), achieved(rows)
    prefix = f"{opts.family}|" if opts.family else ""
    asked = "".join(f" requested_{k}={v:g}" for k, v in requested.items())
    fasta = []
    for i, s in enumerate(strings):
        have = " ".join(f"{n}={got[i, j]:.3g}" for j, n in enumerate(BUILTIN))
        fasta.append(
            (f"{prefix}sample_{i} family={opts.family or 'none'}{asked} {have} length={len(s)}", s)
        )
    write_fasta(Path(opts.out), fasta)
    return {
        "out": str(opts.out), "num": num, "family": opts.family, "requested": requested,
        "temperature": float(opts.temperature), "num_empty": int(sum(not s for s in strings)),
        "achieved_mean": {n: float(got[:, j].mean()) for j, n in enumerate(BUILTIN)},
        "seconds": time.perf_counter() - started,
    }  # fmt: skip


# ------------------------------------------------------------------------------ likelihood


def mean_neg_elbo(
    vae: TrainedVAE, rows: np.ndarray, labels: np.ndarray, props: np.ndarray | None,
    key: jax.Array, draws: int,
) -> np.ndarray:  # fmt: skip
    """Per-row negative ELBO ``[N]`` (nats) averaged over ``draws`` posterior draws of ``z``:
    ``-(1/M) sum_m sum_l m_l log p(x_l | z_m, c) + KL(q(z | x) || N(0, I))`` (mask ``m``: positions
    up to the first END)."""
    mu, logvar = encode(vae, rows)
    kl = np.asarray(gaussian_kl(mu, logvar))
    mask = np.asarray(reconstruction_mask(rows))
    nll = np.zeros(len(rows))
    for m in range(draws):
        eps = jax.random.normal(jax.random.fold_in(key, m), mu.shape)
        z = np.asarray(reparameterize_with_noise(mu, logvar, eps))
        logits = decode_logits(vae, z, labels, props)
        nll -= np.where(mask, np.asarray(token_log_probs(logits, rows)), 0.0).sum(-1)
    return nll / draws + kl


def score_rows(
    vae: TrainedVAE, seqs: list[np.ndarray], labels: np.ndarray, key: jax.Array, draws: int,
    own: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Negative ELBO ``[N]`` of the first-``W`` rows of ``seqs``, the decoder's properties at their
    training mean (``own is None``: ``p(x | family)`` of one fixed property vector, a proper
    likelihood) or at ``own`` (raw ``[N, P]``: each sequence's own values, a likelihood conditional
    on them)."""
    return mean_neg_elbo(vae, encode_many(seqs, vae.width), labels, own, key, draws)


# ------------------------------------------------------------------------------ evaluate


def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """``protgen evaluate``: the reports of the module docstring, written to ``--out`` (JSON).

    ``--data FASTA`` scores that file's records (first ``W`` residues; families outside the run's
    vocabulary, e.g. its ``unseen.fasta``, with the null label) instead of the held-out split;
    ``--num 0`` stops after the likelihood.
    """
    vae, cfg, data = vae_of(run), run.config, run.data
    started, out = time.perf_counter(), Path(opts.out)
    if int(opts.num) == 1:
        raise DataError("--num must be 0 (likelihood only) or >= 2 (diversity needs pairs), got 1")
    seqs = data.sequences
    train_idx, held_idx = data.split(False), data.split(True)
    train_seqs = [seqs.sequence(i) for i in train_idx]
    labels = seqs.labels[held_idx]
    if opts.data:
        scored = read_sequences(opts.data, family_names=vae.family_names)
        source, own = str(opts.data), None
    else:
        scored = seqs.subset(held_idx)
        source = "validation split"
        own = data.properties[held_idx] if vae.property_names else None  # first-W values
    scored_seqs = [scored.sequence(i)[: cfg.width] for i in range(len(scored))]
    known = scored.labels.astype(np.int32)  # -1: no family the run knows
    train_labels = seqs.labels[train_idx]
    unigram = UnigramBaseline.fit(train_seqs, train_labels, len(vae.family_names))
    draws = int(opts.draws)

    def nll(s, lab, k, given=None):
        lab = np.asarray(lab) if vae.conditional else np.full(len(s), -1)
        return score_rows(vae, s, np.where(lab >= 0, lab, vae.null_family), k, draws, given)

    report: dict[str, Any] = {
        "condition": cfg.condition,
        "properties": list(vae.property_names),
        "width": cfg.width,
        "data": source,
        "likelihood": (
            f"negative ELBO (upper bound on -log p), {draws} posterior draws, nats per residue "
            f"over the first {cfg.width} residues of each scored record; the END token's cost "
            "is in the numerator, not a residue of the denominator; the decoder's properties at "
            "their training mean (own-property scores: `given_own_properties`)"
        ),
        "num_heldout": len(held_idx),
        "num_scored": len(scored_seqs),
    }
    report.update(
        perplexity_report(
            nll, scored_seqs, known if vae.conditional else np.full(len(scored_seqs), -1),
            keys.named(key, "likelihood"), unigram,
        )
    )  # fmt: skip
    report["unigram_nll_per_residue"] = float(np.log(report["baselines"]["unigram"]))
    if own is not None:  # conditional on each sequence's own property values (not p(x | family))
        total = nll(scored_seqs, labels, keys.named(key, "likelihood"), own).sum()
        per_residue = float(total / report["num_residues"])
        report["given_own_properties"] = {
            "nll_per_residue": per_residue, "perplexity": float(np.exp(per_residue)),
        }  # fmt: skip
    num = int(opts.num)
    if num == 0:
        report["seconds"] = time.perf_counter() - started
        save_json_atomic(out, report)
        return report
    # unconditional samples
    rows = generate_rows(
        vae, keys.named(key, "unconditional"), np.full(num, vae.null_family, np.int32),
        draw_properties(vae, np.full(num, vae.null_family), {},
                        keys.numpy_rng(keys.named(key, "props"))) if vae.property_names else None,
        1.0,
    )  # fmt: skip
    samples = cut_at_end(rows)
    report["num_empty_samples"] = int(sum(len(s) == 0 for s in samples))
    samples = [s for s in samples if len(s)]
    natural_idx = keys.numpy_rng(keys.named(key, "natural")).permutation(len(held_idx))[:num]
    natural = [seqs.sequence(held_idx[i]) for i in natural_idx]
    uniref = read_composition_csv(resolve("sequences", "uniref50_aa_composition.csv"))
    report["unconditional"] = sample_quality(
        samples, natural, train_seqs, kmer_counts(train_seqs), uniref
    )
    classifier = None
    if vae.conditional:
        classifier = KmerNaiveBayes.fit(train_seqs, train_labels, len(vae.family_names))

        def generate(gen_key, lengths, labs, guidance, temperature, fixed):
            labs = np.asarray(labs, np.int32)
            props = None
            if vae.property_names:
                props = draw_properties(vae, labs, {}, keys.numpy_rng(keys.named(gen_key, "p")))
            out_rows = generate_rows(vae, gen_key, labs, props, temperature)
            return [s if len(s) else np.zeros(1, np.int32) for s in cut_at_end(out_rows)]

        report["conditional"] = conditional_report(
            generate, seqs.subset(train_idx), classifier, natural, labels[natural_idx],
            keys.named(key, "conditional"), num_families=cfg.cond_families,
            samples_per_family=cfg.cond_samples, scales=(1.0,), max_len=cfg.width,
        )  # fmt: skip
    report["property_tracking"] = property_tracking(
        vae, keys.named(key, "property"), classifier, out
    )
    report["seconds"] = time.perf_counter() - started
    save_json_atomic(out, report)
    return report


# ------------------------------------------------------------------------------ the recipe


class CVAE(CVAERecipe):
    """The fixed-width (conditional) VAE: training hooks, commands and the comparison hooks."""

    commands = COMMANDS
    sample = staticmethod(sample)
    evaluate = staticmethod(evaluate)

    def check_command(self, command: str, opts: SimpleNamespace, runs: list) -> None:
        if command == "sample" and opts.family:
            config = self.read_config(runs[0].config)
            if config.condition != "family":
                raise DataError(
                    f"--family {opts.family!r}: {runs[0].path} was trained without family labels "
                    "(condition=none)"
                )

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        """evaluate: the JSON and one ``<stem>_<property>.png`` per built-in property."""
        if command == "evaluate":
            return OutputPlan(
                False, [out, *(out.with_name(f"{out.stem}_{n}.png") for n in BUILTIN)], []
            )
        return OutputPlan(False, [out], [])

    # ------------------------------------------------------------------ comparison hooks
    def generate_sequences(
        self, run: LoadedRun, key: jax.Array, num: int, *, lengths: np.ndarray,
        family: str | None = None, options: dict[str, Any] | None = None, progress: bool = False,
    ) -> list[str]:  # fmt: skip
        """``num`` prior samples as strings (``lengths`` ignored: the END token sets the length; an
        END-first row gives ""). Options: ``temperature`` (default 1)."""
        options = dict(options or {})
        unknown = [k for k in options if k not in GENERATE_OPTIONS]
        if unknown:
            raise DataError(
                f"cvae runs take no option {unknown[0]!r}; allowed: {', '.join(GENERATE_OPTIONS)}"
            )
        temperature = float(options.get("temperature", 1.0))
        vae = vae_of(run)
        labels = np.full(num, family_label(vae, family), np.int32)
        if num == 0:  # `protgen compare` checks a spec this way before sampling anything
            return []
        props = None
        if vae.property_names:
            props = draw_properties(vae, labels, {}, keys.numpy_rng(keys.named(key, "props")))
        return tokens_to_strings(generate_rows(vae, key, labels, props, temperature))

    def sequence_nll(
        self, run: LoadedRun, sequences: list[str], families: list[str | None],
        progress: bool = False,
    ) -> tuple[float, str] | None:  # fmt: skip
        """Negative ELBO per residue (upper bound) of the first ``W`` residues of each sequence, with
        its family label where the run knows it (else null)."""
        vae = vae_of(run)
        seqs = []
        for s in sequences:
            bad = [c for c in s if c not in AMINO_ACIDS]
            if bad or not s:
                raise DataError(f"sequence_nll: {s[:20]!r}... holds {bad[:1] or 'no letters'}")
            seqs.append(np.asarray(encode_letters(s), np.int32))
        labels = np.array(
            [vae.family_names.index(f) if vae.conditional and f in vae.family_names
             else vae.null_family for f in families], np.int32,
        )  # fmt: skip
        draws = 4
        values = score_rows(vae, seqs, labels, keys.named(keys.root_key(0), "nll"), draws)
        scored = sum(min(len(s), vae.width) for s in seqs)
        text = (
            f"negative ELBO (upper bound), {draws} posterior draws, fixed width {vae.width}: "
            f"residues beyond {vae.width} are cropped (first {vae.width} scored), the END token's "
            "cost counted"
            + ("; decoder properties at their training mean" if vae.property_names else "")
        )  # fmt: skip
        return float(values.sum() / max(scored, 1)), text

    def latent_interpolation(
        self, run: LoadedRun, key: jax.Array, family_a: str, family_b: str, steps: int, num: int
    ) -> list[list[str]] | None:
        """Decoded samples (null family label, properties at the training mean) at ``steps`` points
        on the line between the mean encoder means of the two families' training sequences."""
        vae = vae_of(run)
        for name in (family_a, family_b):
            if name not in vae.family_names:
                raise DataError(f"family {name!r} is not one of the run's families")
        tokens, fam, _, _ = training_arrays(vae)
        centres = []
        for name in (family_a, family_b):
            mu, _ = encode(vae, tokens[fam == vae.family_names.index(name)])
            centres.append(mu.mean(0))
        out = []
        for i, w in enumerate(np.linspace(0.0, 1.0, steps)):
            z = np.tile((1 - w) * centres[0] + w * centres[1], (num, 1)).astype(np.float32)
            rows = sample_tokens(vae, jax.random.fold_in(key, i), z, None, None, 1.0)
            out.append(tokens_to_strings(rows))
        return out


RECIPE = CVAE()
__all__ = ["CVAE", "RECIPE", "evaluate", "sample", "zscore"]
