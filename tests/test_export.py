"""ONNX export: parity with torch, order invariance in the graph, stale-export detection, atomicity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import train_small
from prodmatch.cli import app
from prodmatch.errors import ModelError
from prodmatch.export import ONNX_FILE, ONNX_META_FILE, PARITY_TOL, OnnxPairScorer, export_onnx, random_item_features
from prodmatch.io import read_catalogue
from prodmatch.models import load_model
from prodmatch.pairs import PairSet

pytest.importorskip("onnxruntime")


@pytest.fixture()
def siamese_copy(siamese_run, tmp_path):
    return shutil.copytree(siamese_run, tmp_path / "siamese")


def _random_pairs(catalogue, n=3000, seed=0) -> PairSet:
    rng = np.random.default_rng(seed)
    left = rng.integers(0, len(catalogue), n).astype(np.int32)
    right = np.where(rng.random(n) < 0.3, left, rng.integers(0, len(catalogue), n)).astype(np.int32)
    ids = catalogue.ids.to_numpy()
    return PairSet(left, right, None, np.arange(n), ids[left], ids[right])


def test_onnx_matches_torch_on_random_and_real_inputs(synth_dir, siamese_copy):
    model = load_model(siamese_copy)
    catalogue = read_catalogue(synth_dir, model.data_config())
    [report] = export_onnx(siamese_copy, catalogue=catalogue, samples=2048)
    assert set(report.parity) == {"random", "real"}
    for p in report.parity.values():
        assert p["max_abs_probability"] <= PARITY_TOL and p["max_rel_logit"] <= PARITY_TOL
    meta = json.loads((siamese_copy / ONNX_META_FILE).read_text())
    assert meta["inputs"]["left"] == ["batch", 64 + 128 + 2]

    # Independently of the export's own check: the run scored through ONNX Runtime equals torch in fp32.
    torch_model = load_model(siamese_copy)
    torch_model.precision_ = "fp32"
    onnx_model = load_model(siamese_copy).use_runtime("onnx")
    pairs = _random_pairs(catalogue)
    a, b = torch_model.predict_proba(catalogue, pairs), onnx_model.predict_proba(catalogue, pairs)
    assert np.abs(a - b).max() <= 1e-5
    # ... and so do raw embeddings through score_arrays (the path serving and Spark take)
    rng = np.random.default_rng(1)
    left = {"name_bert_64": rng.normal(size=(50, 64)), "main_pic_embeddings_resnet_v1": rng.normal(size=(50, 128))}
    right = {"name_bert_64": rng.normal(size=(50, 64))}
    assert np.abs(torch_model.score_arrays(left, right) - onnx_model.score_arrays(left, right)).max() <= 1e-5


def test_order_sensitive_network_is_averaged_over_both_orders_in_the_graph(synth_dir, tmp_path):
    run = train_small(synth_dir, tmp_path / "concat", "concat-mlp", "--epochs", "1")
    export_onnx(run, samples=512)
    scorer = OnnxPairScorer(run / ONNX_FILE)
    model = load_model(run)
    rng = np.random.default_rng(0)
    a = random_item_features(model.modalities_, 256, rng)
    b = random_item_features(model.modalities_, 256, rng)
    np.testing.assert_array_equal(scorer(a, b), scorer(b, a))
    model.precision_ = "fp32"
    np.testing.assert_allclose(scorer(a, b), model.logits_from_features(a, b), rtol=PARITY_TOL, atol=PARITY_TOL)


def test_stale_export_is_refused(siamese_copy):
    export_onnx(siamese_copy, samples=256)
    load_model(siamese_copy).use_runtime("onnx")  # fresh: fine
    (siamese_copy / ONNX_META_FILE).write_text(
        json.dumps({**json.loads((siamese_copy / ONNX_META_FILE).read_text()), "weights_sha256": "0" * 64})
    )
    with pytest.raises(ModelError, match="export"):
        load_model(siamese_copy).use_runtime("onnx")


def test_failed_parity_writes_nothing(siamese_copy, monkeypatch):
    import prodmatch.export as export

    monkeypatch.setattr(export, "PARITY_TOL", 0.0)
    with pytest.raises(ModelError, match="nothing was written"):
        export_onnx(siamese_copy, samples=256)
    assert not (siamese_copy / ONNX_FILE).exists() and not (siamese_copy / ONNX_META_FILE).exists()
    assert not [p for p in siamese_copy.iterdir() if p.name.endswith(".tmp")]


def test_without_export_onnx_runtime_says_what_to_run(siamese_copy):
    with pytest.raises(ModelError, match="prodmatch export"):
        load_model(siamese_copy).use_runtime("onnx")


def test_export_command(synth_dir, siamese_copy):
    r = CliRunner().invoke(app, ["export", str(siamese_copy), "--data", str(synth_dir)])
    assert r.exit_code == 0, r.output
    assert "real" in r.output and "random" in r.output and (siamese_copy / ONNX_FILE).exists()
