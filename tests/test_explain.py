"""Explanations (``prodmatch explain``, ``pm.explain``) and the HTML report (``prodmatch report``)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import train_small
from prodmatch.cli import app
from prodmatch.errors import ModelError
from prodmatch.explain import FEATURES_FILE, JSON_FILE, PLOTS_DIR, explain, explain_pairs
from prodmatch.pairs import load_pairs
from prodmatch.runs import model_and_catalogue

runner = CliRunner()


def _check_adds_up(model, cat, pairs, e):
    """Contributions sum to the raw score, which is the model's own raw score; the score is its probability."""
    f = e.frame
    total = f["base_value"].to_numpy() + f[e.groups].to_numpy().sum(axis=1)
    np.testing.assert_allclose(total, f["raw_score"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(f["raw_score"], model.predict_logits(cat, pairs), atol=1e-4, rtol=0)
    np.testing.assert_allclose(f["score"], model.predict_proba(cat, pairs), atol=1e-5, rtol=0)
    # per feature, too
    by_pair = e.features.groupby("pair")["contribution"].sum().to_numpy()
    np.testing.assert_allclose(by_pair, f[e.groups].to_numpy().sum(axis=1), atol=1e-6, rtol=0)


def _check_symmetric(model, cat, pairs, e):
    swapped = explain_pairs(model, cat, pairs.swapped())
    np.testing.assert_allclose(swapped.frame[e.groups], e.frame[e.groups], atol=1e-5, rtol=0)
    for g in e.groups:  # nor do the reasons in words, but for naming the first item's value first ('a' vs 'b')
        assert [_unordered(w) for w in swapped.frame[f"{g}: why"]] == [_unordered(w) for w in e.frame[f"{g}: why"]], g


def _unordered(words: str) -> str:
    return re.sub(r"('[^']*') vs ('[^']*')", lambda m: " vs ".join(sorted(m.groups())), words)


def test_gbdt_contributions_are_treeshap_by_group_and_add_up_to_the_raw_score(gbdt_small_run, synth_dir):
    model, cat = model_and_catalogue(gbdt_small_run, synth_dir, None)
    pairs = load_pairs(synth_dir / "test.parquet", cat, require_target=True)
    e = explain_pairs(model, cat, pairs)
    assert e.method == "treeshap" and len(e) == len(pairs)
    assert {"categories", "attributes", "name text", "codes and numbers", "picture", "stacked network"} <= set(e.groups)
    assert all(w for w in e.frame["codes and numbers: why"])  # the codes and numbers of both names, in words
    # every feature of the booster lands in one group
    assert set(e.features["feature"]) == set(model.feature_names_)
    _check_adds_up(model, cat, pairs, e)
    _check_symmetric(model, cat, pairs, e)
    # the base value is the booster's own expected value, one number
    assert e.frame["base_value"].nunique() == 1


def test_gbdt_reasons_are_in_words(gbdt_small_run, synth_dir):
    model, cat = model_and_catalogue(gbdt_small_run, synth_dir, None)
    pairs = load_pairs(synth_dir / "test.parquet", cat, require_target=True)
    e = explain_pairs(model, cat, pairs)
    words = e.frame
    assert words["attributes: why"].str.contains(r"brand: both '|brand: '.+' vs '").any()
    assert words["categories: why"].str.contains("same category at levels 1-4").any()
    assert words["name text: why"].str.contains(r"name word cosine \d\.\d\d").all()
    # a pair where one item has no picture says so
    pic = cat.modalities["main_pic_embeddings_resnet_v1"].present
    lacking = ~(pic[pairs.left] & pic[pairs.right])
    assert lacking.any()  # the synthetic data leaves some pictures out
    assert words.loc[lacking, "picture: why"].str.match("no (main )?picture on one side").all()
    assert not words.loc[~lacking, "picture: why"].str.startswith("no picture").any()


@pytest.fixture(scope="module")
def network_runs(synth_dir, siamese_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_nets")
    return {
        "siamese": siamese_run,
        "concat-mlp": train_small(synth_dir, root / "concat", "concat-mlp", "--epochs", "1"),
        "item-mlp": train_small(synth_dir, root / "item", "item-mlp", "--epochs", "1"),
    }


@pytest.mark.parametrize("name", ["siamese", "concat-mlp", "item-mlp"])
def test_network_modality_shapley_adds_up_and_ignores_the_order(network_runs, synth_dir, name):
    model, cat = model_and_catalogue(network_runs[name], synth_dir, None)
    pairs = load_pairs(synth_dir / "test.parquet", cat, require_target=True)
    e = explain_pairs(model, cat, pairs)
    assert e.method == "modality-shapley" and e.groups == [n for n, _ in model.modalities_]
    _check_adds_up(model, cat, pairs, e)
    _check_symmetric(model, cat, pairs, e)
    # the base value: the logit with every modality absent on both items
    blank = np.zeros((1, cat.item_features(e.groups).shape[1]), dtype=np.float32)
    assert e.frame["base_value"].to_numpy() == pytest.approx(
        float(model.logits_from_features(blank, blank)[0]), abs=1e-5
    )


def test_shapley_gives_nothing_to_a_modality_that_changes_nothing(network_runs, synth_dir):
    """The dummy axiom: when both items lack the picture, every coalition is the same with or without it, so the
    picture gets exactly 0, and its reason says why."""
    model, cat = model_and_catalogue(network_runs["siamese"], synth_dir, None)
    pic = cat.modalities["main_pic_embeddings_resnet_v1"].present
    rows = np.flatnonzero(~pic)[:2]
    from prodmatch.pairs import make_pairs

    frame = pd.DataFrame({"variantid1": cat.ids[rows[:1]], "variantid2": cat.ids[rows[1:2]]})
    e = explain_pairs(model, cat, make_pairs(cat, frame))
    assert e.frame["main_pic_embeddings_resnet_v1"].iloc[0] == 0.0
    assert e.frame["main_pic_embeddings_resnet_v1: why"].iloc[0] == "no main_pic_embeddings_resnet_v1 on one side"


def test_text_models_are_refused_with_what_to_do(synth_dir):
    from prodmatch.models import BiEncoderModel

    with pytest.raises(ModelError, match="one string"):
        explain_pairs(BiEncoderModel(), None, None)


def test_explain_command_writes_every_file_for_one_pair_and_for_a_file(gbdt_small_run, synth_dir, tmp_path):
    test = pd.read_parquet(synth_dir / "test.parquet")
    a, b = test.variantid1.iloc[0], test.variantid2.iloc[0]
    out = tmp_path / "one"
    r = runner.invoke(
        app, ["explain", str(gbdt_small_run), "--data", str(synth_dir), "--pair", str(a), str(b), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "base value" in r.output and "raw score" in r.output
    found = json.loads((out / JSON_FILE).read_text())["pairs"]
    assert len(found) == 1 and (found[0]["variantid1"], found[0]["variantid2"]) == (int(a), int(b))
    assert len(list((out / PLOTS_DIR).glob("*.png"))) == 1
    # a file: one row per pair, in the file's order, and the first --plots waterfalls
    out = tmp_path / "file"
    r = runner.invoke(
        app,
        [
            "explain",
            str(gbdt_small_run),
            "--data",
            str(synth_dir),
            "--pairs",
            str(synth_dir / "test.parquet"),
            "--out",
            str(out),
            "--plots",
            "3",
            "--show",
            "0",
        ],
    )
    assert r.exit_code == 0, r.output
    frame = pd.read_parquet(out / "explanations.parquet")
    assert frame["variantid1"].tolist() == test.variantid1.tolist()
    assert frame["target"].tolist() == test.target.astype(float).tolist()
    assert len(pd.read_parquet(out / FEATURES_FILE)) > len(frame)
    assert len(list((out / PLOTS_DIR).glob("*.png"))) == 3
    # the library gives the same numbers
    lib = explain(gbdt_small_run, synth_dir, pairs=synth_dir / "test.parquet")
    np.testing.assert_allclose(lib.frame["raw_score"], frame["raw_score"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pair", "1", "2", "--pairs", "x.parquet"], "one of them"),
        ([], "one of them"),
        (["--pair", "not-a-number", "2"], "whose ids are integers"),
        (["--pair", "1", "2"], "no data in any item file"),
    ],
)
def test_explain_command_errors_say_what_to_do(gbdt_small_run, synth_dir, tmp_path, args, message):
    r = runner.invoke(app, ["explain", str(gbdt_small_run), "--data", str(synth_dir), "--out", str(tmp_path), *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_report_is_one_self_contained_page(gbdt_small_run, synth_dir, tmp_path):
    out = tmp_path / "report.html"
    r = runner.invoke(
        app,
        [
            "report",
            str(gbdt_small_run),
            "--data",
            str(synth_dir),
            "--pairs",
            str(synth_dir / "test.parquet"),
            "--out",
            str(out),
            "--top",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    page = out.read_text()
    for section in ("Metrics", "Curves", "Thresholds", "Per category", "Top false positives", "Top false negatives"):
        assert f"<h2>{section}" in page, section
    # nothing to fetch: every image inline, no script, no external address
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "<script" not in page
    images = re.findall(r"<img src='([^']*)'", page)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    # the per-category table is worst first
    table = page.split("Per category")[1].split("</table>")[0]
    values = [float(v) for v in re.findall(r"<tr><td>[^<]*</td><td class=num>([0-9.]+)</td>", table)]
    assert len(values) > 3 and values == sorted(values)
    # the errors carry names and explanations
    errors = page.split("Top false positives")[1]
    assert "<b>attributes</b>" in errors and "None." not in errors


def test_report_refuses_pairs_of_one_label(gbdt_small_run, synth_dir, tmp_path):
    test = pd.read_parquet(synth_dir / "test.parquet")
    test[test.target == 1].to_parquet(tmp_path / "pos.parquet")
    r = runner.invoke(
        app,
        [
            "report",
            str(gbdt_small_run),
            "--data",
            str(synth_dir),
            "--pairs",
            str(tmp_path / "pos.parquet"),
            "--out",
            str(tmp_path / "r.html"),
        ],
    )
    assert r.exit_code == 2 and "same label" in r.output
    assert not (tmp_path / "r.html").exists()


def test_report_without_categories_says_so(gbdt_small_run, synth_dir):
    from dataclasses import replace

    from prodmatch.report import report_html

    model, cat = model_and_catalogue(gbdt_small_run, synth_dir, None)
    pairs = load_pairs(synth_dir / "test.parquet", cat, require_target=True)
    unknown = np.full(len(pairs), None, dtype=object)  # as an EM benchmark's pairs: no category at all
    for category in (None, unknown):
        page = report_html(model, cat, replace(pairs, category=category), top=1)
        assert "carry no level-2 category" in page and "<td>nan</td>" not in page and "<td>None</td>" not in page


def test_per_category_table_counts_and_scores_each_category():
    from prodmatch.evaluation import per_category_pr_auc, per_category_table

    y = np.array([1, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.4])
    groups = np.array(["a", "a", "b", "b", "c", None], dtype=object)
    table = per_category_table(y, s, groups)
    assert table["category"].tolist() == ["a", "b", "c", "nan"]  # pairs without a category: one group
    assert table["pairs"].tolist() == [2, 2, 1, 1] and table["matches"].tolist() == [1, 1, 0, 0]
    assert table["pr_auc"].tolist()[2:] == [0.0, 0.0]  # no positive: 0, the E-CUP rule
    assert per_category_pr_auc(y, s, groups) == dict(zip(table["category"], table["pr_auc"], strict=True))
