"""Linking two sources (``match --link LEFT RIGHT``): pairs of two sources only, one-to-one clusters, the
guard over pairs of two sources, quality over those pairs, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from prodmatch.cli import app
from prodmatch.matching import MatchConfig, cluster_items, cluster_quality, link_sources
from prodmatch.synth import split_sources


@pytest.fixture(scope="module")
def two_sources(synth_dir, tmp_path_factory):
    """LEFT and RIGHT drawn from synth_dir at random: many products have listings on both sides and some
    have two on one side (pairs a catalogue match would find, which linking must not)."""
    root = tmp_path_factory.mktemp("sources")
    counts = split_sources(synth_dir, root / "left", root / "right", seed=1)
    return root / "left", root / "right", counts


def _within_one_source_pairs(left_dir) -> int:
    truth = pd.read_parquet(left_dir / "truth.parquet")
    sizes = truth.groupby("product_id").size()
    return int((sizes * (sizes - 1) // 2).sum())


def test_link_never_pairs_two_items_of_one_source(two_sources, gbdt_small_run, tmp_path):
    left_dir, right_dir, counts = two_sources
    assert _within_one_source_pairs(left_dir) > 50  # there are same-product pairs within LEFT to leave out
    summary = link_sources(gbdt_small_run, left_dir, right_dir, tmp_path / "out", MatchConfig(k=10))
    matches = pd.read_parquet(tmp_path / "out" / "matches.parquet")
    clusters = pd.read_parquet(tmp_path / "out" / "clusters.parquet")
    assert len(matches) > 100 and (matches["source1"] != matches["source2"]).all()
    side = clusters.set_index("variantid")["source"]
    assert (side.reindex(matches["variantid1"]).to_numpy() == matches["source1"].to_numpy()).all()
    left_ids = set(pd.read_parquet(left_dir / "truth.parquet")["variantid"])
    assert set(clusters.loc[clusters["source"] == "left", "variantid"]) == left_ids
    assert len(clusters) == counts["left_items"] + counts["right_items"]
    # canonical pairs and same_cluster, as in a catalogue match
    assert (matches["variantid1"] < matches["variantid2"]).all()
    cluster = clusters.set_index("variantid")["cluster_id"]
    together = cluster.reindex(matches["variantid1"]).to_numpy() == cluster.reindex(matches["variantid2"]).to_numpy()
    assert (matches["same_cluster"].to_numpy() == together).all()
    assert summary["link"]["items"] == {"left": counts["left_items"], "right": counts["right_items"]}
    assert summary["search"]["linked_sources"] == 2
    # quality counts the pairs of two sources: the true pairs within LEFT are not asked for, so a perfect
    # candidate stage has recall 1 whatever the same-source pairs
    assert summary["quality"]["candidate_recall_at_10"] > 0.9
    assert 0.5 < summary["quality"]["pairwise_f1"] <= 1.0


def test_one_to_one_clusters_hold_at_most_one_item_of_each_source(two_sources, gbdt_small_run, tmp_path):
    left_dir, right_dir, _ = two_sources
    many = link_sources(gbdt_small_run, left_dir, right_dir, tmp_path / "many", MatchConfig(k=10))
    one = link_sources(gbdt_small_run, left_dir, right_dir, tmp_path / "one", MatchConfig(k=10, one_to_one=True))
    sizes = pd.read_parquet(tmp_path / "many" / "clusters.parquet").groupby(["cluster_id", "source"]).size()
    assert sizes.max() > 1  # without it, some clusters hold two listings of one source
    clusters = pd.read_parquet(tmp_path / "one" / "clusters.parquet")
    assert clusters.groupby(["cluster_id", "source"]).size().max() == 1
    assert clusters.groupby("cluster_id").size().max() == 2
    assert one["clustering"]["one_to_one_pairs"] == int((clusters.groupby("cluster_id").size() == 2).sum()) > 50
    assert one["link"]["one_to_one"] and not many["link"]["one_to_one"]
    # the same matches, scores and threshold: only the clusters differ
    assert one["matches"] == many["matches"] and one["parameters"]["threshold"] == many["parameters"]["threshold"]
    # the clusters of many holding two listings of one source were cut: some of their matches fall apart
    assert one["clustering"]["matches_in_different_clusters"] > 0
    assert one["clustering"]["reason"].startswith("one-to-one")


def test_one_to_one_keeps_the_matching_of_largest_summed_score():
    # sources: 0 and 1 left, 2 and 3 right; 0-2 is the best pair, but 0-3 with 1-2 sum higher (1.65 > 0.9 + 0)
    left, right = np.array([0, 0, 1]), np.array([2, 3, 2])
    score = np.array([0.9, 0.8, 0.85])
    sources = np.array([0, 0, 1, 1])
    labels, report = cluster_items(4, left, right, score, 0.5, sources=sources, one_to_one=True)
    assert labels[0] == labels[3] != labels[1] == labels[2]
    assert report.one_to_one_pairs == 2 and report.components == 1
    # a component over linkage_max is matched greedily, best pair first, and counted
    labels, report = cluster_items(4, left, right, score, 0.5, linkage_max=3, sources=sources, one_to_one=True)
    assert labels[0] == labels[2] and len(set(labels.tolist())) == 3 and report.components_matched_greedily == 1
    with pytest.raises(ValueError, match="source"):
        cluster_items(4, np.array([0]), np.array([1]), np.array([0.9]), 0.5, sources=sources, one_to_one=True)


def test_the_guard_averages_over_pairs_of_two_sources_only():
    # left items 0, 1 (one product listed twice), right item 2 matching both: linking never scores 0-1, so
    # the unscored pair must not count as a non-match (a catalogue's guard would split at 0.6 on average)
    left, right, score = np.array([0, 1]), np.array([2, 2]), np.array([0.9, 0.9])
    apart, _ = cluster_items(3, left, right, score, 0.7)
    assert len(set(apart.tolist())) == 2  # without sources: (0.9 + 0.9 + 0) / 3 < 0.7 once 2 joins one of them
    together, _ = cluster_items(3, left, right, score, 0.7, sources=np.array([0, 0, 1]))
    assert len(set(together.tolist())) == 1


def test_quality_counts_pairs_of_two_sources_by_hand():
    labels = np.array([0, 0, 0, 1, 1])
    product = np.array([7, 7, 7, 8, 8])
    sources = np.array([0, 0, 1, 0, 1])
    q = cluster_quality(labels, product, sources)
    # cross pairs predicted: cluster 0 has (0,2), (1,2); cluster 1 has (3,4): 3, all true; true cross pairs: 3
    assert q["pairwise_precision"] == 1.0 and q["pairwise_recall"] == 1.0
    q = cluster_quality(np.array([0, 1, 2, 3, 3]), product, sources)  # only 3-4 found of 3 cross pairs
    assert q["pairwise_precision"] == 1.0 and q["pairwise_recall"] == pytest.approx(1 / 3)


def test_link_errors_name_what_to_do(two_sources, synth_dir, gbdt_small_run, tmp_path):
    left_dir, right_dir, _ = two_sources
    runner = CliRunner()
    base = ["match", str(gbdt_small_run), "--out", str(tmp_path / "o"), "--no-progress"]
    r = runner.invoke(app, base)
    assert r.exit_code == 2 and "--data DIR" in r.output and "--link LEFT RIGHT" in r.output
    r = runner.invoke(app, [*base, "--data", str(synth_dir), "--link", str(left_dir), str(right_dir)])
    assert r.exit_code == 2 and "one of the two" in r.output
    r = runner.invoke(app, [*base, "--data", str(synth_dir), "--one-to-one"])
    assert r.exit_code == 2 and "--link LEFT RIGHT" in r.output
    r = runner.invoke(app, [*base, "--link", str(left_dir), str(left_dir)])  # every id in both
    assert r.exit_code != 0 and "ids are in both" in r.output and "unique across the two sources" in r.output
    assert not (tmp_path / "o").exists()


def test_link_command_prints_and_writes_the_link(two_sources, gbdt_small_run, tmp_path):
    left_dir, right_dir, counts = two_sources
    out = tmp_path / "linked"
    args = ["match", str(gbdt_small_run), "--link", str(left_dir), str(right_dir), "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--one-to-one", "--k", "10", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"{counts['left_items']:,} + {counts['right_items']:,} items linked" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["link"]["left"] == str(left_dir) and summary["parameters"]["one_to_one"] is True
