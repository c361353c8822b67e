"""The pair graph on Spark: connected components by min-label propagation, numbered clusters, the cluster report."""

from __future__ import annotations

import logging
import math

import numpy as np

from prodmatch.clustering import ClusterReport
from prodmatch.matching.spark.executors import GUARD_COUNTS
from prodmatch.matching.spark.session import join_path, materialise

log = logging.getLogger(__name__)


def connected_components(
    spark,
    edges,
    checkpoint_dir: str,
    *,
    checkpoint_every: int = 3,
    max_rounds: int | None = None,
    driver_max_edges: int = 0,
):
    """Connected components of an undirected edge list in Spark: (labels, rounds).

    ``edges`` has columns ``src`` and ``dst`` (any orderable id type); ``labels`` has ``id`` and
    ``component``, the smallest id of its component, for every node with an edge (self-loops ignored).

    The alternating large-star / small-star algorithm of Kiveris et al. ("Connected Components in
    MapReduce and Beyond", 2014): large-star links every neighbour larger than a node to the smallest of
    its neighbourhood, small-star links a node and its smaller neighbours to the smallest of them; each
    keeps the components and the pair shrinks them until every component is a star around its smallest
    id. Plain min-label propagation needs as many rounds as the longest shortest path (a chain of a
    million listings: a million rounds); this needs O(log^2 n) rounds (proved there), in practice about
    log2 of the longest path (measured: a chain of 4,000 nodes in 10
    rounds with its ids shuffled, 12 with them ascending, a chain of 20,000 in 12). The edges stay at most
    as many as the input's. The lineage is cut every ``checkpoint_every`` rounds by writing the edges to
    parquet under ``checkpoint_dir`` and reading them back, so the query plan never grows with the rounds.

    A graph of at most ``driver_max_edges`` edges (16 bytes each) is brought to the driver instead and solved
    there with scipy in one pass (0 rounds): each round of the distributed algorithm is a few Spark jobs, which
    cost more than the whole graph of a small catalogue does on one machine.

    Raises:
        RuntimeError: not converged within ``max_rounds`` (default log2(nodes)^2 + 16, the proved order),
            naming the edges still moving.
    """
    from pyspark.sql import functions as F

    def undirected(df):
        return df.union(df.select(F.col("v").alias("u"), F.col("u").alias("v"))).distinct()

    def large_star(e):
        nb = undirected(e)
        low = nb.groupBy("u").agg(F.least(F.min("v"), F.first("u")).alias("m"))
        return nb.where(F.col("v") > F.col("u")).join(low, "u").select(F.col("v").alias("u"), F.col("m").alias("v"))

    def small_star(e):
        nb = undirected(e).where(F.col("v") < F.col("u"))  # each node's smaller neighbours
        low = nb.groupBy("u").agg(F.min("v").alias("m"))
        linked = nb.join(low, "u").where(F.col("v") != F.col("m")).select(F.col("v").alias("u"), F.col("m").alias("v"))
        return linked.union(low.select("u", F.col("m").alias("v"))).distinct()

    e = edges.select(F.col("src").alias("u"), F.col("dst").alias("v")).where(F.col("u") != F.col("v"))
    e = materialise(
        spark,
        e.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v")).distinct(),
        join_path(checkpoint_dir, "cc_0"),
    )
    if driver_max_edges > 0:
        n_edges = e.count()
        if n_edges <= driver_max_edges:
            log.info("connected components of %d edges on the driver (at most %d go there)", n_edges, driver_max_edges)
            return components_on_driver(spark, e), 0
    nodes = e.select("u").union(e.select("v")).distinct().count()
    cap = max_rounds or math.ceil(math.log2(nodes + 2)) ** 2 + 16
    rounds = 0
    while True:
        rounds += 1
        e = small_star(large_star(e))
        if rounds % checkpoint_every == 0:
            e = materialise(spark, e, join_path(checkpoint_dir, f"cc_{rounds}"))
        else:
            e = e.localCheckpoint(eager=True)
        # done when every component is a star around its smallest node: no node is both a leaf (u, the
        # larger end) and a centre (v) of an edge
        moving = e.select(F.col("u").alias("v")).join(e, "v", "left_semi").count()
        log.info("connected components: round %d, %d nodes still linked to a non-root", rounds, moving)
        if moving == 0:
            break
        if rounds >= cap:
            raise RuntimeError(
                f"connected components did not converge in {rounds} rounds ({moving:,} nodes still moving among "
                f"{nodes:,}); the algorithm's bound is O(log^2 n) rounds: please report this graph"
            )
    centres = e.select(F.col("v").alias("id"), F.col("v").alias("component")).distinct()
    labels = e.select(F.col("u").alias("id"), F.col("v").alias("component")).union(centres)
    return labels, rounds


def components_on_driver(spark, edges):
    """(id, component) of an edge list (``u``, ``v``) brought to the driver: scipy's connected components, each
    labelled with its smallest id, as the distributed algorithm labels them."""
    import pyarrow as pa
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components as components

    table = edges.select("u", "v").toArrow()
    u, v = (table[c].to_numpy(zero_copy_only=False) for c in ("u", "v"))
    ids, inverse = np.unique(np.concatenate([u, v]), return_inverse=True)  # sorted: a component's first is its least
    graph = sp.coo_matrix((np.ones(len(u), dtype=np.int8), (inverse[: len(u)], inverse[len(u) :])), (len(ids),) * 2)
    _, label = components(graph, directed=False)
    found, first = np.unique(label, return_index=True)
    least = np.empty(len(found), dtype=ids.dtype)
    least[found] = ids[first]
    kind = table.schema.field("u").type
    return spark.createDataFrame(
        pa.table(
            {
                "id": pa.array(ids.tolist() if ids.dtype == object else ids, kind),
                "component": pa.array(least[label].tolist() if ids.dtype == object else least[label], kind),
            }
        )
    )


def consecutive_ids(spark, reps, path: str):
    """(rep, cluster_id): the distinct representatives numbered 0..C-1 in their sort order, without a
    single-partition window: per-partition counts (P numbers) give each partition its offset."""
    from pyspark.sql import functions as F

    ordered = materialise(spark, reps.distinct().orderBy("rep"), path)
    tagged = ordered.select("rep", F.spark_partition_id().alias("pid"), F.monotonically_increasing_id().alias("mid"))
    counts = {r["pid"]: r["count"] for r in tagged.groupBy("pid").count().collect()}
    offsets, total = {}, 0
    for pid in sorted(counts):
        offsets[pid] = total
        total += counts[pid]
    offset_of = F.create_map(*[x for pid, off in offsets.items() for x in (F.lit(pid), F.lit(off))])
    low = F.col("mid").bitwiseAND(F.lit((1 << 33) - 1))  # the record's place in its partition
    return tagged.select("rep", (offset_of[F.col("pid")] + low).cast("bigint").alias("cluster_id")), total


def cluster_report(clusters, guarded, edges: int, n_clusters: int) -> ClusterReport:
    from pyspark.sql import functions as F

    sums = guarded.agg(*[F.sum(c).alias(c) for c in GUARD_COUNTS]).first()
    sizes = clusters.groupBy("cluster_id").count().groupBy(F.col("count").alias("size")).count().toPandas()
    sizes = sizes.set_index("size")["count"].sort_index()
    report = ClusterReport(
        edges=edges,
        components=int(sums["components"] or 0),
        components_relinked=int(sums["relinked"] or 0),
        components_split=int(sums["split"] or 0),
        components_too_large=int(sums["too_large"] or 0),
        one_to_one_pairs=int(sums["one_to_one_pairs"] or 0),
        components_matched_greedily=int(sums["matched_greedily"] or 0),
        clusters=n_clusters,
        items_in_multi_item_clusters=int((sizes.index[sizes.index > 1] * sizes[sizes.index > 1]).sum()),
        largest_cluster=int(sizes.index.max()) if len(sizes) else 0,
    )
    report.sizes = {str(k): int(v) for k, v in sizes.items() if k <= 10}
    report.sizes[">10"] = int(sizes[sizes.index > 10].sum())
    return report
