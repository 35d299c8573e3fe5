"""``protgen compare RUN[@key=value,...] ... --data HELDOUT.fasta --out DIR``: one table of several runs.

Modules: ``specs`` (run specs), ``measure`` (the reference data and every statistic, the same code for
each row), ``run`` (the command: checks, rows, the JSON written after each row), ``report`` (Markdown
table and figure). Importing this package imports no JAX: ``add_parser`` builds the CLI's sub-parser
and loads the rest when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "compare trained runs on a held-out FASTA: speed, quality, diversity, controllability, latent space"

DESCRIPTION = """\
Compare runs on one held-out FASTA and write DIR/compare.json, DIR/compare.md (the lecture's table,
"VAEs vs. Diffusion", measured) and DIR/compare.png. Rows: the held-out set itself, a random draw of
--num held-out sequences (the finite-sample floor of every distance), the unigram baseline, then one
row per RUN spec.

RUN[@key=value,...]: a run folder, optionally with the family's sampling options after "@" (e.g.
OADM@guidance=2, LAT@classifier=/path/CLF,classifier_scale=3, VAE@temperature=0.5) and label=NAME (the
row's name; default the folder name and the options). The same run may appear several times.

Per row: sampling time of --num sequences (after a warm-up call of --warmup sequences, so compilation
is reported apart; s/sequence, sequences/s, s per 1,000 projected), training time (metrics.jsonl),
held-out NLL per residue or its bound (the model says which; a dash where it defines none), total
variation of composition, adjacent pairs and 3-mers to the held-out set, diversity, novelty (identity
to the nearest training-reference sequence), the fraction of conditional samples that an independent
3-mer naive Bayes classifier assigns to the requested family, and for latent models the classifier's
probabilities along a latent interpolation between two families (--interpolate).

The training reference (classifier, unigram, novelty) is --train (default: the registry's
sequences/family_domains_train.fasta) minus every record whose id or sequence is in the held-out file.
Lengths are drawn from the held-out lengths. Everything is checked before any sampling; the JSON is
rewritten after each row (an interrupted compare keeps the finished rows).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``compare`` to the CLI's sub-parsers."""
    p = sub.add_parser(
        "compare", help=HELP, description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("runs", nargs="+", metavar="RUN[@key=value,...]", help="run folders")
    p.add_argument(
        "--data", required=True, metavar="HELDOUT.fasta", help="held-out FASTA (FAMILY|id headers)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--num", type=int, default=200, help="samples per row (default 200)")
    p.add_argument("--warmup", type=int, help="sequences of the warm-up call (default: --num)")
    p.add_argument(
        "--families",
        metavar="FAM,FAM",
        help="conditional rows' families (default: the 8 largest of the held-out file)",
    )
    p.add_argument(
        "--per-family", type=int, default=8, help="conditional samples per family (default 8)"
    )
    p.add_argument(
        "--interpolate", metavar="FAM_A,FAM_B", help="latent interpolation between two families"
    )
    p.add_argument(
        "--interpolate-steps", type=int, default=7, help="points on the path (default 7)"
    )
    p.add_argument(
        "--nll-sequences",
        type=int,
        default=192,
        help="held-out sequences scored (default 192; 0 = all)",
    )
    p.add_argument(
        "--train",
        metavar="FASTA",
        help="training FASTA of the reference (default: the registry's domain file)",
    )
    p.add_argument("--seed", type=int, default=0, help="root key (default 0)")
    p.add_argument("--force", action="store_true", help="replace DIR/compare.* files that exist")
    p.add_argument("--quiet", dest="compare_quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)
    return p


def _cmd_compare(args: argparse.Namespace) -> None:
    import json

    from protgen_jax.compare.run import run_compare

    result = run_compare(
        args.runs, args.data, args.out, num=args.num, warmup=args.warmup, families=args.families,
        per_family=args.per_family, interpolate=args.interpolate,
        interpolate_steps=args.interpolate_steps, nll_sequences=args.nll_sequences,
        train=args.train, seed=args.seed, force=args.force,
        progress=not (args.quiet or args.compare_quiet), argv=getattr(args, "argv", sys.argv[1:]),
    )  # fmt: skip
    summary = [
        {"label": r["label"], "sequences_per_second": (r.get("speed") or {}).get("sequences_per_second"),
         "nll_per_residue": (r.get("nll") or {}).get("nats_per_residue"),
         "fraction_assigned": (r.get("conditional") or {}).get("fraction_assigned")}
        for r in result["rows"]
    ]  # fmt: skip
    print(json.dumps({"out": args.out, "rows": summary}, indent=2))
