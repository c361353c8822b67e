"""(b) Training throughput of concat-mlp (pairs/s), three ways on the same pairs in the same process:

- notebook: its per-item dict Dataset with PyTorch's default collate, batch 4096;
- prodmatch: ``train_network`` (index_select gathers from one item-feature tensor);
- compute only: the same optimisation steps on batches gathered beforehand (the limit).

    python bench/bench_training.py --items 200000 --steps 25
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import dataset, table
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
    args = ap.parse_args()
    torch.set_num_threads(default_threads())
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


if __name__ == "__main__":
    main()
