"""The ``protgen`` command: one verb-noun shape for every model family.

    protgen quickstart                                   the main job on the default data
    protgen data list | protgen data fetch NAME          the dataset registry
    protgen train MODEL --data PATH --out RUN [--steps N] [--set key=value ...]
    protgen sample RUN --num N [--length L] [...] --out PATH
    protgen score RUN [RUN ...] --dms CSV --column NAME --out JSON
    protgen evaluate RUN [--data PATH] --out JSON

Bad input exits with status 2 and a one-line reason (``error: ...``) before any model work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from protgen_jax.errors import DataError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _cmd_data(args: argparse.Namespace) -> None:
    from protgen_jax.data import registry

    if args.action == "list":
        for name, description, where in registry.list_datasets():
            print(f"{name:12s} {where}\n{'':12s} {description}")
    else:
        if not args.name:
            raise DataError("protgen data fetch needs a dataset NAME (see `protgen data list`)")
        for filename, path in registry.fetch(args.name).items():
            print(f"{filename}: {path}")


def _cmd_train(args: argparse.Namespace) -> None:
    from protgen_jax.recipes import recipe_for_model
    from protgen_jax.recipes.config import apply_overrides, load_config, missing_keys

    recipe = recipe_for_model(args.model)
    run_dir = Path(args.out)
    config = recipe.make_config(args.model)
    if args.config:
        config = load_config(type(config), Path(args.config))
    saved = run_dir / "config.json"
    if saved.exists():
        config = load_config(type(config), saved)
        print(
            f"resuming {run_dir} (config from {saved}; --set/--steps still apply)", file=sys.stderr
        )
        filled = missing_keys(type(config), saved)
        if filled:
            listed = ", ".join(f"{key}={value}" for key, value in filled.items())
            print(
                f"warning: {saved} predates these keys; they take today's defaults: {listed} "
                "(pass --set to keep the run's original behaviour)",
                file=sys.stderr,
            )
    overrides = list(args.set or [])
    if args.data:
        data = str(Path(args.data).resolve())
        if saved.exists() and getattr(config, "data", "") not in ("", data):
            raise DataError(f"{run_dir} was trained on {config.data}, not {data}; use a new --out")
        overrides.append(f"data={data}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    config = apply_overrides(config, overrides)
    _print_json(recipe.train(config, run_dir, progress=not args.quiet))


def _cmd_sample(args: argparse.Namespace) -> None:
    from protgen_jax.recipes import recipe_for_run

    _print_json(recipe_for_run(Path(args.run)).sample(Path(args.run), vars(args)))


def _cmd_score(args: argparse.Namespace) -> None:
    from protgen_jax.recipes import recipe_for_run

    recipe = recipe_for_run(Path(args.run[0]))
    if not hasattr(recipe, "score"):
        raise DataError(f"{args.run[0]}: this model family does not score mutations")
    _print_json(recipe.score([Path(r) for r in args.run], vars(args)))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from protgen_jax.recipes import recipe_for_run

    _print_json(recipe_for_run(Path(args.run)).evaluate(Path(args.run), vars(args)))


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from protgen_jax.recipes.quickstart import run_quickstart

    _print_json(run_quickstart(Path(args.out), progress=not args.quiet))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protgen",
        description="Protein generative models in JAX: train, sample, score, evaluate.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "quickstart", help="train a VAE on BLAT_ECOLX, score the DMS, sample; <= 10 min"
    )
    p.add_argument(
        "--out", default="quickstart_run", help="report folder (default: quickstart_run)"
    )
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("data", help="the dataset registry")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("name", nargs="?", help="dataset to fetch")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train (or resume) a model")
    p.add_argument("model", help="vae | backbone | oadm | d3pm | relax")
    p.add_argument("--data", help="training data (default: the family's registry dataset)")
    p.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    p.add_argument("--steps", type=int, help="total training steps")
    p.add_argument("--config", help="a config JSON (e.g. from experiments/) to start from")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="generate from a trained run")
    p.add_argument("run")
    p.add_argument("--num", type=int, help="number of samples (default: 100; backbones 8)")
    p.add_argument("--length", type=int, help="sequence / backbone length")
    p.add_argument("--out", required=True, help="FASTA file or PDB folder")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (VAE)")
    p.add_argument("--family", help="family label to condition on")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--inpaint", help="FASTA with masked positions to fill")
    p.add_argument("--motif", help="motif spec for backbone scaffolding (see docs)")
    p.add_argument("--sampler", default="ddpm", help="ddpm | ddim")
    p.add_argument("--steps", type=int, help="DDIM steps")
    p.add_argument(
        "--noise-scale",
        type=float,
        help="backbone DDPM: scale of each step's noise (default: run's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trajectory", action="store_true", help="also write a multi-model trajectory")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "score", help="score mutations (DMS) with trained VAE runs (an ensemble if many)"
    )
    p.add_argument("run", nargs="+")
    p.add_argument("--dms", help="DMS CSV (default: BLAT_ECOLX Stiffler 2015)")
    p.add_argument("--column", default="2500", help="fitness column (default 2500)")
    p.add_argument("--mutant-column", default="mutant")
    p.add_argument("--samples", type=int, help="Monte-Carlo samples M per sequence")
    p.add_argument(
        "--estimator",
        choices=("elbo", "mean"),
        help="elbo: delta ELBO over M draws; mean: one deterministic pass at the variational means "
        "(default: the run's score_estimator, elbo unless set)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="mutants per jitted call (default: 256 on CPU, 2048 on an accelerator)",
    )
    p.add_argument("--out", required=True, help="JSON report (a scatter PNG goes beside it)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("evaluate", help="the model family's evaluation")
    p.add_argument("run")
    p.add_argument("--data", help="evaluate on this file instead of the run's held-out split")
    p.add_argument("--out", required=True, help="JSON report (plots go beside it)")
    p.add_argument(
        "--num",
        type=int,
        help="samples for sample statistics (default: vae 500, seq 100, backbone 64)",
    )
    p.add_argument(
        "--noise-scale",
        type=float,
        help="backbone DDPM: scale of each step's noise (default: run's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the last checkpoint is kept; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
