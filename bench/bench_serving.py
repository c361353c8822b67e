"""(f) Serving on CPU: a load test of `prodmatch serve` over loopback, and (h) a server's start-up and memory.

(f) For each model on the demo catalogue (150,000 items): ``gbdt``, the default, trained with the defaults
(its stacked networks scored from the item-feature store, so one runtime), and ``siamese`` with ONNX Runtime
and with torch. A server is started in its own process (one uvicorn worker, one compute thread, the item
vectors, index and item-feature store loaded from a saved `prodmatch index`) and a bounded async client
(aiohttp) on the same two cores sends:

- the floor: a route that does nothing (404), open loop at the same rate, and closed loop: what the HTTP
  stack, the loopback and the client cost on their own, measured in the same run;
- single pairs, open loop at a fixed rate (200/s); latency runs from the moment a request was *due*, so a
  stalled server cannot hide its queue;
- single pairs, closed loop (8 in flight): the most the server sustains;
- batches of 256 pairs, closed loop (2 in flight);
- /v1/similar with k=20, closed loop (2 in flight).

Then every model and runtime against the targets: p99 of single pairs at 200/s within 2x the floor's, at
least 1,500 single pairs/s closed loop, at least 50,000 pairs/s in batches of 256.

(g) Where one single-pair request's time goes, in the server's own process layout (one thread): each stage
of scoring, timed over a few thousand calls, next to the HTTP floor.

(h) Start-up: seconds until /health answers and resident memory, with the item-feature store loaded from the
index against computed at start, for the demo catalogue and (``--startup-items``) a larger one.

    python bench/bench_serving.py                       # about 15 minutes the first time (training, indexing)
    python bench/bench_serving.py --models gbdt --startup-items 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd

from common import OUT, console, dataset, table
from prodmatch import TrainConfig, train
from prodmatch.export import export_onnx
from prodmatch.matching import MatchConfig, build_catalogue_index

JSON = {"content-type": "application/json"}
TARGETS = {"p99_ratio": 2.0, "single_rps": 1500.0, "batch_pairs_per_s": 50_000.0}


def prepare(model: str, data: Path, items: int) -> tuple[Path, Path]:
    """A run of ``model`` trained with the defaults (networks exported to ONNX) and a saved index with its
    item-feature store (both cached under bench/out)."""
    run = OUT / f"serve_{model}_{items}"
    if not (run / "config.json").exists():
        with console.status(f"training {model} on the demo data (the defaults)"):
            train(data, run, model=model, config=TrainConfig(), overwrite=True)
    if model != "gbdt":
        with console.status(f"exporting {model} to ONNX"):
            export_onnx(run)
    index = OUT / f"serve_index_{model}_{items}"
    if not (index / "index.json").exists():
        with console.status("indexing the catalogue (item vectors, ANN index, item-feature store)"):
            build_catalogue_index(run, data, index, MatchConfig(), overwrite=True)
    return run, index


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, data: Path, index: Path | None, runtime: str, port: int, timeout: float = 900):
    """Start `prodmatch serve`; return the process and the seconds until /health answered."""
    cmd = [sys.executable, "-m", "prodmatch.cli", "-q", "serve", str(run), "--data", str(data)]
    cmd += ["--runtime", runtime, "--port", str(port), "--no-access-log"]
    cmd += ["--index-dir", str(index)] if index is not None else []
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return server, time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server did not start within {timeout:.0f} s")


def rss_gb(pid: int) -> float:
    """Resident memory of a process (file-backed pages of the memory-mapped store included)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


async def open_loop(client, url: str, bodies: list[bytes], rate: float, limit: int = 64, expected: int = 200) -> dict:
    """Send bodies[i] when it is due, at t0 + i / rate (at most ``limit`` in flight); latency counts from
    the due time, so a server that falls behind is charged for the queue it builds."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(limit)
    latencies, errors = [], 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        async with gate:
            try:
                async with client.post(url, data=bodies[i], headers=JSON) as r:
                    await r.read()
                    errors += r.status != expected
            except aiohttp.ClientError:
                errors += 1
        latencies.append(loop.time() - due)

    tasks = []
    t0 = loop.time()
    for i in range(len(bodies)):
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return summarise(latencies, errors, loop.time() - t0)


async def closed_loop(client, url: str, bodies: list[bytes], concurrency: int, expected: int = 200) -> dict:
    """``concurrency`` clients, each sending its next request as soon as the last one answered."""
    loop = asyncio.get_running_loop()
    latencies, errors = [], 0
    queue = iter(range(len(bodies)))
    t0 = loop.time()

    async def worker() -> None:
        nonlocal errors
        for i in queue:
            start = loop.time()
            try:
                async with client.post(url, data=bodies[i], headers=JSON) as r:
                    await r.read()
                    errors += r.status != expected
            except aiohttp.ClientError:
                errors += 1
            latencies.append(loop.time() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise(latencies, errors, loop.time() - t0)


def summarise(latencies: list[float], errors: int, seconds: float) -> dict:
    ms = np.asarray(latencies) * 1e3
    return {
        "requests": len(ms),
        "errors": int(errors),
        "per_second": len(ms) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def request_bodies(data: Path, n: int, batch: int, seed: int) -> list[bytes]:
    """n request bodies of ``batch`` pairs each, drawn from the labelled pairs (half of them matches)."""
    pairs = pd.read_parquet(data / "test.parquet", columns=["variantid1", "variantid2"]).to_numpy()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pairs), (n, batch))
    return [
        json.dumps({"pairs": [{"variantid1": int(a), "variantid2": int(b)} for a, b in pairs[row]]}).encode()
        for row in picks
    ]


def similar_bodies(data: Path, n: int, k: int, seed: int) -> list[bytes]:
    ids = pd.read_parquet(data / "text_and_bert.parquet", columns=["variantid"])["variantid"].to_numpy()
    rng = np.random.default_rng(seed)
    return [json.dumps({"variantid": int(i), "k": k}).encode() for i in rng.choice(ids, n)]


async def scenarios(port: int, data: Path, args) -> dict[str, dict]:
    gc.collect()
    gc.disable()  # the client's own collector pauses would be charged to the server
    try:
        return await _scenarios(port, data, args)
    finally:
        gc.enable()


async def _scenarios(port: int, data: Path, args) -> dict[str, dict]:
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=60)
    nothing = [b"{}"] * args.single
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout) as client:
        await closed_loop(client, "/v1/score", request_bodies(data, 300, 1, 99), 4)  # warm up
        await closed_loop(client, "/v1/similar", similar_bodies(data, 50, 20, 99), 2)
        return {
            "floor_open": await open_loop(client, "/no-such-route", nothing, args.rate, expected=404),
            "single_open": await open_loop(client, "/v1/score", request_bodies(data, args.single, 1, 1), args.rate),
            "floor_closed": await closed_loop(client, "/no-such-route", nothing, 8, expected=404),
            "single_closed": await closed_loop(client, "/v1/score", request_bodies(data, args.single, 1, 2), 8),
            "batch_closed": await closed_loop(
                client, "/v1/score", request_bodies(data, args.batches, args.batch, 3), 2
            ),
            "similar_closed": await closed_loop(client, "/v1/similar", similar_bodies(data, args.similar, 20, 4), 2),
        }


SCENARIO_NAMES = {
    "floor_open": "floor: no-op route, {rate}/s open loop",
    "single_open": "1 pair, {rate}/s open loop",
    "floor_closed": "floor: no-op route, closed loop, 8 in flight",
    "single_closed": "1 pair, closed loop, 8 in flight",
    "batch_closed": "{batch} pairs, closed loop, 2 in flight",
    "similar_closed": "/v1/similar k=20, closed loop, 2 in flight",
}


def load_table(model: str, results: dict, args) -> None:
    rows = []
    runtimes = list(results)
    for key, label in SCENARIO_NAMES.items():
        for j, runtime in enumerate(runtimes):
            r = results[runtime][key]
            rate = f"{r['per_second']:,.0f}"
            if key == "batch_closed":
                rate += f" ({r['per_second'] * args.batch:,.0f} pairs/s)"
            name = label.format(rate=f"{args.rate:.0f}", batch=args.batch) if j == 0 else ""
            rows.append(
                [
                    name,
                    runtime,
                    f"{r['requests']:,}",
                    str(r["errors"]),
                    rate,
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                ]
            )
    table(
        f"(f) prodmatch serve, {model}, {args.items:,} items: one worker, one compute thread, loopback",
        ["scenario", "runtime", "requests", "errors", "requests/s", "p50 ms", "p99 ms"],
        rows,
    )


def target_table(results: dict, args) -> None:
    """Every model and runtime against the serving targets, each measured against the floor of its own run."""
    rows = []
    for model, runtimes in results.items():
        for runtime, r in runtimes.items():
            ratio = r["single_open"]["p99_ms"] / r["floor_open"]["p99_ms"]
            single = r["single_closed"]["per_second"]
            pairs = r["batch_closed"]["per_second"] * args.batch
            rows.append(
                [
                    model,
                    runtime,
                    f"{ratio:.2f}x ({r['single_open']['p99_ms']:.1f} / {r['floor_open']['p99_ms']:.1f} ms) "
                    + ("yes" if ratio <= TARGETS["p99_ratio"] else "NO"),
                    f"{single:,.0f} " + ("yes" if single >= TARGETS["single_rps"] else "NO"),
                    f"{pairs:,.0f} " + ("yes" if pairs >= TARGETS["batch_pairs_per_s"] else "NO"),
                ]
            )
    table(
        "against the serving targets (each run's own floor; met: yes / NO)",
        [
            "model",
            "runtime",
            f"p99 of 1 pair at {args.rate:.0f}/s over the floor's (<= {TARGETS['p99_ratio']:.0f}x)",
            f"single pairs/s, closed loop (>= {TARGETS['single_rps']:,.0f})",
            f"pairs/s in batches of {args.batch} (>= {TARGETS['batch_pairs_per_s']:,.0f})",
        ],
        rows,
    )


def request_profile(run: Path, data: Path, index: Path, n: int = 3000) -> None:
    """(g) The stages of scoring one pair, as the server runs them (one thread), best of three rounds."""
    import torch
    from threadpoolctl import threadpool_limits

    from prodmatch.serving import MatchService
    from prodmatch.side_data import PairRows

    torch.set_num_threads(1)
    with threadpool_limits(1):
        svc = MatchService.load(run, data, index_dir=index, threads=1)
        model, cat, store = svc.model, svc.catalogue, svc.model.store_
        frame = pd.read_parquet(data / "test.parquet")
        left, right = frame.variantid1.tolist()[:n], frame.variantid2.tolist()[:n]
        rows = [svc.catalogue_rows(left[i : i + 1], right[i : i + 1]) for i in range(n)]
        groups = model.featurizer_._groups(cat)

        def transform(a, b):
            model.featurizer_.transform(cat, a, b, side=store.side)

        features = [model.featurizer_.transform(cat, *r, side=store.side) for r in rows]  # what the heads read

        def stack_column(i):
            return model._stack_column(cat, store, *rows[i], *features[i])

        def intersect(a, b):
            PairRows(store.side, a, b)._intersect()

        prepared = [PairRows(store.side, *r) for r in rows]  # intersected once, so each group is timed alone
        for pairs in prepared:
            pairs._intersect()
        x = model._features(cat, store, *rows[0])
        stages = [("ids to catalogue rows", lambda i: svc.catalogue_rows(left[i : i + 1], right[i : i + 1]))]
        stages.append(("sparse intersections (names, words, attributes, numbers)", lambda i: intersect(*rows[i])))
        for names, compute in groups:
            label = f"{compute.__qualname__.split('.')[0].strip('_').replace('_', ' ')}: {', '.join(names)}"
            stages.append((label, lambda i, c=compute: c(cat, store.side, prepared[i])))
        stages.append(("the features' assembly (transform, all groups)", lambda i: transform(*rows[i])))
        nets = len(model.stack_models_)
        stages.append((f"stacked siamese heads ({nets} network{'s' if nets != 1 else ''})", stack_column))
        stages.append(("word-pair model", lambda i: model.word_scorer_.logits(cat, *rows[i], items=store.words)))
        stages.append(
            (
                "booster",
                lambda i: model.booster_.predict(x, num_iteration=model.best_iteration_, raw_score=True, num_threads=1),
            )
        )
        stages.append(("whole call (score_rows)", lambda i: svc.score_rows(*rows[i])))
        out = []
        for label, fn in stages:
            best = np.inf
            for _ in range(3):
                t0 = time.perf_counter()
                for i in range(n):
                    fn(i)
                best = min(best, (time.perf_counter() - t0) / n)
            out.append([label, f"{best * 1e3:.3f}"])
    table("(g) one single-pair gbdt request: scoring stages, ms per call (one thread)", ["stage", "ms"], out)


def startup(run: Path, data: Path, index: Path, label: str, rows: list, computed: bool = True) -> None:
    """(h) Seconds to a healthy server and its memory, store loaded from the index, and computed at start."""
    for how, index_dir in (("loaded from the index", index), ("computed at start", None if computed else False)):
        if index_dir is False:
            continue
        if index_dir is None:  # an index without its store: vectors and ANN index loaded, the store computed
            bare = OUT / f"{index.name}_nostore"
            if not bare.exists():
                shutil.copytree(index, bare, ignore=shutil.ignore_patterns("store"))
            index_dir = bare
        port = free_port()
        server, seconds = start_server(run, data, index_dir, "auto", port, timeout=1800)
        try:
            bodies = request_bodies(data, 500, 1, 5)
            for b in bodies:  # touch what answering needs
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/score", data=b, headers=JSON)
                urllib.request.urlopen(req, timeout=30).read()
            rows.append([label, how, f"{seconds:.1f}", f"{rss_gb(server.pid):.2f}"])
        finally:
            server.terminate()
            server.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=150_000)
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--models", default="gbdt,siamese")
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop single-pair requests per second")
    ap.add_argument("--single", type=int, default=3000, help="single-pair requests per scenario")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--similar", type=int, default=1000)
    ap.add_argument("--startup-items", type=int, default=0, help="also measure start-up on a catalogue this large")
    ap.add_argument("--skip-load", action="store_true", help="leave out the load tests (f)")
    ap.add_argument("--skip-startup", action="store_true", help="leave out the start-up measurements (h)")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    data = dataset(args.items, args.pairs)
    results: dict = {}
    for model in args.models.split(","):
        run, index = prepare(model, data, args.items)
        if args.skip_load:
            continue
        runtimes = ["store"] if model == "gbdt" else ["onnx", "torch"]
        results[model] = {}
        for runtime in runtimes:
            port = free_port()
            with console.status(f"{model} / {runtime}: starting the server and sending requests"):
                server, _ = start_server(run, data, index, "auto" if runtime == "store" else runtime, port)
                try:
                    results[model][runtime] = asyncio.run(scenarios(port, data, args))
                finally:
                    server.terminate()
                    server.wait(30)
        load_table(model, results[model], args)
    if results:
        target_table(results, args)
        (OUT / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    if "gbdt" in args.models.split(","):
        run, index = prepare("gbdt", data, args.items)
        request_profile(run, data, index)
        if args.skip_startup:
            return
        rows: list = []
        with console.status("start-up on the demo catalogue"):
            startup(run, data, index, f"{args.items:,} items", rows)
        if args.startup_items:
            big = dataset(args.startup_items, args.startup_items // 10)
            big_index = OUT / f"serve_index_gbdt_on_{args.startup_items}"
            if not (big_index / "index.json").exists():
                with console.status(f"indexing {args.startup_items:,} items with the demo gbdt model"):
                    t0 = time.perf_counter()
                    build_catalogue_index(run, big, big_index, MatchConfig(), overwrite=True)
                    console.print(f"indexed {args.startup_items:,} items in {time.perf_counter() - t0:.0f} s")
            with console.status(f"start-up on {args.startup_items:,} items"):
                startup(run, big, big_index, f"{args.startup_items:,} items", rows, computed=False)
        table(
            "(h) gbdt server start-up: seconds until /health answers, resident memory after 500 requests",
            ["catalogue", "item-feature store", "seconds", "RSS GB"],
            rows,
        )


if __name__ == "__main__":
    main()
