"""Run configuration: frozen dataclasses of defaults, ``key=value`` overrides, and JSON round trips.

Library functions take plain typed arguments; only recipes and the command line hold configs. Each model
family defines one ``@dataclasses.dataclass(frozen=True)`` of defaults; ``apply_overrides`` parses
``--set key=value`` strings with the field's declared type, and ``load_config`` checks every key and value
of a config JSON against the same types, so typos and bad values fail (``DataError`` naming the file or
``--set`` and the key) before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from protgen_jax.errors import DataError

C = TypeVar("C")


# ------------------------------------------------------------------ types
def _union_args(kind: Any) -> list[Any] | None:
    """The non-None members of ``X | None`` / ``Optional[X]``, else None."""
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is getattr(types, "UnionType", None):
        return [a for a in typing.get_args(kind) if a is not type(None)]
    return None


def _describe(kind: Any) -> str:
    """``kind`` in words for error messages ("an integer", "a list of numbers", ...)."""
    members = _union_args(kind)
    if members is not None:
        return " or ".join(_describe(a) for a in members) + " or null"
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        inner = args[0] if args else Any
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(inner, str(inner))}"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
    }.get(kind, str(kind))


def _shown(value: Any) -> str:
    """A JSON value as the user wrote it (shortened)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_value(value: Any, kind: Any, where: str, key: str) -> Any:
    """A JSON (or Python) ``value`` for a field of type ``kind``, converted (lists -> tuples, integers ->
    floats); DataError ``where: key: expected ..., got ...`` otherwise."""
    members = _union_args(kind)
    if members is not None:
        if value is None:
            return None
        for member in members:
            try:
                return _check_value(value, member, where, key)
            except DataError:
                continue
    elif typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                inner = [args[0]] * len(value)
            elif len(args) == len(value):
                inner = list(args)
            else:
                raise DataError(
                    f"{where}: {key}: expected a list of {len(args)} values, got {_shown(value)}"
                )
            return tuple(
                _check_value(v, k, where, f"{key}[{i}]")
                for i, (v, k) in enumerate(zip(value, inner, strict=True))
            )
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
            raise DataError(f"{where}: {key}: expected a finite number, got {_shown(value)}")
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise DataError(f"{where}: {key}: fields of type {kind} cannot be configured")
    raise DataError(f"{where}: {key}: expected {_describe(kind)}, got {_shown(value)}")


def _unknown_keys(cls: type, keys: list[str], known: typing.Iterable[str]) -> str:
    """``unknown config key 'stepz' (did you mean 'steps'?) for SeqDiffConfig``."""
    known = sorted(known)
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    noun = "key" if len(keys) == 1 else "keys"
    return f"unknown config {noun} {', '.join(parts)} for {cls.__name__}"


# ------------------------------------------------------------------ --set
def _parse(value: str, kind: Any, key: str) -> Any:
    """A ``--set key=value`` string as a value of type ``kind``."""
    members = _union_args(kind)
    if members is not None:
        if value.lower() in ("none", "null"):
            return None
        return _parse(value, members[0], key)
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        inner = args[0] if args else str
        parts = [p.strip() for p in value.replace("(", "").replace(")", "").split(",")]
        parts = [p for p in parts if p]
        try:
            return _check_value(tuple(_parse(p, inner, key) for p in parts), kind, "--set", key)
        except DataError:
            raise DataError(
                f"--set {key}={value}: expected {_describe(kind)} separated by commas"
            ) from None
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is float:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        if kind in (int, str):
            return kind(value)
    except ValueError:
        expected = "a finite number" if kind is float else _describe(kind)
        raise DataError(f"--set {key}={value}: expected {expected}") from None
    raise DataError(f"--set {key}: fields of type {kind} cannot be set from the command line")


def apply_overrides(config: C, overrides: list[str] | dict[str, Any] | None) -> C:
    """Return ``config`` with ``key=value`` overrides applied (typed by the dataclass fields).

    ``overrides`` is a list of ``key=value`` strings (``--set``) or a dict whose string values are parsed
    the same way and whose other values must already have the field's type.

    Raises:
      DataError: unknown key (the message names the closest valid one) or a value that does not parse.
    """
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        if key not in hints:
            raise DataError(f"--set: {_unknown_keys(type(config), [key], hints)}")
        if isinstance(value, str):
            changes[key] = _parse(value, hints[key], key)
        else:
            changes[key] = _check_value(value, hints[key], "--set", key)
    return dataclasses.replace(config, **changes)


def _split(item: str) -> tuple[str, str]:
    if not isinstance(item, str) or "=" not in item:
        raise DataError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


# ------------------------------------------------------------------ JSON
def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(
    cls: type[C], data: Any, source: str = "config", *, ignore_unknown: bool = False
) -> C:
    """Rebuild a config from :func:`config_to_dict` output (or a hand-written JSON object).

    Every value is checked against the field's type (lists become tuples, integers become floats);
    keys the class does not have are an error unless ``ignore_unknown``.

    Raises:
      DataError: ``source: ...`` naming the key and the problem.
    """
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a JSON object of config keys, got {_json_kind(data)}")
    hints = typing.get_type_hints(cls)
    unknown = [key for key in data if key not in hints]
    if unknown and not ignore_unknown:
        raise DataError(f"{source}: {_unknown_keys(cls, unknown, hints)}")
    kwargs = {
        key: _check_value(value, hints[key], source, key)
        for key, value in data.items()
        if key in hints
    }
    return cls(**kwargs)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {_shown(value)}"
    return f"the number {_shown(value)}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DataError(f"key {key!r} appears more than once")
        seen[key] = value
    return seen


def _read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; DataError naming the file for anything else."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read config ({err.strerror or err})") from err
    bad = raw.find(b"\x00")
    if bad < 0:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            bad = err.start
    if bad >= 0:
        kind = "gzip-compressed data" if raw.startswith(b"\x1f\x8b") else "binary data"
        raise DataError(
            f"{path}: not a config JSON ({kind}: byte {raw[bad]:#04x} at offset {bad} is not UTF-8 "
            "text)"
        )
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
        ) from err
    except RecursionError as err:
        raise DataError(f"{path}: not a config JSON (nested too deeply)") from err
    except DataError as err:
        raise DataError(f"{path}: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of config keys, got {_json_kind(data)}")
    return data


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a run's own ``config.json`` (a ``run.json`` lies next to it)."""
    return path.name == "config.json" and (path.parent / "run.json").exists()


def missing_keys(cls: type[C], path: Path) -> dict[str, Any]:
    """Fields of ``cls`` that the config JSON at ``path`` does not mention, with the defaults that fill them.

    A run folder written before a field existed loads with the current default for it, which may not be what
    the run was trained with; resuming says so instead of changing the model silently.
    """
    saved = _read_json_object(Path(path))
    defaults = config_to_dict(cls())
    return {key: value for key, value in defaults.items() if key not in saved}


def load_config(cls: type[C], path: Path) -> C:
    """Read a config JSON (``--config FILE`` or a run's ``config.json``), checking keys and types.

    Unknown keys are an error, except in a run's own ``config.json`` (next to its ``run.json``): a run
    written by a version that had a since-removed key still loads, and a one-line warning on stderr names
    the ignored keys.

    Raises:
      DataError: ``path: ...`` naming the key and the problem (not JSON, not an object, unknown key with
        the closest known one, a value of the wrong type).
    """
    path = Path(path)
    data = _read_json_object(path)
    lenient = _is_run_config(path)
    if lenient:
        hints = typing.get_type_hints(cls)
        unknown = [key for key in data if key not in hints]
        if unknown:
            print(
                f"warning: {path}: ignoring {_unknown_keys(cls, unknown, hints)} "
                "(written by another version?)",
                file=sys.stderr,
            )
    return config_from_dict(cls, data, str(path), ignore_unknown=lenient)
