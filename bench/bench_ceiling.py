"""(i2) How far the catalogue job's features can go: a ceiling no choice of training pairs can pass.

For a trained run and its synthetic catalogue (one with `truth.parquet` and the oracle's files), the
candidates `prodmatch match` scores (the same search, incomplete items and shared values, k = 20) are
scored three ways, and each is clustered by `match`'s rule at the best threshold of the same grid:

- the catalogue job as trained (its probabilities corrected for the candidates' prior, as `match` does);
- a LightGBM booster on the same pair features, trained on the candidates' **true** labels, cross-fitted in two
  folds by item: the best any weighting, mining rule or validation set could give this feature set;
- the Bayes oracle.

Each row is set against the oracle's, in the same run. Run the scenario benches first, then, for example:

    python bench/bench_ceiling.py --run bench/out/scenario_run_noisy-listings \\
        --data bench/out/scenario_noisy-listings_60000_25000_0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from common import console, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run directory")
    ap.add_argument("--data", required=True, help="its synthetic catalogue (truth.parquet, oracle_items.npz)")
    ap.add_argument("--rounds", type=int, default=400, help="boosting rounds of the truth-trained booster")
    args = ap.parse_args()

    import lightgbm as lgb
    from sklearn.metrics import average_precision_score

    from prodmatch.candidates import all_candidates, item_vectors
    from prodmatch.matching import MatchConfig
    from prodmatch.matching.quality import best_threshold_f1
    from prodmatch.matching.scoring import calibrate_candidates
    from prodmatch.oracle import Oracle
    from prodmatch.pairs import PairSet
    from prodmatch.runs import model_and_catalogue
    from prodmatch.synth import TRUTH_FILE

    t0 = time.perf_counter()
    config = MatchConfig()
    with console.status("candidates"):
        model, cat = model_and_catalogue(args.run, args.data, None, text=config.token_k > 0, job="catalogue")
        vectors, _ = item_vectors(model, cat)
        left, right, _ = all_candidates(model, cat, vectors, config)
    n, ids = len(cat), cat.ids.to_numpy()
    truth = pd.read_parquet(f"{args.data}/{TRUTH_FILE}", columns=["variantid", "product_id"])
    product = truth.set_index("variantid")["product_id"].reindex(ids).to_numpy()
    y = (product[left] == product[right]).astype(np.int8)
    pairs = PairSet(left.astype(np.int32), right.astype(np.int32), None, np.arange(len(left)), ids[left], ids[right])
    with console.status(f"features and scores of {len(left):,} candidates"):
        x = np.concatenate([batch for _, batch in model.feature_batches(cat, pairs)])
        job, _ = calibrate_candidates(model, model.calibrated(model.score(cat, pairs)), None)
        oracle = Oracle.load(args.data)
        rows = oracle.rows(ids)
        oracle_p = oracle.probability(rows[left], rows[right])
    with console.status("the truth-trained booster"):
        fold = (pd.util.hash_array(np.minimum(left, right).astype(np.int64)) % 2).astype(int)
        ceiling = np.zeros(len(y))
        params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.05, "verbose": -1, "seed": 0}
        for f in (0, 1):
            booster = lgb.train(params, lgb.Dataset(x[fold != f], y[fold != f]), args.rounds)
            ceiling[fold == f] = booster.predict(x[fold == f])
    results = {}
    with console.status("clustering at each threshold"):
        for name, score in [
            ("the catalogue job, as trained", job),
            ("the same features, trained on the candidates' truth", ceiling),
            ("the Bayes oracle", oracle_p),
        ]:
            threshold, f1 = best_threshold_f1(n, left, right, score, product, linkage_max=config.linkage_max)
            results[name] = (average_precision_score(y, score), f1, threshold)
    best = results["the Bayes oracle"][1]
    table(
        f"(i2) feature ceiling: {len(left):,} candidates, {y.mean():.1%} matches ({time.perf_counter() - t0:.0f} s)",
        ["scorer", "candidate AP", "cluster F1 at best threshold", "threshold", "/ oracle"],
        [[k, f"{a:.3f}", f"{f:.3f}", f"{t:g}", f"{f / best:.2f}"] for k, (a, f, t) in results.items()],
    )


if __name__ == "__main__":
    main()
