"""Pair features on hand-made items, checked against values worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import list_column, write_items
from prodmatch import DataError, read_catalogue
from prodmatch.config import DataConfig
from prodmatch.features import PairFeaturizer

ALL = DataConfig(load_names=True, load_attributes=True, load_extra_pictures=True)


@pytest.fixture
def hand_made(tmp_path):
    """Four items: 1 and 2 agree on most things, 3 differs, 4 has no picture, attributes or name."""
    ids = [1, 2, 3, 4]
    text = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]]
    names = ["Apple iPhone 13 128GB", "apple iphone 13 128gb black", "Samsung Galaxy S21", None]
    pq.write_table(
        pa.table({"variantid": ids, "name": names, "name_bert_3": list_column(text)}),
        tmp_path / "text_and_bert.parquet",
    )
    main = pa.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]], type=pa.list_(pa.list_(pa.float32())))
    extra = pa.array([[[1.0, 1.0]], [], [[0.0, 2.0], [2.0, 0.0]]], type=pa.list_(pa.list_(pa.float32())))
    pq.write_table(
        pa.table({"variantid": ids[:3], "main_pic_embeddings_resnet_v1": main, "pic_embeddings_resnet_v1": extra}),
        tmp_path / "images_embed.parquet",
    )
    cats = [
        {"1": "A", "2": "A/1", "3": "A/1/1", "4": "A/1/1/1"},
        {"1": "A", "2": "A/1", "3": "A/1/1", "4": "A/1/1/2"},
        {"1": "B", "2": "B/1", "3": "B/1/1", "4": "B/1/1/1"},
        {"1": "A", "2": "A/1", "3": "A/1/2", "4": "A/1/2/1"},
    ]
    attrs = [
        {"Бренд": ["Apple"], "Цвет товара": ["черный"], "Память": ["128"], "Цена": ["1,000.00 руб"]},
        {"Бренд": ["apple "], "Цвет товара": ["белый", "чёрный"], "Цена": ["800"]},
        {"Бренд": ["Samsung"], "Память": ["128"]},
        None,
    ]
    pq.write_table(
        pa.table(
            {
                "variantid": ids,
                "categories": [json.dumps(c) for c in cats],
                "characteristic_attributes_mapping": [None if a is None else json.dumps(a) for a in attrs],
            }
        ),
        tmp_path / "attributes.parquet",
    )
    cat = read_catalogue(tmp_path, ALL)
    feats = PairFeaturizer(list(cat.modalities)).fit(cat, np.arange(4))
    left, right = np.array([0, 0, 1, 0]), np.array([1, 2, 0, 3])  # (1,2) (1,3) (2,1) (1,4)
    x, names = feats.transform(cat, left, right)
    return pd.DataFrame(x, columns=names), cat


def test_embedding_similarities(hand_made):
    f, _ = hand_made
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(f["name_bert_3.cos"], [s, 0.0, s, 1.0], atol=1e-6)
    np.testing.assert_allclose(
        f["name_bert_3.l2"], [np.sqrt((1 - s) ** 2 + s**2), np.sqrt(2), np.sqrt((1 - s) ** 2 + s**2), 0.0], atol=1e-6
    )
    np.testing.assert_allclose(f["name_bert_3.maxgap"], [s, 1.0, s, 0.0], atol=1e-6)
    pic = "main_pic_embeddings_resnet_v1.cos"
    np.testing.assert_allclose(f[pic][:3], [0.0, 1.0, 0.0], atol=1e-6)
    assert np.isnan(f[pic][3])  # item 4 has no picture: missing, not zero


def test_extra_picture_statistics(hand_made):
    f, _ = hand_made
    s = 1 / np.sqrt(2)
    # item 1: main (1,0), extra (1,1)/sqrt2; item 2: main (0,1); item 3: main (1,0), extras (0,1), (1,0)
    # (1,2): cosines 0 and s -> min 0, mean s/2, max s
    np.testing.assert_allclose([f["pics_min"][0], f["pics_mean"][0], f["pics_max"][0]], [0.0, s / 2, s], atol=1e-6)
    # (1,3): main-main 1, main-extras 0 and 1; extra-main s, extra-extras s and s -> 6 cosines
    want = [1.0, 0.0, 1.0, s, s, s]
    np.testing.assert_allclose(
        [f["pics_min"][1], f["pics_mean"][1], f["pics_max"][1]], [0.0, np.mean(want), 1.0], atol=1e-6
    )
    assert np.isnan(f["pics_max"][3])


def test_category_equality(hand_made):
    f, _ = hand_made
    assert f.loc[0, ["category1_equal", "category2_equal", "category3_equal", "category4_equal"]].tolist() == [
        1,
        1,
        1,
        0,
    ]
    assert f.loc[1, "category1_equal"] == 0
    assert f.loc[3, ["category2_equal", "category3_equal"]].tolist() == [1, 0]


def test_attribute_overlap(hand_made):
    f, _ = hand_made
    # 1: {Бренд=apple, Цвет=черный, Память=128, Цена}; 2: {Бренд=apple, Цвет=белый, Цвет=черный, Цена}
    assert f.loc[0, "attr_key_jaccard"] == pytest.approx(3 / 4)
    assert f.loc[0, "attr_kv_jaccard"] == pytest.approx(2 / 6)
    assert f.loc[0, "brand_equal"] == 1 and f.loc[0, "colour_equal"] == 1  # colours share "черный"
    assert f.loc[0, "attr_conflicts"] == 1  # the prices differ
    # numeric attributes, whatever their names: 1 and 2 share only a price, 800 / 1,000.00
    assert f.loc[0, ["numeric_ratio_min", "numeric_ratio_mean", "numeric_shared"]].tolist() == pytest.approx(
        [0.8, 0.8, 1]
    )
    assert f.loc[1, ["numeric_ratio_min", "numeric_shared"]].tolist() == pytest.approx([1.0, 1])  # Память 128
    assert np.isnan(f.loc[3, "numeric_ratio_min"]) and f.loc[3, "numeric_shared"] == 0  # item 4 has none
    # 1 and 3: both fill Бренд and Память; the brands differ
    assert f.loc[1, "brand_equal"] == 0 and np.isnan(f.loc[1, "colour_equal"])
    assert f.loc[1, "attr_conflicts"] == 1
    assert np.isnan(f.loc[3, "attr_kv_jaccard"])  # item 4 has no attributes


def test_name_similarities(hand_made):
    f, _ = hand_made
    # tokens: {apple, iphone, 13, 128gb} and {apple, iphone, 13, 128gb, black}
    assert f.loc[0, "name_token_jaccard"] == pytest.approx(4 / 5)
    assert f.loc[0, "name_code_jaccard"] == pytest.approx(1.0)  # {13, 128gb} on both sides
    assert f.loc[1, "name_token_jaccard"] == 0
    assert f.loc[0, "name_tfidf_cos"] > 0.8 > 0.2 > f.loc[1, "name_tfidf_cos"]
    assert f.loc[0, "name_word_tfidf_cos"] > 0.8 and f.loc[1, "name_word_tfidf_cos"] == 0  # no shared word
    # name 1's words are all in name 2 ("... black" adds one): containment 1 one way, less the other
    assert f.loc[0, "name_word_containment_max"] == pytest.approx(1.0)
    assert f.loc[0, "name_word_containment_min"] < 0.95
    assert f.loc[0, "name_shared_code_idf"] > 0 and f.loc[1, "name_shared_code_idf"] == 0  # "128gb" is shared
    # numbers {13, 128gb} against {13, 128gb}: no conflict; against {s21}: one on the side with fewer
    assert f.loc[0, "name_number_conflicts"] == 0 and f.loc[1, "name_number_conflicts"] == 1
    assert np.isnan(f.loc[3, "name_word_tfidf_cos"])  # item 4 has no name
    assert np.isnan(f.loc[3, "name_token_jaccard"])  # item 4 has no name


def test_features_are_symmetric(hand_made):
    f, _ = hand_made
    np.testing.assert_array_equal(f.iloc[0].to_numpy(), f.iloc[2].to_numpy())  # (1,2) and (2,1)


def test_invalid_attribute_json_names_the_item(tmp_path, hand_made):
    _, cat = hand_made
    cat.attributes[1] = "{not json"
    feats = PairFeaturizer(list(cat.modalities)).fit(cat, np.arange(4))
    with pytest.raises(DataError, match="item 2 is not a JSON object"):
        feats.transform(cat, np.array([0]), np.array([1]))


def test_attributes_that_no_item_fills(tmp_path):
    """A benchmark whose records have no short attributes at all: the attribute features are NaN, no crash."""
    data = write_items(tmp_path / "d", [1, 2, 3], [[1.0] * 64, [0.5] * 64, [0.2] + [1.0] * 63])
    pq.write_table(
        pa.table({"variantid": [1, 2, 3], "categories": ["{}"] * 3, "characteristic_attributes_mapping": [None] * 3}),
        data / "attributes.parquet",
    )
    cat = read_catalogue(data, DataConfig(load_attributes=True))
    feats = PairFeaturizer(["name_bert_64"], ["attributes", "numbers"]).fit(cat, np.arange(3))
    x, names = feats.transform(cat, np.array([0, 1]), np.array([1, 2]))
    f = pd.DataFrame(x, columns=names)
    assert f["attr_key_jaccard"].isna().all() and f["numeric_ratio_min"].isna().all()
    assert (f["numeric_shared"] == 0).all()


def test_discriminant_cosine_keeps_the_directions_products_differ_in():
    """Products differ in 6 of 32 directions; listings add noise in all 32. The discriminant keeps the 6, and
    its cosine tells matches from other products far better than the plain cosine."""
    from sklearn.metrics import roc_auc_score

    from prodmatch.catalogue import Catalogue, Modality, l2_normalize

    rng = np.random.default_rng(0)
    products, per, dim, signal = 3000, 2, 32, 6
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:, :signal]
    latent = rng.standard_normal((products, signal)) @ basis.T
    x = np.repeat(latent, per, axis=0) + 0.5 * rng.standard_normal((products * per, dim))
    x = l2_normalize(x.astype(np.float32))
    n = len(x)
    cat = Catalogue(ids=pd.Index(np.arange(n)), modalities={"v": Modality("v", x, np.ones(n, dtype=bool))})
    left, right = np.arange(0, n, 2), np.arange(1, n, 2)  # the two listings of each product
    featurizer = PairFeaturizer(["v"], ["discriminant"]).fit(cat, np.arange(n), (left[:2000], right[:2000]))
    assert featurizer.discriminant["v"].shape == (dim, signal)
    # held-out products: each listing against its own product's other listing, and against another product
    a = np.concatenate([left[2000:], left[2000:]])
    b = np.concatenate([right[2000:], np.roll(right[2000:], 1)])
    y = np.r_[np.ones(len(left) - 2000), np.zeros(len(left) - 2000)]
    features, names = featurizer.transform(cat, a, b)
    auc = {name: roc_auc_score(y, features[:, names.index(name)]) for name in ("v.cos", "v.dcos")}
    assert auc["v.dcos"] > auc["v.cos"] + 0.02, auc
    # without matches, or with too few, there is no discriminant feature
    assert "v.dcos" not in PairFeaturizer(["v"], ["discriminant"]).fit(cat, np.arange(n)).feature_names(cat)
    few = PairFeaturizer(["v"], ["discriminant"]).fit(cat, np.arange(n), (left[:10], right[:10]))
    assert "v.dcos" not in few.feature_names(cat)
