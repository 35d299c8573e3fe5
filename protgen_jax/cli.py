"""The ``protgen`` command: one verb-noun shape for every model family.

    protgen quickstart [--fast]                          the main job on the default data
    protgen data list | protgen data fetch NAME          the dataset registry
    protgen train MODEL --data PATH --out RUN [--steps N] [--init RUN] [--set key=value ...]
    protgen sample RUN --num N [--length L] [...] --out PATH
    protgen score RUN [RUN ...] --dms CSV --column NAME --out JSON
    protgen predict RUN [RUN ...] (--all-singles | --dms CSV) --out CSV
    protgen evaluate RUN [--data PATH] --out JSON
    protgen design RUN --pdb FILE_OR_FOLDER --num-seqs N --temperature T --out FASTA
    protgen compare RUN[@key=value,...] ... --data HELDOUT.fasta --out DIR [--num N] [...]

Bad input exits with status 2 and a one-line reason (``error: ...``) before any model work starts;
a failed training exits with 1 (``error: ...``), an interrupt with 130, and anything else (a bug) with 1
and one line ``internal error: ...`` naming a log file that holds the traceback.

Outputs never damage a run and are not replaced silently: ``--out`` of ``sample`` / ``evaluate`` /
``score`` / ``predict`` is checked before any model is loaded (not empty, its folder writable, not
inside a run folder of the command, no existing output file unless ``--force``), ``train --out`` must be
a run folder, an empty folder or a new path, and a resumed run keeps its config apart from
:data:`RESUMABLE_KEYS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from protgen_jax.compare import add_parser as add_compare_parser
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


RESUMABLE_KEYS = (
    "steps",
    "time_limit_minutes",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "steps_per_call",
    "devices",
    "log_grad_norm",
)
"""Config keys a resumed run may change (how long and how it trains, never what it trains)."""

RUN_FILES = (
    "config.json",
    "run.json",
    "summary.json",
    "metrics.jsonl",
    "curves.png",
    "checkpoints",
)
"""Files and folders of every run folder (with the family's ``data_file``, ``data.json``, ``.lock``)."""


def _run_file_names(recipe: Any) -> set[str]:
    return {*RUN_FILES, recipe.data_file, "data.json", ".lock"}


def _is_temporary(name: str) -> bool:
    """A temporary file an interrupted atomic write left behind (``.NAME.XXXX.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_folder(folder: Path, flag: str, given: str) -> None:
    """``folder`` exists and is writable, or can be created (its closest existing ancestor is a
    writable folder); DataError naming the folder otherwise."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise DataError(f"{flag} {given}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "folder" if existing == folder else "folder (where the missing ones would be made)"
        raise DataError(f"{flag} {given}: cannot write in the {what} {existing} (no permission)")


def _enclosing_run(path: Path) -> Path | None:
    """The run folder (a folder holding ``run.json``) that ``path`` lies strictly inside, if any."""
    for parent in path.parents:
        if (parent / "run.json").is_file():
            return parent
    return None


def _check_train_out(given: str, recipe: Any) -> Path:
    """``train --out``: a run folder (resumed), an empty folder, or a new path; the path to use."""
    if not given.strip():
        raise DataError("--out is empty; name the run folder to create or resume")
    out = Path(given)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {given} is a file, not a run folder; use a new or empty folder")
    resolved = out.resolve()
    inside = _enclosing_run(resolved)
    if inside is not None:
        raise DataError(
            f"--out {given} lies inside the run folder {inside}; put a new run beside it"
        )
    if out.is_dir():
        try:
            names = [p.name for p in out.iterdir()]
        except OSError as err:
            raise DataError(f"--out {given}: cannot list the folder ({err})") from err
        is_run = "run.json" in names or "config.json" in names
        own = _run_file_names(recipe)
        strangers = sorted(n for n in names if n not in own and not _is_temporary(n))
        if not is_run and strangers:
            listed = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
            raise DataError(
                f"--out {given} is not a run folder (it holds {listed}; no run.json or "
                "config.json); use an empty or new folder"
            )
        _check_writable_folder(out, "--out", given)
    else:
        _check_writable_folder(out.parent, "--out", given)
    return out


def _config_file_changes(recipe: Any, path: Path) -> dict[str, Any]:
    """The keys a ``--config`` file sets (with their typed values), for a resumed run."""
    loaded = recipe.read_config(path)  # checks the file: JSON, known keys, types
    try:
        named = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read config ({err})") from err
    fields = {field.name for field in dataclasses.fields(loaded)}
    return {key: getattr(loaded, key) for key in named if key in fields}


def _check_resume(run: Any, saved: Any, config: Any, filled: dict[str, Any]) -> None:
    """DataError when ``config`` changes a key of the saved run that a resume may not change."""
    from protgen_jax.config import config_to_dict

    before, after = config_to_dict(saved), config_to_dict(config)
    changed = []
    for key, value in after.items():
        old = before.get(key)
        if value == old or key in RESUMABLE_KEYS or key in filled:
            continue
        if key == "data" and old == "":  # the registry default, named by --data (checked before)
            continue
        changed.append(f"{key} is {old!r} there, not {value!r}")
    if changed:
        raise DataError(
            f"{run.config}: a resumed run keeps its config ({'; '.join(changed)}); train a new "
            f"--out to change it (a resume may change only {', '.join(RESUMABLE_KEYS)})"
        )


def _cmd_train(args: argparse.Namespace) -> None:
    from protgen_jax.config import apply_overrides, missing_keys
    from protgen_jax.recipes import recipe_for_model
    from protgen_jax.recipes.base import RunDir

    recipe = recipe_for_model(args.model)
    try:
        run = RunDir(_check_train_out(args.out, recipe))
    except OSError as err:  # e.g. a folder on the way that may not be looked into
        raise DataError(f"--out {args.out}: {err}") from err
    config = recipe.make_config(args.model)
    if args.config:
        config = recipe.read_config(Path(args.config))
    if run.info.exists():
        trained = run.read_info().get("family")
        if trained != args.model:
            raise DataError(f"{run.path} is a {trained!r} run, not {args.model!r}; use a new --out")
    resuming = run.config.exists()
    saved, filled = None, {}
    if resuming:
        saved = recipe.read_config(run.config)
        filled = missing_keys(type(saved), run.config)
        config = saved
        if args.config:  # the keys the file names, checked like --set below
            config = dataclasses.replace(saved, **_config_file_changes(recipe, Path(args.config)))
    overrides = list(args.set or [])
    if args.data:
        data = str(Path(args.data).resolve())
        if resuming and getattr(saved, "data", "") not in ("", data):
            raise DataError(f"{run.path} was trained on {saved.data}, not {data}; use a new --out")
        overrides.append(f"data={data}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    for flag in ("vae", "latent"):  # the run a latent / classifier run is built on
        if getattr(args, flag, None):
            overrides.append(f"{flag}={Path(getattr(args, flag)).resolve()}")
    if args.init:
        init = Path(args.init).resolve()
        if init == run.path.resolve():
            raise DataError(f"--init {args.init} is the --out run itself; name another run")
        RunDir(init).read_info()  # a run folder (DataError otherwise), checked before any work
        overrides.append(f"init={init}")
    config = apply_overrides(config, overrides)
    if resuming:
        _check_resume(run, saved, config, filled)
    config = recipe.check(config)
    if resuming:
        print(
            f"resuming {run.path} (config from {run.config}; "
            f"{', '.join(RESUMABLE_KEYS)} may change)",
            file=sys.stderr,
        )
        if filled:
            listed = ", ".join(f"{key}={value}" for key, value in filled.items())
            print(
                f"warning: {run.config} predates these keys; they take the current defaults: {listed} "
                "(pass --set to keep the run's original behaviour)",
                file=sys.stderr,
            )
    _print_json(recipe.train(config, run.path, progress=not args.quiet))


RUN_COMMANDS = {
    "sample": "generate from a trained run",
    "evaluate": "the model family's evaluation",
    "score": "score mutations (DMS) with trained runs (an ensemble if many)",
    "predict": "predict mutation effects (all singles, or every row of a CSV) with trained runs "
    "(an ensemble if many)",
    "design": "design sequences for backbones (structure files or sample folders) with an "
    "inverse-folding run",
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
        description=RUN_COMMANDS[command] + ". Every command takes --out PATH, --seed N (the "
        "root key; default: the run's seed) and --force (replace output files that exist; without "
        "it they are never replaced). Outputs go outside the run folder(s). A flag that does not "
        "apply to the run's family is an error.",
        epilog="options by model family:\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ensemble = command in ("score", "predict")
    parser.add_argument("run", nargs="+" if ensemble else 1, help="run folder(s)")
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


def _check_outputs(recipe: Any, command: str, opts: Any, runs: list[Path], force: bool) -> None:
    """Refuse, before any model is loaded, an output that is empty, cannot be written, lies inside a
    run folder of the command, or would replace an existing file without ``--force``."""
    given = str(opts.out)
    if not given.strip():
        raise DataError(f"--out is empty; name the {command} output")
    out = Path(given)
    family = recipe.family
    plan = recipe.outputs(command, Path(os.path.abspath(out)), opts)
    if plan.folder:
        if out.exists() and not out.is_dir():
            raise DataError(
                f"--out {given} is a file; {command} of a {family!r} run fills a folder"
            )
    elif out.is_dir():
        raise DataError(f"--out {given} is a folder; {command} writes a file (name it)")
    written = plan.files + plan.numbered
    resolved = [p.resolve() for p in written]
    for run in runs:
        folder = run.resolve()
        for path, real in zip(written, resolved, strict=True):
            if real == folder or folder in real.parents:
                raise DataError(
                    f"--out {given}: {command} would write {path} inside the run folder {run}; "
                    "write outputs outside the run folder"
                )
    if len(set(resolved)) < len(resolved):
        raise DataError(
            f"--out {given}: {command} writes files beside it that would replace it "
            f"({', '.join(p.name for p in plan.files)}); choose another name (e.g. .json)"
        )
    for path in plan.files:
        if path.is_dir():
            raise DataError(f"--out {given}: {command} writes the file {path}, which is a folder")
    folders = {p.parent for p in plan.files} | set(plan.numbered)
    for folder in sorted(folders):
        _check_writable_folder(folder, "--out", given)
    if force:
        return
    existing = [p for p in plan.files if p.exists()]
    existing += [
        p for folder in plan.numbered if folder.is_dir() for p in folder.glob("sample_*.pdb")
    ]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise DataError(
            f"--out {given}: {existing[0]}{more} already exists; pass --force to replace it, or "
            "choose a new --out"
        )


def _run_command(command: str, argv: list[str], quiet: bool) -> None:
    from protgen_jax.recipes import all_recipes, recipe_for_run
    from protgen_jax.recipes.base import RunDir

    args = _command_parser(command, all_recipes()).parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k != "run"}
    given["quiet"] = quiet
    runs = [Path(r) for r in args.run]
    recipe = recipe_for_run(runs[0])
    opts = recipe.options(command, given)  # flag errors first, then the run-dependent checks
    recipe.check_command(command, opts, [RunDir(r) for r in runs])
    try:
        _check_outputs(recipe, command, opts, runs, force=bool(opts.force))
    except OSError as err:  # e.g. a folder on the way that may not be looked into
        raise DataError(f"--out {opts.out}: {err}") from err
    _print_json(recipe.run_command(command, runs, given))


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from protgen_jax.recipes.quickstart import run_quickstart

    if not args.out.strip():
        raise DataError("--out is empty; name the quickstart report folder")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise DataError(f"--out {args.out} is a file; quickstart writes a report folder")
    _print_json(run_quickstart(Path(args.out), progress=not args.quiet, fast=args.fast))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protgen",
        description="Protein generative models in JAX: train, sample, score, evaluate.",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "quickstart",
        help="train a VAE on BLAT_ECOLX, score the DMS, sample (about 6 min on 2 CPU cores)",
    )
    p.add_argument(
        "--out", default="quickstart_run", help="report folder (default: quickstart_run)"
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="1,000 training steps instead of 2,500 (quicker, rougher)",
    )
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("data", help="the dataset registry")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("name", nargs="?", help="dataset to fetch")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train (or resume) a model")
    p.add_argument(
        "model", help="vae | backbone | oadm | d3pm | relax | foldingdiff | design | cvae"
    )
    p.add_argument("--data", help="training data (default: the family's registry dataset)")
    p.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    p.add_argument("--steps", type=int, help="total training steps")
    p.add_argument("--init", metavar="RUN", help="fine-tune: start from the weights of this run")
    p.add_argument("--config", help="a config JSON (e.g. from experiments/) to start from")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--vae", metavar="RUN", help="latent: the VAE run whose latent codes it models")
    p.add_argument("--latent", metavar="RUN", help="classifier: the latent run it classifies")
    p.set_defaults(func=_cmd_train)

    for command, text in RUN_COMMANDS.items():
        sub.add_parser(command, help=f"{text} (protgen {command} --help: options by family)")
    add_compare_parser(sub)  # several runs of any families: its own parser (protgen_jax.compare)
    return parser


def _log_dir() -> Path:
    """Where tracebacks of internal errors go: ``$PROTGEN_LOG_DIR`` or ``~/.cache/protgen_jax/logs``."""
    named = os.environ.get("PROTGEN_LOG_DIR")
    return Path(named) if named else Path.home() / ".cache" / "protgen_jax" / "logs"


def _write_trace(err: BaseException, argv: list[str]) -> str:
    """Write the command line and the traceback of ``err`` to a new log file; its path (a temporary
    file when the log folder cannot be written; a note when nothing can be written)."""
    import tempfile
    import time
    import traceback

    text = f"protgen {' '.join(argv)}\npython {sys.version.split()[0]}\n\n" + "".join(
        traceback.format_exception(type(err), err, err.__traceback__)
    )
    name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
    try:
        folder = _log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(100):  # a second error of this process in the same second
            path = folder / (f"{name}.log" if attempt == 0 else f"{name}-{attempt}.log")
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(text)
                return str(path)
            except FileExistsError:
                continue
    except Exception:  # an unwritable or odd log folder: fall back to a temporary file
        pass
    try:
        fd, tmp = tempfile.mkstemp(prefix="protgen-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return tmp
    except Exception:
        return "nowhere: no log file could be written"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = ""
    try:
        if os.environ.get("PROTGEN_DISTRIBUTED") == "1":  # several hosts: one process per host
            import jax

            jax.distributed.initialize()
        quiet = False
        rest = list(argv)
        while rest and rest[0] == "--quiet":
            quiet = True
            rest.pop(0)
        command = rest[0] if rest else ""
        if command in RUN_COMMANDS:
            _run_command(command, rest[1:], quiet)
        else:
            args = build_parser().parse_args((["--quiet"] if quiet else []) + rest)
            args.argv = argv
            args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if command == "train":
            print(
                "interrupted: the last checkpoint is kept; run the same command to resume",
                file=sys.stderr,
            )
        else:
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: one line here, the traceback in a log file
        where = _write_trace(err, argv)
        message = _one_line(f"{type(err).__name__}: {err}")
        print(f"internal error: {message} (full trace in {where})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
