"""Splits and pair hygiene counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.model_selection import train_test_split

from prodmatch import DataError, load_pairs, pair_hygiene, read_catalogue, split_pairs
from prodmatch.pairs import PairSet, augment_transitive, both_orders, clean_pairs, group_folds, pair_graph


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


def _labelled(left, right, target):
    left, right = np.asarray(left, dtype=np.int32), np.asarray(right, dtype=np.int32)
    return PairSet(
        left=left,
        right=right,
        target=np.asarray(target, dtype=np.float32),
        source_rows=np.arange(len(left)),
        ids1=left.astype(np.int64) + 100,
        ids2=right.astype(np.int64) + 100,
        category=np.array(["c"] * len(left), dtype=object),
    )


# rows: (0,1)+ (1,0)+ reversed duplicate; (2,3)+ (3,2)- conflict; (4,5)- (4,5)- exact duplicate; (6,7)+
HYGIENE = _labelled([0, 1, 2, 3, 4, 4, 6], [1, 0, 3, 2, 5, 5, 7], [1, 1, 1, 0, 0, 0, 1])


@pytest.mark.parametrize(
    ("policy", "kept", "labels"),
    [
        ("drop", [(0, 1), (4, 5), (6, 7)], [1, 0, 1]),
        ("first", [(0, 1), (2, 3), (4, 5), (6, 7)], [1, 1, 0, 1]),
        ("positive", [(0, 1), (2, 3), (4, 5), (6, 7)], [1, 1, 0, 1]),
        ("negative", [(0, 1), (2, 3), (4, 5), (6, 7)], [1, 0, 0, 1]),
    ],
)
def test_clean_pairs_policies_and_counts(policy, kept, labels):
    out, report = clean_pairs(HYGIENE, policy)
    assert list(zip(out.left.tolist(), out.right.tolist(), strict=True)) == kept
    assert out.target.tolist() == labels
    assert report["duplicate_rows_dropped"] == 3  # one reversed, one conflicting reverse, one exact
    assert report["conflicting_pairs"] == 1
    assert report["conflicting_pairs_dropped"] == (1 if policy == "drop" else 0)
    assert report["output_pairs"] == len(kept)


def test_clean_pairs_rejects_unknown_policy():
    with pytest.raises(DataError, match="unknown conflict policy"):
        clean_pairs(HYGIENE, "vote")


def test_transitive_augmentation_counts():
    # chain 0-1-2-3 (positives) implies 3 new pairs, but (0,3) is labelled negative: 2 added, 1 contradicted.
    # a big star 10-11..10-15 (6 items) exceeds max_component=5 and is left alone.
    pairs = _labelled([0, 1, 2, 0, 10, 10, 10, 10, 10], [1, 2, 3, 3, 11, 12, 13, 14, 15], [1, 1, 1, 0, 1, 1, 1, 1, 1])
    out, report = augment_transitive(pairs, n_items=16, max_component=5)
    added = {
        tuple(sorted(p)) for p in zip(out.left[len(pairs) :].tolist(), out.right[len(pairs) :].tolist(), strict=True)
    }
    assert added == {(0, 2), (1, 3)}
    assert report == {
        "components_expanded": 1,
        "components_too_large": 1,
        "positives_added": 2,
        "contradicted_by_negative_labels": 1,
    }
    assert (out.target[len(pairs) :] == 1).all() and (out.source_rows[len(pairs) :] == -1).all()
    assert out.ids1[len(pairs) :].tolist() == [100, 101]  # ids of the rows, for output files


def test_both_orders():
    out = both_orders(HYGIENE.subset(np.arange(2)))
    assert out.left.tolist() == [0, 1, 1, 0] and out.right.tolist() == [1, 0, 0, 1]
    assert out.target.tolist() == [1, 1, 1, 1]


def test_group_folds_keep_components_whole():
    pairs = _labelled([0, 1, 5, 7, 9], [1, 2, 6, 8, 10], [1, 1, 1, 0, 1])
    folds = group_folds(pairs, 2, seed=0)
    assert folds.method == "group"
    assert (folds.scorers[:, 0] == folds.scorers[:, 1]).all()
    assert folds.scorers[0, 0] == folds.scorers[1, 0]  # 0-1 and 1-2 share item 1
    for k in range(2):  # network k trains exactly on the pairs it does not score
        np.testing.assert_array_equal(folds.train_masks[k], folds.scorers[:, 0] != k)


def _giant_component(n_items: int = 2000, per_item: float = 3.0, seed: int = 0) -> PairSet:
    """Pairs drawn at random over few items: each item in several pairs, one connected component."""
    rng = np.random.default_rng(seed)
    m = int(n_items * per_item / 2)
    left, right = rng.integers(0, n_items, m), rng.integers(0, n_items, m)
    keep = left != right
    product = np.arange(n_items) // 2  # items 2p and 2p+1 are one product
    target = (product[left] == product[right]).astype(np.float32)
    pos = np.arange(0, n_items, 2)  # and every product's two listings are a labelled positive
    left, right = np.concatenate([left[keep], pos]), np.concatenate([right[keep], pos + 1])
    target = np.concatenate([target[keep], np.ones(len(pos), dtype=np.float32)])
    return _labelled(left.tolist(), right.tolist(), target.tolist())


def test_group_split_falls_back_to_items_on_a_giant_component(caplog):
    pairs = _giant_component()
    graph = pair_graph(pairs)
    assert graph["largest_component_share"] > 0.95 and graph["pairs_per_item"] > 3
    train, valid, report = split_pairs(pairs, method="group", valid_fraction=0.2, seed=3)
    assert report.method == "items" and report.requested == "group" and "largest connected component" in report.reason
    assert "split by items instead" in caplog.text
    assert report.overlap_items == 0  # still no item on both sides
    assert not set(np.union1d(train.left, train.right)) & set(np.union1d(valid.left, valid.right))
    assert len(valid) >= 0.09 * (len(train) + len(valid))  # about 10 % at least
    assert len(train) + len(valid) + report.pairs_lost == len(pairs) and report.pairs_lost > 0
    # items joined by a positive pair stay together: no positive is lost
    assert train.target.sum() + valid.target.sum() == pairs.target.sum()


def test_a_split_that_cannot_hold_items_out_says_what_to_do():
    star = _labelled([0] * 50, list(range(1, 51)), [0.0] * 50)  # every pair shares item 0
    with pytest.raises(DataError, match=r"--valid-pairs.*--split random.*--min-valid-fraction 0"):
        split_pairs(star, method="group", seed=0)


def test_item_folds_never_score_a_pair_with_a_network_that_saw_its_items():
    pairs = _giant_component(seed=1)
    folds = group_folds(pairs, 4, seed=0)
    assert folds.method == "items" and "largest connected component" in folds.reason
    for k in range(4):
        trained = folds.train_masks[k]
        seen = np.zeros(int(max(pairs.left.max(), pairs.right.max())) + 1, dtype=bool)
        seen[pairs.left[trained]] = seen[pairs.right[trained]] = True
        scored = (folds.scorers == k).any(axis=1)
        assert not (trained & scored).any()  # never scores a pair it trained on
        assert not (seen[pairs.left[scored]] & seen[pairs.right[scored]]).any()  # nor both of its items
    assert all(m.sum() > 0.4 * len(pairs) for m in folds.train_masks)
