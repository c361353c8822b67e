"""(l) The Spark engine against the local engine, stage by stage, on one machine (``local[2]``).

For each catalogue size: generates it (cached under bench/out), trains ``gbdt`` once (cached), then runs
``prodmatch match`` with ``--engine local`` and with ``--engine spark --master local[2]``, each in its own
process, and prints every stage's seconds with the ratio spark / local, the peak memory of the local
process and of Spark's driver (Python), JVM and Python workers (sampled every half second), and the pairwise
F1 of both against truth.parquet. On 2 cores Spark does not beat one process; the table shows what its
overhead costs per stage, and whether the driver's memory grows with the catalogue.

    python bench/bench_spark.py --items 150000            # the demo catalogue, gbdt
    python bench/bench_spark.py --items 250000 1000000 --pairs 100000 --model siamese
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import OUT, console, dataset, table

STAGES = ("load", "vectors", "candidates", "scoring", "clustering", "writing", "quality")


def _tree_rss() -> dict[str, float]:
    """RSS in MB of this process and its descendants, by kind: driver (this process), jvm, workers."""
    me = os.getpid()
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry)] = int(fields[1])
            except (OSError, IndexError):
                continue
    out = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    for pid in parent:
        p, inside = pid, False
        while p > 1:
            if p == me:
                inside = True
                break
            p = parent.get(p, 0)
        if not inside:
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rss = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS")), 0.0)
        kind = "driver" if pid == me else "jvm" if "java" in cmd else "workers"
        out[kind] += rss
    return out


def one(engine: str, run_dir: Path, data: Path, out: Path) -> None:
    """Run one engine and print its summary and the peak memory by kind, as JSON (a child process)."""
    from prodmatch.matching import MatchConfig, match_catalogue

    peaks = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for kind, mb in _tree_rss().items():
                peaks[kind] = max(peaks[kind], mb)
            stop.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    kwargs = {"engine": "spark", "master": "local[2]"} if engine == "spark" else {}
    summary = match_catalogue(run_dir, data, out, MatchConfig(), overwrite=True, **kwargs)
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    print("RESULT " + json.dumps({"summary": summary, "peaks": peaks, "seconds": seconds}, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[150_000])
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument(
        "--model",
        choices=["gbdt", "siamese"],
        default="gbdt",
        help="gbdt (the default model; about 15,000 pairs/s to score) or siamese with 64-d item vectors (the "
        "model bench_matching.py uses at 1M items)",
    )
    ap.add_argument("--one", choices=["local", "spark"], help=argparse.SUPPRESS)
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        data = dataset(args.items[0], args.pairs)
        one(args.one, args.run, data, OUT / f"spark_bench_{args.one}_{args.items[0]}")
        return
    from prodmatch import TrainConfig, train

    for items in args.items:
        data = dataset(items, args.pairs)
        if args.model == "gbdt":
            run = OUT / f"cascade_run_gbdt_{data.name}"  # the same run bench_cascade.py trains
            params, config = {}, TrainConfig(seed=0)
        else:
            run = OUT / f"siamese64_{items}_{args.pairs}"  # the same run bench_matching.py trains
            params, config = {"item_dim": 64}, TrainConfig(epochs=5)
        if not (run / "config.json").exists():
            with console.status(f"training {args.model} on {data.name}"):
                train(data, run, model=args.model, params=params, config=config, overwrite=True)
        results = {}
        for engine in ("local", "spark"):
            with console.status(f"{items:,} items: --engine {engine}"):
                cmd = [sys.executable, __file__, "--one", engine, "--run", str(run), "--items", str(items)]
                cmd += ["--pairs", str(args.pairs)]
                done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                console.print(done.stdout[-3000:], done.stderr[-3000:])
                raise SystemExit(f"--engine {engine} failed on {items:,} items")
            results[engine] = json.loads(line[len("RESULT ") :])
        local, spark = results["local"], results["spark"]
        rows = []
        for stage in STAGES:
            a = local["summary"]["stages"].get(stage, {}).get("seconds")
            b = spark["summary"]["stages"].get(stage, {}).get("seconds")
            if a is None and b is None:
                continue
            ratio = f"{b / a:.2f}x" if a and b else "-"
            rows.append([stage, f"{a:.1f}" if a else "-", f"{b:.1f}" if b else "-", ratio])
        rows.append(
            [
                "end to end",
                f"{local['seconds']:.1f}",
                f"{spark['seconds']:.1f}",
                f"{spark['seconds'] / local['seconds']:.2f}x",
            ]
        )
        # quality against the truth measures more locally (the search lists' recall at k, the oracle's figures):
        # the ratio without it compares the matching alone
        bare = [r["seconds"] - r["summary"]["stages"].get("quality", {}).get("seconds", 0.0) for r in (local, spark)]
        rows.append(["end to end, quality left out", f"{bare[0]:.1f}", f"{bare[1]:.1f}", f"{bare[1] / bare[0]:.2f}x"])
        table(
            f"(l) {items:,} items, {args.model}, k=20: local engine against --engine spark --master local[2]",
            ["stage", "local s", "spark s", "spark / local"],
            rows,
        )
        ql, qs = local["summary"]["quality"], spark["summary"]["quality"]
        sl, ss = local["summary"], spark["summary"]
        recall_key = f"candidate_recall_at_{sl['parameters']['k']}"
        table(
            f"(l) {items:,} items: results and peak memory",
            ["measure", "local", "spark"],
            [
                ["candidates", f"{sl['candidates']:,}", f"{ss['candidates']:,}"],
                ["matches", f"{sl['matches']:,}", f"{ss['matches']:,}"],
                ["clusters", f"{sl['clustering']['clusters']:,}", f"{ss['clustering']['clusters']:,}"],
                ["pairwise F1", f"{ql['pairwise_f1']:.4f}", f"{qs['pairwise_f1']:.4f}"],
                [
                    f"candidate recall@{ss['parameters']['k']}",
                    f"{ql[recall_key]:.4f}",
                    f"{qs[recall_key]:.4f}",
                ],
                ["search", ", ".join(sl["search"]["index"]), json.dumps(ss["search"].get("ivf", {}))],
                [
                    "connected-components rounds",
                    "-",
                    str(ss["engine"]["connected_components_rounds"]),
                ],
                ["items shipped per item scored", "-", f"{ss['engine']['items_shipped_per_item_scored']:.2f}"],
                [
                    "peak memory MB: driver process",
                    f"{local['peaks']['driver']:,.0f}",
                    f"{spark['peaks']['driver']:,.0f}",
                ],
                ["peak memory MB: JVM (driver + executor)", "-", f"{spark['peaks']['jvm']:,.0f}"],
                ["peak memory MB: Python workers (together)", "-", f"{spark['peaks']['workers']:,.0f}"],
            ],
        )
        console.print(f"pairwise F1 difference: {abs(ql['pairwise_f1'] - qs['pairwise_f1']):.4f} (goal: <= 0.005)")


if __name__ == "__main__":
    main()
