"""Shared helpers for the benchmarks: a cached synthetic dataset and a results table."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from prodmatch.synth import SynthConfig, generate

logging.basicConfig(level=logging.WARNING)
OUT = Path(__file__).resolve().parent / "out"
console = Console(width=None if sys.stdout.isatty() else 140)  # tables stay whole in a log file


def dataset(items: int, pairs: int, seed: int = 0) -> Path:
    """A synthetic dataset under bench/out, generated once per size."""
    path = OUT / f"synth_{items}_{pairs}_{seed}"
    if not (path / "synth.json").exists():
        with console.status(f"generating {items:,} items / {pairs:,} pairs"):
            generate(path, SynthConfig(items=items, pairs=pairs, seed=seed))
    return path


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` runs (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    console.print(t)
