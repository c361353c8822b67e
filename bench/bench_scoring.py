"""(c) Scoring throughput (pairs/s) of a concat-mlp on the same pairs in the same process:

- prodmatch scorer: ``score_logits`` in fp32, one order (inference mode, index_select gathers,
  65,536-pair batches); the same arithmetic as the notebook, so the outputs are checked equal;
- prodmatch ``predict_proba``: what ``predict`` runs: both orders averaged (concat-mlp reads pairs in
  order), in the precision the model trained with (bf16 where the CPU has AMX);
- notebook: its ``evaluate_model`` loop over the per-item dict Dataset and DataLoader (batch 4096).

    python bench/bench_scoring.py --items 200000 --pairs 200000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import dataset, table
from notebook_baseline import features_of, notebook_loader
from prodmatch import PairSet, TrainConfig, load_pairs, read_catalogue, split_pairs
from prodmatch.models import create_model
from prodmatch.training import default_threads, score_logits, sigmoid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--pairs", type=int, default=200_000, help="random pairs to score")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(default_threads())
    data = dataset(args.items, args.items // 2)
    cat = read_catalogue(data)
    labelled = load_pairs(data / "train.parquet", cat, require_target=True)
    train, valid, _ = split_pairs(labelled.subset(np.arange(20_000)), seed=0)
    model = create_model("concat-mlp").fit(cat, train, valid, TrainConfig(epochs=1, batch_size=512, precision="fp32"))
    features = torch.from_numpy(cat.item_features(list(cat.modalities)))

    rng = np.random.default_rng(0)
    left = rng.integers(0, len(cat), args.pairs).astype(np.int32)
    right = rng.integers(0, len(cat), args.pairs).astype(np.int32)
    ids = cat.ids.to_numpy()
    pairs = PairSet(left, right, None, np.arange(args.pairs), ids[left], ids[right])

    ours_t, proba_t = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = sigmoid(score_logits(model.network_, features, left, right))
        ours_t.append(time.perf_counter() - t0)
    auto = create_model("concat-mlp").fit(cat, train, valid, TrainConfig(epochs=1, batch_size=512))
    auto.predict_proba(cat, pairs)  # warm-up
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        auto.predict_proba(cat, pairs)
        proba_t.append(time.perf_counter() - t0)

    # The notebook's evaluate_model: DataLoader over the dict Dataset, .tolist() extends. Presence flags are
    # part of our item features; feed the same network with them appended so the outputs can be compared.
    flags = torch.from_numpy(np.stack([m.present for m in cat.modalities.values()], axis=1).astype(np.float32))
    row_of = {v: i for i, v in enumerate(ids.tolist())}
    loader = notebook_loader(cat, ids[left], ids[right], np.zeros(args.pairs, np.float32))
    net = model.network_.eval()
    probas: list[float] = []
    t0 = time.perf_counter()
    with torch.no_grad():
        start = 0
        for batch in loader:
            a, b = features_of(batch)
            n = len(a)
            fa = flags[[row_of[i] for i in ids[left[start : start + n]].tolist()]]
            fb = flags[[row_of[i] for i in ids[right[start : start + n]].tolist()]]
            out = torch.sigmoid(net(torch.cat((a, fa), 1), torch.cat((b, fb), 1)))
            probas.extend(out.squeeze().cpu().numpy().tolist())
            start += n
    notebook_t = time.perf_counter() - t0
    np.testing.assert_allclose(np.asarray(probas), ours, rtol=1e-4, atol=1e-5)

    best, proba = min(ours_t), min(proba_t)
    table(
        f"(c) concat-mlp scoring, {args.pairs:,} pairs, {default_threads()} threads",
        ["path", "seconds", "pairs/s", "speed-up"],
        [
            [
                "prodmatch scorer, fp32, one order",
                f"{best:.2f}",
                f"{args.pairs / best:,.0f}",
                f"{notebook_t / best:.1f}x",
            ],
            [
                f"prodmatch predict_proba, {auto.precision_}, both orders",
                f"{proba:.2f}",
                f"{args.pairs / proba:,.0f}",
                f"{notebook_t / proba:.1f}x",
            ],
            ["notebook evaluate_model loop", f"{notebook_t:.2f}", f"{args.pairs / notebook_t:,.0f}", "1.0x (baseline)"],
        ],
    )


if __name__ == "__main__":
    main()
