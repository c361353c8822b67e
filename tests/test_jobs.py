"""Two jobs, two distributions: the pairs job chosen on labelled pairs, the catalogue job on candidates; auxiliary
pairs kept only at a measured weight; no evidence, no match."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from conftest import SMALL, write_items, write_pairs
from prodmatch import TrainConfig, api
from prodmatch.auxiliary import AuxPairs, Candidate, choose, weight_candidates
from prodmatch.calibration import choose_threshold
from prodmatch.evidence import NONE, describe, gate
from prodmatch.models import load_model
from prodmatch.pairs import PairSet


def _pairs(n: int, target: float = 0.0) -> PairSet:
    left, right = np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32) + 1
    return PairSet(left, right, np.full(n, target, dtype=np.float32), np.arange(n), left, right)


# ------------------------------------------------------------------------------------- selection


def test_weight_candidates_start_with_the_labelled_pairs_alone_then_each_source_alone():
    aux = AuxPairs.of(mined=_pairs(4), transitive=_pairs(2, 1.0))
    assert aux.counts() == {"mined": 4, "transitive": 2}
    assert weight_candidates(aux, (0.0, 0.25, 1.0)) == [
        {},
        {"mined": 0.25},
        {"mined": 1.0},
        {"transitive": 0.25},
        {"transitive": 1.0},
    ]
    assert weight_candidates(None, (1.0,)) == [{}]
    assert AuxPairs.of(mined=None, transitive=_pairs(0)) is None


def test_a_weight_below_one_is_that_share_of_the_pairs_at_weight_one():
    aux = AuxPairs.of(mined=_pairs(20_000))
    rows, w = aux.subset({"mined": 0.25}, seed=3)
    assert abs(len(rows) / 20_000 - 0.25) < 0.02 and (w == 1.0).all()
    again, _ = aux.subset({"mined": 0.25}, seed=3)
    np.testing.assert_array_equal(rows, again)  # reproducible
    rows, w = aux.subset({"mined": 2.0})
    assert len(rows) == 20_000 and (w == 2.0).all()
    assert len(aux.subset({})[0]) == 0


def test_choose_keeps_the_lightest_candidate_within_one_standard_error_of_the_best():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.5).astype(np.float32)
    signal = y + rng.normal(0, 0.8, len(y))
    close = signal + rng.normal(0, 0.05, len(y))  # the same ranking, a hair different
    better = y + rng.normal(0, 0.4, len(y))  # clearly better

    def cand(weights, score):
        from sklearn.metrics import average_precision_score

        return Candidate(weights, {"pairs": average_precision_score(y, score)}, predictions={"pairs": score})

    labels = {"pairs": y}
    tie = [cand({}, signal), cand({"mined": 1.0}, close)]
    assert choose(tie, ["pairs"], "average_precision", labels=labels)["pairs"].weights == {}
    win = [cand({}, signal), cand({"mined": 1.0}, better)]
    assert choose(win, ["pairs"], "average_precision", labels=labels)["pairs"].weights == {"mined": 1.0}


def test_the_catalogue_job_keeps_its_best_weighting_where_the_pairs_job_keeps_the_lightest_within_noise():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(4)
    y = (rng.random(4000) < 0.5).astype(np.float32)
    common = y + rng.normal(0, 0.8, len(y))
    a, b = (common + rng.normal(0, 0.2, len(y)) for _ in range(2))  # as good as each other (AP 0.0006 apart)
    better = y + rng.normal(0, 0.4, len(y))

    def cand(weights, score):
        ap = average_precision_score(y, score)
        return Candidate(weights, {"pairs": ap, "catalogue": ap}, predictions={"pairs": score, "catalogue": score})

    labels = {"pairs": y, "catalogue": y}
    jobs = ["pairs", "catalogue"]
    # Within noise: the pairs job keeps the labelled pairs alone, the catalogue job whichever scored higher.
    assert average_precision_score(y, b) > average_precision_score(y, a)
    tie = [cand({}, a), cand({"mined": 1.0}, b)]
    kept = choose(tie, jobs, "average_precision", labels=labels)
    assert kept["pairs"].weights == {} and kept["catalogue"].weights == {"mined": 1.0}
    assert (
        0 < tie[1].scores["catalogue"] - tie[0].scores["catalogue"] <= tie[0].detail["catalogue"]["error_of_difference"]
    )
    tie = [cand({}, b), cand({"mined": 1.0}, a)]
    kept = choose(tie, jobs, "average_precision", labels=labels)
    assert kept["pairs"].weights == {} and kept["catalogue"].weights == {}
    # Beyond noise, the better weighting wins for both jobs: the labelled pairs alone here.
    loss = [cand({}, better), cand({"mined": 1.0}, a)]
    kept = choose(loss, jobs, "average_precision", labels=labels)
    assert kept["pairs"].weights == {} and kept["catalogue"].weights == {}


def test_choose_fits_the_combination_of_each_sources_best_weight():
    fitted = []

    def fit(weights):
        fitted.append(dict(weights))
        return Candidate(dict(weights), {"pairs": 0.9})

    candidates = [
        Candidate({}, {"pairs": 0.5}),
        Candidate({"mined": 1.0}, {"pairs": 0.7}),
        Candidate({"transitive": 0.25}, {"pairs": 0.6}),
    ]
    kept = choose(candidates, ["pairs"], "average_precision", fit)
    assert fitted == [{"mined": 1.0, "transitive": 0.25}] and kept["pairs"].weights == fitted[0]


# ------------------------------------------------------------------------------------ the two jobs


@pytest.fixture(scope="module")
def two_jobs(synth_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("jobs") / "run"
    report = api.train(synth_dir, run, model="gbdt", params=SMALL["gbdt"], config=TrainConfig(epochs=2, seed=1))
    return run, report


def test_the_pairs_job_is_chosen_stopped_and_thresholded_on_labelled_validation_pairs(synth_dir, two_jobs):
    run, report = two_jobs
    model = report.model
    selection = report.metrics["selection"]
    assert selection["pairs"]["measured_on"] == "the labelled validation pairs"
    assert "mined neighbours" in selection["catalogue"]["measured_on"]
    assert [t["weights"] for t in selection["pairs"]["tried"]] == [{}, {"mined": 0.25}, {"mined": 1.0}]
    # The same split again: the pairs job's best round is the one of best average precision on the labelled
    # validation pairs, and its threshold the best F1 there, for the saved (labelled-pairs) calibration.
    prepared = api.prepare_pairs(synth_dir, model_catalogue(synth_dir, model), TrainConfig(epochs=2, seed=1))
    assert len(prepared.valid) == report.metrics["valid"]["n_pairs"]
    history = report.history
    best = max(range(len(history)), key=lambda i: (history[i]["valid_average_precision"], -i))
    assert model.best_iteration_ == best + 1
    cat = model_catalogue(synth_dir, model)
    prob = model.calibrator(model.predict_logits(cat, prepared.valid))
    assert model.threshold == pytest.approx(choose_threshold(prepared.valid.target, prob).threshold)
    assert model.calibrator.prior == pytest.approx(float(prepared.valid.target.mean()))
    # the catalogue job was calibrated on candidates: far fewer matches among them
    head = load_model(run).catalogue_head_
    assert head is not None and head.calibrator.prior < 0.8 * model.calibrator.prior


def model_catalogue(data, model):
    from dataclasses import replace

    from prodmatch.io import read_catalogue

    return read_catalogue(data, replace(model.data_config(), load_names=True, load_attributes=True))


def test_the_weight_chosen_for_mined_negatives_is_logged_and_reproducible(synth_dir, two_jobs, tmp_path, caplog):
    run, report = two_jobs
    with caplog.at_level(logging.INFO, logger="prodmatch"):
        again = api.train(
            synth_dir, tmp_path / "again", model="gbdt", params=SMALL["gbdt"], config=TrainConfig(epochs=2, seed=1)
        )
    assert again.metrics["selection"] == report.metrics["selection"]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "pairs job: validation average_precision by weighting of the auxiliary pairs" in said and "kept" in said
    saved = json.loads((run / "config.json").read_text())["jobs"]
    assert saved["pairs"]["selection"]["weights"] == report.metrics["selection"]["pairs"]["weights"]
    assert saved["catalogue"]["selection"]["weights"] == report.metrics["selection"]["catalogue"]["weights"]


def test_harmful_auxiliary_pairs_get_weight_zero_for_the_pairs_job(synth_dir, tmp_path):
    """Auxiliary 'negatives' that are true matches (what mining would give on a catalogue of duplicates): the
    pairs job measures that they hurt on labelled pairs and keeps the labelled pairs alone."""
    from prodmatch.io import read_catalogue
    from prodmatch.models import GBDTModel, create_model

    cat = read_catalogue(synth_dir, GBDTModel.data_config_for(None))
    prepared = api.prepare_pairs(synth_dir, cat, TrainConfig(hard_negatives=0, seed=0))
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")["product_id"]
    product = truth.reindex(cat.ids).to_numpy()
    train_items = np.unique(np.concatenate([prepared.train.left, prepared.train.right]))
    order = train_items[np.argsort(product[train_items], kind="stable")]
    same = product[order[:-1]] == product[order[1:]]
    left, right = order[:-1][same], order[1:][same]
    ids = cat.ids.to_numpy()
    wrong = PairSet(
        left.astype(np.int32),
        right.astype(np.int32),
        np.zeros(len(left), np.float32),
        np.full(len(left), -1),
        ids[left],
        ids[right],
    )
    model = create_model("gbdt", **SMALL["gbdt"]).fit(
        cat, prepared.train, prepared.valid, TrainConfig(epochs=2, aux_weights=(1.0, 4.0)), aux=AuxPairs.of(mined=wrong)
    )
    tried = {json.dumps(t["weights"]): t["value"] for t in model.selection_["pairs"]["tried"]}
    assert model.selection_["pairs"]["weights"] == {}
    assert tried['{"mined": 4.0}'] < tried["{}"]


def test_predict_uses_the_pairs_job_and_match_the_catalogue_job(synth_dir, two_jobs, tmp_path):
    from prodmatch.matching import MatchConfig, match_catalogue

    run, report = two_jobs
    model = load_model(run)
    catalogue_model = model.for_job("catalogue")
    assert model.job == "pairs" and catalogue_model.job == "catalogue"
    assert catalogue_model.calibrator.prior != model.calibrator.prior
    test = pd.read_parquet(synth_dir / "test.parquet")
    frame = api.predict(run, synth_dir, synth_dir / "test.parquet", labels=True)
    cat = model_catalogue(synth_dir, model)
    from prodmatch.pairs import load_pairs

    pairs = load_pairs(synth_dir / "test.parquet", cat, require_target=False)
    np.testing.assert_allclose(frame["target"], model.predict_proba(cat, pairs), atol=1e-12)
    assert not np.allclose(frame["target"], catalogue_model.predict_proba(cat, pairs))
    assert set(frame.columns) == {"variantid1", "variantid2", "target", "label", "evidence"} and len(frame) == len(test)
    summary = match_catalogue(run, synth_dir, tmp_path / "m", MatchConfig(k=5, calibrate="none", threshold=0.0))
    assert summary["scorer"]["job"] == "catalogue" and summary["scorer"]["prior"] == catalogue_model.calibrator.prior
    matched = pd.read_parquet(tmp_path / "m" / "matches.parquet").head(500)
    some = load_pairs_frame(cat, matched)
    np.testing.assert_allclose(matched["score"], catalogue_model.predict_proba(cat, some), atol=1e-9)
    assert "evidence" in matched and NONE not in set(matched["evidence"])
    assert (
        report.metrics["jobs"]["pairs"]["job"] == "pairs" and report.metrics["jobs"]["catalogue"]["job"] == "catalogue"
    )


def test_calibration_reuses_fitting_features_and_scores_exactly_as_the_scoring_path(synth_dir, two_jobs):
    from prodmatch.models.gbdt import FeatureMemo

    run, _ = two_jobs
    model = load_model(run)
    cat = model_catalogue(synth_dir, model)
    prepared = api.prepare_pairs(synth_dir, cat, TrainConfig(epochs=2, seed=1))
    valid = prepared.valid
    expected = model.score(cat, valid)
    # what fitting kept: the same features, the stacked score computed before the boosters existed (float32,
    # in other batches: it moves by about 1e-6)
    x = model._pair_features(cat, valid.left, valid.right)
    column = model.feature_names_.index(f"stack_{model.params.stack}")
    x[:, column] *= np.float32(1 + 2e-6)
    thresholds = model._split_thresholds(f"stack_{model.params.stack}")
    near = np.abs(x[:, column, None] - thresholds[None, :]).argmin(axis=1)
    x[:50, column] = thresholds[near[:50]]  # on a split: only the scoring path can say on which side
    model._memo = FeatureMemo.of(cat, valid.left, valid.right, x)
    assert model._memo.find(cat, valid.right, valid.left) is None  # another order: not kept
    assert model._memo.find(model_catalogue(synth_dir, model), valid.left, valid.right) is None  # another catalogue
    shuffled = valid.subset(np.random.default_rng(0).permutation(len(valid)))
    assert model._memo.find(cat, shuffled.left, shuffled.right) is not None
    again = model.score(cat, valid)
    np.testing.assert_array_equal(again.logits, expected.logits)
    np.testing.assert_array_equal(again.evidence, expected.evidence)
    np.testing.assert_array_equal(
        model.for_job("catalogue").predict_logits(cat, valid),
        load_model(run).for_job("catalogue").predict_logits(cat, valid),
    )
    model.release_store()
    np.testing.assert_array_equal(model.score(cat, valid).logits, expected.logits)


def load_pairs_frame(cat, frame):
    from prodmatch.pairs import make_pairs

    return make_pairs(cat, frame[["variantid1", "variantid2"]], source="test")


# -------------------------------------------------------------------------------------- evidence


def test_gate_caps_pairs_without_evidence_at_the_prior_below_the_threshold():
    prob = np.array([0.95, 0.95, 0.10, 0.95])
    mask = np.array([0, 1, 0, 0], dtype=np.uint32)
    out = gate(prob, mask, prior=0.48, threshold=0.3)
    assert out[1] == 0.95 and out[2] == 0.10  # evidence kept; a low score kept
    assert out[0] < 0.3 and out[3] < 0.3
    np.testing.assert_array_equal(gate(prob, mask, prior=0.05, threshold=0.5)[[0, 3]], [0.05, 0.05])
    assert gate(prob, mask, prior=float("nan"), threshold=None)[0] == 0.95  # nothing known to cap at
    words = describe(np.array([0, 1, 2, 3, 8], dtype=np.uint32), ["text", "picture", "pictures", "name"])
    assert list(words) == ["none", "text", "picture", "text+picture", "name"]


@pytest.fixture(scope="module")
def sparse_evidence(tmp_path_factory):
    """Items whose embeddings are missing, zero, or on one side only, among items a model can learn from."""
    from prodmatch.synth import SynthConfig, generate

    base = tmp_path_factory.mktemp("evidence")
    src = base / "src"
    generate(src, SynthConfig(items=1500, pairs=700, seed=3, names=False, attributes=False, extra_pictures=0.0))
    text = pd.read_parquet(src / "text_and_bert.parquet")
    pics = pd.read_parquet(src / "images_embed.parquet")
    dim_t, dim_p = len(text.iloc[0, 1]), len(pics.iloc[0, 1][0])
    rng = np.random.default_rng(0)
    extra = 10_000_000_000 + np.arange(8)
    t_rows = [list(x) for x in text.iloc[:, 1]] + [
        None,  # 0: no name vector
        [0.0] * dim_t,  # 1: a zero name vector
        None,  # 2: nothing at all (a picture file row missing too)
        list(rng.normal(size=dim_t)),  # 3: name vector only
        None,  # 4: picture only
        list(rng.normal(size=dim_t)),  # 5: both
        list(rng.normal(size=dim_t)),  # 6: both
        [0.0] * dim_t,  # 7: zero name vector, picture
    ]
    p_by_id = dict(zip(pics.variantid, (list(p[0]) for p in pics.iloc[:, 1]), strict=True))
    ids = list(text.variantid) + list(extra)
    extra_pics = [
        list(rng.normal(size=dim_p)),
        [0.0] * dim_p,
        None,
        None,
        list(rng.normal(size=dim_p)),
        list(rng.normal(size=dim_p)),
        list(rng.normal(size=dim_p)),
        list(rng.normal(size=dim_p)),
    ]
    p_rows = [p_by_id.get(v) for v in text.variantid] + extra_pics
    data = write_items(base / "data", ids, t_rows, p_rows)
    for f in ("train.parquet", "test.parquet"):
        (data / f).write_bytes((src / f).read_bytes())
    return data, extra


@pytest.mark.parametrize("model", ["gbdt", "siamese"])
def test_pairs_with_nothing_to_compare_are_never_a_match(sparse_evidence, tmp_path, model):
    """Zero vectors, every modality missing, one modality on one side only: evidence 'none', at most the prior,
    label 0, in predict --labels; a pair sharing a modality keeps its score."""
    data, extra = sparse_evidence
    run = tmp_path / "run"
    api.train(data, run, model=model, params=SMALL[model], config=TrainConfig(epochs=2, hard_negatives=0))
    v1 = [extra[0], extra[1], extra[2], extra[3], extra[0], extra[5], extra[4]]
    v2 = [extra[1], extra[7], extra[5], extra[4], extra[3], extra[6], extra[6]]
    write_pairs(tmp_path / "p.parquet", v1, v2)
    frame = api.predict(run, data, tmp_path / "p.parquet", labels=True)
    fitted = load_model(run)
    none = frame["evidence"] == NONE
    # 0-1: picture vs zero vectors; 2: nothing vs both; 3: name only vs picture only; 4: picture vs name only
    assert none.tolist() == [True, True, True, True, True, False, False]
    assert (frame.loc[none, "label"] == 0).all()
    assert (frame.loc[none, "target"] <= fitted.calibrator.prior + 1e-12).all()
    assert (frame.loc[none, "target"] < fitted.threshold).all()
    assert frame["evidence"][5] == "name_bert_64+main_pic_embeddings_resnet_v1"
    assert frame["evidence"][6] == "main_pic_embeddings_resnet_v1"


def test_device_cuda_without_a_gpu_is_a_clear_error(synth_dir, tmp_path):
    import torch

    from prodmatch.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no GPU"):
        api.train(
            synth_dir, tmp_path / "r", model="siamese", params=SMALL["siamese"], config=TrainConfig(device="cuda")
        )
    assert not (tmp_path / "r").exists()


def test_the_bootstrap_of_a_difference_counts_pairs_as_resampling_does():
    """The paired bootstrap applies each resample as counts on one sort per model: the same average precision
    as sklearn's on the resampled pairs, ties included."""
    from sklearn.metrics import average_precision_score

    from prodmatch.auxiliary import _counted_ap, _ranking

    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.3
    score = np.round(rng.normal(size=len(y)) + y, 1)  # many ties
    order, last = _ranking(y, score)
    for _ in range(5):
        i = rng.integers(0, len(y), len(y))
        count = np.bincount(i, minlength=len(y)).astype(np.float64)
        assert _counted_ap(order, last, y, count) == pytest.approx(average_precision_score(y[i], score[i]), abs=1e-12)
