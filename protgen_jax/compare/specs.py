"""Run specifications of ``protgen compare``: ``RUN[@key=value,...]``, one table row each.

``RUN`` is a run folder; the options after ``@`` are the family's sampling options, passed to
``Recipe.generate_sequences`` (values read as int, else float, else text), except ``label=NAME``, the
row's name (default: the folder name, with the options when there are any, e.g. ``lat@guidance=2``).
The same run may appear several times with different options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protgen_jax.errors import DataError


@dataclass(frozen=True)
class RunSpec:
    """One row: ``text`` as given, the run folder, the family's options and the row label."""

    text: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""


def parse_value(text: str) -> Any:
    """``"2"`` -> 2, ``"2.5"`` -> 2.5, anything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_spec(text: str) -> RunSpec:
    """``RUN[@key=value,...]`` -> :class:`RunSpec` (DataError naming the spec for a bad option)."""
    if not text.strip():
        raise DataError("an empty run spec; give RUN[@key=value,...]")
    path, _, rest = text.partition("@")
    if Path(text).exists():  # a folder whose name holds "@"
        path, rest = text, ""
    options: dict[str, Any] = {}
    for item in rest.split(",") if rest else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise DataError(f"run spec {text!r}: option {item!r} is not key=value")
        if key in options:
            raise DataError(f"run spec {text!r}: option {key!r} given twice")
        options[key] = parse_value(value.strip())
    label = str(options.pop("label", "")) or Path(path).name + (
        "@" + ",".join(f"{k}={v}" for k, v in options.items()) if options else ""
    )
    return RunSpec(text, Path(path), options, label)


def parse_specs(texts: list[str]) -> list[RunSpec]:
    """Every spec parsed; DataError for a bad one or for two rows of the same label."""
    specs = [parse_spec(t) for t in texts]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.label in seen:
            raise DataError(
                f"run specs {seen[spec.label]!r} and {spec.text!r} make the same row "
                f"{spec.label!r}; give one of them label=NAME"
            )
        seen[spec.label] = spec.text
    return specs
