"""(h) Real data: Abt-Buy, Amazon-Google (Magellan/DeepMatcher splits) and WDC-cameras, WDC-shoes (WDC
product corpus, large training sets), as the Ditto paper uses them.

For each dataset: `prodmatch import-em` (text embeddings with the offline USE encoder), then each
configuration, the same for every dataset, trained on the given train split, its threshold chosen on valid
(`--valid-pairs`), and F1, precision and recall on test at that threshold, against the published test F1
of Magellan, DeepMatcher+ and Ditto (Li et al., "Deep Entity Matching with Pre-Trained Language Models",
VLDB 2021: Table 4 for the Magellan/DeepMatcher sets; Table 6, "Large" training size, for WDC, where the
paper gives no Magellan figure). Configurations:

- ``gbdt``: the default model with its defaults (the word-pair model stacked, no transformer);
- ``bi-encoder``: the fine-tuned transformer alone (bundled all-MiniLM-L6-v2);
- ``gbdt+bi-encoder``: ``gbdt`` with the bi-encoder stacked, cross-fitted (``-p stack_text=words,bi-encoder``);
- ``cross-encoder``: the fine-tuned pair classifier alone (both records in one sequence);
- ``gbdt+cross-encoder``: ``gbdt`` with the cross-encoder stacked, cross-fitted.

Per configuration: mean ± std of test F1 over the seeds, its distance to Ditto, training seconds, and the
pairs per second of scoring the test pairs from a freshly loaded run (reading the data and encoding the items
included). Then (i): the text model's training and encoding throughput in float32 and
in bfloat16 autocast, in one run, as a ratio.

    python bench/bench_em.py                                 # every set, config and seed: hours on 2 cores
    python bench/bench_em.py --datasets Abt-Buy,Amazon-Google --seeds 1
    python bench/bench_em.py --configs gbdt --seeds 3        # about 8 minutes
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
CONFIGS = {
    "gbdt": ("gbdt", {}),
    "bi-encoder": ("bi-encoder", {}),
    "gbdt+bi-encoder": ("gbdt", {"stack_text": "words,bi-encoder"}),
    "cross-encoder": ("cross-encoder", {}),
    "gbdt+cross-encoder": ("gbdt", {"stack_text": "words,cross-encoder"}),
}


def run_config(data: Path, name: str, config: str, seed: int) -> dict:
    """Train one configuration with one seed; F1 on test, and the pairs/s of training and of scoring."""
    from prodmatch import predict

    model, params = CONFIGS[config]
    run = OUT / f"em_run_{name}_{config}_{seed}"
    t0 = time.perf_counter()
    with console.status(f"{name}: training {config}, seed {seed}"):
        report = train(
            data,
            run,
            model=model,
            params=params,
            config=TrainConfig(seed=seed, valid_pairs=str(data / "valid.parquet")),
            overwrite=True,
        )
    seconds = time.perf_counter() - t0
    test = report.metrics["test"]
    t1 = time.perf_counter()
    with console.status(f"{name}: scoring test with {config}"):
        scored = predict(run, data, data / "test.parquet")
    score_seconds = time.perf_counter() - t1
    return {
        "f1": test["f1"],
        "precision": test["precision"],
        "recall": test["recall"],
        "seconds": seconds,
        "score_pairs_per_s": len(scored) / score_seconds,
    }


def precision_throughput(data: Path, records: int = 256, steps: int = 4) -> None:
    """(i) The bi-encoder's fine-tuning steps and encoding in float32 against bfloat16 autocast, one run."""
    import torch

    from prodmatch.config import DataConfig
    from prodmatch.io import read_catalogue
    from prodmatch.text.encoder import check_encoder_path, load_sentence_encoder
    from prodmatch.text.records import RecordTexts, item_records
    from prodmatch.training import bf16_pays

    cat = read_catalogue(data, DataConfig(load_names=True, load_attributes=True, load_texts=True))
    enc = load_sentence_encoder(check_encoder_path(None), "cpu")
    texts = item_records(cat, np.arange(min(len(cat), 4 * records)))
    summary = RecordTexts.fit(texts, enc.tokenizer, cap=64)
    texts = summary.summarise(texts, enc.tokenizer)
    enc.max_seq_length = summary.max_tokens
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-5)
    rows, measured = [], {}
    for label, bf16 in (("float32", False), ("bfloat16 autocast", True)):
        enc.train()
        t0 = time.perf_counter()
        for s in range(steps):
            batch = texts[(s * 32) % len(texts) :][:32]
            feats = enc.preprocess(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = enc(feats)["sentence_embedding"].float().pow(2).mean()
            loss.backward()
            opt.zero_grad(set_to_none=True)
        train_rate = steps * 32 / (time.perf_counter() - t0)
        enc.eval()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            enc.encode(texts[:records], batch_size=64, show_progress_bar=False)
        encode_rate = records / (time.perf_counter() - t0)
        measured[label] = (train_rate, encode_rate)
    base = measured["float32"]
    for label, (tr, en) in measured.items():
        rows.append([label, f"{tr:.1f}", f"{tr / base[0]:.2f}x", f"{en:.1f}", f"{en / base[1]:.2f}x"])
    table(
        f"(i) bi-encoder throughput on {data.name} records ({summary.max_tokens} tokens), records/s; "
        f"AMX here: {bf16_pays()} (precision auto picks bf16 only with AMX)",
        ["arithmetic", "fine-tuning", "ratio", "encoding", "ratio"],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--em-root", type=Path, default=EM_ROOT)
    ap.add_argument("--encoder", default="use")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    ap.add_argument("--datasets", default=",".join(PUBLISHED), help="comma-separated names")
    ap.add_argument("--skip-throughput", action="store_true", help="leave out (i)")
    args = ap.parse_args()
    rows = []
    data = None
    for name in args.datasets.split(","):
        published = PUBLISHED[name]
        data = OUT / f"em_{name}_{args.encoder}"
        t0 = time.perf_counter()
        with console.status(f"{name}: importing and embedding"):
            import_em(args.em_root / name, data, encoder=args.encoder, overwrite=True)
        import_seconds = time.perf_counter() - t0
        ditto = published["Ditto"]
        for config in args.configs.split(","):
            results = [run_config(data, name, config, seed) for seed in range(args.seeds)]
            f1 = np.array([r["f1"] for r in results]) * 100
            console.print(f"{name} {config}: F1 {f1.mean():.1f} ± {f1.std():.1f} (Ditto {ditto})")
            rows.append(
                [
                    name,
                    *("" if published[k] is None else f"{published[k]:.1f}" for k in ("Magellan", "DeepMatcher+")),
                    f"{ditto:.2f}",
                    config,
                    f"{f1.mean():.1f} ± {f1.std():.1f}",
                    f"{f1.mean() - ditto:+.1f}",
                    f"{100 * np.mean([r['precision'] for r in results]):.1f} / "
                    f"{100 * np.mean([r['recall'] for r in results]):.1f}",
                    f"{import_seconds:.0f} + {np.mean([r['seconds'] for r in results]):.0f}",
                    f"{np.mean([r['score_pairs_per_s'] for r in results]):,.0f}",
                ]
            )
    table(
        f"(h) test F1 (%): published, and prodmatch ({args.encoder} text embeddings, 2-core CPU, "
        f"mean ± std over {args.seeds} seeds)",
        [
            "dataset",
            "Magellan",
            "DeepMatcher+",
            "Ditto",
            "prodmatch",
            "F1",
            "vs Ditto",
            "precision / recall",
            "seconds (import + train)",
            "test pairs/s scored",
        ],
        rows,
    )
    if not args.skip_throughput and data is not None:
        precision_throughput(data)


if __name__ == "__main__":
    main()
