"""``protgen quickstart``: the main job on the default data, end to end in about ten minutes on 2 CPU cores.

Trains the DeepSequence-style VAE on the BLAT_ECOLX family alignment (fewer steps than ``protgen train vae``;
``fast``: 1,000 instead of 2,500), tracks the Spearman correlation with the Stiffler 2015 deep mutational scan
during training, scores all mapped mutants, samples 1,000 sequences and evaluates them against held-out
family members and the site-independent baseline. Four stages, each announced on stderr with its time:

    [1/4] preparing the alignment (filter, 80%-identity weights, hold-out split)
    [2/4] training
    [3/4] scoring the DMS (ELBO over samples, then the posterior mean)
    [4/4] sampling and evaluating

then a summary table on stdout: what was trained, the Spearman beside the site-independent baseline (same
code, same data) and the published numbers (from the dataset's ``PROVENANCE.md``), the wall time of the call
on this machine, and where each file is. Everything lands in one report folder:

    OUT/run/            the training run (config, checkpoints, metrics.jsonl, curves.png); resumable
    OUT/score.json      Spearman (VAE and site-independent), n_used, n_skipped; score.png, score_scores.csv
    OUT/score_mean.json the same with the deterministic posterior-mean estimator (one pass, about a second)
    OUT/samples.fasta   1,000 aligned samples from the prior
    OUT/eval.json       held-out ELBO and sample statistics; eval_latent.png, eval_interpolation.fasta
    OUT/report.json     the headline numbers of all of the above, the machine and the stage times
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protgen_jax.atomic import save_json_atomic
from protgen_jax.config import apply_overrides

QUICKSTART_STEPS = 2500
QUICKSTART_FAST_STEPS = 1000
QUICKSTART_SCORE_SAMPLES = 100

PUBLISHED_SPEARMAN = {"site_independent": 0.61, "EVmutation": 0.72, "DeepSequence": 0.75}
"""Published Spearman on the Stiffler 2015 scan (Riesselman et al. 2018), used when the dataset's
``PROVENANCE.md`` cannot be read (the same values as there and in experiments/blat_vae/README.md)."""

HEADLINE = (
    "spearman",
    "spearman_posterior_mean",
    "site_independent_spearman",
    "published_spearman",
    "n_used",
    "n_skipped",
    "training_steps",
    "fast",
    "seconds",
)
"""The keys of ``report.json`` that :func:`run_quickstart` returns (``protgen quickstart`` prints them as
JSON after the summary table)."""

_PUBLISHED_ROWS = (
    ("site_independent", "site-independent", "published site-independent"),
    ("EVmutation", "evmutation", "published EVmutation"),
    ("DeepSequence", "single model", "published DeepSequence (one model)"),
    ("DeepSequence_ensemble", "ensemble", "published DeepSequence (ensemble of 5)"),
)
"""(report key, words that identify the row of PROVENANCE.md's table, row name in the summary)."""


def published_spearman(folder: Path) -> tuple[dict[str, float], str]:
    """The published Spearman correlations listed in ``folder/PROVENANCE.md`` and where they came from.

    Reads the Markdown table rows ``| model | Spearman | where |`` whose second cell is a number;
    :data:`PUBLISHED_SPEARMAN` fills what the file does not give."""
    path = Path(folder) / "PROVENANCE.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return dict(PUBLISHED_SPEARMAN), "built in (experiments/blat_vae/README.md)"
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        try:
            value = float(cells[1])
        except (IndexError, ValueError):
            continue
        for key, words, _ in _PUBLISHED_ROWS:
            if words in cells[0].lower() and key not in found:
                found[key] = value
                break
    source = str(path) if found else "built in (experiments/blat_vae/README.md)"
    return {**PUBLISHED_SPEARMAN, **found}, source


def machine() -> dict[str, Any]:
    """The processor, the CPU cores this process may use and the JAX backend and device."""
    import jax

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 0
    device = jax.devices()[0]
    return {
        "processor": _processor(),
        "cpu_cores": cores,
        "jax_backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "num_devices": jax.device_count(),
    }


def _count(n: int, noun: str) -> str:
    """``1 sample``, ``100 samples``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _processor() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name where there is one), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _duration(seconds: float) -> str:
    """``42.1 s`` or ``6 min 20 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


class _Stages:
    """``[i/N] what ...`` on stderr when a stage starts, ``done in ...`` when it ends; times kept."""

    def __init__(self, total: int):
        self.total, self.started, self.seconds = total, time.perf_counter(), {}

    @contextlib.contextmanager
    def stage(self, index: int, name: str, text: str) -> Iterator[list[str]]:
        """Announce stage ``index``; lines appended to the yielded list are printed when it ends."""
        print(f"[{index}/{self.total}] {text} ...", file=sys.stderr, flush=True)
        begun, notes = time.perf_counter(), []
        yield notes
        self.seconds[name] = time.perf_counter() - begun
        done = f"done in {_duration(self.seconds[name])}"
        total = _duration(time.perf_counter() - self.started)
        for note in notes:
            print(f"      {note}", file=sys.stderr)
        print(f"[{index}/{self.total}] {done} ({total} so far)", file=sys.stderr, flush=True)


def run_quickstart(
    out: Path,
    progress: bool = True,
    steps: int | None = None,
    score_samples: int = QUICKSTART_SCORE_SAMPLES,
    overrides: list[str] | None = None,
    num_samples: int = 1000,
    fast: bool = False,
) -> dict[str, Any]:
    """Run the main job into ``out`` (re-running resumes the training and redoes the reports).

    ``steps``: training steps (default :data:`QUICKSTART_STEPS`, or :data:`QUICKSTART_FAST_STEPS` with
    ``fast``); ``overrides`` are ``key=value`` config changes (tests use them to shrink the model).
    Prints the stages on stderr and the summary table (:func:`format_summary`) on stdout; writes the
    full report to ``out/report.json`` and returns its :data:`HEADLINE` numbers and its path."""
    from protgen_jax.recipes.base import RunDir
    from protgen_jax.recipes.vae import RECIPE, VAEConfig, default_dms, train_neff

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if steps is None:
        steps = QUICKSTART_FAST_STEPS if fast else QUICKSTART_STEPS
    stages = _Stages(4)
    dms = default_dms()
    config = VAEConfig(
        steps=steps, eval_every=500, checkpoint_every=500, dms=str(dms), eval_samples=10
    )
    config = RECIPE.check(apply_overrides(config, overrides))
    run = RunDir(out / "run")
    family = Path(config.data).stem if config.data else "BLAT_ECOLX"
    what = "filter gappy columns and rows, 80%-identity weights, hold-out split"
    with stages.stage(1, "prepare", f"preparing the {family} alignment ({what})") as notes:
        with run.lock():
            if run.file(RECIPE.data_file).exists():
                data = RECIPE.load_data(run)
                notes.append(f"already prepared in {run.path} (the run resumes)")
            else:
                data = RECIPE.prepare(config, progress)
                RECIPE.save_data(run, data)
        aln = data.aln
        notes.append(
            f"{aln.num_sequences:,} sequences x {aln.num_columns} columns, "
            f"N_eff {train_neff(data):,.0f} for training, {int(data.holdout.sum()):,} held out"
        )
    every = f"Spearman with the DMS every {config.eval_every:,} steps"
    mode = " (fast)" if fast else ""
    text = f"training the DeepSequence-style VAE for {steps:,} steps{mode}; {every}"
    with stages.stage(2, "train", text) as notes:
        summary = RECIPE.train(config, run.path, progress=progress)
        last = summary.get("last_eval") or {}
        if "spearman" in last:
            notes.append(f"Spearman {last['spearman']:.3f} at step {last['step']:,}")
    quiet = not progress
    common = {"dms": str(dms), "column": "2500", "quiet": quiet}
    text = (
        f"scoring the Stiffler 2015 mutants (ELBO over {_count(score_samples, 'sample')}, "
        "then the posterior mean)"
    )
    with stages.stage(3, "score", text) as notes:
        scored = RECIPE.run_command(
            "score",
            [run.path],
            {"out": out / "score.json", "estimator": "elbo", "samples": score_samples, **common},
        )
        scored_mean = RECIPE.run_command(
            "score", [run.path], {"out": out / "score_mean.json", "estimator": "mean", **common}
        )
        notes.append(
            f"Spearman {scored['spearman']:.3f} (posterior mean {scored_mean['spearman']:.3f}, "
            f"site-independent {scored['site_independent_spearman']:.3f}) on "
            f"{scored['n_used']:,} mutants"
        )
    text = f"sampling {num_samples:,} sequences and comparing them with held-out family members"
    with stages.stage(4, "sample_and_evaluate", text):
        sampled = RECIPE.run_command(
            "sample", [run.path], {"out": out / "samples.fasta", "num": num_samples, "quiet": quiet}
        )
        evaluated = RECIPE.run_command(
            "evaluate", [run.path], {"out": out / "eval.json", "num": num_samples, "quiet": quiet}
        )
    published, source = published_spearman(dms.parent)
    report = {
        "spearman": scored["spearman"],
        "spearman_posterior_mean": scored_mean["spearman"],
        "site_independent_spearman": scored["site_independent_spearman"],
        "published_spearman": published,
        "published_source": source,
        "n_used": scored["n_used"],
        "n_skipped": scored["n_skipped"],
        "score_samples": score_samples,
        "model": config.model,
        "latent_dim": config.latent_dim,
        "bayesian": config.bayesian,
        "family": family,
        "num_sequences": summary["num_sequences"],
        "num_columns": summary["num_columns"],
        "neff_train": summary["neff_train"],
        "fast": fast,
        "training_steps": summary["steps"],
        "train_seconds_this_call": summary["train_seconds_this_call"],
        "holdout_neg_elbo_per_seq": evaluated["holdout_neg_elbo_per_seq"],
        "site_independent_holdout_nll_per_seq": evaluated["site_independent_holdout_nll_per_seq"],
        "vae_samples": evaluated["vae_samples"],
        "site_independent_samples": evaluated["site_independent_samples"],
        "samples": sampled["out"],
        "files": {
            "run_folder": str(run.path),
            "curves": str(run.curves),
            "scores_csv": str(out / "score_scores.csv"),
            "scatter_png": str(out / "score.png"),
            "samples_fasta": str(out / "samples.fasta"),
            "eval_json": str(out / "eval.json"),
            "report_json": str(out / "report.json"),
        },
        "machine": machine(),
        "stage_seconds": stages.seconds,
        "seconds": time.perf_counter() - started,
    }
    save_json_atomic(out / "report.json", report)
    print(format_summary(report), flush=True)
    return {key: report[key] for key in HEADLINE} | {"report": report["files"]["report_json"]}


def format_summary(report: dict[str, Any]) -> str:
    """The readable summary of a quickstart ``report``: what was trained, the Spearman beside the
    baseline and the published numbers, the wall time on this machine, and where the files are."""
    published = report["published_spearman"]
    model = "DeepSequence-style VAE" if report["model"] == "deepsequence" else "ProteinVAE"
    decoder = ", Bayesian sparse decoder" if report["bayesian"] else ""
    fast = (
        f"  (fast: {report['training_steps']:,} steps instead of {QUICKSTART_STEPS:,}; "
        "a quicker, rougher model)"
        if report["fast"]
        else ""
    )
    box = report["machine"]
    stage_names = {"prepare": "prepare", "train": "train", "score": "score",
                   "sample_and_evaluate": "sample + evaluate"}  # fmt: skip
    stages = ", ".join(
        f"{stage_names.get(k, k)} {_duration(v)}" for k, v in report["stage_seconds"].items()
    )
    rows = [
        (f"this VAE (ELBO, {_count(report['score_samples'], 'sample')})", report["spearman"]),
        ("this VAE (posterior mean)", report["spearman_posterior_mean"]),
        ("site-independent (same code, same data)", report["site_independent_spearman"]),
    ]
    rows += [(label, published[key]) for key, _, label in _PUBLISHED_ROWS if key in published]
    files = report["files"]
    lines = [
        "",
        "protgen quickstart: summary",
        "",
        f"  trained      {model} (latent {report['latent_dim']}{decoder}) on {report['family']}",
        f"               {report['num_sequences']:,} sequences x {report['num_columns']} columns, "
        f"N_eff {report['neff_train']:,.0f}",
        f"               {report['training_steps']:,} steps, "
        f"{_duration(report['train_seconds_this_call'])} of training in this call{fast}",
        f"  wall time    {_duration(report['seconds'])} for this call ({stages})",
        f"  machine      {box['processor']}, {box['cpu_cores']} CPU cores, "
        f"jax backend {box['jax_backend']} ({box['num_devices']} x {box['device']})",
        "",
        f"  Spearman with the Stiffler 2015 DMS ({report['n_used']:,} single mutants, column 2500; "
        f"{report['n_skipped']} skipped, see score.json)",
        f"    {'model':<44s}{'Spearman':>9s}",
        *(f"    {label:<44s}{value:>9.3f}" for label, value in rows),
        f"    (published: {report['published_source']}; computed on DeepSequence's own alignment)",
        "",
        f"  held-out family members: -ELBO {report['holdout_neg_elbo_per_seq']:.1f} nats / sequence "
        f"(site-independent NLL {report['site_independent_holdout_nll_per_seq']:.1f})",
        "",
        "  files",
        f"    run folder      {files['run_folder']}  (training curves: {files['curves']})",
        f"    scores CSV      {files['scores_csv']}",
        f"    scatter PNG     {files['scatter_png']}",
        f"    samples FASTA   {files['samples_fasta']}",
        f"    evaluation      {files['eval_json']}",
        f"    report JSON     {files['report_json']}",
        "",
    ]
    return "\n".join(lines)
