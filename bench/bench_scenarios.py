"""(i) The scenario matrix: one configuration, both jobs, on synthetic data of very different structure.

Each scenario of `prodmatch.synth.SCENARIOS` changes how the data is made, not only its size: item reuse
(a giant connected component), how the labelled negatives are drawn (random, same category, siblings,
nearest neighbours; easier than a catalogue's neighbours), the positive share, which side data exists, the
noise, missing and zero vectors, sparse labels, and the catalogue scenarios' listings per product. On each,
the default model (`gbdt`, default settings, one seed) is trained exactly as `prodmatch train` does, and
both of its jobs are set against the scenario's Bayes oracle:

- pairs: the pairs job's test PR-AUC over the oracle's, on every test pair and on the unseen-item pairs
  (neither item in train.parquet); average precision over the oracle's too (the same area without
  interpolating tied scores, which trees have);
- catalogue: `prodmatch match` with its defaults, the clusters' pairwise F1 over that of the oracle's own
  match (the oracle's probabilities of the same candidates, clustered by the same rule at its best
  threshold).

The oracle, computed in the same run on the same data, is the reference of both columns. `--baseline
concat-mlp` also trains the notebook's network on the same split, as a second reference for the pairs job.

    python bench/bench_scenarios.py                      # every scenario, about 45 minutes
    python bench/bench_scenarios.py --scenarios default,noisy-listings --items 30000 --pairs 12000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from common import OUT, console, scenario_data, table
from prodmatch import TrainConfig, train
from prodmatch.api import predict
from prodmatch.evaluation import pr_auc
from prodmatch.matching import MatchConfig, match_catalogue
from prodmatch.synth import SCENARIOS


def _unseen(data, frame: pd.DataFrame) -> np.ndarray:
    """Which test pairs have neither item in train.parquet."""
    trained = pd.read_parquet(data / "train.parquet", columns=["variantid1", "variantid2"])
    seen = pd.Index(np.concatenate([trained.variantid1.to_numpy(), trained.variantid2.to_numpy()])).unique()
    return ~(frame.variantid1.isin(seen).to_numpy() | frame.variantid2.isin(seen).to_numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names")
    ap.add_argument("--items", type=int, default=60_000)
    ap.add_argument("--pairs", type=int, default=25_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="gbdt")
    ap.add_argument(
        "--baseline",
        default="",
        help="a second model trained on the same split, e.g. concat-mlp (the notebook's network); none by default",
    )
    ap.add_argument("--no-match", action="store_true", help="the pairs job only")
    args = ap.parse_args()
    rows, results = [], {}
    for name in args.scenarios.split(","):
        data = scenario_data(name, args.items, args.pairs, args.seed)
        summary = json.loads((data / "synth.json").read_text())
        config = TrainConfig(seed=args.seed)
        run = OUT / f"scenario_run_{name}"
        t0 = time.perf_counter()
        with console.status(f"{name}: training {args.model}"):
            report = train(data, run, model=args.model, config=config, overwrite=True)
        seconds = time.perf_counter() - t0
        test = pd.read_parquet(data / "test.parquet")
        prob = predict(run, data, data / "test.parquet")["target"].to_numpy()  # the pairs job, as `predict` scores
        oracle = pd.read_parquet(data / "oracle.parquet").query("split == 'test'")
        assert (oracle.variantid1.to_numpy() == test.variantid1.to_numpy()).all()  # the same pairs, in order
        y, o = oracle["target"].to_numpy(), oracle["score"].to_numpy()
        unseen = _unseen(data, test)
        model_pr, oracle_pr = pr_auc(y, prob), pr_auc(y, o)
        model_ap, oracle_ap = average_precision_score(y, prob), average_precision_score(y, o)
        unseen_ratio = pr_auc(y[unseen], prob[unseen]) / pr_auc(y[unseen], o[unseen]) if unseen.sum() > 10 else None
        base = None
        if args.baseline:
            with console.status(f"{name}: training {args.baseline}"):
                base_report = train(
                    data, OUT / f"scenario_base_{name}", model=args.baseline, config=config, overwrite=True
                )
            base = base_report.metrics["test"]["pr_auc"]
        cluster = None
        match_seconds = None
        if not args.no_match:
            with console.status(f"{name}: matching"):
                found = match_catalogue(run, data, OUT / f"scenario_match_{name}", MatchConfig(), overwrite=True)
            q = found["quality"]
            cluster = (q["pairwise_f1"], q["oracle_cluster_f1"])
            match_seconds = sum(st["seconds"] for key, st in found["stages"].items() if key != "quality")
        split = report.split
        pairs_job = report.metrics["jobs"]["pairs"]
        catalogue_job = report.metrics["jobs"].get("catalogue", {})
        results[name] = {
            "oracle_pr_auc": oracle_pr,
            "pr_auc": model_pr,
            "ratio": model_pr / oracle_pr,
            "ratio_unseen": unseen_ratio,
            "unseen_pairs": int(unseen.sum()),
            "ap_ratio": model_ap / oracle_ap,
            "baseline": base,
            "cluster_f1": None if cluster is None else cluster[0],
            "oracle_cluster_f1": None if cluster is None else cluster[1],
            "train_seconds": seconds,
            "match_seconds": match_seconds,
            "split": split.to_dict(),
            "pairs_job_weights": pairs_job.get("aux_weights"),
            "catalogue_job_weights": catalogue_job.get("aux_weights"),
            "largest_component_share": summary["train_largest_component_share"],
        }
        rows.append(
            [
                name,
                f"{summary['train_pairs']:,}",
                f"{100 * summary['train_largest_component_share']:.0f}%",
                split.method + (f" (from {split.requested})" if split.requested else ""),
                f"{oracle_pr:.4f}",
                f"{model_pr:.4f}",
                f"{model_pr / oracle_pr:.3f}",
                "" if unseen_ratio is None else f"{unseen_ratio:.3f}",
                f"{model_ap / oracle_ap:.3f}",
                "" if base is None else f"{base:.4f} ({base / oracle_pr:.3f})",
                "" if cluster is None else f"{cluster[0]:.3f} / {cluster[1]:.3f} = {cluster[0] / cluster[1]:.3f}",
                _weights(pairs_job.get("aux_weights")) + " / " + _weights(catalogue_job.get("aux_weights")),
                f"{seconds:.0f}" + ("" if match_seconds is None else f" + {match_seconds:.0f}"),
            ]
        )
        console.print(rows[-1])
        (OUT / "scenarios.json").write_text(json.dumps(results, indent=2))
    table(
        f"(i) both jobs by scenario: {args.model} with default settings against the Bayes oracle ({args.items:,} items, "
        f"{args.pairs:,} pairs unless the scenario says otherwise; seed {args.seed})",
        [
            "scenario",
            "train pairs",
            "largest component",
            "split",
            "oracle PR-AUC",
            f"{args.model} pairs job",
            "/ oracle",
            "unseen / oracle",
            "AP / oracle AP",
            f"{args.baseline} (/ oracle)",
            "cluster F1 / oracle's match",
            "mined weight: pairs / catalogue",
            "seconds train + match",
        ],
        rows,
    )


def _weights(weights: dict | None) -> str:
    return "0" if not weights else ", ".join(f"{v:g}" for v in weights.values())


if __name__ == "__main__":
    main()
