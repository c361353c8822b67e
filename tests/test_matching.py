"""Catalogue matching: candidates, the chaining guard, quality measures, and the match command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import train_small
from prodmatch.cli import app
from prodmatch.errors import DataError
from prodmatch.matching import MatchConfig, candidate_pairs, candidate_recall, cluster_items, cluster_quality


def test_guard_breaks_a_weak_bridge_between_two_groups():
    # two triangles {0,1,2} and {3,4,5}, one link 2-3 just above the threshold; item 6 alone
    left, right = np.array([0, 0, 1, 3, 3, 4, 2]), np.array([1, 2, 2, 4, 5, 5, 3])
    score = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.6])
    labels, report = cluster_items(7, left, right, score, threshold=0.5)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5] != labels[6]
    assert report.components == 1 and report.components_split == 1 and report.clusters == 3


def test_guard_cuts_a_chain_whose_ends_never_matched():
    labels, _ = cluster_items(4, np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([0.8, 0.8, 0.8]), 0.5)
    assert labels[0] != labels[3]  # plain connected components would give one cluster of four


def test_a_complete_group_stays_whole():
    left, right = np.array([0, 0, 1]), np.array([1, 2, 2])
    labels, report = cluster_items(3, left, right, np.array([0.7, 0.6, 0.9]), 0.5)
    assert len(set(labels.tolist())) == 1 and report.components_split == 0


def test_components_too_large_for_a_dense_linkage_are_still_cut():
    left, right = np.array([0, 0, 1, 3, 3, 4, 2]), np.array([1, 2, 2, 4, 5, 5, 3])
    score = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.6])
    labels, report = cluster_items(6, left, right, score, threshold=0.5, linkage_max=4)
    assert report.components_too_large == 1
    assert labels[0] == labels[2] != labels[3] == labels[5]


def test_exact_candidates_find_the_true_pairs_on_tiny_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 8))
    product = np.repeat(np.arange(20), 3)  # 20 products, 3 listings each
    vectors = centres[product] + rng.normal(scale=0.05, size=(60, 8))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    left, right, facts = candidate_pairs(vectors, MatchConfig(k=2, index="flat"))
    assert facts["index"] == ["flat"]
    assert (left < right).all() and len(np.unique(left * 60 + right)) == len(left)  # each pair once
    assert candidate_recall(left, right, product) == 1.0


def test_exact_top_k_finds_what_a_flat_index_finds():
    import faiss

    from prodmatch.candidates import exact_top_k, search

    rng = np.random.default_rng(0)
    targets = rng.standard_normal((3000, 24)).astype(np.float32)
    queries = rng.standard_normal((700, 24)).astype(np.float32)
    flat = faiss.IndexFlatIP(24)
    flat.add(targets)
    expected = search(flat, queries, 11)
    for budget in (1 << 26, 5000):  # one block of queries, and many
        found = exact_top_k(targets, queries, 11, budget=budget)
        assert found.shape == (700, 11)
        np.testing.assert_array_equal(found, expected)  # the same rows, best first


def test_blocking_keeps_candidates_within_their_block():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = np.repeat([0, 1, 2, 3], 10)
    left, right, facts = candidate_pairs(vectors, MatchConfig(k=5, index="flat"), groups)
    assert facts["blocks"] == 4 and (groups[left] == groups[right]).all()
    assert len(left) >= 4 * 10 * 5 // 2  # every item found 5 neighbours in its block


def test_cluster_quality_by_hand():
    labels = np.array([0, 0, 0, 1, 1])
    product = np.array([7, 7, 8, 8, 8])
    q = cluster_quality(labels, product)
    # predicted pairs: 3 + 1 = 4, of which (0,1) and (3,4) are true; true pairs: 1 + 3 = 4
    assert q["pairwise_precision"] == pytest.approx(2 / 4) and q["pairwise_recall"] == pytest.approx(2 / 4)
    # B-cubed precision: items 0,1: 2/3, item 2: 1/3, items 3,4: 2/2
    assert q["bcubed_precision"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)


def test_match_command_writes_complete_outputs(synth_dir, siamese_run, tmp_path):
    runner = CliRunner()
    run_dir, out = siamese_run, tmp_path / "match"
    r = runner.invoke(
        app, ["match", str(run_dir), "--data", str(synth_dir), "--out", str(out), "--k", "10", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["clusters.parquet", "matches.parquet", "summary.json"]
    clusters = pd.read_parquet(out / "clusters.parquet")
    assert clusters["variantid"].is_unique and len(clusters) == 3000
    matches = pd.read_parquet(out / "matches.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert len(matches) == summary["matches"] and (matches["score"] >= summary["parameters"]["threshold"]).all()
    # canonical pairs: the smaller id first, sorted, each pair once
    assert (matches["variantid1"] < matches["variantid2"]).all()
    assert matches.equals(matches.sort_values(["variantid1", "variantid2"], ignore_index=True))
    # same_cluster says what clusters.parquet says, and the summary counts the pairs the guard kept apart
    cluster = clusters.set_index("variantid")["cluster_id"]
    together = cluster.reindex(matches["variantid1"]).to_numpy() == cluster.reindex(matches["variantid2"]).to_numpy()
    assert (matches["same_cluster"].to_numpy() == together).all()
    assert summary["clustering"]["matches_in_different_clusters"] == int((~together).sum())
    assert {"candidates", "scoring", "clustering"} <= set(summary["stages"])
    assert 0.0 <= summary["quality"]["candidate_recall_at_10"] <= 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".match.")]  # no temporary directory left
    r = runner.invoke(app, ["match", str(run_dir), "--data", str(synth_dir), "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_interrupted_match_leaves_nothing(synth_dir, siamese_run, tmp_path, monkeypatch):
    import prodmatch.matching as matching

    run_dir, out = siamese_run, tmp_path / "match"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    import prodmatch.matching.local

    monkeypatch.setattr(prodmatch.matching.local, "write_json", crash)  # dies after both parquet files are written
    with pytest.raises(KeyboardInterrupt):
        matching.match_catalogue(run_dir, synth_dir, out, MatchConfig(k=5))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".match.")]


def _split_data(src, old_dir, new_dir, new_ids):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for d in (old_dir, new_dir):
        d.mkdir(parents=True)
    for f in ("text_and_bert.parquet", "images_embed.parquet", "attributes.parquet"):
        table = pq.read_table(src / f)
        is_new = pc.is_in(table["variantid"], value_set=pa_array(new_ids))
        pq.write_table(table.filter(pc.invert(is_new)), old_dir / f)
        pq.write_table(table.filter(is_new), new_dir / f)


def pa_array(values):
    import pyarrow as pa

    return pa.array(values)


def test_incremental_matching_agrees_with_a_full_rebuild(synth_dir, tmp_path):
    from prodmatch.matching import build_catalogue_index, match_catalogue, match_new_items

    runner = CliRunner()
    run_dir = tmp_path / "run"
    args = ["--model", "siamese", "--epochs", "6", "--batch-size", "64", "-p", "item_dim=64", "--no-progress"]
    r = runner.invoke(app, ["train", str(synth_dir), "--out", str(run_dir), *args])
    assert r.exit_code == 0, r.output
    ids = pd.read_parquet(synth_dir / "truth.parquet")["variantid"].to_numpy()
    new_ids = np.random.default_rng(0).choice(ids, size=150, replace=False)
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    _split_data(synth_dir, old_dir, new_dir, new_ids)
    # incremental matching searches the index only and does not re-calibrate: the same rules here, and one
    # threshold for both (the catalogue job's saved one is chosen on labelled pairs, for probabilities calibrated
    # on validation candidates; on this tiny model it links far more than one pair per item)
    cfg = MatchConfig(k=10, token_k=0, calibrate="none", threshold=0.5)

    full = match_catalogue(run_dir, synth_dir, tmp_path / "full", cfg)
    match_catalogue(run_dir, old_dir, tmp_path / "old_match", cfg)
    build_catalogue_index(run_dir, old_dir, tmp_path / "index", cfg)
    inc = match_new_items(
        run_dir,
        old_dir,
        tmp_path / "index",
        new_dir,
        tmp_path / "old_match" / "clusters.parquet",
        tmp_path / "inc",
        cfg,
    )
    assert inc["new_items"] == 150 and full["items"] == 3000

    full_c = pd.read_parquet(tmp_path / "full" / "clusters.parquet").set_index("variantid")["cluster_id"]
    old_c = pd.read_parquet(tmp_path / "old_match" / "clusters.parquet").set_index("variantid")["cluster_id"]
    inc_c = pd.read_parquet(tmp_path / "inc" / "clusters.parquet").set_index("variantid")
    assert set(inc_c.index) == set(new_ids)
    everything = pd.concat([old_c, inc_c["cluster_id"]])
    # For each new item: the other items in its cluster, incrementally and in a full rebuild.
    agree = old_part_differs = 0
    for v in new_ids:
        mates_inc = set(everything.index[everything == everything[v]]) - {v}
        mates_full = set(full_c.index[full_c == full_c[v]]) - {v}
        if mates_inc == mates_full:
            agree += 1
        elif {m for m in mates_inc if m in old_c.index} != {m for m in mates_full if m in old_c.index}:
            old_part_differs += 1
    print(f"incremental agrees with the full rebuild for {agree} of {len(new_ids)} new items")
    # A regression floor, not a target: on this small, noisy model about two thirds agree exactly.
    assert agree / len(new_ids) >= 0.6
    # The documented reason for the rest: a full rebuild re-cuts old clusters around the new items, and
    # incremental matching never changes an existing cluster.
    assert old_part_differs >= 0.8 * (len(new_ids) - agree)
    assert (inc_c["is_new_cluster"] == ~inc_c["cluster_id"].isin(old_c.unique())).all()


def test_small_components_are_cut_as_scipy_average_linkage_cuts_them():
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from prodmatch.matching import average_linkage_cut

    rng = np.random.default_rng(0)
    for m in (3, 4, 7, 16):
        sim = rng.random((40, m, m)) * (rng.random((40, m, m)) < 0.6)  # some pairs never scored
        sim = np.triu(sim, 1)
        sim = sim + sim.transpose(0, 2, 1)
        for threshold in (0.3, 0.6):
            first = average_linkage_cut(sim, threshold)
            for c in range(len(sim)):
                dist = 1.0 - sim[c]
                np.fill_diagonal(dist, 0.0)
                tree = linkage(squareform(dist, checks=False), method="average")
                sub = fcluster(tree, t=1.0 - threshold, criterion="distance")
                _, at, inverse = np.unique(sub, return_index=True, return_inverse=True)
                np.testing.assert_array_equal(first[c], at[inverse])


@pytest.mark.parametrize("linking", [False, True], ids=["catalogue", "two sources"])
def test_large_components_get_scipy_average_linkage_from_their_scored_pairs_alone(linking):
    """Components over linkage_max are cut by the sparse average linkage: the partition of scipy's dense
    average linkage, where an unscored pair scores 0 (a pair within one source, when linking, just below
    the threshold), on random sparse graphs with groups to find and noise between them."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    from prodmatch.clustering import NEUTRAL_BELOW, sparse_average_linkage

    rng = np.random.default_rng(1)
    for trial in range(30):
        m = int(rng.integers(5, 80))
        group = rng.integers(0, max(1, m // 4), m)
        sim = np.where(group[:, None] == group[None, :], rng.uniform(0.4, 1.0, (m, m)), rng.uniform(0, 0.7, (m, m)))
        sim *= rng.random((m, m)) < rng.uniform(0.2, 0.9)  # some pairs never scored
        sim = np.triu(sim, 1)
        sources = rng.integers(0, 2, m) if linking else None
        if linking:
            sim[sources[:, None] == sources[None, :]] = 0.0  # linking never scores a pair within one source
        ia, ib = np.nonzero(sim)
        for threshold in (0.3, 0.55, 0.8):
            got = sparse_average_linkage(m, ia, ib, sim[ia, ib], threshold, sources)
            dense = sim + sim.T
            if linking:
                dense[sources[:, None] == sources[None, :]] = threshold - NEUTRAL_BELOW
            dist = 1.0 - dense
            np.fill_diagonal(dist, 0.0)
            sub = fcluster(linkage(squareform(dist, checks=False), method="average"), 1.0 - threshold, "distance")
            assert _same_partition(got, sub), (trial, threshold)
    # and through cluster_items: a component over linkage_max gets the same clusters as under it
    left, right = np.array([0, 0, 1, 3, 3, 4, 2]), np.array([1, 2, 2, 4, 5, 5, 3])
    score = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.6])
    dense_labels, _ = cluster_items(6, left, right, score, 0.5)
    sparse_labels, report = cluster_items(6, left, right, score, 0.5, linkage_max=4)
    assert report.components_too_large == 1 and report.components_split == 1
    assert _same_partition(dense_labels, sparse_labels)


def _same_partition(a, b) -> bool:
    frame = pd.DataFrame({"a": np.asarray(a), "b": np.asarray(b)})
    return bool((frame.groupby("a")["b"].nunique() == 1).all() and (frame.groupby("b")["a"].nunique() == 1).all())


def test_a_cascade_rescores_only_the_uncertain_band_with_the_second_run(synth_dir, siamese_run, tmp_path):
    from scipy.special import expit, logit

    from prodmatch.io import read_catalogue
    from prodmatch.models import load_model
    from prodmatch.pairs import PairSet

    second = train_small(synth_dir, tmp_path / "gbdt", "gbdt", "-p", "stack=", "-p", "stack_text=")
    runner = CliRunner()
    base = ["match", str(siamese_run), "--data", str(synth_dir), "--k", "10", "--no-progress"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert plain["cascade"] == {}
    for band in (1.0, 0.05):
        out = tmp_path / f"band{band}"
        r = runner.invoke(app, [*base, "--out", str(out), "--rescore", str(second), "--rescore-band", str(band)])
        assert r.exit_code == 0, r.output
        summary = json.loads((out / "summary.json").read_text())
        cascade = summary["cascade"]
        assert cascade["model"] == "gbdt" and "re-scoring" in summary["stages"]
        assert summary["parameters"]["threshold"] == plain["parameters"]["threshold"]  # the first model's
        matches = pd.read_parquet(out / "matches.parquet")
        first = pd.read_parquet(tmp_path / "plain" / "matches.parquet")
        if band == 1.0:  # every candidate: the first model's odds times the second's likelihood ratio
            assert cascade["rescored"] == summary["candidates"] and cascade["share_rescored"] == 1.0
            model = load_model(second)
            both = first.merge(matches, on=["variantid1", "variantid2"], suffixes=("_first", "_cascade"))
            assert len(both) > 0
            cat = read_catalogue(synth_dir, model.data_config())
            rows = cat.ids.get_indexer(both[["variantid1", "variantid2"]].to_numpy().ravel()).reshape(-1, 2)
            pairs = PairSet(rows[:, 0], rows[:, 1], None, np.arange(len(rows)), None, None)
            evidence = logit(model.predict_proba(cat, pairs)) - logit(model.calibrator.prior)
            expected = expit(logit(both["score_first"].to_numpy()) + evidence)
            np.testing.assert_allclose(both["score_cascade"], expected, atol=1e-6)
        else:  # a narrow band: some pairs re-scored, the confident ones keep the first model's score
            assert 0 < cascade["rescored"] < summary["candidates"]
            both = first.merge(matches, on=["variantid1", "variantid2"], suffixes=("_first", "_cascade"))
            sure = both["score_first"] > summary["parameters"]["threshold"] + band
            assert sure.sum() > 0
            np.testing.assert_array_equal(both.loc[sure, "score_cascade"], both.loc[sure, "score_first"])
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "x"), "--rescore", str(second), "--rescore-band", "0"])
    assert r.exit_code == 2 and "--rescore-band" in r.output


def test_quality_is_measured_against_a_named_product_column_over_the_items_that_have_one(
    synth_dir, siamese_run, tmp_path
):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data, ignore=shutil.ignore_patterns("truth.parquet", "oracle*"))
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")["product_id"]
    text = pd.read_parquet(data / "text_and_bert.parquet")
    product = truth.reindex(text["variantid"]).astype("Int64").to_numpy()
    unknown = np.random.default_rng(0).random(len(text)) < 0.3  # most catalogues know some items' products
    text["product_id"] = pd.array(np.where(unknown, None, product), dtype="Int64")
    text.to_parquet(data / "text_and_bert.parquet")
    runner = CliRunner()
    base = ["match", str(siamese_run), "--data", str(data), "--k", "10", "--no-progress"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "none")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "none" / "summary.json").read_text())["quality"] == {}
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "named"), "--truth-column", "product_id"])
    assert r.exit_code == 0, r.output
    quality = json.loads((tmp_path / "named" / "summary.json").read_text())["quality"]
    known_products = truth.reindex(text.loc[~unknown, "variantid"]).value_counts()
    assert quality["truth"] == {
        "file": "text_and_bert.parquet",
        "column": "product_id",
        "items_with_truth": int((~unknown).sum()),
        "items": len(text),
        "true_pairs": int((known_products * (known_products - 1) // 2).sum()),
    }
    # the same figures, by hand, over the items with a product
    clusters = pd.read_parquet(tmp_path / "named" / "clusters.parquet").set_index("variantid")["cluster_id"]
    known = text.loc[~unknown, "variantid"]
    expected = cluster_quality(clusters.reindex(known).to_numpy(), truth.reindex(known).to_numpy())
    assert quality["pairwise_f1"] == pytest.approx(expected["pairwise_f1"])
    assert 0 < quality["pairwise_f1"] <= 1 and "oracle_cluster_f1" not in quality
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--truth-column", "sku"])
    assert r.exit_code == 2 and "'sku'" in r.output and "attributes.parquet" in r.output
    # `prodmatch quality` measures the written files as `match` did
    figures = tmp_path / "figures.json"
    q = [
        "quality",
        str(tmp_path / "named"),
        "--data",
        str(data),
        "--truth-column",
        "product_id",
        "--json",
        str(figures),
    ]
    r = runner.invoke(app, q)
    assert r.exit_code == 0, r.output
    measured = json.loads(figures.read_text())
    assert measured == {k: v for k, v in quality.items() if k in measured} and "pairwise_f1" in measured
    r = runner.invoke(app, ["quality", str(tmp_path / "named"), "--data", str(data)])
    assert r.exit_code == 2 and "--truth-column" in r.output


def test_quality_of_output_files_by_hand(tmp_path):
    from prodmatch.matching import evaluate_outputs

    # items 1-5; true products: 1,2,3 one product, 4,5 another, 6 unknown
    pd.DataFrame({"variantid": [1, 2, 3, 4, 5, 6], "product_id": [7, 7, 7, 8, 8, None]}).to_parquet(
        tmp_path / "truth.parquet"
    )
    out = tmp_path / "out"
    out.mkdir()
    pd.DataFrame({"variantid": [1, 2, 3, 4, 5, 6], "cluster_id": [0, 0, 1, 1, 1, 1]}).to_parquet(
        out / "clusters.parquet"
    )
    matches = {"variantid1": [1, 3, 4, 4], "variantid2": [2, 4, 5, 6], "score": [0.9, 0.8, 0.9, 0.7]}
    pd.DataFrame(matches).to_parquet(out / "matches.parquet")
    q = evaluate_outputs(out, [(tmp_path / "truth.parquet", "product_id")])
    assert q["truth"] == {
        "file": "truth.parquet",
        "column": "product_id",
        "items_with_truth": 5,
        "items": 6,
        "true_pairs": 4,
    }
    # clusters over the 5 known items: {1,2}, {3,4,5}: predicted pairs 1 + 3 = 4, true among them (1,2), (4,5)
    assert q["pairwise_precision"] == pytest.approx(2 / 4) and q["pairwise_recall"] == pytest.approx(2 / 4)
    # matches judged where both items are known: (1,2) right, (3,4) wrong, (4,5) right; (4,6) not judged
    assert q["match_precision"] == pytest.approx(2 / 3) and q["match_recall"] == pytest.approx(2 / 4)
    pd.DataFrame({"variantid1": [1], "variantid2": [9], "score": [0.9]}).to_parquet(out / "matches.parquet")
    with pytest.raises(DataError, match="item 9"):
        evaluate_outputs(out, [(tmp_path / "truth.parquet", "product_id")])


def _copies(src, old_dir, new_dir, originals, offset):
    """old_dir: src's items; new_dir: exact copies of ``originals`` under new ids (id + offset)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    old_dir.mkdir(parents=True)
    new_dir.mkdir(parents=True)
    for f in ("text_and_bert.parquet", "images_embed.parquet", "attributes.parquet"):
        table = pq.read_table(src / f)
        pq.write_table(table, old_dir / f)
        copy = table.filter(pc.is_in(table["variantid"], value_set=pa.array(originals)))
        ids = pc.add(copy["variantid"], pa.scalar(offset, copy.schema.field("variantid").type))
        pq.write_table(copy.set_column(copy.schema.get_field_index("variantid"), "variantid", ids), new_dir / f)


def test_new_copies_join_their_originals_at_the_full_matchs_calibration(synth_dir, gbdt_small_run, tmp_path):
    from prodmatch.matching import build_catalogue_index, match_catalogue, match_new_items

    ids = pd.read_parquet(synth_dir / "truth.parquet")["variantid"].to_numpy()
    originals = np.random.default_rng(3).choice(ids, size=100, replace=False)
    offset = int(ids.max()) + 1
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    _copies(synth_dir, old_dir, new_dir, originals, offset)
    cfg = MatchConfig(k=10)  # the defaults: --calibrate prior
    full = match_catalogue(gbdt_small_run, old_dir, tmp_path / "full", cfg)
    assert full["calibration"]["method"] == "em"
    build_catalogue_index(gbdt_small_run, old_dir, tmp_path / "index", cfg)
    clusters = tmp_path / "full" / "clusters.parquet"
    inc = match_new_items(gbdt_small_run, old_dir, tmp_path / "index", new_dir, clusters, tmp_path / "inc", cfg)
    # the full match's calibration and threshold, and the summary says so
    assert inc["parameters"]["threshold"] == full["parameters"]["threshold"]
    assert inc["calibration"]["prior"] == full["calibration"]["prior"]
    assert inc["calibration"]["applied"].startswith("the full match's")
    old = pd.read_parquet(clusters).set_index("variantid")["cluster_id"]
    new = pd.read_parquet(tmp_path / "inc" / "clusters.parquet").set_index("variantid")["cluster_id"]
    joined = new.reindex(originals + offset).to_numpy() == old.reindex(originals).to_numpy()
    assert joined.all(), f"{(~joined).sum()} of {len(originals)} copies left their original's cluster"
    # without the full match's summary beside the clusters, the new candidates are calibrated on their own
    lone = tmp_path / "lone" / "clusters.parquet"
    lone.parent.mkdir()
    lone.write_bytes(clusters.read_bytes())
    own = match_new_items(gbdt_small_run, old_dir, tmp_path / "index", new_dir, lone, tmp_path / "own", cfg)
    assert own["calibration"]["applied"] == "the new candidates' own"


@pytest.mark.slow
def test_more_neighbours_cost_time_never_quality(synth_dir, gbdt_small_run, tmp_path):
    """Calibration is fitted on each item's nearest CALIBRATION_K candidates whatever k is, so a larger k adds
    pairs to score but leaves the threshold, and the clusters' quality, where they were."""
    from prodmatch.config import CALIBRATION_K
    from prodmatch.matching import match_catalogue

    runs = {k: match_catalogue(gbdt_small_run, synth_dir, tmp_path / f"k{k}", MatchConfig(k=k)) for k in (5, 20, 300)}
    f1 = {k: s["quality"]["pairwise_f1"] for k, s in runs.items()}
    print("cluster F1 by k:", f1)
    assert max(f1.values()) - min(f1.values()) <= 0.01, f1
    assert runs[300]["candidates"] > 8 * runs[20]["candidates"]  # a tenth of the catalogue per item
    for s in runs.values():
        assert s["calibration"]["method"] == "em"
        assert s["calibration"]["fitted_on"]["within_top"] == CALIBRATION_K
        assert s["calibration"]["prior"] == pytest.approx(runs[20]["calibration"]["prior"])
