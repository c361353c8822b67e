"""The model protocol, shared by every registered model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SMALL_NET
from prodmatch import ConfigError, DataError, ModelError, TrainConfig, load_pairs, read_catalogue, split_pairs
from prodmatch.models import MODELS, create_model, load_model

FAST = TrainConfig(epochs=1, batch_size=256, seed=0)


@pytest.fixture(scope="module")
def fitted(synth_dir):
    cat = read_catalogue(synth_dir)
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    train, valid, _ = split_pairs(pairs, seed=0)
    return cat, valid, {name: create_model(name, **SMALL_NET).fit(cat, train, valid, FAST) for name in MODELS}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_roundtrip(fitted, tmp_path, name):
    cat, valid, models = fitted
    models[name].save(tmp_path)
    loaded = load_model(tmp_path)
    assert type(loaded) is type(models[name])
    np.testing.assert_array_equal(loaded.predict_proba(cat, valid), models[name].predict_proba(cat, valid))


@pytest.mark.parametrize("name", sorted(MODELS))
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


def test_load_incomplete_run_dir(tmp_path):
    with pytest.raises(ModelError, match="not a complete run directory"):
        load_model(tmp_path)


def test_model_rejects_data_of_other_dimensions(fitted, tmp_path):
    from conftest import write_items

    _, valid, models = fitted
    d = write_items(tmp_path / "d", [1, 2], [[1.0] * 32, [0.5] * 32], [[1.0] * 128, [1.0] * 128])
    with pytest.raises(DataError, match=r"is 32-d in .* but the model expects 64-d"):
        models["concat-mlp"].predict_proba(read_catalogue(d), valid)
