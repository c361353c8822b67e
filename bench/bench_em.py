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
included). Then (i): each text model's training and inference throughput in float32 and in bfloat16
autocast, in one run, as a ratio.

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


def precision_throughput(data: Path, sequences: int = 128, steps: int = 4) -> None:
    """(i) Each text model's fine-tuning steps and inference in float32 against bfloat16 autocast, one run.

    A sequence is one record for the bi-encoder and a pair of records for the cross-encoder; both go through
    the model's own graph and tokenizer (fine-tuning: forward and backward of batches of 32)."""
    import torch

    from prodmatch.config import DataConfig
    from prodmatch.io import read_catalogue
    from prodmatch.models import create_model
    from prodmatch.text.encoder import check_encoder_path
    from prodmatch.text.records import RecordTexts, item_records
    from prodmatch.training import bf16_pays

    cat = read_catalogue(data, DataConfig(load_names=True, load_attributes=True, load_texts=True))
    rows = np.arange(min(len(cat), 2 * sequences))
    table_rows = []
    for kind in ("bi-encoder", "cross-encoder"):
        measured = {}
        for label, precision in (("float32", "fp32"), ("bfloat16 autocast", "bf16")):
            model = create_model(kind, device="cpu")
            model.device_, model.precision_ = "cpu", precision
            torch.manual_seed(0)
            model._load_encoder(check_encoder_path(None), fresh=True)
            model.records_ = RecordTexts.fit(item_records(cat, rows), model.tokenizer_, cap=model.params.max_tokens)
            texts = model.records(cat, rows)
            first, second = texts[: len(texts) // 2], texts[len(texts) // 2 :]
            graph = model.graph().train()
            t0 = time.perf_counter()
            for s in range(steps):
                sl = slice((32 * s) % len(first), (32 * s) % len(first) + 32)
                inputs = model.tokenize(first[sl], second[sl] if model.joint else None)
                with model._autocast():
                    loss = graph(**inputs).float().pow(2).mean()
                loss.backward()
                graph.zero_grad(set_to_none=True)
            train_rate = steps * 32 / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.run_graph(first, second if model.joint else None)
            measured[label] = (train_rate, len(first) / (time.perf_counter() - t0))
        base = measured["float32"]
        for label, (tr, inf) in measured.items():
            table_rows.append(
                [
                    kind,
                    str(model.records_.max_tokens),
                    label,
                    f"{tr:.1f}",
                    f"{tr / base[0]:.2f}x",
                    f"{inf:.1f}",
                    f"{inf / base[1]:.2f}x",
                ]
            )
    table(
        f"(i) text model throughput on {data.name} records, sequences/s (a record, or a pair of records for the "
        f"cross-encoder); AMX here: {bf16_pays()} (precision auto picks bf16 only with AMX)",
        ["model", "tokens per record", "arithmetic", "fine-tuning", "ratio", "inference", "ratio"],
        table_rows,
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
        for config in [c for c in args.configs.split(",") if c]:
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
    if rows:
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
