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
import os
import sys
from pathlib import Path
from typing import Any

from protgen_jax.errors import DataError, TrainingError


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
    from protgen_jax.recipes.base import RunDir
    from protgen_jax.recipes.config import apply_overrides, missing_keys

    recipe = recipe_for_model(args.model)
    run = RunDir(args.out)
    config = recipe.make_config(args.model)
    if args.config:
        config = recipe.read_config(Path(args.config))
    if run.info.exists():
        trained = run.read_info().get("family")
        if trained != args.model:
            raise DataError(f"{run.path} is a {trained!r} run, not {args.model!r}; use a new --out")
    if run.config.exists():
        config = recipe.read_config(run.config)
        print(
            f"resuming {run.path} (config from {run.config}; --set/--steps still apply)",
            file=sys.stderr,
        )
        filled = missing_keys(type(config), run.config)
        if filled:
            listed = ", ".join(f"{key}={value}" for key, value in filled.items())
            print(
                f"warning: {run.config} predates these keys; they take today's defaults: {listed} "
                "(pass --set to keep the run's original behaviour)",
                file=sys.stderr,
            )
    overrides = list(args.set or [])
    if args.data:
        data = str(Path(args.data).resolve())
        if run.config.exists() and getattr(config, "data", "") not in ("", data):
            raise DataError(f"{run.path} was trained on {config.data}, not {data}; use a new --out")
        overrides.append(f"data={data}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    config = recipe.check(apply_overrides(config, overrides))
    _print_json(recipe.train(config, run.path, progress=not args.quiet))


RUN_COMMANDS = {
    "sample": "generate from a trained run",
    "evaluate": "the model family's evaluation",
    "score": "score mutations (DMS) with trained runs (an ensemble if many)",
}


def _command_parser(command: str, recipes: dict) -> argparse.ArgumentParser:
    """The parser of ``protgen COMMAND``: every family's options (checked per family afterwards)."""
    from protgen_jax.recipes.options import COMMON, describe

    lines = []
    for family, recipe in recipes.items():
        declared = recipe.commands.get(command)
        if declared is not None:
            lines.append(f"{family} runs:\n{describe(declared) or '  (no options)'}")
    parser = argparse.ArgumentParser(
        prog=f"protgen {command}",
        description=RUN_COMMANDS[command] + ". Every command takes --out PATH and --seed N (the "
        "root key; default: the run's seed). A flag that does not apply to the run's family is an "
        "error.",
        epilog="options by model family:\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", nargs="+" if command == "score" else 1, help="run folder(s)")
    seen: dict = {}
    for recipe in recipes.values():
        for option in (*COMMON, *recipe.commands.get(command, ())):
            if option.name in seen or option.name == "quiet":
                continue
            seen[option.name] = option
            if option.type is bool:
                parser.add_argument(option.flag, dest=option.name, action="store_true")
            else:
                metavar = option.type.__name__.upper()
                parser.add_argument(option.flag, dest=option.name, metavar=metavar)
    return parser


def _run_command(command: str, argv: list[str], quiet: bool) -> None:
    from protgen_jax.recipes import all_recipes, recipe_for_run

    args = _command_parser(command, all_recipes()).parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k != "run"}
    given["quiet"] = quiet
    runs = [Path(r) for r in args.run]
    recipe = recipe_for_run(runs[0])
    _print_json(recipe.run_command(command, runs, given))


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

    for command, text in RUN_COMMANDS.items():
        sub.add_parser(command, help=f"{text} (protgen {command} --help: options by family)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("PROTGEN_DISTRIBUTED") == "1":  # several hosts: one process per host
        import jax

        jax.distributed.initialize()
    quiet = False
    while argv and argv[0] == "--quiet":
        quiet = True
        argv.pop(0)
    try:
        if argv and argv[0] in RUN_COMMANDS:
            _run_command(argv[0], argv[1:], quiet)
        else:
            args = build_parser().parse_args((["--quiet"] if quiet else []) + argv)
            args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: the last checkpoint is kept; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
