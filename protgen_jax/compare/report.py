"""The Markdown table and the figure of ``protgen compare`` (from its JSON object, nothing measured here).

``compare.md``: the lecture's table (section "VAEs vs. Diffusion": sampling speed, training, sample
quality, diversity, controllability, latent space) with measured cells, then the detailed table, the
likelihood kinds, the speed ratios and the setup. ``compare.png``: :func:`protgen_jax.plots.plot_compare`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protgen_jax.atomic import atomic_write

DASH = "—"


def _num(value: Any, spec: str = ".3f") -> str:
    return DASH if value is None else format(value, spec)


def _get(row: dict[str, Any], *path: str) -> Any:
    for name in path:
        if not isinstance(row, dict) or row.get(name) is None:
            return None
        row = row[name]
    return row


def _latent(row: dict[str, Any]) -> str:
    path = row.get("interpolation")
    if not path or "probability_b" not in path:
        return DASH
    a, b = path["probability_a"], path["probability_b"]
    return f"P({path['family_b']}) {b[0]:.2f} -> {b[-1]:.2f}; P({path['family_a']}) {a[0]:.2f} -> {a[-1]:.2f}"


def _lecture_row(row: dict[str, Any]) -> str:
    rate = _get(row, "speed", "sequences_per_second")
    speed = DASH if rate is None else (
        f"{rate:,.1f} seq/s ({_get(row, 'speed', 'seconds_per_1000_projected'):,.1f} s per 1,000)"
    )  # fmt: skip
    train = _get(row, "train", "seconds")
    training = DASH if train is None else f"{train:,.0f} s, {row['train']['steps']:,} steps"
    nll = _get(row, "nll", "nats_per_residue")
    quality = (f"NLL {nll:.3f}; " if nll is not None else "") + (
        f"3-mer TV {_num(_get(row, 'samples', 'kmer3_tv_heldout'))}"
    )
    diversity = _num(_get(row, "samples", "diversity"), ".2f")
    assigned = _get(row, "conditional", "fraction_assigned")
    control = DASH if assigned is None else f"{100 * assigned:.0f}% assigned"
    return f"| {row['label']} | {speed} | {training} | {quality} | {diversity} | {control} | {_latent(row)} |"


def _detail_row(row: dict[str, Any]) -> str:
    s, speed = row.get("samples", {}), row.get("speed") or {}
    cells = [
        row["label"],
        _num(speed.get("sequences_per_second"), ",.2f"),
        _num(speed.get("seconds_per_sequence"), ".4f"),
        _num(speed.get("compile_seconds_estimate"), ".1f"),
        _num(speed.get("seconds_per_1000_projected"), ",.1f"),
        _num(_get(row, "train", "seconds"), ",.0f"),
        _num(_get(row, "nll", "nats_per_residue")),
        _num(s.get("composition_tv_heldout")),
        _num(s.get("pair_tv_heldout")),
        _num(s.get("kmer3_tv_heldout")),
        _num(s.get("composition_tv_train")),
        _num(s.get("diversity")),
        _num(s.get("novelty_identity_mean")),
        _num(_get(row, "conditional", "fraction_assigned"), ".2f"),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict[str, Any]) -> str:
    """The whole ``compare.md`` text."""
    rows = result["rows"]
    machine = result["machine"]
    lines = [
        "# protgen compare",
        "",
        f"Held-out: `{result['data']}` ({result['num_heldout']} sequences); {result['num']} samples "
        f"per row, conditional: {result['per_family']} per family of "
        f"{', '.join(result['families'])}; machine: {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, JAX {machine['jax_backend']} "
        f"(load average at start {machine['load_average_at_start'][0]:.1f}).",
        "",
        "## The lecture's table, measured",
        "",
        "| Model | Sampling speed | Training | Sample quality (held-out NLL nats/residue; 3-mer TV "
        "to held-out) | Diversity | Controllability (classifier assigns the requested family) "
        "| Latent space (classifier along the A -> B path) |",
        "|---|---|---|---|---|---|---|",
        *[_lecture_row(r) for r in rows],
        "",
        "## Details",
        "",
        "| row | seq/s | s/seq | compile s | s per 1,000 | train s | NLL/res | comp TV | pair TV "
        "| 3-mer TV | comp TV train | diversity | novelty id | assigned |",
        "|---|" + "---:|" * 13,
        *[_detail_row(r) for r in rows],
        "",
        "TV: total variation to the held-out set (comp = the 20 letters, pair = overlapping "
        "adjacent pairs, 3-mer = overlapping 3-mers); diversity = 1 - "
        "mean pairwise alignment identity; novelty id = mean identity to the nearest "
        "training-reference sequence (lower = more novel); speed: the timed call after a warm-up "
        f"of {result['warmup']} sequences, s per 1,000 projected linearly.",
        "",
        "### Likelihoods",
        "",
    ]
    for row in rows:
        nll = row.get("nll") or {}
        what = nll.get("kind") or nll.get("reason") or DASH
        lines.append(f"- {row['label']}: {what}")
    models = [r for r in rows if _get(r, "speed", "sequences_per_second") and r["kind"] == "model"]
    if len(models) > 1:
        fastest = max(models, key=lambda r: r["speed"]["sequences_per_second"])
        rate = fastest["speed"]["sequences_per_second"]
        lines += ["", "### Speed ratios", ""]
        lines += [
            f"- {fastest['label']} samples {rate / r['speed']['sequences_per_second']:,.1f}x as "
            f"many sequences per second as {r['label']}"
            for r in models
            if r is not fastest
        ]
    clf = result["classifier"]
    lines += [
        "",
        "### Setup",
        "",
        f"- classifier: {clf['kind']}; training reference {clf['training_reference_records']} of "
        f"{clf['training_records']} records of `{clf['training_fasta']}` "
        f"({clf['removed_same_id_as_heldout']} removed as held-out ids, "
        f"{clf['removed_same_sequence_as_heldout']} as held-out sequences; held-out ids left in it: "
        f"{clf['heldout_ids_in_training_reference']}, sequences: "
        f"{clf['heldout_sequences_in_training_reference']})",
        f"- held-out NLL on {result['nll_sequences']} held-out sequences; seed {result['seed']}",
        f"- command: `{result['command']}`",
        f"- complete: {result['complete']}"
        + (f" (pending: {', '.join(result['pending'])})" if result["pending"] else ""),
    ]
    return "\n".join(lines) + "\n"


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    """``compare.md``, atomically."""
    with atomic_write(path) as handle:
        handle.write(markdown(result))
    return Path(path)


def write_figure(result: dict[str, Any], path: Path) -> Path:
    """``compare.png``: sequences per second (log axis), the quality metrics and the interpolations."""
    from protgen_jax.plots import plot_compare

    return plot_compare(result["rows"], path)
