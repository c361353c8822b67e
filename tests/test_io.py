"""Reading the E-CUP layout: accepted variants, normalisation, and one test per documented error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import list_column, write_items, write_pairs
from prodmatch import DataConfig, DataError, UnknownIdsError, read_catalogue
from prodmatch.atomic import atomic_path, write_json
from prodmatch.io import read_pairs_table
from prodmatch.pairs import load_pairs


def test_reads_synthetic_layout(synth_dir):
    cat = read_catalogue(synth_dir)
    assert list(cat.modalities) == ["name_bert_64", "main_pic_embeddings_resnet_v1"]
    text, pic = cat.modalities.values()
    assert text.matrix.shape == (3000, 64) and pic.matrix.shape == (3000, 128)
    assert text.matrix.dtype == np.float32 and text.matrix.flags.c_contiguous
    truth = pq.read_table(synth_dir / "truth.parquet").to_pandas()
    rows = cat.rows(truth["variantid"].to_numpy())
    has_picture = truth["has_picture"].to_numpy()
    assert not (pic.present[rows] & ~has_picture).any()
    # A zero picture vector counts as missing too (synth writes a few).
    summary = json.loads((synth_dir / "synth.json").read_text())
    assert int((has_picture & ~pic.present[rows]).sum()) == summary["zero_picture_vectors"] > 0
    assert not pic.matrix[~pic.present].any()  # missing pictures are zeros
    assert cat.categories is not None and cat.categories["category2"].notna().all()


def test_normalisation_follows_the_notebook_rule(tmp_path):
    vecs = [[3.0, 4.0] + [0.0] * 62, [0.0005] + [0.0] * 63, [0.0] * 64]
    cat = read_catalogue(write_items(tmp_path / "d", [1, 2, 3], vecs))
    m = cat.modalities["name_bert_64"].matrix
    np.testing.assert_allclose(m[0, :2], [0.6, 0.8], rtol=1e-6)
    present = cat.modalities["name_bert_64"].present
    # norm <= 0.001 carries no information: missing (zeros, presence flag 0), as is an all-zero vector
    assert present.tolist() == [True, False, False]
    assert not m[1].any() and not m[2].any()


@pytest.mark.parametrize("nested", [True, False], ids=["list-of-one-vector", "flat-vector"])
@pytest.mark.parametrize("fname", ["images_embed.parquet", "resnet.parquet"])
def test_picture_file_variants(tmp_path, nested, fname):
    d = write_items(tmp_path / "d", [1, 2], [[1.0] * 64, [2.0] * 64], [[1.0] * 128, None], nested=nested)
    if fname != "images_embed.parquet":
        (d / "images_embed.parquet").rename(d / fname)
    cat = read_catalogue(d)
    pic = cat.modalities["main_pic_embeddings_resnet_v1"]
    assert pic.dim == 128
    np.testing.assert_array_equal(pic.present, [True, False])


def test_dimensions_come_from_the_data(tmp_path):
    cat = read_catalogue(write_items(tmp_path / "d", [1, 2], [[1.0] * 10, [0.5] * 10]))
    assert cat.modalities["name_bert_64"].dim == 10


def test_string_ids(tmp_path):
    d = write_items(tmp_path / "d", ["a", "b"], [[1.0] * 4, [0.5] * 4])
    cat = read_catalogue(d)
    assert cat.id_kind == "str"
    np.testing.assert_array_equal(cat.rows(["b", "zz", "a"]), [1, -1, 0])


def test_item_in_picture_file_only_is_kept(tmp_path):
    d = write_items(tmp_path / "d", [1, 2], [[1.0] * 4, [0.5] * 4], [[1.0] * 8, [1.0] * 8])
    pq.write_table(
        pa.table(
            {
                "variantid": [1, 2, 3],
                "main_pic_embeddings_resnet_v1": pa.array([[[1.0] * 8]] * 3, type=pa.list_(pa.list_(pa.float32()))),
            }
        ),
        d / "images_embed.parquet",
    )
    cat = read_catalogue(d)
    assert len(cat) == 3
    assert not cat.modalities["name_bert_64"].present[cat.rows([3])[0]]


# --------------------------------------------------------------------------------- documented errors


def test_error_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_catalogue(tmp_path / "nope")


def test_error_missing_text_file(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"text_and_bert\.parquet not found"):
        read_catalogue(tmp_path / "d")


def test_error_missing_id_column(tmp_path):
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"id": [1], "name_bert_64": list_column([[1.0]])}), tmp_path / "d/text_and_bert.parquet")
    with pytest.raises(DataError, match=r"no id column 'variantid'.*columns are \['id', 'name_bert_64'\]"):
        read_catalogue(tmp_path / "d")


def test_error_requested_modality_missing(tmp_path):
    d = write_items(tmp_path / "d", [1], [[1.0] * 4])
    with pytest.raises(DataError, match=r"modalities \['main_pic_embeddings_resnet_v1'\] not found"):
        read_catalogue(d, DataConfig(modalities=("name_bert_64", "main_pic_embeddings_resnet_v1")))


def test_error_inconsistent_dimension(tmp_path):
    d = write_items(tmp_path / "d", [1, 2, 3], [[1.0] * 64, [1.0] * 64, [1.0] * 63])
    with pytest.raises(DataError, match=r"2 of dimension 64.*1 of dimension 63 \(e\.g\. ids \[3\]\)"):
        read_catalogue(d)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_error_non_finite_values(tmp_path, bad):
    d = write_items(tmp_path / "d", [1, 2, 3], [[1.0] * 4, [bad, 1.0, 1.0, 1.0], [bad] * 4])
    with pytest.raises(DataError, match=r"NaN or inf in 2 vectors, e\.g\. ids \[2, 3\]"):
        read_catalogue(d)


def test_non_finite_values_as_missing_policy(tmp_path, caplog):
    d = write_items(tmp_path / "d", [1, 2], [[1.0] * 4, [float("nan")] * 4])
    cat = read_catalogue(d, DataConfig(invalid_vectors="missing"))
    np.testing.assert_array_equal(cat.modalities["name_bert_64"].present, [True, False])
    assert "treated as missing" in caplog.text


def test_error_duplicate_ids(tmp_path):
    d = write_items(tmp_path / "d", [5, 6, 5], [[1.0] * 4] * 3)
    with pytest.raises(DataError, match=r"1 duplicate variantid values, e\.g\. \[5\]"):
        read_catalogue(d)


def test_error_empty_file(tmp_path):
    d = write_items(tmp_path / "d", [], [])
    with pytest.raises(DataError, match="has no rows"):
        read_catalogue(d)


def test_error_both_picture_files(tmp_path):
    d = write_items(tmp_path / "d", [1], [[1.0] * 4], [[1.0] * 8])
    (d / "resnet.parquet").write_bytes((d / "images_embed.parquet").read_bytes())
    with pytest.raises(DataError, match=r"both resnet\.parquet and images_embed\.parquet"):
        read_catalogue(d)


def test_error_invalid_categories_json(tmp_path):
    d = write_items(tmp_path / "d", [1, 2], [[1.0] * 4] * 2)
    pq.write_table(
        pa.table({"variantid": [1, 2], "categories": [json.dumps({"2": "x"}), "{oops"]}), d / "attributes.parquet"
    )
    with pytest.raises(DataError, match=r"invalid JSON for variantid 2"):
        read_catalogue(d)


def test_error_pairs_missing_column(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"variantid1": [1], "v2": [2]}), path)
    with pytest.raises(DataError, match=r"missing column\(s\) \['variantid2'\]"):
        read_pairs_table(path, require_target=False)


def test_error_pairs_without_target_when_required(tmp_path):
    path = write_pairs(tmp_path / "p.parquet", [1], [2])
    with pytest.raises(DataError, match="no 'target' column"):
        read_pairs_table(path, require_target=True)


def test_error_pairs_bad_target(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"variantid1": [1, 1], "variantid2": [2, 3], "target": [1.0, 0.5]}), path)
    with pytest.raises(DataError, match=r"target must be 0 or 1, found \[0\.5\] at rows \[1\]"):
        read_pairs_table(path, require_target=True)


def test_error_pairs_empty(tmp_path):
    path = write_pairs(tmp_path / "p.parquet", [], [], [])
    with pytest.raises(DataError, match="has no rows"):
        read_pairs_table(path, require_target=True)


def test_error_pairs_unknown_ids(tmp_path):
    d = write_items(tmp_path / "d", [1, 2], [[1.0] * 4] * 2)
    cat = read_catalogue(d)
    path = write_pairs(tmp_path / "p.parquet", [1, 9, 2], [2, 1, 8], [1, 0, 0])
    with pytest.raises(UnknownIdsError, match=r"2 pairs name 2 ids with no data.*\[9, 8\]") as info:
        load_pairs(path, cat, require_target=True)
    assert sorted(info.value.ids) == [8, 9]
    dropped = load_pairs(path, cat, require_target=True, unknown="drop")
    assert len(dropped) == 1 and dropped.source_rows.tolist() == [0]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json({"a": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_item_files_in_memory_read_as_the_directory_does(synth_dir):
    """A Spark executor's batch is parsed in memory by the same reader: the same catalogue, and the same errors."""
    from prodmatch.io import ATTRIBUTES_FILE, TEXT_FILE, catalogue_from_arrow

    config = DataConfig(load_names=True, load_attributes=True, load_extra_pictures=True, load_texts=True)
    on_disk = read_catalogue(synth_dir, config)
    files = [TEXT_FILE, "images_embed.parquet", ATTRIBUTES_FILE]
    tables = {name: pq.read_table(synth_dir / name) for name in files if (synth_dir / name).exists()}
    assert len(tables) == 3
    in_memory = catalogue_from_arrow(tables, config)
    assert (in_memory.ids == on_disk.ids).all() and list(in_memory.modalities) == list(on_disk.modalities)
    for name, m in on_disk.modalities.items():
        assert np.array_equal(in_memory.modalities[name].matrix, m.matrix)
        assert np.array_equal(in_memory.modalities[name].present, m.present)
    assert in_memory.categories.equals(on_disk.categories)
    assert list(in_memory.names) == list(on_disk.names) and list(in_memory.attributes) == list(on_disk.attributes)
    assert np.array_equal(in_memory.extra_pictures[1], on_disk.extra_pictures[1])
    with pytest.raises(DataError, match=r"text_and_bert\.parquet not found"):
        catalogue_from_arrow({"images_embed.parquet": tables["images_embed.parquet"]}, config)
