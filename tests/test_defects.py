"""Regression tests for defects found by trying prodmatch as a new user would (one test per defect)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prodmatch import api
from prodmatch.cli import app
from prodmatch.io import read_catalogue
from prodmatch.models import load_model
from prodmatch.pairs import PairSet

runner = CliRunner()
BERT, PIC = "name_bert_64", "main_pic_embeddings_resnet_v1"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def gbdt_run(gbdt_small_run):
    """The session's small gbdt run (read-only), trained once for every module."""
    return gbdt_small_run


@pytest.fixture(scope="module")
def blank_dir(synth_dir, tmp_path_factory):
    """synth_dir where 40 items have all-zero text and picture vectors (present in the files, but empty)."""
    out = tmp_path_factory.mktemp("blank") / "data"
    shutil.copytree(synth_dir, out)
    blank = pd.read_parquet(out / "text_and_bert.parquet")["variantid"].to_numpy()[:40]
    for fname, column, nested in (("text_and_bert.parquet", BERT, False), ("images_embed.parquet", PIC, True)):
        table = pq.read_table(out / fname)
        frame = table.to_pandas()
        hit = frame["variantid"].isin(blank).to_numpy()
        values = frame[column].tolist()
        for i in np.flatnonzero(hit):
            vec = values[i][0] if nested else values[i]
            zero = np.zeros(len(vec), dtype=np.float32)
            values[i] = [zero] if nested else zero
        kind = pa.list_(pa.list_(pa.float32())) if nested else pa.list_(pa.float32())
        index = table.schema.get_field_index(column)
        table = table.set_column(
            index, column, pa.array([[list(v) for v in x] if nested else list(x) for x in values], type=kind)
        )
        pq.write_table(table, out / fname)
    return out, blank


# -------------------------------------------------------------------------------- zero vectors


def test_zero_vectors_count_as_missing_in_training_scoring_and_matching(blank_dir, siamese_run, tmp_path):
    data, blank = blank_dir
    model = load_model(siamese_run)
    cat = read_catalogue(data, model.data_config())
    rows = cat.rows(blank)
    for m in cat.modalities.values():
        assert not m.present[rows].any()  # zeros in the file: absent, flag 0
    # Two unrelated items with nothing but zero vectors are not "the same product" by a model's reckoning
    # of identical inputs: matching leaves them out, each its own cluster.
    from prodmatch.matching import MatchConfig, match_catalogue

    summary = match_catalogue(siamese_run, data, tmp_path / "match", MatchConfig(k=10))
    assert summary["search"]["items_without_embeddings"] >= len(blank)  # (synth writes a few zeros itself)
    matches = pd.read_parquet(tmp_path / "match" / "matches.parquet")
    assert not set(blank) & (set(matches["variantid1"]) | set(matches["variantid2"]))
    clusters = pd.read_parquet(tmp_path / "match" / "clusters.parquet").set_index("variantid")["cluster_id"]
    assert clusters.loc[blank].is_unique


def test_similar_never_answers_an_item_without_embeddings(blank_dir, siamese_run):
    pytest.importorskip("fastapi")
    from prodmatch.errors import DataError
    from prodmatch.serving import MatchService

    data, blank = blank_dir
    service = MatchService.load(siamese_run, data, runtime="torch", max_k=50)
    answers = service.similar(int(pd.read_parquet(data / "train.parquet")["variantid1"].iloc[0]), 50)
    assert answers and not {a.variantid for a in answers} & set(blank.tolist())
    with pytest.raises(DataError, match="none of the model's embeddings"):
        service.similar(int(blank[0]), 5)
    with pytest.raises(DataError, match="none of the model's embeddings"):
        service.similar({BERT: [0.0] * 64}, 5)


# ------------------------------------------------------------------------- gbdt batch parity


@pytest.mark.parametrize("batch", [1, 255, 256, 257, 10_000], ids=lambda b: f"batch{b}")
def test_gbdt_gives_one_probability_whatever_the_batch(gbdt_run, synth_dir, batch):
    model = load_model(gbdt_run)
    cat = read_catalogue(synth_dir, model.data_config())
    rng = np.random.default_rng(0)
    n = 10_000
    left, right = rng.integers(0, len(cat), n).astype(np.int32), rng.integers(0, len(cat), n).astype(np.int32)
    ids = cat.ids.to_numpy()

    def score(sl: slice) -> np.ndarray:
        pairs = PairSet(left[sl], right[sl], None, np.arange(len(left[sl])), ids[left[sl]], ids[right[sl]])
        return model.predict_proba(cat, pairs)

    reference = score(slice(0, n))
    upto = min(n, 3 * batch if batch > 1 else 200)  # single pairs: the first 200
    got = np.concatenate([score(slice(s, min(s + batch, upto))) for s in range(0, upto, batch)])
    np.testing.assert_allclose(got, reference[:upto], rtol=0, atol=1e-6)


def test_gbdt_serve_predict_and_match_agree_at_any_batch_size(synth_dir, tmp_path, monkeypatch):
    """The same pair gets the same probability from predict (one call over 10,000 pairs), from the server in
    batches of 1, 255, 256, 257 and 10,000 (its item-feature store loaded from a saved index), and from match.
    The stacked networks trained in bf16 (AMX simulated, so the test means the same on every CPU): scoring
    runs them in float32 with the float64 guard, so the trees see the same side of every split."""
    pytest.importorskip("fastapi")
    from conftest import SMALL
    from prodmatch.config import TrainConfig
    from prodmatch.matching import MatchConfig, build_catalogue_index, match_catalogue
    from prodmatch.serving import MatchService

    monkeypatch.setattr("prodmatch.models.torch_model.bf16_pays", lambda: True)
    run = tmp_path / "run"
    api.train(synth_dir, run, model="gbdt", params=SMALL["gbdt"], config=TrainConfig(precision="bf16", epochs=2))
    ids = pd.read_parquet(synth_dir / "text_and_bert.parquet", columns=["variantid"])["variantid"].to_numpy()
    rng = np.random.default_rng(0)
    test = pd.read_parquet(synth_dir / "test.parquet")
    frame = pd.concat(  # the labelled test pairs, then random pairs of catalogue items
        [
            test[["variantid1", "variantid2"]],
            pd.DataFrame({"variantid1": rng.choice(ids, 10_000), "variantid2": rng.choice(ids, 10_000)}),
        ]
    ).head(10_000)
    frame.to_parquet(tmp_path / "pairs.parquet")
    predicted = api.predict(run, synth_dir, tmp_path / "pairs.parquet")["target"].to_numpy()

    build_catalogue_index(run, synth_dir, tmp_path / "index")
    assert (tmp_path / "index" / "store" / "store.json").exists()
    service = MatchService.load(run, synth_dir, index_dir=tmp_path / "index")
    assert service.runtime == "store" and service.batch_invariant
    left, right = frame.variantid1.tolist(), frame.variantid2.tolist()
    for size in (1, 255, 256, 257, 10_000):
        n = 600 if size == 1 else len(frame)  # one pair at a time: the first 600
        served = np.concatenate([service.score(left[i : i + size], right[i : i + size]) for i in range(0, n, size)])
        np.testing.assert_allclose(served, predicted[:n], rtol=0, atol=1e-6, err_msg=f"batch size {size}")

    match_catalogue(
        run, synth_dir, tmp_path / "match", MatchConfig(threshold=0.0, k=10, calibrate="none")
    )  # the model's own probabilities
    matched = pd.read_parquet(tmp_path / "match" / "matches.parquet")
    assert len(matched) > 1000
    served = service.score(matched.variantid1.tolist(), matched.variantid2.tolist(), job="catalogue")
    np.testing.assert_allclose(served, matched.score.to_numpy(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------- the command line


def test_match_k_is_bounded_with_a_clear_error(siamese_run, synth_dir, tmp_path):
    r = invoke("match", siamese_run, "--data", synth_dir, "--out", tmp_path / "m", "--k", 100_000_000)
    assert r.exit_code == 2 and "--k must be between 1 and 1,000" in r.output
    assert not (tmp_path / "m").exists()


def test_serve_port_is_validated(siamese_run, synth_dir):
    r = invoke("serve", siamese_run, "--data", synth_dir, "--port", 99999)
    assert r.exit_code == 2 and "Invalid value for '--port'" in r.output and "65535" in r.output


def test_info_on_a_file_says_it_is_a_file(synth_dir):
    r = invoke("info", synth_dir / "train.parquet")
    assert r.exit_code == 2
    assert "is a file" in r.output and "does not exist" not in r.output and "prodmatch synth" not in r.output


def test_a_failed_train_leaves_no_run_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"variantid": [1, 2], BERT: [[1.0, 2.0], [1.0]]}), data / "text_and_bert.parquet")
    r = invoke("train", data, "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 2 and "different dimensions" in r.output
    assert not (tmp_path / "run").exists()


def test_version_flag():
    from prodmatch import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"prodmatch {__version__}"


# ------------------------------------------------------------------------------------------ the API


@pytest.fixture(scope="module")
def client(siamese_run, synth_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from prodmatch.serving.app import create_app
    from prodmatch.serving.settings import ServeSettings

    settings = ServeSettings(run_dir=siamese_run, data_dir=synth_dir, runtime="torch")
    with TestClient(create_app(settings)) as c:
        yield c


def test_api_errors_name_the_clients_json_path(client):
    r = client.post("/v1/score", json={"pairs": [{"left": {BERT: [0.1] * 63}, "right": {BERT: [0.1] * 64}}]})
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["error"]["details"]]
    assert locs == [f"pairs[0].left.{BERT}"], locs
    assert r.json()["error"]["message"].startswith(f"pairs[0].left.{BERT}:")
    r = client.post("/v1/score", json={"pairs": [{"variantid1": 1}]})
    assert r.status_code == 422 and [d["loc"] for d in r.json()["error"]["details"]] == ["pairs[0].variantid2"]


@pytest.mark.parametrize("bad", [True, 1.0, 1.5, None], ids=["true", "float", "fraction", "null"])
def test_ids_are_strict(client, bad):
    r = client.post("/v1/score", json={"pairs": [{"variantid1": bad, "variantid2": 1}]})
    assert r.status_code == 422, r.text
    assert all("constrained" not in d["loc"] for d in r.json()["error"]["details"])
    assert {d["loc"] for d in r.json()["error"]["details"]} == {"pairs[0].variantid1"}


def test_docs_work_offline(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "cdn" not in r.text.lower()
    assets = [a.split('"')[0] for a in r.text.split('src="')[1:]] + [
        a.split('"')[0] for a in r.text.split('href="')[1:]
    ]
    local = [a for a in assets if a.startswith("/")]
    assert any(a.endswith(".js") for a in local) and any(a.endswith(".css") for a in local)
    for asset in local:
        assert client.get(asset).status_code == 200, asset
