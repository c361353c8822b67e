"""(e) Catalogue matching at scale: a synthetic catalogue of 1M items, matched end to end on this machine.

Generates the catalogue (once, cached under bench/out), trains a ``siamese`` model with 64-d item vectors
on its labelled pairs and the hard negatives mined from the catalogue (not timed as part of matching), then
runs ``prodmatch match`` in-process with its defaults and prints wall time and peak memory per stage, against
the targets: end to end <= 10 minutes and <= 8 GB, ANN recall >= 0.98 of exact top-k; candidate recall@k
by k, candidate AP and the calibration's estimates are set against the Bayes oracle and the truth. The
``quality`` stage (measuring against the truth and the oracle) is reported but is not part of matching.

    python bench/bench_matching.py --items 1000000 --k 20
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

from common import OUT, console, dataset, table
from prodmatch import TrainConfig, train
from prodmatch.matching import MatchConfig, match_catalogue


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--index", default="auto")
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    run_dir = OUT / f"siamese64_{args.items}_{args.pairs}"
    if args.prepare_only:
        data = dataset(args.items, args.pairs)
        with console.status("training a siamese model on the catalogue's labelled pairs"):
            # 64-d item vectors: nearest-neighbour search costs grow with the dimension.
            train(data, run_dir, model="siamese", params={"item_dim": 64}, config=TrainConfig(epochs=5), overwrite=True)
        return
    if not (run_dir / "config.json").exists():
        # In a child process, so that generating and training do not count in this process's peak memory.
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--prepare-only"], check=True)
    data = dataset(args.items, args.pairs)
    t0 = time.perf_counter()
    summary = match_catalogue(
        run_dir, data, OUT / f"match_{args.items}", MatchConfig(k=args.k, index=args.index), overwrite=True
    )
    total = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    rows = [[name, f"{st['seconds']:.1f}", f"{st['peak_rss_mb'] / 1024:.2f}"] for name, st in summary["stages"].items()]
    measuring = summary["stages"].get("quality", {}).get("seconds", 0.0)
    rows.append(["end to end", f"{total:.1f}", f"{peak_gb:.2f}"])
    rows.append(["end to end, less the quality stage", f"{total - measuring:.1f}", ""])
    table(
        f"(e) match {summary['items']:,} items, k={args.k}, {summary['search']['index']}: "
        f"{summary['candidates']:,} candidates, {summary['matches']:,} matches",
        ["stage", "seconds", "peak memory GB (process, so far)"],
        rows,
    )
    q, cal = summary["quality"], summary["calibration"]
    oracle_recall = q.get("oracle_recall_at_k", {})
    table(
        "candidate recall@k of the true partners (each sampled item's own top-k; 2,000 items)",
        ["k", "model's search", "Bayes oracle's ranking"],
        [
            [k, f"{v:.4f}", f"{oracle_recall[k]:.4f}" if k in oracle_recall else "-"]
            for k, v in q["recall_at_k"].items()
        ],
    )
    table(
        "the candidates' scores and calibration",
        ["measure", "model", "oracle / truth"],
        [
            ["candidate AP", f"{q['candidate_ap']:.4f}", f"{q.get('oracle_candidate_ap', float('nan')):.4f}"],
            [
                "share of matches among candidates",
                f"{cal.get('prior', float('nan')):.4f} ({cal['method']})",
                f"{q['candidate_base_rate']:.4f}",
            ],
            ["precision of the matches", f"{cal['estimated_precision']:.4f} (expected)", f"{q['match_precision']:.4f}"],
            [
                "recall among the candidates",
                f"{cal['estimated_recall_among_candidates']:.4f} (expected)",
                f"{q['match_recall_among_candidates']:.4f}",
            ],
        ],
    )
    table(
        "quality against the synthetic truth",
        ["measure", "value", "target"],
        [
            [
                "ANN recall of exact top-k (2,000 queries)",
                f"{q.get('ann_recall_vs_exact') or float('nan'):.4f}",
                ">= 0.98",
            ],
            [f"candidate recall@{args.k} of true pairs", f"{q[f'candidate_recall_at_{args.k}']:.4f}", "reported"],
            [
                "pairwise precision / recall / F1",
                f"{q['pairwise_precision']:.4f} / {q['pairwise_recall']:.4f} / {q['pairwise_f1']:.4f}",
                "",
            ],
            ["B-cubed precision / recall", f"{q['bcubed_precision']:.4f} / {q['bcubed_recall']:.4f}", ""],
            ["end to end minutes, less the quality stage", f"{(total - measuring) / 60:.1f}", "<= 10"],
            ["peak memory GB", f"{peak_gb:.2f}", "<= 8"],
        ],
    )


if __name__ == "__main__":
    main()
