"""The learned text models: the encoder folder, item records, batching, and fine-tuning the bi-encoder and the
cross-encoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from prodmatch.catalogue import Catalogue
from prodmatch.config import TrainConfig
from prodmatch.errors import ConfigError, DataError, ModelError
from prodmatch.pairs import PairSet
from prodmatch.text import RecordTexts, bundled_encoder_path, check_encoder_path, item_records

pytest.importorskip("sentence_transformers")

import torch

from prodmatch.models.bi_encoder import BiEncoderModel, _examples, _group_batches
from prodmatch.models.cross_encoder import CrossEncoderModel, _drop_span

# ------------------------------------------------------------------------------------------ the folder


def test_a_bad_encoder_path_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        check_encoder_path(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no config\.json"):
        check_encoder_path(tmp_path / "empty")
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    shutil.copy(bundled_encoder_path() / "config.json", no_tok / "config.json")
    (no_tok / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="no tokenizer"):
        check_encoder_path(no_tok)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(bundled_encoder_path() / "config.json", no_weights / "config.json")
    with pytest.raises(ConfigError, match="no weights"):
        check_encoder_path(no_weights)
    assert check_encoder_path(None) == bundled_encoder_path().resolve()  # the bundled model by default


def test_a_bad_encoder_path_stops_fitting_before_anything_loads(tmp_path):
    cat, train, valid = _tiny()
    with pytest.raises(ConfigError, match="no such folder"):
        BiEncoderModel(encoder_path=str(tmp_path / "missing")).fit(cat, train, valid, TrainConfig(epochs=1))


# ----------------------------------------------------------------------------------------- records


def test_records_are_ditto_serialised_without_repeating_what_the_long_text_holds():
    cat = Catalogue(
        ids=pd.Index([1, 2, 3]),
        modalities={},
        names=np.array(["Acme Phone X1", "Acme Phone X2", None], dtype=object),
        attributes=np.array(['{"Colour": ["black"], "Memory": ["64 GB", "128 GB"]}', None, None], dtype=object),
        texts=np.array([None, "name: Acme Phone X2; colour: red", "a lone description"], dtype=object),
    )
    records = item_records(cat, np.array([0, 1, 2]))
    assert records[0] == "COL name VAL Acme Phone X1 COL Colour VAL black COL Memory VAL 64 GB, 128 GB"
    assert records[1] == "name: Acme Phone X2; colour: red"  # the name is inside the long text: not repeated
    assert records[2] == "a lone description"


def test_a_catalogue_without_any_text_is_an_error_not_a_zero_feature():
    cat = Catalogue(ids=pd.Index([1, 2]), modalities={})
    with pytest.raises(DataError, match=r"no\s+name, text or description"):
        item_records(cat, np.array([0, 1]))


def test_long_records_keep_their_rarest_words_in_order_within_the_budget():
    from prodmatch.text.encoder import load_sentence_encoder

    tok = load_sentence_encoder(bundled_encoder_path(), "cpu").tokenizer
    common = " ".join(["the"] * 40)
    records = [f"COL name VAL {common} zx81 {common} qz9000"] + ["COL name VAL the the the"] * 50
    fitted = RecordTexts.fit(records, tok, percentile=100, cap=16, floor=8)
    assert fitted.max_tokens == 16  # the longest record's count, capped
    [short] = fitted.summarise(records[:1], tok)
    kept = short.split()
    assert "COL" in kept and "VAL" in kept  # the markers always stay
    assert "zx81" in kept and "qz9000" in kept and kept.index("zx81") < kept.index("qz9000")
    assert len(tok(short)["input_ids"]) <= fitted.max_tokens
    assert RecordTexts.from_dict(json.loads(json.dumps(fitted.to_dict()))).max_tokens == fitted.max_tokens


# ----------------------------------------------------------------------------------------- batches


def test_examples_of_one_product_never_share_a_batch():
    # matches 0-1, 1-2 (one group of three items) and 3-4, 5-6, 7-8; non-matches 0-3, 5-9
    left = np.array([0, 1, 3, 5, 7, 0, 5])
    right = np.array([1, 2, 4, 6, 8, 3, 9])
    target = np.array([1, 1, 1, 1, 1, 0, 0], dtype=np.float32)
    pairs = PairSet(left, right, target, np.arange(7), left, right)
    examples, negatives, groups = _examples(pairs, np.random.default_rng(0))
    assert len(examples) == 5 and groups[0] == groups[1] and len(set(groups.tolist())) == 4
    assert negatives[examples.tolist().index([0, 1])] == 3 and negatives[examples.tolist().index([5, 6])] == 9
    for seed in range(20):
        batches = _group_batches(groups, 2, np.random.default_rng(seed))
        assert sorted(np.concatenate(batches).tolist()) == list(range(5))
        assert all(len(set(groups[b].tolist())) == len(b) <= 2 for b in batches)


# ----------------------------------------------------------------------------------------- fitting

BRANDS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "cyberdyne"]
KINDS = ["kettle", "toaster", "blender", "drill", "headphones", "camera"]


def _tiny(n_products: int = 24, seed: int = 0):
    """Two listings per product, written differently; each product's non-match is a sibling: the same
    brand and kind, another model number. Zero-shot, the words shared by siblings look like a match."""
    rng = np.random.default_rng(seed)
    names = []
    for p in range(n_products):
        brand, kind = BRANDS[p % 4], KINDS[p % 4]
        model = f"{kind[:2]}{100 + 7 * p}"
        names.append(f"{brand} {kind} {model} {rng.choice(['black', 'white', 'silver'])}")
        names.append(f"{model.upper()} {kind} by {brand.title()}")
    cat = Catalogue(ids=pd.Index(np.arange(len(names))), modalities={}, names=np.array(names, dtype=object))
    left, right, target = [], [], []
    for p in range(n_products):
        q = (p + 4) % n_products  # the next product of the same brand and kind
        left += [2 * p, 2 * p]
        right += [2 * p + 1, 2 * q + 1]
        target += [1, 0]
    left, right, target = np.array(left), np.array(right), np.array(target, dtype=np.float32)
    order = rng.permutation(len(left))
    left, right, target = left[order], right[order], target[order]
    cut = int(0.75 * len(left))

    def pairs(sl):
        return PairSet(left[sl], right[sl], target[sl], np.arange(len(left))[sl], left[sl], right[sl])

    return cat, pairs(slice(0, cut)), pairs(slice(cut, None))


@pytest.mark.slow
def test_fine_tuning_the_bi_encoder_on_a_tiny_set_improves_on_its_start_and_round_trips(tmp_path):
    cat, train, valid = _tiny()
    # float32 whatever the CPU: bfloat16 (the default where it has AMX) rounds differently with each batch's padding
    config = TrainConfig(epochs=3, seed=0, threads=2, precision="fp32")
    model = BiEncoderModel(batch_size=8, lr=1e-4).fit(cat, train, valid, config)
    assert 1 <= model.result_.best_epoch <= len(model.history_) <= 3
    for pairs in (train, valid):
        before = _zero_shot_ap(cat, pairs)
        after = average_precision_score(pairs.target, model.predict_logits(cat, pairs))
        assert after > before, (before, after)
    _symmetric_and_round_trips(model, cat, valid, tmp_path)
    # A run that scores in bfloat16 (the default where the CPU has AMX) exports too: the float32 graph is checked
    # against torch in float32, not against bfloat16's rounding (about 1e-3 here, far above the export's 1e-5).
    from prodmatch.export import export_onnx

    model.precision_ = "bf16"
    model.save(tmp_path / "bf16")
    (report,) = export_onnx(tmp_path / "bf16", catalogue=cat, samples=16)
    assert set(report.parity) == {"random", "real"}


@pytest.mark.slow
def test_fine_tuning_the_cross_encoder_on_a_tiny_set_improves_on_its_start_and_round_trips(tmp_path):
    cat, train, valid = _tiny()
    config = TrainConfig(epochs=8, seed=0, threads=2, patience=None, precision="fp32")  # as the bi-encoder's
    model = CrossEncoderModel(batch_size=8, lr=2e-4, epochs=8).fit(cat, train, valid, config)
    # the starting point: the pretrained encoder with its new (seeded) classification layer, untrained
    torch.manual_seed(0)
    start = CrossEncoderModel(device="cpu")
    start.device_, start.precision_, start.records_ = "cpu", "fp32", model.records_
    start._load_encoder(bundled_encoder_path(), fresh=True)
    for pairs in (train, valid):
        before = average_precision_score(pairs.target, start.predict_logits(cat, pairs))
        after = average_precision_score(pairs.target, model.predict_logits(cat, pairs))
        assert after > before + 0.1, (before, after)
    _symmetric_and_round_trips(model, cat, valid, tmp_path)


def _symmetric_and_round_trips(model, cat, valid, tmp_path) -> None:
    """f(a, b) == f(b, a) exactly (both models are symmetric in use), the same after a save and a load, and
    the same through ONNX Runtime after an export (whose parity check passes), which a weight change voids."""
    from prodmatch.export import PARITY_TOL, export_onnx
    from prodmatch.models import load_model

    flipped = PairSet(valid.right, valid.left, valid.target, valid.source_rows, None, None)
    reference = model.predict_logits(cat, valid)
    np.testing.assert_array_equal(model.predict_logits(cat, flipped), reference)
    model.save(tmp_path / "run")
    loaded = load_model(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_logits(cat, valid), reference, atol=1e-5)

    (report,) = export_onnx(tmp_path / "run", catalogue=cat, samples=64)
    assert set(report.parity) == {"random", "real"}
    assert all(p["max_rel_logit"] <= PARITY_TOL for p in report.parity.values())
    onnx = load_model(tmp_path / "run").use_runtime("onnx")
    np.testing.assert_allclose(onnx.predict_logits(cat, valid), reference, atol=1e-5)
    np.testing.assert_allclose(onnx.predict_logits(cat, flipped), onnx.predict_logits(cat, valid), atol=1e-6)
    meta_path = tmp_path / "run" / "onnx.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "weights_sha256": "0" * 64}))  # exported from other weights
    with pytest.raises(ModelError, match="other weights"):
        load_model(tmp_path / "run").use_runtime("onnx")


def _zero_shot_ap(cat, pairs) -> float:
    from prodmatch.text.encoder import load_sentence_encoder

    enc = load_sentence_encoder(bundled_encoder_path(), "cpu")
    rows = np.arange(len(cat))
    vecs = enc.encode(item_records(cat, rows), normalize_embeddings=True, convert_to_numpy=True)
    return average_precision_score(pairs.target, np.einsum("ij,ij->i", vecs[pairs.left], vecs[pairs.right]))


def test_span_deletion_keeps_the_markers():
    record = "COL name VAL acme kettle ke100 COL colour VAL black"
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = _drop_span(record, rng).split()
        assert 1 <= len(record.split()) - len(out) <= 4
        assert [w for w in out if w in ("COL", "VAL")] == ["COL", "VAL", "COL", "VAL"]


class _Kill(Exception):
    pass


class _KillAtEpoch:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, epoch, epochs, batches):
        if epoch == self.epoch:
            raise _Kill

    def on_batch_end(self, loss):
        pass

    def on_epoch_end(self, record):
        pass


@pytest.mark.parametrize(
    "make", [lambda **kw: BiEncoderModel(**kw), lambda **kw: CrossEncoderModel(augment=0.5, **kw)], ids=["bi", "cross"]
)
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, make):
    cat, train, valid = _tiny(12)
    config = TrainConfig(epochs=2, seed=1, threads=2, patience=5)
    whole = make(batch_size=8).fit(cat, train, valid, config, checkpoint_dir=tmp_path / "a")
    killed = make(batch_size=8)
    with pytest.raises(_Kill):
        killed.fit(cat, train, valid, config, checkpoint_dir=tmp_path / "b", callback=_KillAtEpoch(2))
    resumed = make(batch_size=8).fit(cat, train, valid, config, checkpoint_dir=tmp_path / "b", resume=True)
    np.testing.assert_allclose(resumed.predict_logits(cat, valid), whole.predict_logits(cat, valid), atol=1e-5)
    assert [h["valid_pr_auc"] for h in resumed.history_] == pytest.approx([h["valid_pr_auc"] for h in whole.history_])
    with pytest.raises(ConfigError, match="different run"):
        make(batch_size=4).fit(cat, train, valid, config, checkpoint_dir=tmp_path / "b", resume=True)


@pytest.mark.slow
def test_gbdt_stacks_both_transformers_cross_fitted_and_round_trips(synth_dir, tmp_path):
    from prodmatch.io import read_catalogue
    from prodmatch.models import GBDTModel, load_model
    from prodmatch.pairs import load_pairs, split_pairs

    model = GBDTModel(stack="", stack_text="words,bi-encoder,cross-encoder", n_estimators=30, stack_folds=2)
    cat = read_catalogue(synth_dir, model.read_config(None))
    assert cat.names is not None  # the bi-encoder reads the names (and attributes, texts)
    train, valid, _ = split_pairs(load_pairs(synth_dir / "train.parquet", cat, require_target=True), seed=0)
    train, valid = train.subset(np.arange(200)), valid.subset(np.arange(60))  # seconds, not minutes
    model.fit(cat, train, valid, TrainConfig(epochs=1, seed=0, threads=2))
    assert model.feature_names_[-3:] == ["stack_words", "stack_bi_encoder", "stack_cross_encoder"]
    folds = model.stack_folds_["folds"]
    assert [len(m) for m in model.text_models_.values()] == [folds, folds]  # one per fold, on the shared folds
    assert not model.batch_invariant  # encoder vectors move by ~1e-7 with what they are encoded beside
    probs = model.predict_proba(cat, valid)
    np.testing.assert_allclose(model.predict_proba(cat, valid.swapped()), probs, atol=1e-6)
    model.save(tmp_path / "run")
    for kind in ("bi-encoder", "cross-encoder"):
        assert sorted(p.name for p in (tmp_path / "run" / "text_stack" / kind).iterdir()) == [
            f"fold{k}" for k in range(folds)
        ]
    loaded = load_model(tmp_path / "run")
    np.testing.assert_allclose(loaded.predict_proba(cat, valid), probs, atol=1e-5)


def test_match_searches_with_the_bi_encoder_vectors_and_refuses_a_lone_cross_encoder(synth_dir, tmp_path):
    from prodmatch.candidates import reads_text_only
    from prodmatch.io import read_catalogue
    from prodmatch.matching import MatchConfig, match_catalogue
    from prodmatch.pairs import load_pairs, split_pairs

    model = BiEncoderModel()
    cat = read_catalogue(synth_dir, model.read_config(None))
    train, valid, _ = split_pairs(load_pairs(synth_dir / "train.parquet", cat, require_target=True), seed=0)
    model.fit(cat, train.subset(np.arange(200)), valid.subset(np.arange(60)), TrainConfig(epochs=1, seed=0, threads=2))
    model.save(tmp_path / "bi")
    summary = match_catalogue(tmp_path / "bi", synth_dir, tmp_path / "match", MatchConfig(k=5, token_k=0))
    assert summary["item_vectors"] == "bi-encoder vectors"
    assert summary["candidates"] > 0 and summary["quality"]["candidate_recall_at_5"] > 0.3
    cross = CrossEncoderModel()
    cross.modalities_ = []
    with pytest.raises(ConfigError, match="--rescore"):
        reads_text_only(cross)
