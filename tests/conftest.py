"""Tiny seeded datasets shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodmatch.synth import SynthConfig, generate

SMALL_NET = {"hidden": 32, "nlayers": 2}
# Small, fast hyperparameters of every registered model.
SMALL = {
    "concat-mlp": SMALL_NET,
    "item-mlp": SMALL_NET,
    "siamese": {"projection": 32, "item_dim": 32, "hidden": 32},
    "gbdt": {"n_estimators": 40, "stack_epochs": 1},
}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic E-CUP dataset (read-only: copy it before changing files)."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthConfig(items=3000, pairs=1200, seed=7))
    return out


@pytest.fixture(scope="session")
def medium_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset large enough for a small network to learn from."""
    out = tmp_path_factory.mktemp("synth_medium")
    generate(out, SynthConfig(items=24_000, pairs=10_000, seed=5))
    return out


def list_column(rows: list[list[float] | None]) -> pa.Array:
    return pa.array(rows, type=pa.list_(pa.float32()))


def write_items(
    path: Path, ids: list, text: list[list[float] | None], pics: list | None = None, *, nested: bool = True
) -> Path:
    """Write a hand-made data directory: text_and_bert.parquet and, if given, images_embed.parquet."""
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"variantid": ids, "name_bert_64": list_column(text)}), path / "text_and_bert.parquet")
    if pics is not None:
        if nested:
            col = pa.array([None if p is None else [p] for p in pics], type=pa.list_(pa.list_(pa.float32())))
        else:
            col = list_column(pics)
        pq.write_table(
            pa.table({"variantid": ids, "main_pic_embeddings_resnet_v1": col}), path / "images_embed.parquet"
        )
    return path


def write_pairs(path: Path, v1: list, v2: list, target: list | None = None) -> Path:
    frame = pd.DataFrame({"variantid1": v1, "variantid2": v2})
    if target is not None:
        frame["target"] = np.asarray(target, dtype=np.int8)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def train_small(data_dir: Path, run_dir: Path, model: str, *extra: str) -> Path:
    """Train a small ``model`` through the CLI (the path users take) and return its run directory."""
    from typer.testing import CliRunner

    from prodmatch.cli import app

    params = [x for k, v in SMALL[model].items() for x in ("-p", f"{k}={v}")]
    args = ["train", str(data_dir), "--out", str(run_dir), "--model", model, *params, *extra, "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return run_dir


@pytest.fixture(scope="session")
def siamese_run(synth_dir, tmp_path_factory) -> Path:
    """A small siamese model trained on synth_dir (read-only; copy it before exporting into it)."""
    return train_small(synth_dir, tmp_path_factory.mktemp("siamese") / "run", "siamese", "--epochs", "2")


@pytest.fixture(scope="session")
def gbdt_small_run(synth_dir, tmp_path_factory) -> Path:
    """A small gbdt model (stacked siamese folds included) trained on synth_dir (read-only)."""
    return train_small(synth_dir, tmp_path_factory.mktemp("gbdt_small") / "run", "gbdt")
