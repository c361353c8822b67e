"""(o) What a person's labels buy: uncertainty sampling against random sampling, the truth standing in for the
person.

Pool-based, on labelled data so that every label is known: a seed of the training pairs (5 %) trains the
first model; the rest of train.parquet is the pool. The first model scores the pool; then 100, 300 and 1,000
of its pairs are "labelled" (their known target written to a labels file exactly as `prodmatch review`
writes it), chosen either nearest the threshold in log-odds (uncertainty sampling, the review page's default
queue) or at random, and the model is retrained with `--labels` (seed plus those labels). Test F1 and PR-AUC
of each, next to the seed alone and to all of train.parquet (the ceiling: where the seed is within 0.005 of
it, there is no room for labels to show anything).

Data: synthetic scenarios of the matrix and catalogue scenarios (20,000 items) and the four real sets (`bench/out/em_<set>_use`, made
by `bench/bench_em.py`).

    python bench/bench_active.py                                    # about 25 minutes
    python bench/bench_active.py --sets default,Abt-Buy --labels 100,300
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from common import OUT, console, table
from prodmatch import TrainConfig, predict, train
from prodmatch.review.labels import LabelBook
from prodmatch.synth import CATALOGUE_SCENARIOS, SCENARIOS, SynthConfig, generate

REAL = ["Abt-Buy", "Amazon-Google", "WDC-cameras", "WDC-shoes"]
SEED_SHARE = 0.05
ROOM = 0.005  # F1 the ceiling must exceed the seed by for a set to have room


def data_dir(name: str, args) -> tuple[Path, dict]:
    if name in REAL:
        path = OUT / f"em_{name}_use"
        if not (path / "valid.parquet").exists():
            raise SystemExit(f"{path} is missing: run python bench/bench_em.py --configs gbdt --datasets {name}")
        return path, {"valid_pairs": str(path / "valid.parquet")}
    if name not in SCENARIOS and name not in CATALOGUE_SCENARIOS:
        raise SystemExit(f"unknown set {name!r}: a scenario of synth, a catalogue scenario, or one of {REAL}")
    settings = {"items": args.items, "pairs": args.pairs, **SCENARIOS.get(name, CATALOGUE_SCENARIOS.get(name, {}))}
    path = OUT / f"scenario_{name}_{settings['items']}_{settings['pairs']}_0"
    if not (path / "oracle_items.npz").exists():
        with console.status(f"{name}: generating"):
            generate(path, SynthConfig(seed=0, **settings))
    return path, {}


def seeded_copy(data: Path, seed_pairs: pd.DataFrame, out: Path) -> Path:
    """``data`` with train.parquet cut to the seed (every other file linked)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in data.iterdir():
        if f.name != "train.parquet":
            (out / f.name).symlink_to(f.resolve())
    seed_pairs.to_parquet(out / "train.parquet", index=False)
    return out


def fit(data: Path, run: Path, extra: dict, labels: Path | None = None) -> dict:
    report = train(
        data,
        run,
        model="gbdt",
        config=TrainConfig(seed=0, labels=None if labels is None else str(labels), **extra),
        overwrite=True,
    )
    test = report.metrics["test"]
    return {"f1": test["f1"], "pr_auc": test["pr_auc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sets",
        default="default,sibling-negatives,noisy-listings,catalogue-siblings,catalogue-five," + ",".join(REAL),
        help="comma-separated: scenarios of synth, catalogue scenarios, real sets",
    )
    ap.add_argument("--labels", default="100,300,1000", help="label budgets")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--pairs", type=int, default=8_000)
    args = ap.parse_args()
    budgets = [int(x) for x in args.labels.split(",")]
    saved = OUT / "active.json"
    results: dict = json.loads(saved.read_text()) if saved.exists() else {}
    for name in args.sets.split(","):
        data, extra = data_dir(name, args)
        pairs = pd.read_parquet(data / "train.parquet")
        rng = np.random.default_rng(0)
        is_seed = rng.random(len(pairs)) < SEED_SHARE
        seed, pool = pairs[is_seed], pairs[~is_seed].reset_index(drop=True)
        work = OUT / f"active_{name}"
        seeded = seeded_copy(data, seed, work / "data")
        with console.status(f"{name}: the seed model ({len(seed):,} pairs) and the ceiling ({len(pairs):,})"):
            found = {"seed": fit(seeded, work / "seed", extra), "all": fit(data, work / "all", extra)}
            pool.to_parquet(work / "pool.parquet", index=False)
            prob = predict(work / "seed", seeded, work / "pool.parquet")["target"].to_numpy()
        threshold = json.loads((work / "seed" / "config.json").read_text())["threshold"]
        p = np.clip(prob, 1e-9, 1 - 1e-9)
        t = min(max(threshold, 1e-9), 1 - 1e-9)
        order = {
            "uncertain": np.argsort(np.abs(np.log(p / (1 - p)) - np.log(t / (1 - t))), kind="stable"),
            "random": np.random.default_rng(1).permutation(len(pool)),
        }
        ids = pd.Index(pd.concat([pool.variantid1, pool.variantid2, seed.variantid1, seed.variantid2]).unique())
        for n in budgets:
            for strategy, ranked in order.items():
                picked = pool.iloc[ranked[:n]]
                path = work / f"labels_{strategy}_{n}.parquet"
                path.unlink(missing_ok=True)
                book = LabelBook.open(path, ids)
                for target in (1, 0):  # the person's answers: the known targets
                    chosen = picked[picked.target == target]
                    if len(chosen):
                        book.add(list(zip(chosen.variantid1, chosen.variantid2, strict=True)),
                                 "match" if target else "no", strategy, "truth")  # fmt: skip
                with console.status(f"{name}: {n} labels by {strategy} sampling"):
                    found[f"{strategy}_{n}"] = fit(seeded, work / f"run_{strategy}_{n}", extra, path)
                    found[f"{strategy}_{n}"]["positives"] = int(picked.target.sum())
                console.print(name, n, strategy, found[f"{strategy}_{n}"])
        results[name] = {"seed_pairs": len(seed), "pool_pairs": len(pool), **found}
        saved.write_text(json.dumps(results, indent=2) + "\n")
    rows = []
    for name, r in results.items():
        room = r["all"]["f1"] - r["seed"]["f1"] > ROOM
        row = [name, f"{r['seed_pairs']:,}", f"{r['seed']['f1']:.4f}", f"{r['all']['f1']:.4f}"]
        for n in budgets:
            u, rnd = r.get(f"uncertain_{n}"), r.get(f"random_{n}")
            row.append("" if u is None else f"{u['f1']:.4f} / {rnd['f1']:.4f}")
        u, rnd = r.get("uncertain_300"), r.get("random_300")
        row.append("no room" if not room else ("" if u is None else ("yes" if u["f1"] > rnd["f1"] else "NO")))
        rows.append(row)
    table(
        "(o) what labels buy: test F1 after retraining with n labels, uncertainty / random sampling (the truth "
        f"labelling), from a seed of {100 * SEED_SHARE:.0f}% of train.parquet; ceiling: all of it",
        [
            "data",
            "seed pairs",
            "seed F1",
            "ceiling F1",
            *[f"{n} labels" for n in budgets],
            "uncertain beats random at 300",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
