"""Run configuration: frozen dataclasses of defaults, ``key=value`` overrides, and JSON round trips.

Library functions take plain typed arguments; only recipes and the command line hold configs. Each model
family defines one ``@dataclasses.dataclass(frozen=True)`` of defaults; ``apply_overrides`` parses
``--set key=value`` strings with the field's declared type, so typos and bad values fail before any work.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from protgen_jax.errors import DataError

C = TypeVar("C")


def _parse(value: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        return _parse(value, args[0], key)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(kind)
        parts = [p for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
        return tuple(_parse(p.strip(), inner, key) for p in parts)
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind in (int, float, str):
            return kind(value)
    except ValueError:
        raise DataError(f"--set {key}={value}: expected a value of type {kind.__name__}") from None
    raise DataError(f"--set {key}: fields of type {kind} cannot be set from the command line")


def apply_overrides(config: C, overrides: list[str] | dict[str, Any] | None) -> C:
    """Return ``config`` with ``key=value`` overrides applied (typed by the dataclass fields).

    Raises:
      DataError: unknown key (the message lists the valid ones) or a value that does not parse.
    """
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        if key not in hints:
            valid = ", ".join(sorted(hints))
            raise DataError(
                f"unknown config key {key!r} for {type(config).__name__}; valid keys: {valid}"
            )
        changes[key] = _parse(value, hints[key], key) if isinstance(value, str) else value
    return dataclasses.replace(config, **changes)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise DataError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config from :func:`config_to_dict` output, ignoring keys the class no longer has."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            continue
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def missing_keys(cls: type[C], path: Path) -> dict[str, Any]:
    """Fields of ``cls`` that the config JSON at ``path`` does not mention, with the defaults that fill them.

    A run folder written before a field existed loads with today's default for it, which may not be what
    the run was trained with; resuming says so instead of changing the model silently.
    """
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read run config ({err})") from err
    defaults = config_to_dict(cls())
    return {key: value for key, value in defaults.items() if key not in saved}


def load_config(cls: type[C], path: Path) -> C:
    """Read a config JSON written by a run."""
    try:
        return config_from_dict(cls, json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise DataError(f"{path}: cannot read run config ({err})") from err
