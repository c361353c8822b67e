"""The model protocol, shared by every registered model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SMALL
from prodmatch import ConfigError, DataError, ModelError, TrainConfig, load_pairs, read_catalogue, split_pairs
from prodmatch.models import MODELS, GBDTModel, TorchPairModel, create_model, load_model
from prodmatch.models.text_model import FineTunedTextModel

FAST = TrainConfig(epochs=1, batch_size=256, seed=0)
NETWORKS = sorted(name for name, cls in MODELS.items() if issubclass(cls, TorchPairModel))
# the models fitted on the synthetic set here; the text models fine-tune a transformer, tested on a tiny
# hand-made set of its own (tests/test_text.py: round trip, symmetry, resume)
EMBEDDING_MODELS = sorted(name for name, cls in MODELS.items() if not issubclass(cls, FineTunedTextModel))


@pytest.fixture(scope="module")
def fitted(synth_dir):
    cat = read_catalogue(synth_dir, GBDTModel.data_config_for(None))  # with the side data gbdt reads
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    train, valid, _ = split_pairs(pairs, seed=0)
    return (
        cat,
        valid,
        {name: create_model(name, **SMALL[name]).fit(cat, train, valid, FAST) for name in EMBEDDING_MODELS},
    )


@pytest.mark.parametrize("name", EMBEDDING_MODELS)
def test_save_load_roundtrip(fitted, tmp_path, name):
    cat, valid, models = fitted
    models[name].save(tmp_path)
    loaded = load_model(tmp_path)
    assert type(loaded) is type(models[name])
    np.testing.assert_array_equal(loaded.predict_proba(cat, valid), models[name].predict_proba(cat, valid))


@pytest.mark.parametrize("name", NETWORKS)
def test_score_arrays_matches_catalogue_scoring(fitted, synth_dir, name):
    import pyarrow.parquet as pq

    cat, valid, models = fitted
    model = models[name]
    sub = valid.subset(np.arange(50))
    # Raw, unnormalised vectors straight from the files, as a serving client would send them.
    text = pq.read_table(synth_dir / "text_and_bert.parquet").to_pandas().set_index("variantid")
    raw = np.stack(text.loc[sub.ids1, "name_bert_64"].to_numpy()) * 3.0
    raw2 = np.stack(text.loc[sub.ids2, "name_bert_64"].to_numpy()) * 0.5
    pics = cat.modalities["main_pic_embeddings_resnet_v1"]
    left = {"name_bert_64": raw, "main_pic_embeddings_resnet_v1": pics.matrix[sub.left]}
    right = {"name_bert_64": raw2, "main_pic_embeddings_resnet_v1": pics.matrix[sub.right]}
    has_both = pics.present[sub.left] & pics.present[sub.right]
    got = model.score_arrays(left, right)
    want = model.predict_proba(cat, sub)
    np.testing.assert_allclose(got[has_both], want[has_both], rtol=1e-4, atol=1e-5)


def test_score_arrays_rejects_bad_input(fitted):
    _, _, models = fitted
    model = models["concat-mlp"]
    with pytest.raises(DataError, match=r"expected shape \(n, 64\), got \(2, 3\)"):
        model.score_arrays({"name_bert_64": np.ones((2, 3))}, {"name_bert_64": np.ones((2, 3))})
    bad = np.ones((2, 64))
    bad[1, 0] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        model.score_arrays({"name_bert_64": bad}, {"name_bert_64": np.ones((2, 64))})
    with pytest.raises(DataError, match="unknown modalities"):
        model.score_arrays({"other": np.ones((2, 4))}, {"name_bert_64": np.ones((2, 64))})


def test_unfitted_model_raises():
    with pytest.raises(ModelError, match="not fitted"):
        create_model("concat-mlp").predict_proba(None, None)


def test_unknown_model_and_param():
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['width'\]"):
        create_model("concat-mlp", width=3)


def test_gbdt_stack_must_be_a_network():
    with pytest.raises(ConfigError, match="stack='gbdt' is not a network"):
        create_model("gbdt", stack="gbdt")
    assert create_model("gbdt", stack="").params.stack == ""


def test_load_incomplete_run_dir(tmp_path):
    with pytest.raises(ModelError, match="not a complete run directory"):
        load_model(tmp_path)


def test_model_rejects_data_of_other_dimensions(fitted, tmp_path):
    from conftest import write_items

    _, valid, models = fitted
    d = write_items(tmp_path / "d", [1, 2], [[1.0] * 32, [0.5] * 32], [[1.0] * 128, [1.0] * 128])
    with pytest.raises(DataError, match=r"is 32-d in .* but the model expects 64-d"):
        models["concat-mlp"].predict_proba(read_catalogue(d), valid)


@pytest.mark.parametrize("name", EMBEDDING_MODELS)
def test_scores_do_not_depend_on_pair_order(fitted, name):
    """siamese and gbdt are symmetric by construction; order-sensitive networks average both orders."""
    cat, valid, models = fitted
    model = models[name]
    np.testing.assert_allclose(
        model.predict_logits(cat, valid.swapped()), model.predict_logits(cat, valid), rtol=0, atol=1e-5
    )


def test_siamese_is_exactly_symmetric_and_splits_into_tower_and_head(fitted):
    import torch

    cat, valid, models = fitted
    net = models["siamese"].network_
    features = torch.from_numpy(cat.item_features([n for n, _ in models["siamese"].modalities_]))
    a = features[torch.from_numpy(valid.left.astype(np.int64))]
    b = features[torch.from_numpy(valid.right.astype(np.int64))]
    with torch.inference_mode():
        ab, ba = net(a, b), net(b, a)
        assert torch.equal(ab, ba)  # bit for bit, not just close
        u, v = net.tower(a), net.tower(b)  # item vectors, computable once per item
        assert torch.equal(net.head(u, v, a, b), ab)


def test_gbdt_reports_feature_importances(fitted):
    _, _, models = fitted
    importance = models["gbdt"].feature_importance()
    assert set(importance) == set(models["gbdt"].feature_names_)
    assert abs(sum(importance.values()) - 1.0) < 1e-6
    assert "stack_siamese" in importance and "attr_kv_jaccard" in importance


def _assert_monotone(booster, x: np.ndarray, names: list[str]) -> None:
    """Raising each constrained feature of the pairs ``x`` alone, over every feature's range, never moves the
    booster's raw score against the feature's declared direction."""
    from prodmatch.features import monotone_direction

    sweep = np.linspace(-2.0, 8.0, 41, dtype=np.float32)  # over every feature's range (counts up to 8)
    for j, name in enumerate(names):
        direction = monotone_direction(name)
        if direction == 0:
            continue
        grid = np.repeat(x, len(sweep), axis=0)
        grid[:, j] = np.tile(sweep, len(x))
        raw = booster.predict(grid, raw_score=True).reshape(len(x), len(sweep))
        assert (np.diff(raw, axis=1) * direction).min() >= -1e-9, f"{name} moves the score against its direction"


def test_gbdt_moves_with_every_similarity_only_towards_a_match(fitted, synth_dir):
    """-p monotone=both: raising a similarity (lowering a distance or a conflict count), all else equal, never
    lowers a pair's score; a feature without a declared direction is free."""
    from prodmatch.features import monotone_direction

    cat = fitted[0]
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    train, valid, _ = split_pairs(pairs, seed=0)  # the fixture's split, whose training half it does not keep
    model = create_model("gbdt", **SMALL["gbdt"], monotone="both").fit(cat, train, valid, FAST)
    names = model.feature_names_
    assert monotone_direction("name_bert_64.cos") == 1 and monotone_direction("name_bert_64.l2") == -1
    assert monotone_direction("stack_siamese") == 1 and monotone_direction("name_len_ratio") == 0
    assert sum(monotone_direction(n) != 0 for n in names) >= 10
    _assert_monotone(model.booster_, model._pair_features(cat, valid.left[:40], valid.right[:40]), names)
    with pytest.raises(ConfigError, match="monotone='pairs'; use one of"):
        create_model("gbdt", monotone="pairs")


def test_gbdt_holds_the_catalogue_job_to_monotone_constraints_by_default(gbdt_small_run, synth_dir):
    """The catalogue job's booster is constrained (a catalogue's far candidates must not score as matches for
    agreeing less); the pairs job's is not (constraints cost the real benchmarks' labelled pairs F1)."""
    model = load_model(gbdt_small_run)
    assert model.params.monotone == "catalogue"
    assert {job: r["monotone"] for job, r in model.selection_.items()} == {"pairs": False, "catalogue": True}
    assert model.catalogue_booster_ is not None
    cat = read_catalogue(synth_dir, model.data_config())
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    x = model._pair_features(cat, pairs.left[:40], pairs.right[:40])
    _assert_monotone(model.catalogue_booster_, x, model.feature_names_)


def test_gbdt_has_no_embeddings_only_scoring(fitted):
    _, _, models = fitted
    with pytest.raises(ModelError, match="gbdt cannot score raw embeddings alone"):
        models["gbdt"].score_arrays({"name_bert_64": np.ones((1, 64))}, {"name_bert_64": np.ones((1, 64))})


def test_gbdt_cannot_score_without_the_side_data_it_learned_from(fitted, synth_dir):
    _, valid, models = fitted
    bare = read_catalogue(synth_dir)  # no names, attributes or extra photos
    with pytest.raises(ModelError, match="cannot provide"):
        models["gbdt"].predict_proba(bare, valid)


@pytest.mark.parametrize("monitor", ["pr_auc", "loss"])
def test_gbdt_stops_on_the_monitored_metric(synth_dir, monitor):
    cat = read_catalogue(synth_dir, GBDTModel.data_config_for(None))
    train, valid, _ = split_pairs(load_pairs(synth_dir / "train.parquet", cat, require_target=True), seed=0)
    params = {"n_estimators": 300, "early_stopping": 20, "stack": "", "stack_text": ""}
    model = create_model("gbdt", **params).fit(cat, train, valid, TrainConfig(seed=0, monitor=monitor))
    history = model.history_
    if monitor == "pr_auc":  # by average precision: tied tree scores inflate the interpolated PR-AUC
        best = int(np.argmax([h["valid_average_precision"] for h in history])) + 1
    else:
        best = int(np.argmin([h["valid_loss"] for h in history])) + 1
    assert model.best_iteration_ == best and model.fit_summary()["monitor"] == monitor


def test_the_word_pair_model_learns_which_shared_words_decide(tmp_path):
    """Pairs sharing a model code match, pairs sharing only the word 'camera' do not: the model separates
    them completely, and scores a pair the same alone or in a batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prodmatch.models.word_pairs import WordPairScorer

    rng = np.random.default_rng(0)
    n = 400
    codes = [f"x{c}" for c in rng.integers(1000, 9999, n // 2)]
    names = [f"camera {codes[i // 2]} {'black' if i % 2 else 'kit'}" for i in range(n)]
    d = tmp_path / "d"
    d.mkdir()
    vectors = rng.normal(size=(n, 4)).astype(np.float32).tolist()
    pq.write_table(
        pa.table({"variantid": np.arange(n), "name": names, "name_bert_4": vectors}), d / "text_and_bert.parquet"
    )
    from prodmatch import DataConfig

    cat = read_catalogue(d, DataConfig(load_names=True))
    left = np.concatenate([np.arange(0, n, 2), np.arange(0, n - 2, 2)])
    right = np.concatenate([np.arange(1, n, 2), np.arange(3, n, 2)])  # same code / a neighbour's code
    target = np.concatenate([np.ones(n // 2), np.zeros(n // 2 - 1)])
    scorer = WordPairScorer().fit(cat, left, right, target)
    logits = scorer.logits(cat, left, right)
    assert logits[target == 1].min() > logits[target == 0].max()
    # one pair at a time gives the same numbers as all at once
    single = np.concatenate([scorer.logits(cat, left[i : i + 1], right[i : i + 1]) for i in range(20)])
    np.testing.assert_array_equal(single, logits[:20])


def test_numpy_siamese_computes_what_the_torch_networks_do(fitted):
    """gbdt's stacked networks in numpy: towers (float64, rounded) and heads (float32 and float64) against torch,
    and a float64 head gives the same float32 logit for a pair whatever batch it is in."""
    import torch

    from prodmatch.models.siamese import NumpySiamese

    _, _, models = fitted
    nets = [models["siamese"].network_]
    numpy_nets = NumpySiamese(nets)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, nets[0].dims[0] + nets[0].dims[1] + 2)).astype(np.float32)
    features[:, -2:] = rng.random((300, 2)) > 0.2
    vectors = numpy_nets.towers(features)
    with torch.inference_mode():
        expected = nets[0].tower(torch.from_numpy(features)).numpy()
    np.testing.assert_allclose(vectors[0], expected, rtol=1e-4, atol=1e-5)
    a, b = np.arange(0, 150), np.arange(150, 300)
    d0 = nets[0].dims[0]
    cosines = np.stack(
        [(features[a, :d0] * features[b, :d0]).sum(1), (features[a, d0:-2] * features[b, d0:-2]).sum(1)], axis=1
    )
    args = (cosines, features[a, -2:], features[b, -2:])
    with torch.inference_mode():
        want = nets[0].head(*(torch.from_numpy(x) for x in (vectors[0, a], vectors[0, b], features[a], features[b])))
    for dtype in (np.float32, np.float64):
        got = numpy_nets.heads(vectors[:, a], vectors[:, b], *args, dtype=dtype)[0]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    whole = numpy_nets.heads(vectors[:, a], vectors[:, b], *args, dtype=np.float64)[0].astype(np.float32)
    one = [
        numpy_nets.heads(
            vectors[:, a[i : i + 1]], vectors[:, b[i : i + 1]], *(x[i : i + 1] for x in args), dtype=np.float64
        )
        for i in range(150)
    ]
    np.testing.assert_array_equal(np.concatenate([o[0] for o in one]).astype(np.float32), whole)


def test_stacked_networks_epochs_follow_the_pairs_budget():
    """A fold network trains --epochs unless its pairs seen would pass the budget (large data) or a cap is set."""
    from prodmatch.models.gbdt import GBDTParams
    from prodmatch.models.stacking import stack_epochs

    default = GBDTParams()
    assert stack_epochs(10, default.stack_epochs, default.stack_budget, 20_000) == 10  # the demo's folds
    assert stack_epochs(10, default.stack_epochs, default.stack_budget, 462_851) == 5  # E-CUP size: as before
    assert stack_epochs(10, 0, 2_500_000, 3_000_000) == 1  # at least one epoch
    assert stack_epochs(10, 2, 2_500_000, 1_000) == 2  # the cap still holds where it is set
    assert stack_epochs(3, 0, 2_500_000, 1_000) == 3  # never more than --epochs
    assert stack_epochs(10, 0, 0, 10**9) == 10  # no budget
    assert create_model("gbdt", stack_budget=0).params.stack_budget == 0
