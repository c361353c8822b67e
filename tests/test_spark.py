"""The Spark engine: connected components against scipy, parity with the local engine, and its errors."""

from __future__ import annotations

import math
import stat

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components as scipy_components

pytest.importorskip("pyspark")

from prodmatch.errors import ConfigError
from prodmatch.matching import MatchConfig, match_catalogue
from prodmatch.matching import spark as engine
from prodmatch.matching.spark import engine as spark_engine

if (engine.java_version() or 0) < engine.MIN_JAVA:
    pytest.skip("the Spark engine needs Java 17 or newer", allow_module_level=True)


@pytest.fixture(scope="module")
def spark():
    session = engine.spark_session("local[2]", {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"})
    yield session
    session.stop()


def _partition_agreement(a: pd.Series, b: pd.Series) -> float:
    """The share of items whose cluster holds the same other items in both labellings."""
    b = b.reindex(a.index)
    mates_a = a.groupby(a).transform("size")
    joint = pd.DataFrame({"a": a, "b": b}).groupby(["a", "b"])["a"].transform("size")
    mates_b = b.groupby(b).transform("size")
    return float(((joint == mates_a) & (joint == mates_b)).mean())


def _same_partition(a: dict, b: dict) -> bool:
    """Two {node: label} maps cut the nodes into the same groups."""
    frame = pd.DataFrame({"a": pd.Series(a), "b": pd.Series(b)})
    return bool((frame.groupby("a")["b"].nunique() == 1).all() and (frame.groupby("b")["a"].nunique() == 1).all())


def _graphs():
    rng = np.random.default_rng(0)
    n = 3000
    src, dst = rng.integers(0, n, 2500), rng.integers(0, n, 2500)
    yield "random sparse", src, dst
    src, dst = rng.integers(0, 400, 600), rng.integers(0, 400, 600)
    yield "random dense", src, dst
    order = rng.permutation(4000) * 7 + 11  # a chain of 4,000 nodes whose ids are in no order
    yield "long chain, shuffled ids", order[:-1], order[1:]
    chain = np.arange(4000)
    yield "long chain, ascending ids", chain[::-1][:-1], chain[::-1][1:]
    yield "star", np.zeros(2000, dtype=np.int64), np.arange(1, 2001)


@pytest.mark.parametrize("case", list(range(5)))
def test_connected_components_agree_with_scipy(spark, tmp_path, case):
    name, src, dst = list(_graphs())[case]
    frame = pd.DataFrame({"src": src.astype(np.int64), "dst": dst.astype(np.int64)})
    labels, rounds = engine.connected_components(spark, spark.createDataFrame(frame), str(tmp_path / "cc"))
    got = labels.toPandas().set_index("id")["component"].to_dict()

    nodes, inverse = np.unique(np.concatenate([src, dst]), return_inverse=True)
    a, b = inverse[: len(src)], inverse[len(src) :]
    keep = a != b
    graph = sp.coo_matrix((np.ones(keep.sum()), (a[keep], b[keep])), shape=(len(nodes), len(nodes)))
    _, comp = scipy_components(graph, directed=False)
    with_edges = np.zeros(len(nodes), dtype=bool)
    with_edges[a[keep]] = with_edges[b[keep]] = True
    want = {int(nodes[i]): int(comp[i]) for i in np.flatnonzero(with_edges)}
    assert set(got) == set(want), name
    assert _same_partition(got, want), name
    # every component is labelled by its smallest id
    smallest = pd.Series(list(want)).groupby(pd.Series(list(want.values()))).min()
    assert all(got[node] == smallest[want[node]] for node in want), name
    bound = math.ceil(math.log2(len(want) + 2)) ** 2 + 16
    assert rounds <= bound, (name, rounds)
    if "chain" in name:  # propagation alone would need ~4,000 rounds
        assert rounds <= 30, (name, rounds)
    # a graph small enough is solved on the driver, to the same labels, in no round
    small, none = engine.connected_components(
        spark, spark.createDataFrame(frame), str(tmp_path / "cc_driver"), driver_max_edges=len(frame)
    )
    assert none == 0 and small.toPandas().set_index("id")["component"].to_dict() == got, name


@pytest.fixture(scope="module")
def gbdt_run(gbdt_small_run):
    """The session's small gbdt run (read-only), trained once for every module."""
    return gbdt_small_run


@pytest.fixture(scope="module")
def local_k10(gbdt_run, synth_dir, tmp_path_factory):
    """The local engine's match of the synthetic catalogue at k=10 without shared values: (summary, out dir),
    what several Spark runs are compared with (read-only)."""
    out = tmp_path_factory.mktemp("local_k10") / "local"
    return match_catalogue(gbdt_run, synth_dir, out, MatchConfig(k=10, token_k=0)), out


def _pairs(path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    lo = np.minimum(frame["variantid1"], frame["variantid2"])
    hi = np.maximum(frame["variantid1"], frame["variantid2"])
    return pd.DataFrame({"a": lo, "b": hi, "score": frame["score"]}).sort_values(["a", "b"]).reset_index(drop=True)


@pytest.mark.slow
def test_spark_engine_gives_the_local_engines_clusters(spark, synth_dir, gbdt_run, tmp_path, local_k10):
    from typer.testing import CliRunner

    from prodmatch.cli import app

    local, local_dir = local_k10
    args = ["match", str(gbdt_run), "--data", str(synth_dir), "--out", str(tmp_path / "spark"), "--k", "10"]
    args += ["--token-k", "0", "--engine", "spark", "--master", "local[2]", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    import json

    remote = json.loads((tmp_path / "spark" / "summary.json").read_text())

    # the same output contract: single files, columns, dtypes, canonical pairs
    for name in ("matches.parquet", "clusters.parquet"):
        assert (tmp_path / "spark" / name).is_file(), name
        a, b = pd.read_parquet(local_dir / name), pd.read_parquet(tmp_path / "spark" / name)
        assert list(a.columns) == list(b.columns) and a.dtypes.to_dict() == b.dtypes.to_dict(), name
    spark_matches = pd.read_parquet(tmp_path / "spark" / "matches.parquet")
    assert (spark_matches["variantid1"] < spark_matches["variantid2"]).all()
    assert spark_matches.equals(spark_matches.sort_values(["variantid1", "variantid2"], ignore_index=True))
    cluster = pd.read_parquet(tmp_path / "spark" / "clusters.parquet").set_index("variantid")["cluster_id"]
    together = (
        cluster.reindex(spark_matches["variantid1"]).to_numpy()
        == cluster.reindex(spark_matches["variantid2"]).to_numpy()
    )
    assert (spark_matches["same_cluster"].to_numpy() == together).all()
    assert remote["clustering"]["matches_in_different_clusters"] == int((~together).sum())
    assert set(local) == set(remote)
    assert remote["engine"]["name"] == "spark"
    assert remote["engine"]["connected_components_rounds"] == 0  # a few thousand edges: solved on the driver
    # The candidate searches agree up to near-ties: an item's k-th and (k+1)-th neighbours a few 1e-7 apart in
    # inner product swap places when the matrix products are blocked differently (faiss over the whole
    # catalogue locally, over one cell's batch on Spark); such a pair is far below any threshold. The
    # calibration, the threshold and the matches follow to that precision.
    assert abs(remote["candidates"] - local["candidates"]) <= max(2, 5e-4 * local["candidates"])
    assert remote["calibration"]["prior"] == pytest.approx(local["calibration"]["prior"], rel=1e-3)
    assert remote["parameters"]["threshold"] == pytest.approx(local["parameters"]["threshold"], abs=1e-3)

    a, b = _pairs(local_dir / "matches.parquet"), _pairs(tmp_path / "spark" / "matches.parquet")
    assert len(a) > 0 and abs(len(a) - len(b)) <= max(2, 2e-3 * len(a))
    both = a.merge(b, on=["a", "b"], suffixes=("_local", "_spark"))
    assert len(both) >= len(a) - max(2, 2e-3 * len(a))
    assert np.abs(both["score_local"].to_numpy() - both["score_spark"].to_numpy()).max() <= 1e-3

    ca = pd.read_parquet(local_dir / "clusters.parquet").set_index("variantid")["cluster_id"]
    cb = pd.read_parquet(tmp_path / "spark" / "clusters.parquet").set_index("variantid")["cluster_id"]
    assert set(ca.index) == set(cb.index)
    assert _partition_agreement(ca, cb) >= 0.998
    assert sorted(cb.unique()) == list(range(cb.nunique()))  # numbered 0..C-1, as locally
    for key in ("clusters", "components", "largest_cluster"):
        assert remote["clustering"][key] == pytest.approx(local["clustering"][key], rel=2e-3, abs=2), key
    for key in ("pairwise_f1", "bcubed_precision", "bcubed_recall", "candidate_recall_at_10"):
        assert remote["quality"][key] == pytest.approx(local["quality"][key], abs=2e-3), key
    assert remote["quality"]["truth"] == local["quality"]["truth"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_both_engines_measure_against_a_named_product_column_alike(spark, synth_dir, gbdt_run, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data, ignore=shutil.ignore_patterns("truth.parquet", "oracle*"))
    truth = pd.read_parquet(synth_dir / "truth.parquet").set_index("variantid")["product_id"]
    attributes = pd.read_parquet(data / "attributes.parquet")
    known = np.random.default_rng(1).random(len(attributes)) < 0.6
    product = truth.reindex(attributes["variantid"]).astype("Int64").to_numpy()
    attributes["product_id"] = pd.array(np.where(known, product, None), dtype="Int64")
    attributes.to_parquet(data / "attributes.parquet")
    config = MatchConfig(k=10, token_k=0, truth_column="product_id")
    local = match_catalogue(gbdt_run, data, tmp_path / "local", config)
    remote = match_catalogue(gbdt_run, data, tmp_path / "spark", config, engine="spark", spark=spark)
    assert local["quality"]["truth"] == remote["quality"]["truth"]
    assert local["quality"]["truth"]["items_with_truth"] == int(known.sum())
    for key in ("pairwise_f1", "bcubed_precision", "bcubed_recall", "candidate_recall_at_10", "match_precision"):
        assert remote["quality"][key] == pytest.approx(local["quality"][key], abs=2e-3), key


def test_interrupted_spark_match_leaves_nothing(spark, synth_dir, gbdt_run, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(spark_engine, "ivf_search", crash)  # the engine's candidate search stage
    with pytest.raises(KeyboardInterrupt):
        match_catalogue(gbdt_run, synth_dir, tmp_path / "out", MatchConfig(k=5), engine="spark", spark=spark)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())  # the staging folder, with its intermediate data, is gone too


def test_spark_engine_without_java_says_what_to_install(tmp_path, monkeypatch, synth_dir, gbdt_run):
    from typer.testing import CliRunner

    from prodmatch.cli import app

    fake = tmp_path / "jdk" / "bin" / "java"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert engine.java_version() == 11
    with pytest.raises(ConfigError, match="Java 17 or newer"):
        engine.spark_session("local[1]")
    args = ["match", str(gbdt_run), "--data", str(synth_dir), "--out", str(tmp_path / "o"), "--engine", "spark"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "openjdk-17" in r.output
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    assert engine.java_version() is None


def test_spark_only_options_need_the_spark_engine(synth_dir, gbdt_run, tmp_path):
    from typer.testing import CliRunner

    from prodmatch.cli import app

    args = ["match", str(gbdt_run), "--data", str(synth_dir), "--out", str(tmp_path / "o"), "--master", "local[2]"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--engine spark" in r.output


@pytest.mark.slow
def test_incremental_spark_match_joins_clusters_as_the_local_engine_does(spark, synth_dir, gbdt_run, tmp_path):
    from typer.testing import CliRunner

    from prodmatch.cli import app
    from prodmatch.matching import build_catalogue_index, match_new_items
    from prodmatch.matching.spark import match_new_spark
    from test_matching import _split_data

    ids = pd.read_parquet(synth_dir / "truth.parquet")["variantid"].to_numpy()
    new_ids = np.random.default_rng(1).choice(ids, size=150, replace=False)
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    _split_data(synth_dir, old_dir, new_dir, new_ids)
    cfg = MatchConfig(k=10, token_k=0, calibrate="none")
    match_catalogue(gbdt_run, old_dir, tmp_path / "old_match", cfg)
    clusters = tmp_path / "old_match" / "clusters.parquet"
    build_catalogue_index(gbdt_run, old_dir, tmp_path / "index", cfg)
    local = match_new_items(gbdt_run, old_dir, tmp_path / "index", new_dir, clusters, tmp_path / "inc_local", cfg)

    runner = CliRunner()
    base = [str(gbdt_run), "--data", str(old_dir)]
    r = runner.invoke(app, ["index", *base, "--out", str(tmp_path / "sindex"), "--engine", "spark"])
    assert r.exit_code == 0, r.output
    args = ["match", *base, "--out", str(tmp_path / "inc_spark"), "--k", "10", "--token-k", "0"]
    args += ["--calibrate", "none", "--engine", "spark", "--no-progress"]
    r = runner.invoke(
        app, [*args, "--new", str(new_dir), "--index-dir", str(tmp_path / "index"), "--clusters", str(clusters)]
    )
    assert r.exit_code == 2 and "--engine spark" in r.output and "local engine" in r.output  # refused, says what to do
    r = runner.invoke(
        app, [*args, "--new", str(new_dir), "--index-dir", str(tmp_path / "sindex"), "--clusters", str(clusters)]
    )
    assert r.exit_code == 0, r.output
    import json

    remote = json.loads((tmp_path / "inc_spark" / "summary.json").read_text())
    for key in ("new_items", "candidates", "matches", "joined_existing_clusters", "new_clusters"):
        assert remote[key] == local[key], key
    a, b = _pairs(tmp_path / "inc_local" / "matches.parquet"), _pairs(tmp_path / "inc_spark" / "matches.parquet")
    assert (a[["a", "b"]].to_numpy() == b[["a", "b"]].to_numpy()).all()
    assert np.abs(a["score"].to_numpy() - b["score"].to_numpy()).max() <= 1e-6
    la = pd.read_parquet(tmp_path / "inc_local" / "clusters.parquet").set_index("variantid")
    sb = pd.read_parquet(tmp_path / "inc_spark" / "clusters.parquet").set_index("variantid").loc[la.index]
    assert list(la.columns) == list(sb.columns) and la.dtypes.to_dict() == sb.dtypes.to_dict()
    assert (la["is_new_cluster"] == sb["is_new_cluster"]).all()
    joined = ~la["is_new_cluster"]
    assert (la.loc[joined, "cluster_id"] == sb.loc[joined, "cluster_id"]).all()  # the same existing clusters
    assert _same_partition(la.loc[~joined, "cluster_id"].to_dict(), sb.loc[~joined, "cluster_id"].to_dict())

    # with the defaults, both engines apply the calibration and threshold of the full match the clusters came from
    prior = MatchConfig(k=10, token_k=0)
    full = match_catalogue(gbdt_run, old_dir, tmp_path / "full", prior)
    clusters = tmp_path / "full" / "clusters.parquet"
    local = match_new_items(gbdt_run, old_dir, tmp_path / "index", new_dir, clusters, tmp_path / "cal_local", prior)
    remote = match_new_spark(
        gbdt_run, old_dir, tmp_path / "sindex", new_dir, clusters, tmp_path / "cal_spark", prior, spark=spark
    )
    for summary in (local, remote):
        assert summary["parameters"]["threshold"] == full["parameters"]["threshold"]
        assert summary["calibration"]["prior"] == full["calibration"]["prior"]
        assert summary["calibration"]["applied"].startswith("the full match's")
    for key in ("candidates", "matches", "joined_existing_clusters", "new_clusters", "cluster_mates"):
        assert remote[key] == local[key], key


def test_a_failure_on_an_executor_is_one_clear_error(spark, synth_dir, gbdt_run, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from prodmatch.cli import app

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    table = pq.read_table(data / "text_and_bert.parquet")
    vectors = table["name_bert_64"].to_pylist()
    vectors[7] = vectors[7][:3]  # one vector of another length: found where the batch is parsed, on an executor
    column = pa.array(vectors, type=table.schema.field("name_bert_64").type)
    pq.write_table(
        table.set_column(table.schema.get_field_index("name_bert_64"), "name_bert_64", column),
        data / "text_and_bert.parquet",
    )
    out = tmp_path / "out"
    args = ["match", str(gbdt_run), "--data", str(data), "--out", str(out), "--engine", "spark", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "failed on an executor" in r.output and "different dimensions" in r.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.slow
def test_top_per_group_keeps_what_a_three_key_sort_keeps():
    from prodmatch.matching.spark.executors import first_k, top_per_group

    rng = np.random.default_rng(0)
    group = rng.integers(0, 300, 20_000)
    score = rng.random(20_000).astype(np.float32)
    score[rng.random(20_000) < 0.2] = 0.5  # many exact ties, some of them at a group's k-th place
    tiebreak = rng.integers(0, 1_000, 20_000)
    for k in (1, 5, 21, 200):
        kept = top_per_group(group, score, tiebreak, k)
        assert np.array_equal(np.sort(kept), np.sort(first_k(group, (tiebreak, -score), k))), k


def test_a_query_travels_once_per_region_of_its_probes():
    import pyarrow as pa

    from prodmatch.matching.spark.executors import assign_regions_fn, vector_bytes

    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(10, 4)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    region_of = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])
    vectors = rng.normal(size=(6, 4)).astype(np.float32)
    query = np.array([True, False, True, True, False, False])
    for asks in (query, np.zeros(6, bool)):  # a batch without queries too
        batch = pa.RecordBatch.from_pydict(
            {
                "id": pa.array(np.arange(6)),
                "vec": vector_bytes(vectors),
                "block": pa.array([""] * 6),
                "is_query": pa.array(asks),
                "is_target": pa.array([True] * 6),
            }
        )
        out = pa.Table.from_batches(list(assign_regions_fn(centroids, 3, region_of)([batch]))).to_pandas()
        targets, queries = out[out["role_target"]], out[~out["role_target"]]
        nearest = np.argsort(-(vectors @ centroids.T), axis=1)[:, :3]
        assert (targets["cell"].to_numpy() == nearest[:, 0]).all()
        assert (targets["region"].to_numpy() == region_of[nearest[:, 0]]).all()
        for i in np.flatnonzero(asks):  # each query: one row per region, holding its probes there
            rows = queries[queries["id"] == i]
            assert sorted(rows["region"]) == sorted(set(region_of[nearest[i]]))
            for region, cells in zip(rows["region"], rows["cells"], strict=True):
                assert sorted(cells) == sorted(c for c in nearest[i] if region_of[c] == region)
        assert len(queries) == sum(len(set(region_of[nearest[i]])) for i in np.flatnonzero(asks))


def test_ivf_cells_split_over_the_cap_and_every_probe_finds_the_exact_neighbours(
    spark, synth_dir, gbdt_run, tmp_path, local_k10
):
    from prodmatch.matching.spark import SparkOptions

    config = MatchConfig(k=10, token_k=0)
    local, _ = local_k10
    # 8 cells, each searched by every item (probes = cells), each split in chunks of at most 100 targets:
    # the IVF machinery in full, and exact by construction; connected components in rounds of Spark joins
    options = SparkOptions(cells=8, probes=8, cell_cap=100, driver_components_max_edges=0)
    remote = match_catalogue(
        gbdt_run, synth_dir, tmp_path / "spark", config, engine="spark", spark=spark, options=options
    )
    assert remote["engine"]["connected_components_rounds"] >= 1
    ivf = remote["search"]["ivf"]
    assert ivf["cells"] == 8 and ivf["cells_split"] >= 1 and ivf["largest_cell"] > 100
    assert remote["search"]["index"] == ["ivf"]
    # exact up to ties at the k-th place (what is invariant across CPU kernels, not the bits of each product)
    assert ivf["recall_vs_exact"] == pytest.approx(1.0)
    assert remote["quality"]["ann_recall_vs_exact"] == pytest.approx(1.0)
    # the same neighbours up to near-ties at the k-th place (the chunks' inner products round differently
    # from one search over the whole cell: 1 of 20,764 candidates when this was written)
    assert abs(remote["candidates"] - local["candidates"]) <= 0.001 * local["candidates"]
    assert abs(remote["matches"] - local["matches"]) <= 0.001 * local["matches"]
    # one probe of 8 cells: approximate, and the sample says by how much (the search alone, on random vectors)
    from prodmatch.matching.spark.executors import vector_bytes
    from prodmatch.matching.spark.ivf import ivf_search, recall_vs_exact

    vectors = np.random.default_rng(0).normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = spark.createDataFrame(
        pa.table({"id": np.arange(3000), "vec": vector_bytes(vectors), "block": [""] * 3000})
    ).selectExpr("*", "true AS is_query", "true AS is_target")
    top, facts, _, _ = ivf_search(spark, rows, 10, 8, 1, 20_000, 100_000, str(tmp_path / "work"), "few")
    top = top.persist()  # counted three times
    assert facts["cells"] == 8 and facts["probes"] == 1
    assert 0.3 < recall_vs_exact(spark, rows, top, 10) < 1.0


@pytest.mark.slow
def test_spark_engine_blocks_by_category_as_the_local_engine_does(spark, synth_dir, gbdt_run, tmp_path):
    import json

    config = MatchConfig(k=10, token_k=0, block_by="category")
    local = match_catalogue(gbdt_run, synth_dir, tmp_path / "local", config)
    remote = match_catalogue(gbdt_run, synth_dir, tmp_path / "spark", config, engine="spark", spark=spark)
    assert remote["search"]["blocks"] == local["search"]["blocks"] > 1
    # the same neighbours up to near-ties at the k-th place (1 of 20,765 candidates when this was written)
    assert abs(remote["candidates"] - local["candidates"]) <= 0.001 * local["candidates"]
    assert abs(remote["matches"] - local["matches"]) <= 0.001 * local["matches"]
    category = (
        pd.read_parquet(synth_dir / "attributes.parquet")
        .set_index("variantid")["categories"]
        .map(lambda raw: json.loads(raw).get("2"))
    )
    b = _pairs(tmp_path / "spark" / "matches.parquet")
    assert (category.loc[b["a"]].to_numpy() == category.loc[b["b"]].to_numpy()).all()  # never across categories


@pytest.mark.slow
@pytest.mark.parametrize("one_to_one", [False, True], ids=["many", "one-to-one"])
def test_spark_links_two_sources_as_the_local_engine_does(spark, synth_dir, gbdt_run, tmp_path, one_to_one):
    from prodmatch.matching import link_sources
    from prodmatch.synth import split_sources

    left_dir, right_dir = tmp_path / "left", tmp_path / "right"
    split_sources(synth_dir, left_dir, right_dir, one_per_product=one_to_one, seed=1)
    # the shared rare values too (many-to-many): pairs of two sources only there as well
    config = MatchConfig(k=10, token_k=10 if not one_to_one else 0, one_to_one=one_to_one)
    local = link_sources(gbdt_run, left_dir, right_dir, tmp_path / "local", config)
    remote = link_sources(gbdt_run, left_dir, right_dir, tmp_path / "spark", config, engine="spark", spark=spark)
    assert remote["link"] == local["link"] and remote["search"]["linked_sources"] == 2
    for name in ("matches.parquet", "clusters.parquet"):
        a, b = pd.read_parquet(tmp_path / "local" / name), pd.read_parquet(tmp_path / "spark" / name)
        assert list(a.columns) == list(b.columns) and a.dtypes.to_dict() == b.dtypes.to_dict(), name
    matches = pd.read_parquet(tmp_path / "spark" / "matches.parquet")
    clusters = pd.read_parquet(tmp_path / "spark" / "clusters.parquet")
    assert len(matches) > 50 and (matches["source1"] != matches["source2"]).all()
    side = clusters.set_index("variantid")["source"]
    assert (side.reindex(matches["variantid1"]).to_numpy() == matches["source1"].to_numpy()).all()
    assert (clusters["source"] == "left").sum() == local["link"]["items"]["left"]
    if one_to_one:
        assert clusters.groupby(["cluster_id", "source"]).size().max() == 1
        assert remote["clustering"]["one_to_one_pairs"] == pytest.approx(
            local["clustering"]["one_to_one_pairs"], rel=5e-3, abs=2
        )
    assert abs(remote["candidates"] - local["candidates"]) <= max(2, 5e-4 * local["candidates"])
    assert remote["parameters"]["threshold"] == pytest.approx(local["parameters"]["threshold"], abs=1e-3)
    a, b = _pairs(tmp_path / "local" / "matches.parquet"), _pairs(tmp_path / "spark" / "matches.parquet")
    assert len(a.merge(b, on=["a", "b"])) >= len(a) - max(2, 2e-3 * len(a))
    ca = pd.read_parquet(tmp_path / "local" / "clusters.parquet").set_index("variantid")["cluster_id"]
    assert _partition_agreement(ca, clusters.set_index("variantid")["cluster_id"]) >= 0.998
    for key in ("pairwise_f1", "bcubed_precision", "bcubed_recall", "candidate_recall_at_10"):
        assert remote["quality"][key] == pytest.approx(local["quality"][key], abs=2e-3), key
