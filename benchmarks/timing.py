"""Timing helpers for the benchmarks: compile time apart, warm-up, ``block_until_ready``, a printed table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax


def measure(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, float]:
    """``(first_call_seconds, steady_seconds)``: the first call includes tracing and compilation; the
    steady time is the best of ``repeats`` further calls (after the warm-up), each blocked until ready."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table (markdown-compatible)."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}  [{jax.devices()[0].device_kind}, jax {jax.__version__}]")
    for i, row in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
