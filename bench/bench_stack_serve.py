"""(n) What serves the stacked network: one network refit on all training pairs (the default) against the mean
of the cross-fitted fold networks, on the same data, split and seed.

The booster learns from the fold networks' out-of-fold scores either way; only what scores the stacked
feature of new pairs differs (`-p stack_serve=refit|folds`). For each data set, the default `gbdt` is trained
both ways and the pairs job's test PR-AUC, F1 at the run's threshold, and calibration error (10 bins of
equal count: the reliability plot's) are set side by side. The refit earns its place where its PR-AUC (or
else its F1) is at least the folds' or within 0.002 of it, with the calibration error not worse by more
than 0.01. Each set's latest measurement is kept in bench/out/stack_serve.json, so rerunning a few sets (more
seeds for a noisy one) keeps the others in the table.

Data: the demo catalogue (150,000 items), every scenario of the synthetic matrix, and the four real sets
(`bench/out/em_<set>_use`, made by `bench/bench_em.py`), those with several seeds.

    python bench/bench_stack_serve.py                                   # about 40 minutes
    python bench/bench_stack_serve.py --sets demo,Abt-Buy --seeds 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import OUT, console, dataset, scenario_data, table
from prodmatch import TrainConfig, train
from prodmatch.synth import SCENARIOS

REAL = ["Abt-Buy", "Amazon-Google", "WDC-cameras", "WDC-shoes"]
WAYS = ("folds", "refit")
TOLERANCE = 0.002  # PR-AUC the refit may lose
CALIBRATION_TOLERANCE = 0.01


def data_sets(args) -> list[tuple[str, Path, dict]]:
    """(name, data directory, TrainConfig keywords) of every set asked for."""
    wanted = args.sets.split(",")
    out = []
    if "demo" in wanted:
        out.append(("demo", dataset(150_000, 50_000), {}))
    for name in SCENARIOS:
        if "scenarios" in wanted or name in wanted:
            out.append((f"scenario {name}", scenario_data(name, args.items, args.pairs), {}))
    for name in REAL:
        if name in wanted or "real" in wanted:
            data = OUT / f"em_{name}_use"
            if not (data / "valid.parquet").exists():
                raise SystemExit(f"{data} is missing: run python bench/bench_em.py --configs gbdt --datasets {name}")
            out.append((name, data, {"valid_pairs": str(data / "valid.parquet")}))
    return out


def run_one(data: Path, way: str, seed: int, extra: dict) -> dict:
    run = OUT / f"stack_serve_{data.name}_{way}_{seed}"
    t0 = time.perf_counter()
    report = train(
        data,
        run,
        model="gbdt",
        params={"stack_serve": way},
        config=TrainConfig(seed=seed, **extra),
        overwrite=True,
    )
    test = report.metrics["test"]
    return {
        "pr_auc": test["pr_auc"],
        "f1": test["f1"],
        "calibration_error": test["calibration_error"],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sets",
        default="demo,scenarios,real",
        help="comma-separated: demo, scenarios, real, or one scenario or real set",
    )
    ap.add_argument("--seeds", type=int, default=3, help="training seeds for each real set")
    ap.add_argument("--synthetic-seeds", type=int, default=1, help="training seeds for the demo and each scenario")
    ap.add_argument("--items", type=int, default=20_000, help="items of each scenario")
    ap.add_argument("--pairs", type=int, default=8_000, help="labelled pairs of each scenario")
    args = ap.parse_args()
    saved = OUT / "stack_serve.json"  # every set's latest measurement, so a rerun of a few keeps the rest
    results: dict = json.loads(saved.read_text()) if saved.exists() else {}
    for name, data, extra in data_sets(args):
        seeds = range(args.seeds) if name in REAL else range(args.synthetic_seeds)
        found: dict = {way: [] for way in WAYS}
        for seed in seeds:
            for way in WAYS:
                with console.status(f"{name}: gbdt, stack_serve={way}, seed {seed}"):
                    found[way].append(run_one(data, way, seed, extra))
        results[name] = found
        console.print(row(name, found))
        saved.write_text(json.dumps(results, indent=2) + "\n")
    table(
        "(n) the stacked network that serves: the folds' mean against one refit network, pairs job on test "
        f"(means over seeds); holds: PR-AUC, or else F1, at least the folds' or within {TOLERANCE}, and the "
        f"calibration error at most {CALIBRATION_TOLERANCE} worse",
        ["data", "seeds", "PR-AUC folds", "PR-AUC refit", "refit - folds", "F1 folds", "F1 refit", "refit - folds",
         "calib. error folds", "calib. error refit", "holds"],
        [row(name, results[name]) for name in sorted(results, key=_order)],
    )  # fmt: skip


def row(name: str, found: dict) -> list[str]:
    mean = {way: {k: float(np.mean([r[k] for r in found[way]])) for k in found[way][0]} for way in WAYS}
    gap = {k: mean["refit"][k] - mean["folds"][k] for k in ("pr_auc", "f1", "calibration_error")}
    holds = (gap["pr_auc"] >= -TOLERANCE or gap["f1"] >= -TOLERANCE) and gap[
        "calibration_error"
    ] <= CALIBRATION_TOLERANCE
    return [
        name,
        str(len(found["refit"])),
        f"{mean['folds']['pr_auc']:.4f}",
        f"{mean['refit']['pr_auc']:.4f}",
        f"{gap['pr_auc']:+.4f}",
        f"{mean['folds']['f1']:.4f}",
        f"{mean['refit']['f1']:.4f}",
        f"{gap['f1']:+.4f}",
        f"{mean['folds']['calibration_error']:.4f}",
        f"{mean['refit']['calibration_error']:.4f}",
        "yes" if holds else "NO",
    ]


def _order(name: str) -> tuple[int, int]:
    """The demo, then the scenarios in the matrix's order, then the real sets."""
    if name == "demo":
        return (0, 0)
    scenarios = [f"scenario {s}" for s in SCENARIOS]
    if name in scenarios:
        return (1, scenarios.index(name))
    return (2, REAL.index(name) if name in REAL else len(REAL))


if __name__ == "__main__":
    main()
