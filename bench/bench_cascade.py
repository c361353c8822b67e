"""(k) The cascade in `match`: a cheap model scores every candidate, a text model re-scores the uncertain ones.

On the demo catalogue (150,000 synthetic items, whose names carry brand, model and colour):

1. the default ``gbdt`` is trained on the demo's pairs (cached under bench/out);
2. a ``cross-encoder`` is fine-tuned on a random sample of the same training pairs (``--text-pairs``; the
   full set would take hours on 2 cores) without mined negatives, in a data directory that shares the item
   files;
3. `prodmatch match` runs without and with ``--rescore`` (each ``--bands``), in the same process.

The table sets, per run, the share of candidate pairs re-scored, the decisions that changed, the seconds
of each stage, and the pairwise cluster F1 (with precision and recall) against the catalogue's truth; the
re-scoring stage's cost is given as a ratio to the plain match's total time.

    python bench/bench_cascade.py                       # about 40 minutes on 2 cores
    python bench/bench_cascade.py --text-pairs 1000 --bands 0.1
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from common import OUT, console, dataset, table
from prodmatch import TrainConfig, train
from prodmatch.matching import MatchConfig, match_catalogue


def text_data(data: Path, pairs: int, seed: int) -> Path:
    """A data directory with the demo's item files (linked) and a random sample of its training pairs."""
    out = OUT / f"cascade_text_{data.name}_{pairs}_{seed}"
    out.mkdir(parents=True, exist_ok=True)
    for f in data.glob("*.parquet"):
        if f.name != "train.parquet" and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    frame = pd.read_parquet(data / "train.parquet")
    frame.sample(n=min(pairs, len(frame)), random_state=seed).to_parquet(out / "train.parquet", index=False)
    return out


def trained(data: Path, name: str, model: str, config: TrainConfig) -> Path:
    run = OUT / f"cascade_run_{name}"
    if not (run / "config.json").exists():
        with console.status(f"training {model} ({name})"):
            train(data, run, model=model, config=config, overwrite=True)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=150_000)
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--text-pairs", type=int, default=1500, help="training pairs the cross-encoder learns from")
    ap.add_argument("--bands", default="0.05,0.2", help="comma-separated --rescore-band values")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger("prodmatch").setLevel(logging.INFO)  # the stages' and the cascade's own lines

    data = dataset(args.items, args.pairs, args.seed)
    t0 = time.perf_counter()
    gbdt = trained(data, f"gbdt_{data.name}", "gbdt", TrainConfig(seed=args.seed))
    gbdt_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    cross = trained(
        text_data(data, args.text_pairs, args.seed),
        f"cross_{data.name}_{args.text_pairs}",
        "cross-encoder",
        TrainConfig(seed=args.seed, hard_negatives=0),  # the labelled pairs only: mining would triple them
    )
    cross_seconds = time.perf_counter() - t0
    console.print(f"training: gbdt {gbdt_seconds:.0f}s, cross-encoder {cross_seconds:.0f}s (0 when cached)")

    runs = [("gbdt", MatchConfig())]
    runs += [
        (f"gbdt -> cross-encoder, band {b}", MatchConfig(rescore=str(cross), rescore_band=float(b)))
        for b in args.bands.split(",")
    ]
    rows, base_seconds = [], None
    for label, config in runs:
        out = OUT / f"cascade_match_{label.replace(' ', '_').replace(',', '')}"
        with console.status(f"match: {label}"):
            summary = match_catalogue(gbdt, data, out, config, overwrite=True)
        stages, quality, cascade = summary["stages"], summary["quality"], summary["cascade"]
        base_seconds = base_seconds or summary["seconds"]
        rescoring = stages.get("re-scoring", {}).get("seconds")
        console.print(f"{label}: {summary['cascade'] or 'no cascade'}; stages {stages}; quality {quality}")
        rows.append(
            [
                label,
                f"{summary['candidates']:,}",
                f"{cascade['rescored']:,} ({cascade['share_rescored']:.2%})" if cascade else "-",
                f"+{cascade['now_matches']:,} / -{cascade['no_longer_matches']:,}" if cascade else "-",
                f"{stages['scoring']['seconds']:.0f}",
                f"{rescoring:.0f} ({rescoring / base_seconds:.2f}x)" if rescoring is not None else "-",
                f"{stages['clustering']['seconds']:.0f}",
                f"{summary['seconds']:.0f}",
                f"{quality['pairwise_precision']:.4f} / {quality['pairwise_recall']:.4f}",
                f"{quality['pairwise_f1']:.4f}",
            ]
        )
    table(
        f"(k) cascade on {data.name} ({args.items:,} items): gbdt scores every candidate, a cross-encoder tuned on "
        f"{args.text_pairs:,} pairs re-scores those within the band of the threshold",
        [
            "match",
            "candidates",
            "re-scored (share)",
            "decisions +/-",
            "scoring s",
            "re-scoring s (x plain match)",
            "clustering s",
            "total s",
            "pairwise P / R",
            "cluster F1",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
