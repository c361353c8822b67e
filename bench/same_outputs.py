"""Are two versions' outputs the same? Runs the demo's steps with this checkout (or compares two output trees).

    python bench/same_outputs.py run OUT [--data DIR] [--reuse-run RUN]   # synth (seed 0), train, predict,
                                                                         # match local and spark, explain, index
    python bench/same_outputs.py compare BEFORE AFTER                   # every parquet, floats to 1e-9

Run ``run`` once on the old commit (``git worktree add``, then ``PYTHONPATH=WORKTREE/src``) and once on the new,
then ``compare``. A refactor must leave every file equal: rows, columns and scores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def _run(out: Path, data: Path, reuse: Path | None) -> None:
    cli = [sys.executable, "-m", "prodmatch.cli", "-q"]
    out.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        subprocess.run([*cli, "synth", str(data), "--seed", "0"], check=True)
    run = reuse or out / "run"
    steps = [] if reuse else [["train", str(data), "--out", str(run), "--overwrite"]]
    steps += [
        ["predict", str(run), "--data", str(data), "--pairs", str(data / "test.parquet"), "--out", str(out / "pred.parquet")],
        ["match", str(run), "--data", str(data), "--out", str(out / "match_local")],
        ["match", str(run), "--data", str(data), "--out", str(out / "match_spark"), "--engine", "spark"],
        ["explain", str(run), "--data", str(data), "--pairs", str(data / "test.parquet"), "--out", str(out / "explain"),
         "--plots", "0", "--show", "0"],
        ["index", str(run), "--data", str(data), "--out", str(out / "index")],
    ]  # fmt: skip
    for step in steps:
        print(" ".join(step[:1]), flush=True)
        subprocess.run([*cli, *step], check=True)


def _same(a, b) -> bool:
    if a.dtype.kind == "f":
        return a.shape == b.shape and np.allclose(a, b, atol=1e-9, rtol=0, equal_nan=True)
    if a.dtype == object and len(a) and isinstance(a[0], np.ndarray):
        return len(a) == len(b) and all(np.allclose(u, v, atol=1e-9) for u, v in zip(a, b, strict=True))
    return list(map(str, a)) == list(map(str, b))


def _compare(before: Path, after: Path) -> int:
    bad = 0
    files = sorted(before.rglob("*.parquet"))
    for f in files:
        rel = f.relative_to(before)
        g = after / rel
        if not g.exists():
            print(f"missing: {rel}")
            bad += 1
            continue
        ta, tb = pq.read_table(f), pq.read_table(g)
        if ta.schema.names != tb.schema.names or ta.num_rows != tb.num_rows:
            print(f"shape differs: {rel} ({ta.num_rows} rows, {ta.schema.names} / {tb.num_rows}, {tb.schema.names})")
            bad += 1
            continue
        for c in ta.schema.names:
            if not _same(ta[c].to_numpy(zero_copy_only=False), tb[c].to_numpy(zero_copy_only=False)):
                print(f"differs: {rel} column {c}")
                bad += 1
    print(f"{len(files)} files compared, {bad} differences")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--data", type=Path, default=Path("bench/out/same_outputs_data"))
    r.add_argument("--reuse-run", type=Path, default=None, help="score with this trained run instead of training")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args()
    if args.what == "run":
        _run(args.out, args.data, args.reuse_run)
    else:
        sys.exit(_compare(args.before, args.after))


if __name__ == "__main__":
    main()
