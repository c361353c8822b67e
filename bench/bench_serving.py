"""(f) Serving on CPU: a load test of `prodmatch serve` over loopback, ONNX Runtime against torch in one run.

For each model (siamese, and the default gbdt) and each runtime, a server is started in its own process
(one uvicorn worker, one compute thread per request) on the demo-size catalogue, and a bounded async
client sends a fixed number of requests:

- the floor: a route that does nothing (404), open loop at the same rate: what the HTTP stack, the
  loopback and the client cost on their own, on the same two cores;
- single pairs, open loop at a fixed rate (200/s by default: the issue's target is p99 <= 10 ms there);
  latency runs from the moment a request was *due*, so a stalled server cannot hide its queue;
- single pairs, closed loop (8 in flight): the most the server sustains;
- batches of 256 pairs, closed loop (2 in flight);
- /v1/similar with k=20, closed loop (2 in flight).

The client shares the machine's two cores with the server. Then, in this process, the gbdt booster alone:
LightGBM native against an ONNX conversion (onnxmltools, when installed), at equal output.

    python bench/bench_serving.py                # about 5 minutes
    python bench/bench_serving.py --models siamese --rate 200 --single 3000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
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


def prepare(model: str, data: Path, items: int) -> tuple[Path, Path]:
    """A trained, exported run of ``model`` and a saved index of the catalogue (cached under bench/out)."""
    run = OUT / f"serve_{model}_{items}"
    if not (run / "config.json").exists():
        with console.status(f"training {model} on the demo data"):
            train(data, run, model=model, config=TrainConfig(epochs=5), overwrite=True)
    with console.status(f"exporting {model} to ONNX"):
        export_onnx(run)
    index = OUT / f"serve_index_{model}_{items}"
    if not (index / "index.json").exists():
        with console.status("indexing the catalogue"):
            build_catalogue_index(run, data, index, MatchConfig(), overwrite=True)
    return run, index


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, data: Path, index: Path, runtime: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prodmatch.cli", "-q", "serve", str(run), "--data", str(data)]
    cmd += ["--index-dir", str(index), "--runtime", runtime, "--port", str(port), "--no-access-log"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("the server did not start within 300 s")


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


async def closed_loop(client, url: str, bodies: list[bytes], concurrency: int) -> dict:
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
                    errors += r.status != 200
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
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout) as client:
        await closed_loop(client, "/v1/score", request_bodies(data, 300, 1, 99), 4)  # warm up
        await closed_loop(client, "/v1/similar", similar_bodies(data, 50, 20, 99), 2)
        return {
            f"floor: no-op route, {args.rate:.0f}/s open loop": await open_loop(
                client, "/no-such-route", [b"{}"] * args.single, args.rate, expected=404
            ),
            f"1 pair, {args.rate:.0f}/s open loop": await open_loop(
                client, "/v1/score", request_bodies(data, args.single, 1, 1), args.rate
            ),
            "1 pair, closed loop x8": await closed_loop(
                client, "/v1/score", request_bodies(data, args.single, 1, 2), 8
            ),
            f"{args.batch} pairs, closed loop x2": await closed_loop(
                client, "/v1/score", request_bodies(data, args.batches, args.batch, 3), 2
            ),
            "similar k=20, closed loop x2": await closed_loop(
                client, "/v1/similar", similar_bodies(data, args.similar, 20, 4), 2
            ),
        }


def booster_alone(run: Path) -> None:
    """LightGBM native against an ONNX conversion of the same booster, on feature rows of real pairs."""
    try:
        import onnxruntime as ort
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError:
        console.print("(g) skipped: pip install onnxmltools to compare the gbdt booster with an ONNX conversion")
        return
    import lightgbm as lgb

    from common import best_of

    booster = lgb.Booster(model_file=str(run / "model.lgb.txt"))
    n_features = booster.num_feature()
    onx = convert_lightgbm(booster, initial_types=[("x", FloatTensorType([None, n_features]))], zipmap=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(onx.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, n_features)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan  # missing features, as real pairs have
    rows = []
    for n in (1, 256, 4096):
        native = 1 / (1 + np.exp(-booster.predict(x[:n], raw_score=True, num_threads=1)))
        converted = session.run(None, {"x": x[:n]})[1][:, 1]
        reps = 2000 if n == 1 else 50
        t_native = best_of(
            lambda n=n, r=reps: [booster.predict(x[:n], raw_score=True, num_threads=1) for _ in range(r)], 3
        )
        t_onnx = best_of(lambda n=n, r=reps: [session.run(None, {"x": x[:n]}) for _ in range(r)], 3)
        rows.append(
            [
                f"{n:,}",
                f"{t_native / reps * 1e3:.3f}",
                f"{t_onnx / reps * 1e3:.3f}",
                f"{t_native / t_onnx:.2f}x",
                f"{np.abs(native - converted).max():.1e}",
            ]
        )
    table(
        f"(g) gbdt booster alone ({booster.num_trees()} trees, {n_features} features), one thread",
        ["rows", "LightGBM ms", "ONNX Runtime ms", "ONNX speed-up", "max |probability gap|"],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=150_000)
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--models", default="siamese,gbdt")
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop single-pair requests per second")
    ap.add_argument("--single", type=int, default=3000, help="single-pair requests per scenario")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--similar", type=int, default=1000)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    data = dataset(args.items, args.pairs)
    results: dict = {}
    for model in args.models.split(","):
        run, index = prepare(model, data, args.items)
        for runtime in ("onnx", "torch"):
            port = free_port()
            with console.status(f"{model} / {runtime}: starting the server and sending requests"):
                server = start_server(run, data, index, runtime, port)
                try:
                    results[(model, runtime)] = asyncio.run(scenarios(port, data, args))
                finally:
                    server.terminate()
                    server.wait(30)
        rows = []
        for name in results[(model, "onnx")]:
            o, t = results[(model, "onnx")][name], results[(model, "torch")][name]
            for runtime, r in (("onnx", o), ("torch", t)):
                rows.append(
                    [
                        name if runtime == "onnx" else "",
                        runtime,
                        f"{r['requests']:,}",
                        str(r["errors"]),
                        f"{r['per_second']:,.0f}",
                        f"{r['p50_ms']:.2f}",
                        f"{r['p99_ms']:.2f}",
                        f"{t['p99_ms'] / o['p99_ms']:.2f}x" if runtime == "onnx" else "",
                    ]
                )
        table(
            f"(f) prodmatch serve, {model}, {args.items:,} items: one worker, one compute thread, loopback",
            ["scenario", "runtime", "requests", "errors", "requests/s", "p50 ms", "p99 ms", "torch p99 / onnx p99"],
            rows,
        )
    (OUT / "serving.json").write_text(json.dumps({f"{m}/{r}": v for (m, r), v in results.items()}, indent=2) + "\n")
    if "gbdt" in args.models.split(","):
        booster_alone(OUT / f"serve_gbdt_{args.items}")


if __name__ == "__main__":
    main()
