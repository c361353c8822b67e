"""(m) Explanations and the report on the demo data (150,000 items, ``prodmatch synth --seed 0``).

For each model, the same pairs of the test set, in the same process:

- baseline: ``predict_proba`` (what ``predict`` and ``/v1/score`` run);
- ``explain_pairs``: the scores plus contributions that add up to the raw score (TreeSHAP for ``gbdt``,
  2^k passes of exact modality Shapley for ``siamese``), and the words;
- writing them (``explanations.parquet``, ``contributions.parquet``, ``explanations.json``, no PNGs);
- one waterfall PNG; the whole HTML report of the test set (``build_report``).

The largest error of "base value + contributions = raw score" is printed beside the rates. With
``--screenshot``, the report's first screen and one waterfall are rendered to ``bench/out/`` with headless
Chromium (``apt install chromium``), the pictures docs/explanations.md shows.

    python bench/bench_explain.py --pairs 10000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from common import OUT, console, dataset, table
from prodmatch import TrainConfig, load_pairs, read_catalogue, train
from prodmatch.explain import explain_pairs
from prodmatch.models import load_model
from prodmatch.plots import plot_waterfall
from prodmatch.report import build_report


def _run(data: Path, name: str, model: str, config: TrainConfig) -> Path:
    run = OUT / f"explain_run_{model}_{data.name}"
    if not (run / "config.json").exists():
        with console.status(f"training {model} on {data.name}"):
            train(data, run, model=model, config=config, overwrite=True)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=150_000)
    ap.add_argument("--pairs", type=int, default=10_000, help="test pairs to explain")
    ap.add_argument("--models", default="gbdt,siamese")
    ap.add_argument("--screenshot", action="store_true", help="render the report and a waterfall with Chromium")
    args = ap.parse_args()
    data = dataset(args.items, args.items // 3)
    rows = []
    report_path = None
    for name in args.models.split(","):
        config = TrainConfig(epochs=3) if name != "gbdt" else TrainConfig()
        run = _run(data, name, name, config)
        model = load_model(run)
        cat = read_catalogue(data, model.data_config())
        pairs = load_pairs(data / "test.parquet", cat, require_target=True)
        pairs = pairs.subset(np.arange(min(args.pairs, len(pairs))))
        t0 = time.perf_counter()
        model.predict_proba(cat, pairs)
        predict_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = explain_pairs(model, cat, pairs)
        explain_s = time.perf_counter() - t0
        f = found.frame
        error = float(np.abs(f["base_value"] + f[found.groups].sum(axis=1) - f["raw_score"]).max())
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            found.save(tmp, plots=0)
            write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        waterfall = OUT / f"explain_waterfall_{name}.png"
        plot_waterfall(found.pair(0), waterfall)
        plot_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = build_report(run, data, data / "test.parquet", OUT / f"explain_report_{name}.html")
        report_s = time.perf_counter() - t0
        report_path = report_path or report
        rows.append(
            [
                name,
                found.method,
                f"{len(pairs):,}",
                f"{len(pairs) / predict_s:,.0f}",
                f"{len(pairs) / explain_s:,.0f}",
                f"{explain_s / predict_s:.1f}x",
                f"{write_s:.1f}",
                f"{plot_s:.2f}",
                f"{report_s:.1f}",
                f"{error:.1e}",
            ]
        )
    table(
        f"explanations of {args.pairs:,} test pairs, {data.name} (pairs/s; seconds)",
        [
            "model",
            "method",
            "pairs",
            "predict pairs/s",
            "explain pairs/s",
            "explain / predict",
            "write s",
            "one waterfall s",
            "report s (whole test set)",
            "max |sum - raw|",
        ],
        rows,
    )
    if args.screenshot:
        browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if browser is None:
            console.print("no Chromium on PATH: apt install chromium, or leave out --screenshot")
            return
        shot = OUT / "report_first_screen.png"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    "--hide-scrollbars",
                    "--window-size=1280,1000",
                    f"--screenshot={shot}",
                    report_path.resolve().as_uri(),
                ],
                check=True,
                capture_output=True,
            )
        console.print(f"screenshots: {shot}, {OUT / 'explain_waterfall_gbdt.png'}")


if __name__ == "__main__":
    main()
