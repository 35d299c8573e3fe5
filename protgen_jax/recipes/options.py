"""Typed command options: each model family declares what its ``sample`` / ``evaluate`` / ``score`` take.

An :class:`Option` has a name, a type, a default and bounds. :func:`resolve_options` turns the flags a
user gave into a complete, checked namespace for one family: a flag the family does not declare is an
error naming the flag and the family, a value out of bounds is an error naming the flag, and 0 is a
value like any other (``--temperature 0`` is greedy, ``--guidance 0`` unconditional, ``--num 0`` an
error) - nothing is treated as "unset" except a flag that was not given.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from protgen_jax.errors import DataError


@dataclass(frozen=True)
class Option:
    """One option of a command.

    ``type`` is ``int``, ``float``, ``str`` or ``bool`` (a switch); ``default`` is used when the flag
    is not given (``None``: absent, the command decides); ``low`` / ``high`` bound numbers
    (inclusive); ``choices`` restrict strings; ``required`` options have no default.
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag, ``--noise-scale`` for ``noise_scale``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` converted to ``type`` and checked against the bounds (DataError otherwise)."""
        if value is None:
            return None
        if self.type is bool:
            return bool(value)
        try:
            value = self.type(value)
        except (TypeError, ValueError):
            raise DataError(f"{self.flag}: expected {self.type.__name__}, got {value!r}") from None
        if self.low is not None and value < self.low:
            raise DataError(f"{self.flag} must be >= {self.low:g}, got {value}")
        if self.high is not None and value > self.high:
            raise DataError(f"{self.flag} must be <= {self.high:g}, got {value}")
        if self.choices is not None and value not in self.choices:
            raise DataError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


COMMON = (
    Option("out", str, required=True, help="output path"),
    Option("seed", int, None, "root key of the command (default: the run's seed)", low=0),
    Option("quiet", bool, False, "no progress bars"),
    Option("force", bool, False, "replace output files that already exist"),
)
"""Options every command of every family takes (``protgen`` checks ``--out`` and ``--force`` before any
model is loaded; a family's command may ignore ``force``)."""


def resolve_options(
    family: str, command: str, declared: tuple[Option, ...], given: dict[str, Any]
) -> SimpleNamespace:
    """The full option namespace of ``command`` for ``family``.

    Args:
      family: the run's model family (named in errors).
      command: ``sample``, ``evaluate`` or ``score`` (named in errors).
      declared: the family's options for the command (:data:`COMMON` is added).
      given: the flags the user set, ``{name: value}``; flags not given must be absent (or ``None``;
        ``False`` for a switch).

    Raises:
      DataError: a flag the family does not take, a missing required option, or a bad value.
    """
    options = {o.name: o for o in (*COMMON, *declared)}
    given = {k: v for k, v in given.items() if v is not None and v is not False}
    foreign = sorted(set(given) - set(options))
    if foreign:
        flags = ", ".join("--" + f.replace("_", "-") for f in foreign)
        takes = ", ".join(o.flag for o in declared) or "no options"
        raise DataError(
            f"{flags} does not apply to {command} for a {family!r} run ({command} takes: {takes})"
        )
    out = {}
    for name, option in options.items():
        if name in given:
            out[name] = option.check(given[name])
        elif option.required:
            raise DataError(f"{command} for a {family!r} run needs {option.flag}")
        else:
            out[name] = option.default if option.type is not bool else bool(option.default)
    return SimpleNamespace(**out)


def describe(declared: tuple[Option, ...]) -> str:
    """One line per option for ``--help``: ``--flag TYPE (default) help``."""
    lines = []
    for o in declared:
        kind = "" if o.type is bool else f" {o.type.__name__.upper()}"
        default = "" if o.default is None or o.type is bool else f" (default {o.default})"
        lines.append(f"  {o.flag}{kind}{default}  {o.help}")
    return "\n".join(lines)
