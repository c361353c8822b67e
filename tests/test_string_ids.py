"""String variant ids (e.g. SKUs, or the EM benchmarks' record ids) flow through every command."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import train_small
from prodmatch.cli import app


@pytest.fixture(scope="module")
def string_dir(synth_dir, tmp_path_factory):
    """synth_dir with every variant id turned into a string, "sku-<id>"."""
    out = tmp_path_factory.mktemp("string_ids")
    for f in synth_dir.glob("*.parquet"):
        table = pq.read_table(f)
        for i, name in enumerate(table.column_names):
            if name.startswith("variantid"):
                ids = pc.binary_join_element_wise(pa.scalar("sku-"), pc.cast(table[name], pa.string()), "")
                table = table.set_column(i, name, ids)
        pq.write_table(table, out / f.name)
    return out


def test_string_ids_end_to_end(string_dir, tmp_path):
    run = train_small(string_dir, tmp_path / "run", "siamese", "--epochs", "1")
    runner = CliRunner()
    r = runner.invoke(
        app,
        ["predict", str(run), "--data", str(string_dir), "--pairs", str(string_dir / "test.parquet"),
         "--out", str(tmp_path / "pred.parquet"), "--labels"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    pred = pd.read_parquet(tmp_path / "pred.parquet")
    test = pd.read_parquet(string_dir / "test.parquet")
    assert pred["variantid1"].tolist() == test["variantid1"].tolist()  # same ids, same order
    assert pred["variantid1"].str.startswith("sku-").all()
    r = runner.invoke(
        app, ["match", str(run), "--data", str(string_dir), "--out", str(tmp_path / "m"), "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    clusters = pd.read_parquet(tmp_path / "m" / "clusters.parquet")
    assert clusters["variantid"].str.startswith("sku-").all() and len(clusters) == 3000

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from prodmatch.serving.app import create_app
    from prodmatch.serving.settings import ServeSettings

    with TestClient(create_app(ServeSettings(run_dir=run, data_dir=string_dir))) as c:
        pairs = [
            {"variantid1": a, "variantid2": b} for a, b in zip(test.variantid1[:5], test.variantid2[:5], strict=True)
        ]
        body = c.post("/v1/score", json={"pairs": pairs}).json()
        assert len(body["scores"]) == 5
        assert all(
            isinstance(x["variantid"], str)
            for x in c.post("/v1/similar", json={"variantid": pairs[0]["variantid1"], "k": 3}).json()["results"]
        )
        r = c.post("/v1/score", json={"pairs": [{"variantid1": 5, "variantid2": "sku-nope"}]})
        assert r.status_code == 404 and r.json()["error"]["ids"] == [5, "sku-nope"]
