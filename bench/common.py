"""Shared helpers for the benchmarks: a cached synthetic dataset and a results table."""

from __future__ import annotations

import datetime
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from prodmatch.synth import CATALOGUE_SCENARIOS, SCENARIOS, SynthConfig, generate

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


def scenario_data(name: str, items: int, pairs: int, seed: int = 0) -> Path:
    """A scenario of synth's matrix or a catalogue scenario at this size, under bench/out, generated once
    (``scenario_...`` or ``catalogue_...``: every script that names the same scenario and size shares it)."""
    if name in SCENARIOS:
        prefix, settings = "scenario", SCENARIOS[name]
    elif name in CATALOGUE_SCENARIOS:
        prefix, settings = "catalogue", CATALOGUE_SCENARIOS[name]
    else:
        known = ", ".join([*SCENARIOS, *CATALOGUE_SCENARIOS])
        raise SystemExit(f"unknown scenario {name!r}: one of {known}")
    settings = {"items": items, "pairs": pairs, **settings}
    path = OUT / f"{prefix}_{name}_{settings['items']}_{settings['pairs']}_{seed}"
    if not (path / "oracle_items.npz").exists():
        with console.status(f"{name}: generating"):
            generate(path, SynthConfig(seed=seed, **settings))
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
    """Print a table, and write it into docs/benchmarks.md (see :func:`publish`)."""
    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    publish(title, columns, rows)


# ------------------------------------------------------------------------------------------- the docs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
GENERATED = "## Tables written by the last run of each script"
_published: list[str] = []  # this run's tables, as markdown


def machine() -> str:
    """The CPU this ran on, in words: model, cores and the widest vector units found (never assumed)."""
    flags, model = set(), platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and model in ("unknown CPU", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    units = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag in flags]
    return f"{model}, {os.cpu_count()} cores, {' + '.join(units) or 'no AVX2'}"


def publish(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Write this run's tables so far into docs/benchmarks.md, in the block of the running script (replaced
    whole, so the file always shows each script's last run, with its command line, date and machine).
    ``PRODMATCH_BENCH_DOCS=0`` leaves the file alone (a trial run)."""
    if os.environ.get("PRODMATCH_BENCH_DOCS", "1") == "0" or not DOCS.exists():
        return
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in [columns, *rows]]
    md = [f"**{title}**", "", "| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    _published.append("\n".join(md))
    script = Path(sys.argv[0]).stem
    start, end = f"<!-- bench:{script} -->", f"<!-- /bench:{script} -->"
    command = " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = "\n\n".join([start, f"`{command}` ({stamp}; {machine()})", *_published, end])
    text = DOCS.read_text()
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        if GENERATED not in text:
            text = (
                text.rstrip("\n")
                + "\n\n"
                + GENERATED
                + "\n\nWritten by `bench/common.py` as each script prints them; the sections above discuss them.\n"
            )
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = DOCS.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(DOCS)
