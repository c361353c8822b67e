"""Splits and pair hygiene counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from prodmatch import load_pairs, pair_hygiene, read_catalogue, split_pairs
from prodmatch.pairs import PairSet


def _pairs(left, right, target=None):
    left, right = np.asarray(left, dtype=np.int32), np.asarray(right, dtype=np.int32)
    return PairSet(
        left=left,
        right=right,
        target=None if target is None else np.asarray(target, dtype=np.float32),
        source_rows=np.arange(len(left)),
        ids1=left.astype(np.int64),
        ids2=right.astype(np.int64),
    )


def test_group_split_has_no_item_overlap(synth_dir):
    cat = read_catalogue(synth_dir)
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    train, valid, report = split_pairs(pairs, method="group", valid_fraction=0.2, seed=1)
    assert report.overlap_items == 0
    assert not np.intersect1d(np.r_[train.left, train.right], np.r_[valid.left, valid.right]).size
    assert len(train) + len(valid) == len(pairs)
    assert 0.15 < len(valid) / len(pairs) < 0.25


def test_random_split_is_the_notebooks(synth_dir):
    cat = read_catalogue(synth_dir)
    pairs = load_pairs(synth_dir / "train.parquet", cat, require_target=True)
    _, valid, report = split_pairs(pairs, method="random", valid_fraction=0.2, seed=42)
    df = pq.read_table(synth_dir / "train.parquet").to_pandas()
    _, nb_test = train_test_split(df, test_size=0.2, random_state=42)
    assert sorted(nb_test.index) == sorted(valid.source_rows.tolist())
    assert report.overlap_items > 0  # reversed duplicates and shared items leak across a random split


def test_group_split_keeps_components_whole():
    # Components: {0,1,2} (3 pairs), {3,4} (1), {5,6} (1), {7,8} (1), {9,10} (1)
    p = _pairs([0, 1, 2, 3, 5, 7, 9], [1, 2, 0, 4, 6, 8, 10], [1] * 7)
    for seed in range(5):
        tr, va, _ = split_pairs(p, method="group", valid_fraction=0.3, seed=seed)
        tri, vai = set(tr.left) | set(tr.right), set(va.left) | set(va.right)
        assert not tri & vai
        assert {0, 1, 2} <= tri or {0, 1, 2} <= vai


def test_hygiene_counts():
    #           a-b  b-a(same)  c-d  d-c(conflict)  e-f  e-f(exact dup)
    p = _pairs([0, 1, 2, 3, 4, 4], [1, 0, 3, 2, 5, 5], [1, 1, 0, 1, 0, 0])
    h = pair_hygiene(p)
    assert h == {
        "pairs": 6,
        "duplicate_groups": 3,
        "reversed_duplicates": 2,
        "exact_duplicates": 1,
        "conflicting_labels": 1,
    }


def test_category_from_pairs_column_wins(tmp_path, synth_dir):
    cat = read_catalogue(synth_dir)
    df = pq.read_table(synth_dir / "train.parquet").to_pandas().head(10)
    df["category2"] = "custom"
    path = tmp_path / "p.parquet"
    df.to_parquet(path)
    pairs = load_pairs(path, cat, require_target=True)
    assert set(pairs.category) == {"custom"}
    truth = pd.read_parquet(synth_dir / "truth.parquet")
    assert truth["category2"].nunique() > 1
