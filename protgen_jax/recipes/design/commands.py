"""``protgen design`` and ``protgen evaluate`` of a trained inverse-folding run.

``protgen design RUN --pdb FILE_OR_FOLDER --num-seqs N --temperature T --out designs.fasta`` reads every
backbone (a structure file, or every file of a folder: natural chains, or the ``sample_*.pdb`` of
``protgen sample`` of a backbone run), designs N sequences per backbone and writes them as FASTA (header:
``<backbone>_d<n> score=<mean -log p> T=<T>`` and, when the file carries a real sequence, its
``recovery``), with ``designs.json`` beside it: every design's score and recovery, the skipped files, and
how the designs fit each backbone's own secondary structure (helix- and strand-favouring residues on
helical and strand positions, P-SEA labels from the C-alpha trace), beside the same figures for the
files' own sequences when they have one.

``--fixed 1-10,25`` keeps the file's amino acids at those residues (1-based, in file order);
``--omit CX`` forbids amino acids everywhere; ``--bias A=0.5,W=-1`` adds to their logits everywhere;
``--position-bias FILE`` (JSON ``{"12": {"W": -2.0, "C": "omit"}}``, 1-based residues) per residue.

``protgen evaluate RUN --out eval.json``: on the held-out chains, the per-residue perplexity of the
teacher-forced conditionals (one random order per chain), native sequence recovery of designs at
``eval_temperature`` (mean over designs, median and mean over chains; by P-SEA class and by burial,
``quality.burial``), against the composition baseline computed by the same
code (the training set's amino-acid frequencies: its perplexity, and the recovery of its argmax), with
a plot beside the JSON.

Randomness: ``design`` uses the key ``"designs"``, ``evaluate`` the keys ``"order"`` and ``"designs"``,
each folded with the row (backbone, design) so that a design does not depend on the batching.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from protgen_jax import alphabet, keys
from protgen_jax.atomic import save_json_atomic
from protgen_jax.baselines import UnigramBaseline
from protgen_jax.data.fasta import write_fasta
from protgen_jax.data.structures import bucket_for
from protgen_jax.errors import DataError
from protgen_jax.recipes.base import LoadedRun, OutputPlan
from protgen_jax.recipes.design.inputs import (
    as_design_set,
    bias_array,
    check_design_options,
    load_backbones,
    parse_fixed,
)
from protgen_jax.recipes.design.quality import (
    burial,
    composition,
    has_sequence,
    native_recovery,
    residue_classes,
    ss_fit,
)
from protgen_jax.recipes.design.recipe import DesignConfig, DesignRecipe, DesignSet, random_rank
from protgen_jax.recipes.design.sampling import design_sequences, sequence_nll
from protgen_jax.recipes.options import Option
from protgen_jax.structure.geometry import sse_labels

PUBLISHED_RECOVERY = {"ProteinMPNN": 0.52, "GVP": 0.40, "StructGNN": 0.35}
"""Native sequence recovery on CATH 4.2 held-out chains reported by Dauparas et al. 2022 (Table 1)."""
COMMANDS = {
    "design": (
        Option("pdb", str, required=True, help="structure file or folder of files to design"),
        Option("num_seqs", int, 8, "designs per backbone", low=1, high=10_000),
        Option("temperature", float, 0.1, "sampling temperature (0: argmax)", low=0.0, high=100.0),
        Option("chain", str, None, "chain id to read (default: the first protein chain)"),
        Option("fixed", str, None, "residues keeping the file's amino acid, e.g. 1-10,25"),
        Option("omit", str, None, "amino acids never designed, e.g. CX"),
        Option("bias", str, None, "logit bias everywhere, e.g. A=0.5,W=-1"),
        Option("position_bias", str, None, 'JSON file {"12": {"W": -2.0, "C": "omit"}}'),
    ),
    "evaluate": (
        Option("designs", int, None, "designs per held-out chain (default: the run's)", low=1),
        Option("temperature", float, None, "design temperature (default: the run's)", low=0.0),
        Option("num_chains", int, None, "evaluate the first N held-out chains", low=1),
        Option("data", str, None, "structure file or folder replacing the held-out split"),
    ),
}


# ------------------------------------------------------------------------------------ designing
def _row_keys(key: jax.Array, rows: list[tuple[int, int]]) -> jax.Array:
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(key, b), n) for b, n in rows])


def design_rows(
    run: LoadedRun,
    designs: DesignSet,
    rows: list[tuple[int, int]],
    key: jax.Array,
    temperature: float,
    bias: np.ndarray,
    fixed: np.ndarray,
    buckets: tuple[int, ...],
    progress: bool,
) -> dict[tuple[int, int], tuple[np.ndarray, float]]:
    """Designs for ``rows`` = (backbone, design index) pairs: ``{row: (tokens [L_b], score)}``.

    Rows are grouped by length bucket and run ``design_batch`` at a time (the last chunk padded).
    ``bias`` [N, W, 20] and ``fixed`` [N, W] are per backbone.
    """
    config: DesignConfig = run.config
    out: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
    lengths = designs.lengths
    by_width: dict[int, list[tuple[int, int]]] = {}
    for row in rows:
        by_width.setdefault(bucket_for(int(lengths[row[0]]), buckets), []).append(row)
    bar = tqdm(total=len(rows), desc="design", unit="seq", disable=not progress)
    size = config.design_batch
    for width, group in sorted(by_width.items()):
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            padded = chunk + [chunk[-1]] * (size - len(chunk))
            backbones = np.array([b for b, _ in padded])
            arrays = designs.take(backbones, width)
            result = design_sequences(
                run.model, config.atom_set, run.params, arrays["coords"], arrays["mask"],
                arrays["positions"], _row_keys(key, padded), temperature=temperature,
                bias=jnp.asarray(bias[backbones, :width]), fixed=jnp.asarray(fixed[backbones, :width]),
                native=jnp.asarray(np.where(arrays["tokens"] < alphabet.K_AA, arrays["tokens"], 0)),
            )  # fmt: skip
            tokens, score = np.asarray(result.tokens), np.asarray(result.score)
            for i, row in enumerate(chunk):
                out[row] = (tokens[i, : lengths[row[0]]], float(score[i]))
            bar.update(len(chunk))
    bar.close()
    return out


def design(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Write ``num_seqs`` designs per backbone of ``--pdb`` to the FASTA ``opts.out`` and the report
    ``<stem>.json`` beside it (module docstring); returns the report's summary."""
    config: DesignConfig = run.config
    progress = not opts.quiet
    chains, skipped = load_backbones(opts.pdb, opts.chain, config.atom_set, progress)
    width = max(c.length for c in chains)
    buckets = tuple(sorted({*config.buckets, width}))  # the run's widths; longer chains: one more
    designs = as_design_set(chains, config.atom_set, width)
    fixed = np.zeros(designs.mask.shape, bool)
    if opts.fixed:
        for i, c in enumerate(chains):
            fixed[i, : c.length] = parse_fixed(opts.fixed, c.length, c.name)
        if np.any(fixed & (designs.tokens >= alphabet.K_AA)):
            raise DataError(
                f"--fixed {opts.fixed}: a fixed residue has no standard amino acid in its file"
            )
    bias = bias_array(opts, designs)
    if np.any(np.all(bias[designs.mask] <= -1e8, axis=-1)):
        raise DataError("--omit / --position-bias forbid every amino acid at some residue")
    rows = [(b, n) for b in range(len(chains)) for n in range(opts.num_seqs)]
    found = design_rows(
        run, designs, rows, keys.named(key, "designs"), opts.temperature, bias, fixed,
        buckets, progress,
    )  # fmt: skip
    records, entries, tokens_all, labels_all, natives, native_labels = [], [], [], [], [], []
    for b, chain in enumerate(chains):
        mask = designs.mask[b, : chain.length]
        native = designs.tokens[b, : chain.length]
        labels = sse_labels(chain.ca, chain.breaks)
        has_native = has_sequence(native, mask)
        if has_native:
            known = mask & (native < alphabet.K_AA)
            natives.append(native[known])
            native_labels.append(labels[known])
        per = []
        for n in range(opts.num_seqs):
            tokens, score = found[(b, n)]
            recovery = (
                native_recovery(tokens, native, mask & ~fixed[b, : chain.length])
                if has_native
                else None
            )
            text = alphabet.decode(np.where(mask, tokens, alphabet.GAP)).replace("-", "X")
            header = f"{chain.name}_d{n} score={score:.4f} T={opts.temperature:g}"
            if recovery is not None:
                header += f" recovery={recovery:.3f}"
            records.append((header, text))
            per.append({"id": f"{chain.name}_d{n}", "score": score, "recovery": recovery})
            tokens_all.append(tokens[mask])
            labels_all.append(labels[mask])
        entries.append({"backbone": chain.name, "length": chain.length,
                        "native_sequence": chain.sequence if has_native else None, "designs": per})  # fmt: skip
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_fasta(out, records)
    scores = [d["score"] for e in entries for d in e["designs"]]
    recoveries = [d["recovery"] for e in entries for d in e["designs"] if d["recovery"] is not None]
    summary = {
        "fasta": str(out),
        "num_backbones": len(chains),
        "num_designs": len(records),
        "temperature": opts.temperature,
        "mean_score": float(np.mean(scores)),
        "mean_recovery": float(np.mean(recoveries)) if recoveries else None,
        "secondary_structure_fit": ss_fit(tokens_all, labels_all),
        "native_secondary_structure_fit": ss_fit(natives, native_labels) if natives else None,
        "composition": composition(tokens_all),
        "native_composition": composition(natives) if natives else None,
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
    }
    save_json_atomic(out.with_suffix(".json"), {**summary, "backbones": entries})
    return summary


# ------------------------------------------------------------------------------------ evaluation
def evaluate(run: LoadedRun, opts: SimpleNamespace, key: jax.Array) -> dict[str, Any]:
    """Held-out perplexity and recovery against the composition baseline (module docstring)."""
    from protgen_jax.plots import plot_grouped_bars

    config: DesignConfig = run.config
    progress = not opts.quiet
    if opts.data:
        chains, skipped = load_backbones(opts.data, None, config.atom_set, progress)
        held = as_design_set(chains, config.atom_set, max(c.length for c in chains))
        source = opts.data
    else:
        held, skipped, source = run.data.holdout, [], "held-out split"
    if not len(held):
        raise DataError(f"{run.run.path}: the run holds no held-out chain; pass --data")
    if opts.num_chains:
        held = DesignSet(*(getattr(held, f)[: opts.num_chains] for f in DesignSet.FIELDS))
    num_designs = opts.designs or config.eval_designs
    temperature = config.eval_temperature if opts.temperature is None else opts.temperature
    buckets = tuple(sorted({*config.buckets, held.mask.shape[1]}))

    # perplexity of the teacher-forced conditionals, one random order per chain
    nll_fn = sequence_nll(run.model, config.atom_set)
    order_key = keys.named(key, "order")
    total, count = 0.0, 0
    for i in range(len(held)):
        width = bucket_for(int(held.lengths[i]), buckets)
        a = {k: jnp.asarray(v) for k, v in held.take(np.array([i]), width).items()}
        rank = random_rank(jax.random.fold_in(order_key, i), a["mask"])
        nll = np.asarray(
            nll_fn(run.params, a["coords"], a["mask"], a["positions"], a["tokens"], rank)
        )
        known = np.asarray(a["mask"] & (a["tokens"] < alphabet.K_AA))
        total += float(nll[known].sum())
        count += int(known.sum())

    rows = [(b, n) for b in range(len(held)) for n in range(num_designs)]
    found = design_rows(
        run, held, rows, keys.named(key, "designs"), temperature,
        np.zeros((*held.mask.shape, alphabet.K_AA), np.float32), np.zeros(held.mask.shape, bool),
        buckets, progress,
    )  # fmt: skip
    train = run.data.train
    composition = UnigramBaseline.fit(
        [t[m & (t < alphabet.K_AA)] for t, m in zip(train.tokens, train.mask, strict=True)],
        np.full(len(train), -1), 0,
    ).row(-1)  # fmt: skip
    baseline_choice = int(np.argmax(composition))
    per_chain, base_chain = [], []
    by_class: dict[str, list[float]] = {}
    for b in range(len(held)):
        length = int(held.lengths[b])
        mask = held.mask[b, :length]
        native = held.tokens[b, :length]
        known = mask & (native < alphabet.K_AA)
        if not known.any():
            continue
        ca = held.coords[b, :length, 1]
        labels = sse_labels(ca[mask]) if mask.sum() >= 4 else np.full(mask.sum(), "c")
        ss = np.full(length, "c")
        ss[mask] = labels
        buried = burial(held.coords[b, :length], mask)
        hits = np.mean([found[(b, n)][0] == native for n in range(num_designs)], axis=0)
        per_chain.append(float(hits[known].mean()))
        base_chain.append(float(np.mean(native[known] == baseline_choice)))
        for name, where in residue_classes(ss, buried).items():
            sel = known & where
            by_class.setdefault(name, []).extend(hits[sel].tolist())
            by_class.setdefault(f"{name}:baseline", []).extend(
                (native[sel] == baseline_choice).tolist()
            )
    baseline_nll = _composition_nll(composition, held)
    report = {
        "source": source,
        "atom_set": config.atom_set,
        "num_chains": len(per_chain),
        "num_residues": count,
        "designs_per_chain": num_designs,
        "temperature": temperature,
        "perplexity": float(np.exp(total / count)),
        "nll_per_residue": total / count,
        "recovery_median": float(np.median(per_chain)),
        "recovery_mean": float(np.mean(per_chain)),
        "recovery_by_class": {k: float(np.mean(v)) for k, v in by_class.items() if ":" not in k},
        "residues_by_class": {k: len(v) for k, v in by_class.items() if ":" not in k},
        "baseline": {
            "name": "composition (training amino-acid frequencies; recovery of its argmax "
            f"{alphabet.AMINO_ACIDS[baseline_choice]})",
            "perplexity": float(np.exp(baseline_nll)),
            "recovery_median": float(np.median(base_chain)),
            "recovery_mean": float(np.mean(base_chain)),
            "recovery_by_class": {
                k.split(":")[0]: float(np.mean(v)) for k, v in by_class.items() if ":" in k
            },
        },
        "published_recovery_cath": PUBLISHED_RECOVERY,
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [k for k in report["recovery_by_class"]]
    plot_grouped_bars(
        {"model": {k: report["recovery_by_class"][k] for k in names},
         "composition baseline": {k: report["baseline"]["recovery_by_class"][k] for k in names}},
        _plot_path(out), ylabel="native sequence recovery",
        title=f"{config.atom_set} backbone, {len(per_chain)} held-out chains, T={temperature:g}",
    )  # fmt: skip
    save_json_atomic(out, report)
    return report


def _composition_nll(log_p: np.ndarray, held: DesignSet) -> float:
    known = held.mask & (held.tokens < alphabet.K_AA)
    return float(-log_p[held.tokens[known]].mean())


def _plot_path(out: Path) -> Path:
    return Path(f"{out.with_suffix('')}_recovery.png")


class Design(DesignRecipe):
    """The inverse-folding model: training hooks (:class:`DesignRecipe`) and the commands above."""

    commands = COMMANDS
    design = staticmethod(design)
    evaluate = staticmethod(evaluate)

    def check_command(self, command: str, opts: SimpleNamespace, runs: list) -> None:
        """design: the inputs and options parse before the run is loaded (``check_design_options``)."""
        if command == "design":
            check_design_options(opts)

    def outputs(self, command: str, out: Path, opts: SimpleNamespace) -> OutputPlan:
        """design: the FASTA and ``<stem>.json``; evaluate: the JSON and ``<stem>recovery.png``."""
        if command == "design":
            return OutputPlan(False, [out, out.with_suffix(".json")], [])
        return OutputPlan(False, [out, _plot_path(out)], [])


RECIPE = Design()
