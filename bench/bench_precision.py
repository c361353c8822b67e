"""(d) bf16 autocast against fp32 for the networks, on the default synthetic data, in one process.

For each network: training pairs/s over the same epochs, scoring pairs/s on the same random pairs, and
the test PR-AUC each precision reaches (same seed, same split), so speed and quality are read together.
bf16 pays on CPUs with AMX tiles (``prodmatch.training.bf16_pays``); elsewhere it can be slower.

    python bench/bench_precision.py --models siamese,concat-mlp --epochs 6
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import dataset, table
from prodmatch import TrainConfig, read_catalogue
from prodmatch.api import prepare_pairs
from prodmatch.evaluation import pr_auc
from prodmatch.models import create_model
from prodmatch.pairs import PairSet
from prodmatch.training import bf16_pays, default_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=150_000)
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--models", default="siamese,concat-mlp")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--score-pairs", type=int, default=500_000)
    args = ap.parse_args()
    data = dataset(args.items, args.pairs)
    cat = read_catalogue(data)
    rng = np.random.default_rng(0)
    left = rng.integers(0, len(cat), args.score_pairs).astype(np.int32)
    right = rng.integers(0, len(cat), args.score_pairs).astype(np.int32)
    ids = cat.ids.to_numpy()
    random_pairs = PairSet(left, right, None, np.arange(len(left)), ids[left], ids[right])

    rows = []
    for name in args.models.split(","):
        results = {}
        for precision in ("fp32", "bf16"):
            config = TrainConfig(epochs=args.epochs, patience=None, precision=precision)
            prep = prepare_pairs(data, cat, config)
            model = create_model(name).fit(cat, prep.train, prep.valid, config)
            train_pps = np.median([h.pairs_per_second for h in model.result_.history])
            model.predict_logits(cat, random_pairs)  # warm-up
            t0 = time.perf_counter()
            model.predict_logits(cat, random_pairs)
            score_pps = len(random_pairs) / (time.perf_counter() - t0)
            test = pr_auc(prep.test.target, model.predict_logits(cat, prep.test))
            results[precision] = (train_pps, score_pps, test)
        (t32, s32, q32), (t16, s16, q16) = results["fp32"], results["bf16"]
        rows.append([f"{name} fp32", f"{t32:,.0f}", "1.00x", f"{s32:,.0f}", "1.00x", f"{q32:.4f}"])
        rows.append(
            [f"{name} bf16", f"{t16:,.0f}", f"{t16 / t32:.2f}x", f"{s16:,.0f}", f"{s16 / s32:.2f}x", f"{q16:.4f}"]
        )
    table(
        f"(d) bf16 autocast vs fp32, {args.epochs} epochs, {default_threads()} threads, AMX: {bf16_pays()}",
        ["model, precision", "train pairs/s", "vs fp32", "score pairs/s", "vs fp32", "test PR-AUC"],
        rows,
    )


if __name__ == "__main__":
    main()
