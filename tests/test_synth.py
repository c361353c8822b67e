"""The synthetic generator: layout, ground truth, realism knobs, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodmatch import pair_hygiene, read_catalogue
from prodmatch.evaluation import pr_auc
from prodmatch.pairs import load_pairs
from prodmatch.synth import SynthConfig, generate


def test_layout_and_ground_truth(synth_dir):
    for f in (
        "text_and_bert.parquet",
        "images_embed.parquet",
        "attributes.parquet",
        "train.parquet",
        "test.parquet",
        "truth.parquet",
        "oracle.parquet",
        "synth.json",
    ):
        assert (synth_dir / f).exists(), f
    text = pq.read_table(synth_dir / "text_and_bert.parquet")
    assert {"variantid", "name", "description", "name_bert_64"} <= set(text.column_names)
    assert text.schema.field("name_bert_64").type == pa.list_(pa.float32())  # float32, like the real files
    pics = pq.read_table(synth_dir / "images_embed.parquet")
    main = pics.schema.field("main_pic_embeddings_resnet_v1").type
    assert main == pa.list_(pa.list_(pa.float32()))  # a list holding one vector
    attrs = pq.read_table(synth_dir / "attributes.parquet").to_pandas()
    cats = json.loads(attrs["categories"].iloc[0])
    assert set(cats) == {"1", "2", "3", "4"}
    assert isinstance(json.loads(attrs["characteristic_attributes_mapping"].iloc[0]), dict)
    truth = pd.read_parquet(synth_dir / "truth.parquet")
    assert truth["variantid"].is_unique and len(truth) == 3000


def test_labels_follow_the_latent_products(synth_dir):
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")
    pairs = pd.read_parquet(synth_dir / "train.parquet")
    same = (
        truth.loc[pairs["variantid1"], "product_id"].to_numpy()
        == truth.loc[pairs["variantid2"], "product_id"].to_numpy()
    )
    agree = (same == pairs["target"].astype(bool)).mean()
    assert 0.95 < agree < 1.0  # label noise and conflicting duplicates, as in real data


def test_train_and_test_products_are_disjoint(synth_dir):
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")
    ids = {
        f: pd.unique(pd.read_parquet(synth_dir / f)[["variantid1", "variantid2"]].to_numpy().ravel())
        for f in ("train.parquet", "test.parquet")
    }
    assert not set(truth.loc[ids["train.parquet"], "family_id"]) & set(truth.loc[ids["test.parquet"], "family_id"])


def test_realism_knobs(synth_dir):
    cat = read_catalogue(synth_dir)
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    h = pair_hygiene(pairs)
    assert h["reversed_duplicates"] > 0 and h["conflicting_labels"] > 0
    assert (~cat.modalities["main_pic_embeddings_resnet_v1"].present).sum() > 0
    assert 0.4 < pairs.positive_rate() < 0.56


def test_same_seed_same_files(tmp_path):
    cfg = SynthConfig(items=500, pairs=150, seed=11)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    for f in ("train.parquet", "text_and_bert.parquet"):
        assert pq.read_table(tmp_path / "a" / f).equals(pq.read_table(tmp_path / "b" / f))


def test_oracle_scores_every_pair_and_beats_plain_similarity(synth_dir):
    oracle = pd.read_parquet(synth_dir / "oracle.parquet")
    for split, fname in (("train", "train.parquet"), ("test", "test.parquet")):
        part = oracle[oracle["split"] == split].reset_index(drop=True)
        pairs = pd.read_parquet(synth_dir / fname)
        assert part[["variantid1", "variantid2"]].equals(pairs[["variantid1", "variantid2"]])  # row for row
    test = oracle[oracle["split"] == "test"]
    cat = read_catalogue(synth_dir)
    text = cat.modalities["name_bert_64"].matrix
    cosine = (text[cat.rows(test["variantid1"])] * text[cat.rows(test["variantid2"])]).sum(1)
    assert pr_auc(test["target"], test["score"]) > pr_auc(test["target"], cosine) + 0.05
    summary = json.loads((synth_dir / "synth.json").read_text())
    assert summary["oracle_pr_auc"]["test"] == pytest.approx(pr_auc(test["target"], test["score"]))


def test_oracle_is_calibrated_against_the_true_products(synth_dir):
    """The oracle's log-odds are posterior probabilities of one product (before label noise)."""
    oracle = pd.read_parquet(synth_dir / "oracle.parquet")
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")["product_id"]
    same = truth.loc[oracle["variantid1"]].to_numpy() == truth.loc[oracle["variantid2"]].to_numpy()
    p = 1 / (1 + np.exp(-oracle["score"].clip(-50, 50).to_numpy()))
    assert pr_auc(same, oracle["score"]) > 0.99
    confident = (p > 0.99) | (p < 0.01)
    assert (same[confident] == (p[confident] > 0.5)).mean() > 0.99


def _drawn(tmp_path, name, **settings):
    out = tmp_path / name
    summary = generate(out, SynthConfig(items=6000, pairs=2400, seed=2, **settings))
    truth = pd.read_parquet(out / "truth.parquet").set_index("variantid")
    pairs = pd.read_parquet(out / "train.parquet")
    t1, t2 = truth.loc[pairs["variantid1"]], truth.loc[pairs["variantid2"]]
    return out, summary, pairs, t1.reset_index(), t2.reset_index()


@pytest.mark.parametrize(
    ("negatives", "kind"),
    [("siblings", "sibling"), ("category", "same category"), ("random", "other category")],
    ids=["siblings", "category", "random"],
)
def test_negatives_are_drawn_as_asked(tmp_path, negatives, kind):
    _, summary, *_ = _drawn(tmp_path, negatives, negatives=negatives)
    shares = summary["negative_kinds"]
    assert shares[kind] > 0.9 * (1 - shares["same product"])  # nearly every negative is of that kind


def test_neighbour_negatives_are_nearer_than_random_ones(tmp_path):
    near, _, pairs, t1, t2 = _drawn(tmp_path, "near", negatives="neighbours")
    far, _, fpairs, f1, f2 = _drawn(tmp_path, "far", negatives="random")

    def negative_cosine(d, p, a, b):
        cat = read_catalogue(d)
        m = cat.modalities["name_bert_64"].matrix
        neg = (p["target"] == 0).to_numpy() & (a["product_id"] != b["product_id"]).to_numpy()
        return (m[cat.rows(p["variantid1"][neg])] * m[cat.rows(p["variantid2"][neg])]).sum(1).mean()

    assert negative_cosine(near, pairs, t1, t2) > negative_cosine(far, fpairs, f1, f2) + 0.2


def test_item_reuse_makes_one_giant_component_and_side_data_can_be_left_out(tmp_path):
    out, summary, pairs, *_ = _drawn(tmp_path, "giant", pairs_per_item=3.0, names=False, attributes=False)
    assert summary["train_largest_component_share"] > 0.8
    items = pd.unique(pairs[["variantid1", "variantid2"]].to_numpy().ravel())
    assert len(pairs) * 2 / len(items) > 2.5  # about 3 pairs per labelled item
    assert "name" not in pq.read_schema(out / "text_and_bert.parquet").names
    assert pq.read_schema(out / "attributes.parquet").names == ["variantid", "categories"]
    assert 0.4 < summary["train_positive_rate"] < 0.56


def test_scenarios_are_valid_configs():
    from prodmatch.synth import SCENARIOS

    assert len(SCENARIOS) >= 8 and "giant-component" in SCENARIOS
    for name, settings in SCENARIOS.items():
        SynthConfig(**settings)  # raises on a bad knob
        assert set(settings) <= set(SynthConfig.__dataclass_fields__), name


def test_bad_knobs_are_clear():
    with pytest.raises(Exception, match="--negatives must be one of"):
        SynthConfig(negatives="nearest")
    with pytest.raises(Exception, match="--positive-rate must be in"):
        SynthConfig(positive_rate=1.5)
