"""(i) The scenario matrix: the default pipeline on synthetic data of very different structure.

Each scenario of `prodmatch.synth.SCENARIOS` changes how the data is made, not only its size: item reuse
(a giant connected component), how negatives are drawn (random, same category, siblings, nearest
neighbours), the positive share, which side data exists, the noise, missing and zero vectors. On each,
the default model (`gbdt`, default settings, one seed) is trained exactly as `prodmatch train` does, and its
test PR-AUC is set against the scenario's Bayes oracle (the best any model can do on that data) and
against the notebook's network (`concat-mlp`) trained in the same run on the same split. Average precision
is set against the oracle's too: it is the same area without interpolating tied scores, which trees have.

    python bench/bench_scenarios.py                      # every scenario, about 25 minutes
    python bench/bench_scenarios.py --scenarios default,giant-component --items 30000 --pairs 12000
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
from sklearn.metrics import average_precision_score

from common import OUT, console, table
from prodmatch import TrainConfig, train
from prodmatch.synth import SCENARIOS, SynthConfig, generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names")
    ap.add_argument("--items", type=int, default=60_000)
    ap.add_argument("--pairs", type=int, default=25_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="gbdt")
    ap.add_argument("--baseline", default="concat-mlp", help="the notebook's network; '' to skip it")
    args = ap.parse_args()
    rows, results = [], {}
    for name in args.scenarios.split(","):
        settings = {"items": args.items, "pairs": args.pairs, **SCENARIOS[name]}
        data = OUT / f"scenario_{name}_{settings['items']}_{settings['pairs']}_{args.seed}"
        if not (data / "synth.json").exists():
            with console.status(f"{name}: generating"):
                generate(data, SynthConfig(seed=args.seed, **settings))
        summary = json.loads((data / "synth.json").read_text())
        oracle = summary["oracle_pr_auc"]["test"]
        config = TrainConfig(seed=args.seed)
        t0 = time.perf_counter()
        with console.status(f"{name}: training {args.model}"):
            report = train(data, OUT / f"scenario_run_{name}", model=args.model, config=config, overwrite=True)
        seconds = time.perf_counter() - t0
        test = report.metrics["test"]["pr_auc"]
        test_ap = report.metrics["test"]["average_precision"]
        oracle_frame = pd.read_parquet(data / "oracle.parquet").query("split == 'test'")
        oracle_ap = float(average_precision_score(oracle_frame["target"], oracle_frame["score"]))
        base = None
        if args.baseline:
            with console.status(f"{name}: training {args.baseline}"):
                base_report = train(
                    data, OUT / f"scenario_base_{name}", model=args.baseline, config=config, overwrite=True
                )
            base = base_report.metrics["test"]["pr_auc"]
        split = report.split
        results[name] = {
            "oracle": oracle,
            "model": test,
            "ratio": test / oracle,
            "model_ap": test_ap,
            "oracle_ap": oracle_ap,
            "baseline": base,
            "seconds": seconds,
            "split": split.to_dict(),
            "largest_component_share": summary["train_largest_component_share"],
        }
        rows.append(
            [
                name,
                f"{summary['train_pairs']:,}",
                f"{summary['train_positive_rate']:.2f}",
                f"{100 * summary['train_largest_component_share']:.0f}%",
                split.method + (f" (from {split.requested})" if split.requested else ""),
                f"{oracle:.4f}",
                f"{test:.4f}",
                f"{test / oracle:.3f}",
                f"{test_ap / oracle_ap:.3f}",
                "" if base is None else f"{base:.4f} ({base / oracle:.3f})",
                f"{seconds:.0f}",
            ]
        )
        console.print(f"{name}: {args.model} {test:.4f}, oracle {oracle:.4f}, ratio {test / oracle:.3f}")
    (OUT / "scenarios.json").write_text(json.dumps(results, indent=2))
    table(
        f"(i) test PR-AUC by scenario: {args.model} with default settings against the Bayes oracle and the notebook's "
        f"network ({args.items:,} items, {args.pairs:,} pairs unless the scenario says otherwise; seed {args.seed})",
        [
            "scenario",
            "train pairs",
            "positive",
            "largest component",
            "split",
            "oracle",
            args.model,
            "/ oracle",
            "AP / oracle AP",
            f"{args.baseline} (/ oracle)",
            "seconds",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
