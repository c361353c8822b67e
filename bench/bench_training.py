"""(b) Training throughput of concat-mlp (pairs/s), three ways on the same pairs in the same process:

- notebook: its per-item dict Dataset with PyTorch's default collate, batch 4096;
- prodmatch: ``train_network`` (index_select gathers from one item-feature tensor);
- compute only: the same optimisation steps on batches gathered beforehand (the limit).

Then (b2) time to quality, on the default synthetic data (150,000 items, 50,000 pairs) or ``--data``: the
notebook's network trained as the notebook trains it (its loader, 10 epochs of batch 4096 at lr 0.01, its
random 80/20 row split; validated on the held-out 20 %, not on the training set as the notebook did) against
``prodmatch train`` with its defaults (the default model, mining included), in the same process: the wall
time of each, the time each takes to reach 99 % of its own final validation PR-AUC, and both test PR-AUCs.

    python bench/bench_training.py --items 200000 --steps 25
    python bench/bench_training.py --no-throughput --data data/demo
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import OUT, dataset, table
from notebook_baseline import features_of, notebook_loader
from prodmatch import TrainConfig, load_pairs, read_catalogue
from prodmatch.models.concat_mlp import ConcatMLP, ConcatMLPParams
from prodmatch.training import default_threads, train_network


def _steps(net, batches):
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    for a, b, y in batches:
        loss = F.binary_cross_entropy_with_logits(net(a, b), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--steps", type=int, default=25, help="optimisation steps of 4096 pairs per measurement")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="(b2) data directory; the default synthetic data")
    ap.add_argument("--no-throughput", action="store_true", help="skip (b)")
    ap.add_argument("--no-quality", action="store_true", help="skip (b2)")
    args = ap.parse_args()
    torch.set_num_threads(default_threads())
    if not args.no_throughput:
        throughput(args)
    if not args.no_quality:
        time_to_quality(args.data or dataset(150_000, 50_000))


def throughput(args) -> None:
    bs = 4096
    data = dataset(args.items, args.items // 2)
    cat = read_catalogue(data)
    pairs = load_pairs(data / "train.parquet", cat, require_target=True)
    pairs = pairs.subset(np.arange(min(len(pairs), args.steps * bs)))
    m = len(pairs)
    features = torch.from_numpy(cat.item_features(list(cat.modalities)))
    params = ConcatMLPParams()

    # compute only: pre-gathered batches, same shapes as prodmatch's
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(0))
    left, right = torch.from_numpy(pairs.left.astype(np.int64)), torch.from_numpy(pairs.right.astype(np.int64))
    target = torch.from_numpy(pairs.target)
    batches = [
        (features[left[perm[i : i + bs]]].clone(), features[right[perm[i : i + bs]]].clone(), target[perm[i : i + bs]])
        for i in range(0, m, bs)
    ]
    compute = []
    ours = []
    for _ in range(args.repeat):
        net = ConcatMLP(int(features.shape[1]), params)
        t0 = time.perf_counter()
        _steps(net, batches)
        compute.append(m / (time.perf_counter() - t0))
        # prodmatch: one epoch of the real loop; its pairs/s excludes the validation pass
        net = ConcatMLP(int(features.shape[1]), params)
        valid = pairs.subset(np.arange(bs))
        result = train_network(
            net, features, pairs, valid, TrainConfig(epochs=1, batch_size=bs, patience=None, precision="fp32"), lr=0.01
        )
        ours.append(result.history[0].pairs_per_second)

    # notebook: per-item dict Dataset + default collate, the model fed as the notebook feeds it
    loader = notebook_loader(cat, pairs.ids1, pairs.ids2, pairs.target, batch_size=bs, shuffle=True)
    net = ConcatMLP(192, params)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    t0 = time.perf_counter()
    for batch in loader:
        a, b = features_of(batch)
        loss = F.binary_cross_entropy_with_logits(net(a, b), batch["target"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    notebook = m / (time.perf_counter() - t0)

    best_c, best_o = max(compute), max(ours)
    table(
        f"(b) concat-mlp training, {m:,} pairs, batch {bs}, {default_threads()} threads",
        ["path", "pairs/s", "vs compute only", "vs notebook"],
        [
            ["compute only (pre-gathered batches)", f"{best_c:,.0f}", "1.00x", f"{best_c / notebook:.1f}x"],
            ["prodmatch train_network", f"{best_o:,.0f}", f"{best_o / best_c:.2f}x", f"{best_o / notebook:.1f}x"],
            ["notebook Dataset + DataLoader", f"{notebook:,.0f}", f"{notebook / best_c:.2f}x", "1.0x"],
        ],
    )


def _time_to(history: list[dict], share: float = 0.99) -> tuple[float, float]:
    """(seconds until validation PR-AUC first reached ``share`` of its best, that best) of a history whose
    records carry the seconds since the previous one and valid_pr_auc."""
    best = max(h["valid_pr_auc"] for h in history)
    elapsed = 0.0
    for h in history:
        elapsed += h["seconds"]
        if h["valid_pr_auc"] >= share * best:
            return elapsed, best
    return elapsed, best


def time_to_quality(data: Path) -> None:
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from prodmatch import train
    from prodmatch.evaluation import pr_auc

    # the notebook: its split, loader, network, optimiser and epochs
    t_start = time.perf_counter()
    cat = read_catalogue(data)
    frame = pd.read_parquet(data / "train.parquet")
    train_df, valid_df = train_test_split(frame, test_size=0.2, random_state=42)
    test = pd.read_parquet(data / "test.parquet")
    loader = notebook_loader(
        cat, train_df.variantid1.to_numpy(), train_df.variantid2.to_numpy(), train_df.target.to_numpy(), 4096
    )

    def scores(net, df) -> np.ndarray:
        out = []
        net.eval()
        with torch.no_grad():
            for batch in notebook_loader(cat, df.variantid1.to_numpy(), df.variantid2.to_numpy(), df.target.to_numpy()):
                out.append(torch.sigmoid(net(*features_of(batch))).numpy())
        net.train()
        return np.concatenate(out)

    torch.manual_seed(0)
    net = ConcatMLP(192, ConcatMLPParams())
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    history, last = [], time.perf_counter()
    for _ in range(10):
        net.train()
        for batch in loader:
            loss = F.binary_cross_entropy_with_logits(net(*features_of(batch)), batch["target"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        valid_pr = pr_auc(valid_df.target.to_numpy(), scores(net, valid_df))
        now = time.perf_counter()
        history.append({"valid_pr_auc": valid_pr, "seconds": now - last})
        last = now
    notebook_seconds = time.perf_counter() - t_start
    notebook_test = pr_auc(test.target.to_numpy(), scores(net, test))
    notebook_reach, notebook_best = _time_to(history)

    t0 = time.perf_counter()
    report = train(data, OUT / "time_to_quality_default", overwrite=True)
    ours_seconds = time.perf_counter() - t0
    fit_history = report.history  # per boosting round: seconds since the previous (the first holds the stacks)
    before_fit = report.metrics["seconds_before_fit"]  # reading, cleaning, splitting, mining
    reach, best = _time_to(fit_history)
    ours_test = report.metrics["test"]["pr_auc"]
    table(
        f"(b2) time to quality on {data} ({len(frame):,} labelled pairs, {len(cat):,} items, {default_threads()} threads)",
        [
            "run",
            "wall s",
            "s to 99 % of its final validation PR-AUC",
            "final validation PR-AUC",
            "test PR-AUC",
            "wall / notebook",
        ],
        [
            [
                "the notebook's network, as the notebook trains it",
                f"{notebook_seconds:.0f}",
                f"{notebook_reach:.0f}",
                f"{notebook_best:.4f}",
                f"{notebook_test:.4f}",
                "1.00x",
            ],
            [
                f"prodmatch train (default: {report.metrics['model']})",
                f"{ours_seconds:.0f}",
                f"{before_fit + reach:.0f}",
                f"{best:.4f}",
                f"{ours_test:.4f}",
                f"{ours_seconds / notebook_seconds:.2f}x",
            ],
        ],
    )


if __name__ == "__main__":
    main()
