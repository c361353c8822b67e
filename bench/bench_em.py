"""(h) Real data: Abt-Buy, Amazon-Google (Magellan/DeepMatcher splits) and WDC-cameras, WDC-shoes (WDC
product corpus, large training sets), as the Ditto paper uses them.

For each dataset: `prodmatch import-em` (text embeddings with the offline USE encoder), then the default
model with its default settings (the same for every dataset) trained on the given train split, its
threshold chosen on valid (`--valid-pairs`), and F1, precision and recall on test at that threshold,
against the published test F1 of Magellan, DeepMatcher+ and Ditto (Li et al., "Deep Entity Matching with
Pre-Trained Language Models", VLDB 2021: Table 4 for the Magellan/DeepMatcher sets; Table 6, "Large"
training size, for WDC, where the paper gives no Magellan figure). Three seeds; wall-clock time includes
importing and embedding.

    python bench/bench_em.py            # about 8 minutes
    python bench/bench_em.py --datasets WDC-cameras --seeds 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import OUT, console, table
from prodmatch import TrainConfig, train
from prodmatch.em import import_em

EM_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "em"
PUBLISHED = {  # test F1 (%), Ditto paper: Table 4 (Magellan/DeepMatcher sets), Table 6 "Large" (WDC)
    "Abt-Buy": {"Magellan": 43.6, "DeepMatcher+": 62.8, "Ditto": 89.33},
    "Amazon-Google": {"Magellan": 49.1, "DeepMatcher+": 70.7, "Ditto": 75.58},
    "WDC-cameras": {"Magellan": None, "DeepMatcher+": 87.19, "Ditto": 91.23},
    "WDC-shoes": {"Magellan": None, "DeepMatcher+": 87.17, "Ditto": 88.07},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--em-root", type=Path, default=EM_ROOT)
    ap.add_argument("--encoder", default="use")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default="gbdt")
    ap.add_argument("--datasets", default=",".join(PUBLISHED), help="comma-separated names")
    args = ap.parse_args()
    rows = []
    for name in args.datasets.split(","):
        published = PUBLISHED[name]
        data = OUT / f"em_{name}_{args.encoder}"
        t0 = time.perf_counter()
        with console.status(f"{name}: importing and embedding"):
            import_em(args.em_root / name, data, encoder=args.encoder, overwrite=True)
        import_seconds = time.perf_counter() - t0
        dmp = published["DeepMatcher+"]
        results = []
        for seed in range(args.seeds):
            t1 = time.perf_counter()
            with console.status(f"{name}: training {args.model}, seed {seed}"):
                config = TrainConfig(seed=seed, valid_pairs=str(data / "valid.parquet"))
                report = train(data, OUT / f"em_run_{name}", model=args.model, config=config, overwrite=True)
            test = report.metrics["test"]
            results.append((test["f1"], test["precision"], test["recall"], time.perf_counter() - t1))
        f1, precision, recall, seconds = (np.array(x) for x in zip(*results, strict=True))
        console.print(f"{name}: F1 {100 * f1.mean():.1f} ± {100 * f1.std():.1f} (DeepMatcher+ {dmp})")
        rows.append(
            [
                name,
                *("" if published[k] is None else f"{published[k]:.1f}" for k in ("Magellan", "DeepMatcher+", "Ditto")),
                f"{100 * f1.mean():.1f} ± {100 * f1.std():.1f}",
                f"{100 * f1.mean() - dmp:+.1f}",
                f"{100 * precision.mean():.1f} / {100 * recall.mean():.1f}",
                f"{import_seconds:.0f} + {seconds.mean():.0f}",
            ]
        )
    table(
        f"(h) test F1 (%): published, and prodmatch ({args.model}, {args.encoder} text embeddings, 2-core CPU, "
        f"mean ± std over {args.seeds} seeds)",
        [
            "dataset",
            "Magellan",
            "DeepMatcher+",
            "Ditto",
            "prodmatch F1",
            "vs DeepMatcher+",
            "precision / recall",
            "seconds (import + train)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
