"""PEP 562 lazy package attributes, so that importing a light submodule (the dataset registry, the
FASTA reader) or running ``protgen data list`` does not import JAX."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def lazy_attributes(
    package: str, table: dict[str, str], extra: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: attribute ``name`` is imported from the module
    ``table[name]`` (a full dotted name) on first use; ``dir()`` lists the table's names and ``extra``."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*table, *extra})

    return __getattr__, __dir__
