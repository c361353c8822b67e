"""(j) Catalogue matching against the Bayes oracle, on catalogues whose labelled pairs are drawn unlike the
candidates `match` scores.

For each catalogue scenario of `prodmatch.synth.CATALOGUE_SCENARIOS` (labelled negatives random within a
category, siblings, or nearest neighbours; 1.3 to 5 listings per product; identifiable to ambiguous
listings), the default model is trained as `prodmatch train` does and `prodmatch match` runs with its
defaults. Its figures are set against the oracle's on the same catalogue: the share of true pairs among all
candidates, recall@20 of the tower's search alone (each sampled item's own top-20, 2,000 items) against the
oracle's ranking of the whole category, candidate AP against the oracle's AP on the same candidates, and the clusters' pairwise F1 against clustering the oracle's probabilities with the same rule
at its best threshold. The estimated share of matches among the candidates is set against the truth.

Linking (`match --link`): each catalogue is also split into two sources, at random (a product may have
listings on both sides and several on one: many-to-many clusters) and one listing of each product per side
(deduplicated sources: `--one-to-one`), and the two are linked with the same model. Cluster F1 counts the
pairs of two sources only, against the oracle's clustered the same way on the same candidates.

    python bench/bench_catalogue.py                        # every catalogue scenario, about 27 minutes
    python bench/bench_catalogue.py --scenarios catalogue-category --hard-negatives 0   # without mining
    python bench/bench_catalogue.py --items 8000 --pairs 2400 --ks 5,20,100,1000       # cluster F1 by k
    python bench/bench_catalogue.py --no-link              # without the linking table
"""

from __future__ import annotations

import argparse
import json
import time

from common import OUT, console, scenario_data, table
from prodmatch import TrainConfig, train
from prodmatch.matching import MatchConfig, link_sources, match_catalogue
from prodmatch.synth import CATALOGUE_SCENARIOS, split_sources

LINK_SPLITS = {"random": False, "one per product": True}  # how the two sources are drawn: one_per_product


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(CATALOGUE_SCENARIOS), help="comma-separated names")
    ap.add_argument("--items", type=int, default=40_000)
    ap.add_argument("--pairs", type=int, default=12_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="gbdt")
    ap.add_argument("--hard-negatives", type=int, default=TrainConfig.hard_negatives)
    ap.add_argument(
        "--far-negatives", type=int, default=TrainConfig.far_negatives, help="train --far-negatives (random pairs)"
    )
    ap.add_argument("--calibrate", default="prior")
    ap.add_argument(
        "--ks",
        default="",
        help="also match at each of these k (comma-separated, e.g. 5,20,100,1000): cluster F1 by k, and its "
        "largest drop from the best k",
    )
    ap.add_argument(
        "--link",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also link two sources drawn from each catalogue (match --link, with --one-to-one where each "
        "source lists a product once)",
    )
    args = ap.parse_args()
    ks = sorted({int(k) for k in args.ks.split(",") if k})
    rows, results, k_rows, link_rows = [], {}, [], []
    for name in args.scenarios.split(","):
        data = scenario_data(name, args.items, args.pairs, args.seed)
        run = OUT / f"catalogue_run_{name}_{args.hard_negatives}_{args.far_negatives}_{args.items}"
        t0 = time.perf_counter()
        with console.status(f"{name}: training {args.model}"):
            train(
                data,
                run,
                model=args.model,
                config=TrainConfig(
                    seed=args.seed, hard_negatives=args.hard_negatives, far_negatives=args.far_negatives
                ),
                overwrite=True,
            )
        train_seconds = time.perf_counter() - t0
        with console.status(f"{name}: matching"):
            summary = match_catalogue(
                run, data, OUT / f"catalogue_match_{name}", MatchConfig(calibrate=args.calibrate), overwrite=True
            )
        q, cal = summary["quality"], summary["calibration"]
        match_seconds = sum(st["seconds"] for key, st in summary["stages"].items() if key != "quality")
        results[name] = {
            "quality": q,
            "calibration": cal,
            "train_seconds": train_seconds,
            "match_seconds": match_seconds,
        }
        recall, oracle_recall = q["recall_at_k"]["20"], q["oracle_recall_at_k"]["20"]
        rows.append(
            [
                name,
                f"{q['candidate_recall_at_20']:.3f}",
                f"{recall:.3f} / {oracle_recall:.3f}",
                f"{q['candidate_ap']:.3f} / {q['oracle_candidate_ap']:.3f} = {q['candidate_ap'] / q['oracle_candidate_ap']:.2f}",
                f"{q['pairwise_f1']:.3f} / {q['oracle_cluster_f1']:.3f} = {q['pairwise_f1'] / q['oracle_cluster_f1']:.2f}",
                f"{q['best_threshold_f1']:.3f}",
                f"{cal.get('prior', float('nan')):.4f} / {q['candidate_base_rate']:.4f}",
                f"{cal.get('estimated_precision', float('nan')):.3f} / {q['match_precision'] or float('nan'):.3f}",
                f"{train_seconds:.0f} + {match_seconds:.0f}",
            ]
        )
        console.print(rows[-1])
        if ks:
            by_k = {MatchConfig().k: (q["pairwise_f1"], match_seconds)}
            for k in ks:
                if k in by_k:
                    continue
                with console.status(f"{name}: matching at k={k}"):
                    at = match_catalogue(
                        run,
                        data,
                        OUT / f"catalogue_match_{name}_k{k}",
                        MatchConfig(k=k, calibrate=args.calibrate),
                        overwrite=True,
                    )
                seconds = sum(st["seconds"] for key, st in at["stages"].items() if key != "quality")
                by_k[k] = (at["quality"]["pairwise_f1"], seconds)
            f1 = [by_k[k][0] for k in ks]
            results[name]["cluster_f1_by_k"] = {str(k): by_k[k][0] for k in ks}
            k_rows.append([name, *[f"{by_k[k][0]:.3f} ({by_k[k][1]:.0f} s)" for k in ks], f"{max(f1) - min(f1):.3f}"])
            console.print(k_rows[-1])
        if args.link:
            results[name]["link"] = {}
            for split, one_to_one in LINK_SPLITS.items():
                tag = "one" if one_to_one else "random"
                left, right = OUT / f"{data.name}_left_{tag}", OUT / f"{data.name}_right_{tag}"
                if not (right / "oracle_items.npz").exists():
                    counts = split_sources(data, left, right, one_per_product=one_to_one, seed=args.seed)
                    (OUT / f"{data.name}_sources_{tag}.json").write_text(json.dumps(counts))
                counts = json.loads((OUT / f"{data.name}_sources_{tag}.json").read_text())
                with console.status(f"{name}: linking two sources ({split})"):
                    linked = link_sources(
                        run,
                        left,
                        right,
                        OUT / f"catalogue_link_{name}_{tag}",
                        MatchConfig(calibrate=args.calibrate, one_to_one=one_to_one),
                        overwrite=True,
                    )
                lq, lcal = linked["quality"], linked["calibration"]
                seconds = sum(st["seconds"] for key, st in linked["stages"].items() if key != "quality")
                results[name]["link"][split] = {"quality": lq, "calibration": lcal, "seconds": seconds, **counts}
                link_rows.append(
                    [
                        name,
                        split + (" (--one-to-one)" if one_to_one else ""),
                        f"{counts['left_items']:,} + {counts['right_items']:,}",
                        f"{lq['candidate_recall_at_20']:.3f}",
                        f"{lq['pairwise_f1']:.3f} / {lq['oracle_cluster_f1']:.3f} = "
                        f"{lq['pairwise_f1'] / lq['oracle_cluster_f1']:.3f}",
                        f"{lq['best_threshold_f1']:.3f}",
                        f"{lcal.get('estimated_precision', float('nan')):.3f} / {lq['match_precision'] or float('nan'):.3f}",
                        f"{seconds:.0f}",
                    ]
                )
                console.print(link_rows[-1])
    (OUT / f"catalogue_{args.hard_negatives}_{args.far_negatives}_{args.items}.json").write_text(
        json.dumps(results, indent=2)
    )
    if ks:
        table(
            f"(j) cluster F1 by k (match seconds), {args.items:,} items",
            ["scenario", *[f"k={k}" for k in ks], "largest drop from the best k"],
            k_rows,
        )
    if link_rows:
        table(
            f"(j) linking two sources drawn from each catalogue, against the oracle: match --link ({args.items:,} "
            "items split in two)",
            [
                "scenario",
                "sources drawn",
                "items left + right",
                "candidate recall",
                "cluster F1 / oracle",
                "F1 at best threshold",
                "precision est. / true",
                "seconds",
            ],
            link_rows,
        )
    table(
        f"(j) catalogue matching against the oracle: {args.model}, hard negatives {args.hard_negatives} per item "
        f"(far {args.far_negatives}), "
        f"match --calibrate {args.calibrate} ({args.items:,} items, {args.pairs:,} labelled pairs, seed {args.seed})",
        [
            "scenario",
            "candidate recall",
            "tower recall@20 / oracle",
            "candidate AP / oracle",
            "cluster F1 / oracle",
            "F1 at best threshold",
            "match share est. / true",
            "precision est. / true",
            "seconds train + match",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
