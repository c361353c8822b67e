"""(o) What a person's labels buy: uncertainty sampling against random sampling, the truth standing in for the
person.

Pool-based, on labelled data so that every label is known: a seed of the training pairs (5 %) trains the
first model; the rest of train.parquet is the pool. Labels are added in rounds up to 100, 300 and 1,000 pairs
(their known target written to a labels file exactly as `prodmatch review` writes it), each round either the
pairs nearest the threshold in log-odds of the model retrained on the labels so far (uncertainty sampling,
the review page's default queue, as a person who reviews, retrains and reviews again) or at random; after each
the model is retrained with `--labels`. Test F1 and PR-AUC of each, next to the seed alone and to all of
train.parquet (the ceiling: where the seed is within 0.005 of it, there is no room for labels to show
anything). Every set is run over several draws of the seed; the table shows the mean and how many draws
uncertainty won. Every set validates on a fixed file that neither the seed nor the pool draws from: the real
sets' own valid.parquet, and a fifth of a synthetic set's train.parquet (whole connected components).

Data: synthetic scenarios of the matrix and catalogue scenarios (20,000 items) and the four real sets
(`bench/out/em_<set>_use`, made by `bench/bench_em.py`).

    python bench/bench_active.py                                    # about 90 minutes
    python bench/bench_active.py --sets default,Abt-Buy --labels 100,300
    python bench/bench_active.py --sets ""                          # the table of bench/out/active.json only
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from common import OUT, console, scenario_data, table
from prodmatch import TrainConfig, predict, train
from prodmatch.config import DataConfig
from prodmatch.io import read_catalogue
from prodmatch.pairs import load_pairs, split_pairs
from prodmatch.review.labels import LabelBook
from prodmatch.review.session import uncertainty

REAL = ["Abt-Buy", "Amazon-Google", "WDC-cameras", "WDC-shoes"]
SEED_SHARE = 0.05
ROOM = 0.005  # F1 the ceiling must exceed the seed by for a set to have room


def data_dir(name: str, args) -> tuple[Path, dict]:
    if name in REAL:
        path = OUT / f"em_{name}_use"
        if not (path / "valid.parquet").exists():
            raise SystemExit(f"{path} is missing: run python bench/bench_em.py --configs gbdt --datasets {name}")
        return path, {"valid_pairs": str(path / "valid.parquet")}
    return held_out_validation(name, scenario_data(name, args.items, args.pairs))


def held_out_validation(name: str, data: Path) -> tuple[Path, dict]:
    """A synthetic set as the real sets come: a fixed validation file (a fifth of train.parquet, whole connected
    components, so no item is on both sides) that neither the seed nor the pool draws from. Without it the
    seed would validate on about 80 pairs of its own, and the threshold chosen there would move test F1 as
    much as the labels do."""
    base = OUT / f"active_{name}" / "base"
    if not (base / "valid.parquet").exists():
        cat = read_catalogue(data, DataConfig(load_names=False, load_attributes=False))
        train, valid, _ = split_pairs(load_pairs(data / "train.parquet", cat, require_target=True), seed=0)
        seeded_copy(data, pd.DataFrame(), base)  # every file linked but train.parquet
        for pairs, file in ((train, "train.parquet"), (valid, "valid.parquet")):
            frame = pd.DataFrame({"variantid1": pairs.ids1, "variantid2": pairs.ids2, "target": pairs.target})
            frame.astype({"target": "int8"}).to_parquet(base / file, index=False)
    return base, {"valid_pairs": str(base / "valid.parquet")}


def seeded_copy(data: Path, seed_pairs: pd.DataFrame, out: Path) -> Path:
    """``data`` with train.parquet cut to the seed (every other file linked; none written for an empty seed)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in data.iterdir():
        if f.name != "train.parquet":
            (out / f.name).symlink_to(f.resolve())
    if len(seed_pairs):
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


def write_labels(path: Path, picked: pd.DataFrame, ids: pd.Index, strategy: str) -> None:
    """The person's answers (the known targets), written the way the review page writes them."""
    path.unlink(missing_ok=True)
    book = LabelBook.open(path, ids)
    for target in (1, 0):
        chosen = picked[picked.target == target]
        if len(chosen):
            book.add(list(zip(chosen.variantid1, chosen.variantid2, strict=True)),
                     "match" if target else "no", strategy, "truth")  # fmt: skip


def one_draw(name: str, data: Path, extra: dict, budgets: list[int], draw: int) -> dict:
    """One seed draw: the seed model, then each budget by uncertainty (in rounds) and at random."""
    pairs = pd.read_parquet(data / "train.parquet")
    is_seed = np.random.default_rng(draw).random(len(pairs)) < SEED_SHARE
    seed, pool = pairs[is_seed], pairs[~is_seed].reset_index(drop=True)
    work = OUT / f"active_{name}" / f"draw{draw}"
    seeded = seeded_copy(data, seed, work / "data")
    pool.to_parquet(work / "pool.parquet", index=False)
    ids = pd.Index(pd.concat([pool.variantid1, pool.variantid2, seed.variantid1, seed.variantid2]).unique())
    with console.status(f"{name} draw {draw}: the seed model ({len(seed):,} pairs)"):
        found = {"seed_pairs": len(seed), "pool_pairs": len(pool), "seed": fit(seeded, work / "seed", extra)}
    random_order = np.random.default_rng(1000 + draw).permutation(len(pool))
    run, labelled = work / "seed", np.zeros(len(pool), dtype=bool)
    for n in budgets:
        # uncertainty, in rounds: each budget adds the pairs the latest model is least sure of, as a person
        # reviewing, retraining and reviewing again would
        threshold = json.loads((run / "config.json").read_text())["threshold"]
        prob = predict(run, seeded, work / "pool.parquet")["target"].to_numpy()
        distance = np.where(labelled, np.inf, uncertainty(prob, threshold))
        labelled[np.argsort(distance, kind="stable")[: n - int(labelled.sum())]] = True
        picks = {"uncertain": pool[labelled], "random": pool.iloc[random_order[:n]]}
        for strategy, picked in picks.items():
            path = work / f"labels_{strategy}_{n}.parquet"
            write_labels(path, picked, ids, strategy)
            with console.status(f"{name} draw {draw}: {n} labels by {strategy} sampling"):
                found[f"{strategy}_{n}"] = fit(seeded, work / f"run_{strategy}_{n}", extra, path)
            found[f"{strategy}_{n}"]["positives"] = int(picked.target.sum())
            console.print(name, f"draw {draw}", n, strategy, found[f"{strategy}_{n}"])
        run = work / f"run_uncertain_{n}"
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sets",
        default="default,sibling-negatives,noisy-listings,catalogue-siblings,catalogue-five," + ",".join(REAL),
        help="comma-separated: scenarios of synth, catalogue scenarios, real sets",
    )
    ap.add_argument("--labels", default="100,300,1000", help="label budgets, rising (each round adds to the last)")
    ap.add_argument("--draws", type=int, default=5, help="seed draws per set; the table shows their mean")
    ap.add_argument(
        "--keep-draws",
        type=int,
        default=0,
        help="keep this many draws of each set from bench/out/active.json and run only the rest (more draws for "
        "every set without redoing the first)",
    )
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--pairs", type=int, default=8_000)
    args = ap.parse_args()
    budgets = sorted(int(x) for x in args.labels.split(","))
    saved = OUT / "active.json"

    def load() -> dict:
        return json.loads(saved.read_text()) if saved.exists() else {}

    for name in filter(None, args.sets.split(",")):
        data, extra = data_dir(name, args)
        kept = load().get(name, {}) if args.keep_draws else {}
        draws = kept.get("draws", [])[: args.keep_draws]
        if args.keep_draws and len(draws) < args.keep_draws:
            raise SystemExit(f"{name}: --keep-draws {args.keep_draws}, but {saved} holds {len(draws)} draws of it")
        ceiling = kept.get("ceiling")
        if ceiling is None:
            with console.status(f"{name}: the ceiling (all of train.parquet)"):
                ceiling = fit(data, OUT / f"active_{name}" / "all", extra)
        draws += [one_draw(name, data, extra, budgets, d) for d in range(len(draws), args.draws)]
        results = load()  # again: another run may have written other sets meanwhile
        results[name] = {"ceiling": ceiling, "draws": draws}
        saved.write_text(json.dumps(results, indent=2) + "\n")
    results = load()
    rows = []
    for name, r in results.items():
        if "draws" not in r:
            continue  # a result of the earlier one-draw layout
        draws = r["draws"]

        def mean(key: str, draws=draws) -> float | None:
            vals = [d[key]["f1"] for d in draws if key in d]
            return float(np.mean(vals)) if len(vals) == len(draws) else None

        seed_f1 = mean("seed")
        room = r["ceiling"]["f1"] - seed_f1 > ROOM
        row = [name, str(len(draws)), f"{np.mean([d['seed_pairs'] for d in draws]):,.0f}", f"{seed_f1:.4f}",
               f"{r['ceiling']['f1']:.4f}"]  # fmt: skip
        for n in budgets:
            u, rnd = mean(f"uncertain_{n}"), mean(f"random_{n}")
            row.append("" if u is None or rnd is None else f"{u:.4f} / {rnd:.4f}")
        u, rnd = mean("uncertain_300"), mean("random_300")
        wins = sum(d["uncertain_300"]["f1"] > d["random_300"]["f1"] for d in draws if "uncertain_300" in d)
        verdict = "" if u is None or rnd is None else ("yes" if u > rnd else "NO") + f" ({wins} of {len(draws)} draws)"
        row.append(verdict if room else f"no room; {verdict}")
        rows.append(row)
    table(
        "(o) what labels buy: test F1 after retraining with n labels, uncertainty / random sampling (the truth "
        f"labelling), from a seed of {100 * SEED_SHARE:.0f}% of train.parquet, mean over seed draws; "
        "ceiling: all of train.parquet",
        [
            "data",
            "draws",
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
