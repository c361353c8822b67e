"""The HTTP API: every endpoint, its errors (401, 404, 413, 422, 500), and a schemathesis run over its schema."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

from fastapi.testclient import TestClient

from prodmatch import api
from prodmatch.export import export_onnx
from prodmatch.io import read_catalogue
from prodmatch.models import load_model
from prodmatch.pairs import load_pairs
from prodmatch.serving import MatchService
from prodmatch.serving.app import API_KEY_HEADER, create_app
from prodmatch.serving.settings import ServeSettings

BERT, PIC = "name_bert_64", "main_pic_embeddings_resnet_v1"


@pytest.fixture(scope="module")
def served(siamese_run, synth_dir, tmp_path_factory):
    """An exported copy of the small siamese run, its service (ONNX Runtime), and clusters for it."""
    run = shutil.copytree(siamese_run, tmp_path_factory.mktemp("served") / "run")
    export_onnx(run, samples=256)
    ids = pd.read_parquet(synth_dir / "text_and_bert.parquet")["variantid"]
    clusters = tmp_path_factory.mktemp("clusters") / "clusters.parquet"
    pd.DataFrame({"variantid": ids, "cluster_id": np.arange(len(ids)) // 3}).to_parquet(clusters)
    service = MatchService.load(run, synth_dir, clusters=clusters, runtime="onnx", max_k=50)
    return run, service


@pytest.fixture(scope="module")
def client(served, synth_dir):
    run, service = served
    settings = ServeSettings(run_dir=run, data_dir=synth_dir, max_batch=64, max_k=50, max_body_bytes=200_000)
    with TestClient(create_app(settings, service)) as c:
        yield c


@pytest.fixture(scope="module")
def raw(synth_dir):
    """id -> raw (unnormalised) embeddings as the item files hold them."""
    text = pd.read_parquet(synth_dir / "text_and_bert.parquet").set_index("variantid")[BERT]
    pics = pd.read_parquet(synth_dir / "images_embed.parquet").set_index("variantid")[PIC]
    return text, pics


def _test_pairs(synth_dir, n=40):
    frame = pd.read_parquet(synth_dir / "test.parquet").head(n)
    return [
        {"variantid1": int(a), "variantid2": int(b)} for a, b in zip(frame.variantid1, frame.variantid2, strict=True)
    ]


# ------------------------------------------------------------------------------------------ score


def test_score_by_ids_equals_the_library(client, served, synth_dir, tmp_path):
    pairs = _test_pairs(synth_dir)
    r = client.post("/v1/score", json={"pairs": pairs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["scores"]) == len(pairs) and body["model"] == "siamese"
    pd.DataFrame(pairs).to_parquet(tmp_path / "pairs.parquet")
    model = load_model(served[0])
    model.precision_ = "fp32"  # ONNX Runtime computes in fp32; a run trained with bf16 scores in bf16 by default
    catalogue = read_catalogue(synth_dir, model.data_config())
    scored = api.score_pairs(model, catalogue, load_pairs(tmp_path / "pairs.parquet", catalogue, require_target=False))
    expected = scored["target"].to_numpy()
    np.testing.assert_allclose(body["scores"], expected, atol=1e-5)  # ONNX Runtime vs the torch library path
    threshold = body["threshold"]
    assert body["labels"] == [int(s >= threshold) for s in body["scores"]]


def test_an_item_scores_the_same_by_id_and_by_raw_embeddings(client, synth_dir, raw):
    text, pics = raw
    pairs = _test_pairs(synth_dir, 10)
    by_ids = client.post("/v1/score", json={"pairs": pairs}).json()["scores"]

    def embeddings(i):
        out = {BERT: [float(x) for x in text[i]]}
        if pics.get(i) is not None and len(pics[i]):
            out[PIC] = [float(x) for x in pics[i][0]]
        return out

    as_raw = [{"left": embeddings(p["variantid1"]), "right": embeddings(p["variantid2"])} for p in pairs]
    mixed = [x for pair in zip(as_raw, pairs, strict=True) for x in pair]  # raw, ids, raw, ids, ...
    r = client.post("/v1/score", json={"pairs": mixed})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    np.testing.assert_allclose(scores[0::2], by_ids, atol=1e-5)  # raw embeddings are normalised like the files
    np.testing.assert_allclose(scores[1::2], by_ids, atol=1e-12)  # and the order of answers is the request's


def test_unknown_ids_answer_404_listing_all_of_them(client, synth_dir):
    known = _test_pairs(synth_dir, 1)[0]["variantid1"]
    pairs = [{"variantid1": known, "variantid2": 1}, {"variantid1": "no-such-item", "variantid2": 2}]
    r = client.post("/v1/score", json={"pairs": pairs})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "unknown_ids" and error["ids"] == [1, "no-such-item", 2]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"pairs": []}, "at least 1"),
        ({"pairs": [{"variantid1": 1, "variantid2": 2}] * 65}, "at most 64"),  # max_batch is 64 here
        ({"pairs": [{"left": {BERT: [0.1] * 63}, "right": {BERT: [0.1] * 64}}]}, "at least 64"),
        ({"pairs": [{"left": {"colour_embedding": [0.1] * 8}, "right": {BERT: [0.1] * 64}}]}, "colour_embedding"),
        ({"pairs": [{"left": {}, "right": {BERT: [0.1] * 64}}]}, "at least one of"),
        ({"pairs": [{"variantid1": 1}]}, "variantid2"),
        ({"pairs": [{"variantid1": 2**70, "variantid2": 1}]}, "variantid1"),
        ({"pairs": "everything"}, "pairs"),
    ],
)
def test_invalid_score_requests_answer_422_saying_where(client, body, where):
    r = client.post("/v1/score", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and where in r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_inf_answer_422(client, token):
    vector = ",".join([token] + ["0.1"] * 63)
    content = f'{{"pairs": [{{"left": {{"{BERT}": [{vector}]}}, "right": {{"{BERT}": [{vector}]}}}}]}}'
    r = client.post("/v1/score", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["error"]["message"]


def test_huge_but_finite_values_are_scaled_not_overflowed(client):
    big = [1e300] * 64
    r = client.post("/v1/score", json={"pairs": [{"left": {BERT: big}, "right": {BERT: [1.0] * 64}}]})
    assert r.status_code == 200 and 0.0 <= r.json()["scores"][0] <= 1.0


def test_raw_embeddings_follow_the_catalogue_normalisation(served):
    from prodmatch.catalogue import l2_normalize

    _, service = served
    raw = np.random.default_rng(0).normal(size=(3, 64))
    raw[1] *= 1e-5  # norm under 0.001: no information, absent, as in the item files
    raw[2] *= 1e200  # beyond float32: scaled before normalising
    features = service._embedding_features([{BERT: r.tolist()} for r in raw], "left", [0, 1, 2])
    np.testing.assert_allclose(features[0, :64], l2_normalize(raw[:1].copy())[0], rtol=1e-6, atol=1e-12)
    assert not features[1].any()  # zeros, and presence flag 0
    np.testing.assert_allclose(features[2, :64], raw[2] / np.linalg.norm(raw[2] / 1e200) / 1e200, rtol=1e-6)
    assert features[:, 64 + 128].tolist() == [1, 0, 1] and (features[:, 64 + 128 + 1] == 0).all()  # text only


def test_malformed_json_and_oversized_bodies(client):
    r = client.post("/v1/score", content=b'{"pairs": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = client.post("/v1/score", content=b" " * 300_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


# ---------------------------------------------------------------------------------------- similar


def test_similar_by_id_returns_k_scored_neighbours_with_clusters(client, synth_dir):
    query = _test_pairs(synth_dir, 1)[0]["variantid1"]
    r = client.post("/v1/similar", json={"variantid": query, "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert body["query"] == query and len(results) == 7
    assert query not in [x["variantid"] for x in results]  # never the item itself
    scores = [x["score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(x["cluster_id"], int) and x["label"] in (0, 1) for x in results)


def test_similar_by_raw_embeddings_finds_the_item_itself_first(client, synth_dir, raw):
    text, pics = raw
    query = _test_pairs(synth_dir, 1)[0]["variantid1"]
    embeddings = {BERT: [float(x) for x in text[query]]}
    if pics.get(query) is not None and len(pics[query]):
        embeddings[PIC] = [float(x) for x in pics[query][0]]
    r = client.post("/v1/similar", json={"embeddings": embeddings, "k": 5})
    assert r.status_code == 200, r.text
    top = max(r.json()["results"], key=lambda x: x["similarity"])
    assert top["variantid"] == query and top["similarity"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "body",
    [{"k": 5}, {"variantid": 1, "embeddings": {BERT: [0.1] * 64}}, {"variantid": 1, "k": 51}, {"variantid": 1, "k": 0}],
)
def test_invalid_similar_requests_answer_422(client, body):
    assert client.post("/v1/similar", json=body).status_code == 422


def test_similar_of_an_unknown_id_answers_404(client):
    r = client.post("/v1/similar", json={"variantid": 123, "k": 5})
    assert r.status_code == 404 and r.json()["error"]["ids"] == [123]


# --------------------------------------------------------------------------------- model, health


def test_model_and_health(client):
    info = client.get("/v1/model").json()
    assert info["name"] == "siamese" and info["runtime"] == "onnx" and info["accepts_embeddings"]
    assert info["modalities"] == [{"name": BERT, "dim": 64}, {"name": PIC, "dim": 128}]
    assert 0.0 < info["metrics"]["valid"]["pr_auc"] <= 1.0 and info["catalogue"]["clusters"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] == 3000


def test_openapi_schema_names_each_modality_with_its_dimension(client):
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["Embeddings"]["properties"]
    assert props[BERT]["anyOf"][0]["minItems"] == 64 and props[PIC]["anyOf"][0]["maxItems"] == 128


def test_errors_inside_the_server_answer_500_without_details(served, synth_dir, monkeypatch):
    run, service = served
    app = create_app(ServeSettings(run_dir=run, data_dir=synth_dir), service)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(service, "scored", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/score", json={"pairs": _test_pairs(synth_dir, 1)})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert "secret" not in r.text and "Traceback" not in r.text


# ---------------------------------------------------------------------------------------- explain


def test_explain_answers_the_scores_of_v1_score_with_contributions_that_add_up(client, served, synth_dir):
    from prodmatch.explain import explain_pairs

    pairs = _test_pairs(synth_dir, 12)
    scores = client.post("/v1/score", json={"pairs": pairs}).json()["scores"]
    r = client.post("/v1/explain", json={"pairs": pairs})
    assert r.status_code == 200, r.text
    found = r.json()["explanations"]
    assert [(e["variantid1"], e["variantid2"]) for e in found] == [(p["variantid1"], p["variantid2"]) for p in pairs]
    for e, s in zip(found, scores, strict=True):
        assert e["method"] == "modality-shapley" and e["score"] == pytest.approx(s, abs=1e-6)
        total = e["base_value"] + sum(c["contribution"] for c in e["contributions"])
        assert total == pytest.approx(e["raw_score"], abs=1e-4)
        assert {c["group"] for c in e["contributions"]} == {BERT, PIC}
    # the same answers as the library (the CLI's JSON)
    _, service = served
    cat = service.catalogue
    frame = pd.DataFrame(pairs)
    mine = explain_pairs(service.model, cat, _pairset(cat, frame)).to_dicts()
    assert [e["contributions"] for e in mine] == [e["contributions"] for e in found]


def _pairset(cat, frame):
    from prodmatch.pairs import make_pairs

    return make_pairs(cat, frame)


@pytest.mark.parametrize(
    "body",
    [
        {"pairs": []},
        {"pairs": [{"left": {BERT: [0.1] * 64}, "right": {BERT: [0.1] * 64}}]},  # explain takes ids only
        {"pairs": [{"variantid1": 1}]},
        {"pairs": [{"variantid1": 1, "variantid2": 2}] * 65},  # over max_batch
    ],
)
def test_invalid_explain_requests_answer_422(client, body):
    assert client.post("/v1/explain", json=body).status_code == 422


def test_explain_of_unknown_ids_answers_404_listing_them(client, synth_dir):
    pair = _test_pairs(synth_dir, 1)[0]
    r = client.post("/v1/explain", json={"pairs": [pair, {"variantid1": 5, "variantid2": 6}]})
    assert r.status_code == 404 and r.json()["error"]["ids"] == [5, 6]


# ---------------------------------------------------------------------------------------- api key


def test_api_key_is_required_on_v1_when_set(served, synth_dir):
    run, service = served
    app = create_app(ServeSettings(run_dir=run, data_dir=synth_dir, api_key="s3cret"), service)
    with TestClient(app) as c:
        assert c.get("/v1/model").status_code == 401
        r = c.get("/v1/model", headers={API_KEY_HEADER: "wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert c.get("/v1/model", headers={API_KEY_HEADER: "s3cret"}).status_code == 200
        body = {"pairs": _test_pairs(synth_dir, 1)}
        assert c.post("/v1/explain", json=body).status_code == 401
        assert c.post("/v1/explain", json=body, headers={API_KEY_HEADER: "s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200  # liveness stays open
        assert "APIKeyHeader" in c.get("/openapi.json").text


# ----------------------------------------------------------------------------------- start-up, gbdt


def test_lifespan_loads_the_model_from_settings(siamese_run, synth_dir):
    app = create_app(ServeSettings(run_dir=siamese_run, data_dir=synth_dir, runtime="auto"))
    with TestClient(app) as c:
        health = c.get("/health").json()
    assert health["runtime"] == "torch"  # this run was never exported: auto falls back to torch


def test_gbdt_serves_ids_natively_and_refuses_raw_embeddings(synth_dir, gbdt_small_run, tmp_path):
    run = gbdt_small_run
    service = MatchService.load(run, synth_dir, runtime="onnx")  # the store, whatever the runtime asked
    assert service.runtime == "store"
    pairs = _test_pairs(synth_dir, 30)
    left, right = [p["variantid1"] for p in pairs], [p["variantid2"] for p in pairs]
    frame = pd.DataFrame({"variantid1": left, "variantid2": right})
    frame.to_parquet(tmp_path / "pairs.parquet")
    predicted = api.predict(run, synth_dir, tmp_path / "pairs.parquet")["target"].to_numpy()
    with TestClient(create_app(ServeSettings(run_dir=run, data_dir=synth_dir), service)) as c:
        r = c.post("/v1/score", json={"pairs": pairs})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(r.json()["scores"], predicted)
        r = c.post("/v1/score", json={"pairs": [{"left": {BERT: [0.1] * 64}, "right": {BERT: [0.2] * 64}}]})
        assert r.status_code == 422 and "cannot score raw embeddings" in r.json()["error"]["message"]
        r = c.post("/v1/score", json={"pairs": [pairs[0], {"variantid1": 1, "variantid2": pairs[0]["variantid2"]}]})
        assert r.status_code == 404 and r.json()["error"]["ids"] == [1]
        r = c.post("/v1/similar", json={"variantid": pairs[0]["variantid1"], "k": 5})
        assert r.status_code == 200 and len(r.json()["results"]) == 5
        assert c.get("/v1/model").json()["accepts_embeddings"] is False
        r = c.post("/v1/explain", json={"pairs": pairs[:3]})
        assert r.status_code == 200, r.text
        for e, p in zip(r.json()["explanations"], predicted[:3], strict=True):
            assert e["method"] == "treeshap" and e["score"] == pytest.approx(p, abs=1e-9)
            total = e["base_value"] + sum(c["contribution"] for c in e["contributions"])
            assert total == pytest.approx(e["raw_score"], abs=1e-4)
            assert {c["group"] for c in e["contributions"]} >= {"attributes", "name text", "categories"}


def test_concurrent_small_requests_are_scored_together_with_the_same_answers():
    """The coalescer: requests that arrive while a batch is scored go together in the next call; each gets
    its own slice, in order; an error inside the call reaches every request of that batch."""
    import asyncio

    from prodmatch.serving.app import Coalescer

    calls = []

    def score_rows(left, right):
        calls.append(len(left))
        if (left < 0).any():
            raise RuntimeError("boom")
        return left * 1000.0 + right

    async def main():
        coalescer = Coalescer(score_rows)
        requests = [(np.arange(i, i + 1 + i % 3), np.arange(i, i + 1 + i % 3) + 7) for i in range(20)]
        answers = await asyncio.gather(*(coalescer(a, b) for a, b in requests))
        for (a, b), got in zip(requests, answers, strict=True):
            np.testing.assert_array_equal(got, a * 1000.0 + b)
        failing = await asyncio.gather(
            coalescer(np.array([-1]), np.array([0])), coalescer(np.array([2]), np.array([3])), return_exceptions=True
        )
        assert all(isinstance(x, RuntimeError) for x in failing)
        assert await coalescer(np.array([4]), np.array([5])) == [4005.0]  # and it recovers

    asyncio.run(main())
    assert sum(calls[:-2]) == sum(1 + i % 3 for i in range(20)) and len(calls) < 20  # batched


def test_serve_command_builds_the_app_and_hands_it_to_uvicorn(siamese_run, synth_dir, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from prodmatch.cli import app as cli

    seen = {}

    def fake_run(application, **kwargs):
        seen["app"], seen["kwargs"] = application, kwargs

    monkeypatch.setattr(uvicorn, "run", fake_run)
    args = ["serve", str(siamese_run), "--data", str(synth_dir), "--port", "8123", "--runtime", "torch"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert seen["kwargs"]["port"] == 8123 and seen["kwargs"]["host"] == "127.0.0.1"
    with TestClient(seen["app"]) as c:  # the app it built loads the model and answers
        assert c.get("/health").json()["runtime"] == "torch"
    r = CliRunner().invoke(cli, ["serve", str(siamese_run), "--data", str(synth_dir), "--threads", "0"])
    assert r.exit_code == 2 and "threads" in r.output
    import socket

    with socket.socket() as busy:  # a port another process listens on: refused before anything loads
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        seen.clear()
        r = CliRunner().invoke(cli, ["serve", str(siamese_run), "--data", str(synth_dir), "--port", str(port)])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in said and "choose another --port" in said
    assert not seen  # uvicorn was never started


# ------------------------------------------------------------------------------------- schemathesis


def test_schemathesis_finds_no_server_error_and_no_schema_violation(served, synth_dir):
    """Property-based requests from the app's own OpenAPI schema, valid and invalid: no 5xx, and every
    answer (errors included) conforms to the schema's status codes, content types and bodies."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    run, service = served
    app = create_app(ServeSettings(run_dir=run, data_dir=synth_dir, max_batch=16, max_k=20), service)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        modes = list(GenerationMode) if operation.method.upper() == "POST" else [GenerationMode.POSITIVE]
        for mode in modes:  # a GET without parameters has no invalid form

            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                case.call_and_validate(checks=checks)

            check()
    assert sorted(labels) == ["GET /health", "GET /v1/model", "POST /v1/explain", "POST /v1/score", "POST /v1/similar"]
