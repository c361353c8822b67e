"""Your own table in (prodmatch import): CSV, JSON Lines and parquet with the user's column names, errors that
name the file, column and value in one line, and the README's tour from a CSV to clusters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from prodmatch.cli import app
from prodmatch.errors import DataError
from prodmatch.tables import import_table

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [11, 12, 13, 14],
            "title": ["Canon EOS 80D body", "Canon 80D DSLR", "Nikon D750", "Sony a6000"],
            "brand": ["Canon", "Canon", None, "Sony"],
            "cat": ["Cameras > DSLR", "Cameras > DSLR", "Cameras", None],
            "vec": [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], None],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_table_of_any_format_becomes_a_data_directory(tmp_path, suffix):
    frame = _frame()
    path = tmp_path / f"items{suffix}"
    if suffix == ".csv":
        frame.assign(vec=["[1, 0]", "0.9 0.1", "[0, 1]", ""]).to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    pairs = tmp_path / "labels.csv"
    pd.DataFrame({"a": [11, 11], "b": [12, 13], "same": ["yes", "no"]}).to_csv(pairs, index=False)
    summary = import_table(path, tmp_path / "data", id_column="id", text_columns=["title", "brand"],
                           vector_columns=["vec"], category_column="cat", attribute_columns=["brand"], pairs=pairs,
                           pair_columns=("a", "b", "same"))  # fmt: skip
    assert summary["items"] == 4 and summary["id_kind"] == "int"
    text = pd.read_parquet(tmp_path / "data" / "text_and_bert.parquet")
    assert text["variantid"].tolist() == [11, 12, 13, 14]
    assert (
        text["name"].tolist()[0] == "Canon EOS 80D body"
        and text["text"][0] == "title: Canon EOS 80D body; brand: Canon"
    )
    np.testing.assert_allclose(text["vec"][1], [0.9, 0.1], rtol=1e-6)
    assert text["vec"][3] is None  # no vector: the item lacks that modality
    attrs = pd.read_parquet(tmp_path / "data" / "attributes.parquet")
    assert json.loads(attrs["categories"][0]) == {"1": "Cameras", "2": "DSLR"}
    assert json.loads(attrs["categories"][2]) == {"1": "Cameras", "2": "Cameras"}  # one level is levels 1 and 2
    assert pd.isna(attrs["characteristic_attributes_mapping"][2])  # no brand: no attributes
    train = pd.read_parquet(tmp_path / "data" / "train.parquet")
    assert train.to_dict("list") == {"variantid1": [11, 11], "variantid2": [12, 13], "target": [1, 0]}
    r = invoke("info", tmp_path / "data")
    assert r.exit_code == 0, r.output


def test_bad_input_is_named_in_one_line(tmp_path):
    path = tmp_path / "items.csv"
    _frame().drop(columns="vec").to_csv(path, index=False)

    def fails(match: str, **kw) -> None:
        args = {"id_column": "id", "text_columns": ["title"], **kw}
        with pytest.raises(DataError, match=match):
            import_table(args.pop("table", path), tmp_path / "out", **args)

    fails(r"items.csv: no column 'sku' \(named by --id\); its columns are \['id', 'title'", id_column="sku")
    fails(r"no column 'name' \(named by --text\)", text_columns=["title", "name"])
    pd.DataFrame({"id": [1, 1], "title": ["a", "b"]}).to_csv(tmp_path / "dup.csv", index=False)
    fails(r"dup.csv: column 'id' repeats 1 ids, e.g. \[1\]", table=tmp_path / "dup.csv")
    pd.DataFrame({"id": [1, None], "title": ["a", "b"]}).to_csv(tmp_path / "empty.csv", index=False)
    fails(r"empty.csv: column 'id' has 1 empty ids, e.g. at rows \[1\]", table=tmp_path / "empty.csv")
    pd.DataFrame({"id": [1, 2], "v": ["[1, 2]", "[1, 2, 3]"]}).to_csv(tmp_path / "v.csv", index=False)
    fails(r"column 'v' holds vectors of lengths \[2, 3\]", table=tmp_path / "v.csv", text_columns=[],
          vector_columns=["v"])  # fmt: skip
    (tmp_path / "items.xlsx").write_text("x")
    fails(r"unknown table format '.xlsx'", table=tmp_path / "items.xlsx")
    pd.DataFrame({"a": [11], "b": [99], "same": [1]}).to_csv(tmp_path / "p.csv", index=False)
    fails(
        r"p.csv: 1 ids are not in the catalogue, e.g. \[99\]", pairs=tmp_path / "p.csv", pair_columns=("a", "b", "same")
    )
    pd.DataFrame({"a": [11], "b": [12], "same": ["maybe"]}).to_csv(tmp_path / "q.csv", index=False)
    fails(r"q.csv: column 'same' holds 1 values that are not 0/1, e.g. \['maybe'\]", pairs=tmp_path / "q.csv",
          pair_columns=("a", "b", "same"))  # fmt: skip
    r = invoke("import", path, tmp_path / "cli", "--id", "sku", "--text", "title")
    assert r.exit_code == 2 and "no column 'sku' (named by --id)" in " ".join(r.output.split())
    assert "Traceback" not in r.output


def test_the_readme_tour_from_a_csv_to_clusters(tmp_path):
    """The commands of the README's first section, as written there, from the shipped CSV."""
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("<!-- tour -->")[1].split("<!-- /tour -->")[0]
    commands = [line.strip() for line in tour.splitlines() if line.strip().startswith("prodmatch ")]
    assert [c.split()[1] for c in commands] == ["import", "train", "match"], commands
    for command in commands:
        args = [a.replace("data/", f"{tmp_path}/data/").replace("runs/", f"{tmp_path}/runs/")
                .replace("matches/", f"{tmp_path}/matches/").replace("examples/", f"{ROOT}/examples/")
                for a in command.split()[1:]]  # fmt: skip
        r = runner.invoke(app, [*args, "--no-progress"] if args[0] in ("train", "match") else args)
        assert r.exit_code == 0, (command, r.output)
    clusters = pd.read_parquet(next((tmp_path / "matches").glob("*/clusters.parquet")))
    assert len(clusters) == 800 and clusters["variantid"].str.startswith("SKU-").all()
