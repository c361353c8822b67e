"""Candidate search on Spark: coarse IVF centroids, the distributed search, its recall against exact search, and the shared rare values."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pyarrow as pa

from prodmatch.config import MatchConfig
from prodmatch.matching.spark.executors import (
    assign_regions_fn,
    column_vectors,
    exact_top_fn,
    search_region_fn,
    token_top_fn,
)
from prodmatch.matching.spark.session import join_path, materialise

log = logging.getLogger(__name__)


def hash_sample(frame, fraction: float, seed: int = 0):
    """The rows of ``frame`` whose id hashes (with ``seed``) into the lowest ``fraction``: the same rows on every
    run, whatever the partitioning and the order rows arrive in (Spark's ``sample`` draws per row in arrival
    order)."""
    from pyspark.sql import functions as F

    if fraction >= 1.0:
        return frame
    scale = 1 << 30
    bucket = F.pmod(F.xxhash64(F.col("id"), F.lit(seed)), F.lit(scale))
    return frame.where(bucket < F.lit(int(fraction * scale)))


def fixed_sample(frame, fraction: float, n: int, seed: int = 0) -> pa.Table:
    """At most ``n`` rows of ``frame`` on the driver, the same on every run: :func:`hash_sample`, sorted by id and,
    where it drew more than ``n``, cut by a seeded draw. Spark's ``sample`` and ``limit`` depend on the order rows
    reach a task or the driver, which a shuffle leaves to the executors' timing."""
    picked = hash_sample(frame, fraction, seed).toArrow().sort_by("id")
    if picked.num_rows > n:
        keep = np.sort(np.random.default_rng(seed).choice(picked.num_rows, n, replace=False))
        picked = picked.take(pa.array(keep))
    return picked


def train_centroids(targets, cells: int, sample: int, seed: int = 0) -> np.ndarray:
    """(cells, d) unit centroids by faiss spherical k-means on at most ``sample`` target vectors, brought to
    the driver (the one sample the driver holds); fewer cells when the sample is small.

    The sample is the same on every run (:func:`fixed_sample`): k-means depends on its input and its order, so
    with Spark's own sampling the cells, and the candidates, moved from run to run."""
    import faiss

    n_targets = targets.count()
    fraction = min(1.0, sample / max(n_targets, 1))
    picked = fixed_sample(targets.select("id", "vec"), fraction, sample, seed)
    train = column_vectors(picked, "vec")  # no Python floats
    cells = max(1, min(cells, len(train) // 4))
    if cells == 1:
        return np.zeros((1, train.shape[1]), dtype=np.float32)
    kmeans = faiss.Kmeans(train.shape[1], cells, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.train(train)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def cell_regions(centroids: np.ndarray, regions: int, seed: int = 0) -> np.ndarray:
    """(cells,) the region of every cell: its centroid's cluster among ``regions`` (faiss spherical k-means of
    the centroids; every cell its own where there are no more cells than regions). A query's probes are the
    cells nearest it, so they mostly share a region: searched region by region, a query travels to one or two
    regions instead of once per probe, and most of its lists are merged where they are found."""
    import faiss

    cells = len(centroids)
    if regions >= cells:
        return np.arange(cells, dtype=np.int64)
    if regions <= 1:
        return np.zeros(cells, dtype=np.int64)
    # few points per region is expected here (faiss warns below 39)
    kmeans = faiss.Kmeans(
        centroids.shape[1], regions, niter=20, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1
    )
    kmeans.train(np.ascontiguousarray(centroids, dtype=np.float32))
    return kmeans.index.search(np.ascontiguousarray(centroids, dtype=np.float32), 1)[1].ravel().astype(np.int64)


def ivf_search(
    spark,
    rows,
    k: int,
    cells: int,
    probes: int,
    cell_cap: int,
    sample: int,
    work: str,
    tag: str,
    *,
    centroids: np.ndarray | None = None,
    queries_are_targets: bool = True,
    ranked: bool = False,
):
    """Every query's top-k targets of its own block, by a cell-wise exact search (see the module docstring).

    ``rows``: (id, vec, block, is_query, is_target). ``centroids``: given (a saved index's), else trained
    on the targets when ``cells`` > 1. ``queries_are_targets``: a query finds itself, so k + 1 are searched
    and itself dropped (as the local engine does). Returns (DataFrame of (q, t, s) with q != t, at most k per
    q; facts; the target rows' (id, cell, region, block) when there is more than one cell, else None). ``ranked``:
    with each target's place ``r`` in its query's list (1 first, counting the query itself where it is a
    target, as the local engine's search lists do).
    """
    from pyspark.sql import functions as F

    dim = len(rows.select("vec").first()[0]) // 4  # float32 bytes
    if centroids is None:
        centroids = (
            train_centroids(rows.where("is_target"), cells, sample)
            if cells > 1
            else np.zeros((1, dim), dtype=np.float32)
        )
    cells = len(centroids)
    id_type = rows.schema["id"].dataType.simpleString()
    groups = int(spark.conf.get("spark.sql.shuffle.partitions"))
    region_of = cell_regions(centroids, max(groups, math.ceil(rows.where("is_target").count() / (4 * cell_cap))))
    assigned = rows.mapInArrow(
        assign_regions_fn(centroids, probes if cells > 1 else 1, region_of),
        f"id {id_type}, vec binary, block string, cell bigint, region bigint, cells array<bigint>, role_target boolean",
    )
    assigned = materialise(spark, assigned, join_path(work, f"{tag}_assigned"))
    targets = assigned.where("role_target")
    sizes = targets.groupBy("block", "cell", "region").count()
    chunks = sizes.select("block", "cell", "region", F.ceil(F.col("count") / F.lit(cell_cap)).alias("chunks"))
    stats = sizes.agg(
        F.count("*").alias("cells"), F.max("count").alias("largest"), F.countDistinct("block").alias("blocks")
    ).first()
    split = chunks.where("chunks > 1").count()
    # a query visits every chunk of its region (a chunk of a cell over the cap), and no region without a target
    # of its block
    region_chunks = chunks.groupBy("block", "region").agg(F.max("chunks").alias("chunks"))
    t_part = targets.join(chunks.drop("region"), ["block", "cell"]).withColumn(
        "chunk", F.pmod(F.xxhash64("id"), F.col("chunks"))
    )
    q_part = (
        assigned.where(~F.col("role_target"))
        .join(F.broadcast(region_chunks) if len(region_of) == 1 else region_chunks, ["block", "region"])
        .withColumn("chunk", F.explode(F.sequence(F.lit(0).cast("bigint"), F.col("chunks") - 1)))
    )
    cols = ["id", "vec", "block", "region", "chunk", "cell", "cells", "role_target"]
    cell_rows = t_part.select(*cols).unionByName(q_part.select(*cols))
    found = cell_rows.groupBy("block", "region", "chunk").applyInArrow(
        search_region_fn(k), f"q {id_type}, t {id_type}, s float"
    )
    from pyspark.sql import Window

    best = Window.partitionBy("q").orderBy(F.col("s").desc(), F.col("t"))
    top = found.withColumn("r", F.row_number().over(best)).where(F.col("r") <= k + int(queries_are_targets))
    top = top.where(F.col("q") != F.col("t")).select("q", "t", "s", *(["r"] if ranked else []))
    facts = {
        "blocks": int(stats["blocks"] or 0),
        "cells": int(stats["cells"] or 0),
        "probes": probes if cells > 1 else 1,
        "largest_cell": int(stats["largest"] or 0),
        "cells_split": int(split),
        "cell_cap": cell_cap,
        "regions": len(np.unique(region_of)),
        "dimensions": dim,
    }
    home = assigned.where("role_target").select("id", "cell", "region", "block") if cells > 1 else None
    return top, facts, home, centroids


# Inner products of unit vectors this close are a tie: float32 products blocked differently (by chunk, by CPU
# kernel) round apart by about 1e-7.
TIE_TOLERANCE = 1e-5


def recall_vs_exact(spark, rows, top, k: int, sample: int = 2000, seed: int = 0, queries=None) -> float | None:
    """The share of the exact top-k neighbours (same block, itself left out) of a random sample of items that
    the IVF search returned, up to ties at the k-th place: the sample's vectors (at most ``sample``) are the
    driver's only load. ``queries``: the rows the sample is drawn from, where they are not ``rows`` (linking:
    each item queries with the other source's block)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    queries = rows if queries is None else queries
    n = queries.count()
    picked = fixed_sample(queries.select("id", "vec", "block"), min(1.0, 2 * sample / max(n, 1)), sample, seed)
    if not picked.num_rows:
        return None
    ids = picked["id"].to_pylist()
    queries = column_vectors(picked, "vec")
    blocks = np.asarray(picked["block"].to_pylist(), dtype=object)
    id_type = rows.schema["id"].dataType.simpleString()
    found = rows.select("id", "vec", "block").mapInArrow(
        exact_top_fn(queries, blocks, k + 1), f"qi bigint, t {id_type}, s float"
    )
    lookup = spark.createDataFrame(pd.DataFrame({"qi": np.arange(len(ids)), "q": ids}), f"qi bigint, q {id_type}")
    order = Window.partitionBy("q").orderBy(F.col("s").desc(), F.col("t"))
    exact = (
        found.join(F.broadcast(lookup), "qi")
        .where(F.col("q") != F.col("t"))
        .withColumn("r", F.row_number().over(order))
        .where(F.col("r") <= k)
        .select("q", "t", "s")
        .persist()  # three counts below; each read every target again
    )
    try:
        return _recall(exact, top, k)
    finally:
        exact.unpersist()


def _recall(exact, top, k: int) -> float | None:
    from pyspark.sql import functions as F

    total = exact.count()
    if not total:
        return None
    hits = exact.join(top.select("q", "t"), ["q", "t"], "left_semi").count()
    # Up to ties: an exact neighbour the search missed, where the search found k others and the k-th of them
    # is within TIE_TOLERANCE of it, is a near-tie at the k-th place (the search's blocked products round
    # differently from the check's, by CPU kernel), not a miss: the same neighbours up to ties.
    kth = top.groupBy("q").agg(F.min("s").alias("kth"), F.count("*").alias("found")).where(F.col("found") >= k)
    missed = exact.join(top.select("q", "t"), ["q", "t"], "left_anti").join(kth, "q")
    ties = missed.where(F.col("kth") >= F.col("s") - TIE_TOLERANCE).count()
    return (hits + ties) / total


def search_rows(vec, block, is_query, linking: bool):
    """(id, vec, block, is_query, is_target) rows of one IVF search over ``vec``'s items. Linking, every item
    is a target in its block of its own source and, where ``is_query``, a query in its block of the other
    source, so each query meets the other source's items only."""
    from pyspark.sql import functions as F

    if not linking:
        return vec.select("id", "vec", block.alias("block"), is_query.alias("is_query"), F.lit(True).alias("is_target"))

    def tagged(source):
        return F.concat_ws("|", block, source.cast("string"))

    queries = vec.where(is_query).select(
        "id",
        "vec",
        tagged(1 - F.col("source")).alias("block"),
        F.lit(True).alias("is_query"),
        F.lit(False).alias("is_target"),
    )
    targets = vec.select(
        "id",
        "vec",
        tagged(F.col("source")).alias("block"),
        F.lit(False).alias("is_query"),
        F.lit(True).alias("is_target"),
    )
    return queries.unionByName(targets)


def shared_values(spark, vec, config: MatchConfig, n_targets: int, work: str, linking: bool = False):
    """:func:`prodmatch.blocking.shared_token_neighbours` as Spark joins: each item's ``token_k`` items
    sharing the heaviest rare tokens (weight log((targets + 1) / holders)), ties broken by the inner product
    of the search vectors, then by id. ``linking``: among the other source's items (``vec`` has ``source``;
    a token's rarity still counts every item that holds it).

    The (query, item, weight) pairs are ranked in groups of queries, each group's pairs and the vectors of the
    items they name meeting in one ``cogroup`` call (:func:`token_top_fn`): joining both vectors to every pair
    shipped each vector once per pair, a few times more data than the pairs."""
    from pyspark.sql import functions as F

    held = vec.where("searchable").select("id", *(["source"] if linking else []), F.explode("tokens").alias("token"))
    holders = held.groupBy("token").agg(F.count("*").alias("df"))
    totals = holders.agg(
        F.count("*").alias("tokens"),
        F.sum((F.col("df") > config.token_max_block).cast("int")).alias("purged"),
        F.sum(((F.col("df") >= 2) & (F.col("df") <= config.token_max_block)).cast("int")).alias("kept"),
    ).first()
    with_tokens = held.select("id").distinct().count()
    useful = holders.where((F.col("df") >= 2) & (F.col("df") <= config.token_max_block)).select(
        "token", F.log(F.lit(float(n_targets + 1)) / F.col("df")).cast("float").alias("w")
    )
    kept = held.join(useful, "token")
    other = (F.col("a.source") != F.col("b.source")) if linking else (F.col("a.id") != F.col("b.id"))
    pairs = (
        kept.alias("a")
        .join(kept.select("token", "id", *(["source"] if linking else [])).alias("b"), "token")
        .where(other)
        .groupBy(F.col("a.id").alias("q"), F.col("b.id").alias("j"))
        .agg(F.sum("w").cast("float").alias("w"))  # float32, as the local engine sums them
    )
    groups = int(spark.conf.get("spark.sql.shuffle.partitions"))
    path = join_path(work, "token_pairs")
    materialise(spark, pairs.withColumn("part", F.pmod(F.xxhash64("q"), F.lit(groups))), path)
    pairs, seen = spark.read.parquet(path), spark.read.parquet(path)  # two reads, two plans: cogroup's sides
    needed = seen.select("part", F.col("q").alias("id")).unionByName(seen.select("part", F.col("j").alias("id")))
    group_items = needed.distinct().join(vec.select("id", "vec"), "id")
    id_type = vec.schema["id"].dataType.simpleString()
    top = (
        pairs.groupBy("part")
        .cogroup(group_items.groupBy("part"))
        .applyInArrow(token_top_fn(config.token_k), f"q {id_type}, j {id_type}")
    )
    report = {
        "k": config.token_k,
        "max_block": config.token_max_block,
        "items_with_tokens": int(with_tokens),
        "tokens": int(totals["tokens"] or 0),
        "tokens_purged": int(totals["purged"] or 0),
        "tokens_kept": int(totals["kept"] or 0),
    }
    out = top.select(F.least("q", "j").alias("id1"), F.greatest("q", "j").alias("id2"))
    return out, report
