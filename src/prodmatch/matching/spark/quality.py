"""Quality against a known truth on Spark, from aggregates: pairwise and B-cubed figures without collecting the catalogue."""

from __future__ import annotations

import logging

from prodmatch.config import MatchConfig
from prodmatch.io import (
    TRUTH_FILE,
)
from prodmatch.matching.quality import first_with_column
from prodmatch.matching.spark.session import FileSystem, join_path

log = logging.getLogger(__name__)


def spark_truth_source(spark, data_dir: str, column: str | None, id_column: str) -> tuple[str, str] | None:
    """:func:`prodmatch.matching.quality.truth_source` on any path Spark reads: (path, column) of the items'
    true products, or None."""
    fs = FileSystem(spark, data_dir)
    if column is None:
        path = join_path(data_dir, TRUTH_FILE)
        return (path, "product_id") if fs.exists(path) else None
    paths = sorted(p for p in fs.entries(data_dir) if p.rstrip("/").endswith(".parquet"))
    schemas = ((path, spark.read.parquet(path).columns) for path in paths)
    return first_with_column(schemas, column, id_column, data_dir), column


def quality_stage(
    spark,
    truth: tuple[str, str] | list[tuple[str, str]],
    clusters,
    scored,
    threshold: float,
    config: MatchConfig,
    id_type: str,
    n: int,
    id_column: str = "variantid",
) -> dict:
    """:func:`prodmatch.matching.quality.truth_quality` as Spark aggregates: over the items with a product.
    Linking two sources (``clusters`` has ``source``; ``truth`` one (path, column) per source), the pairwise
    figures count the pairs of two sources only, as the local engine's."""
    from functools import reduce

    from pyspark.sql import functions as F

    truths = truth if isinstance(truth, list) else [truth]
    path, column = truths[0]
    products = reduce(
        lambda a, b: a.unionByName(b),
        [
            spark.read.parquet(p)
            .where(F.col(c).isNotNull())
            .select(F.col(id_column).cast(id_type).alias("variantid"), F.col(c).cast("string").alias("p"))
            for p, c in truths
        ],
    ).distinct()
    frame = clusters.join(products, "variantid")
    linking = "source" in clusters.columns
    facts = {"file": path.rsplit("/", 1)[-1], "column": column, "items_with_truth": frame.count(), "items": n}
    if facts["items_with_truth"] == 0:
        log.warning("%s: no item of the catalogue has a %r; quality is not computed", path, column)
        return {"truth": facts}
    truth = products

    def squares(*keys) -> int:
        return int(frame.groupBy(*keys).count().agg(F.sum(F.col("count") * F.col("count"))).first()[0] or 0)

    def pairs_of(*keys) -> float:  # pairs of items sharing the keys (of two sources, when linking)
        alike = squares(*keys, "source") if linking else facts["items_with_truth"]
        return (squares(*keys) - alike) / 2

    both = frame.groupBy("cluster_id", "p").count()
    tp = pairs_of("cluster_id", "p")
    predicted = pairs_of("cluster_id")
    true = pairs_of("p")
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    c_size = frame.groupBy("cluster_id").agg(F.count("*").alias("cs"))
    p_size = frame.groupBy("p").agg(F.count("*").alias("ps"))
    bc = (
        both.join(c_size, "cluster_id")
        .join(p_size, "p")
        .agg(
            (F.sum(F.col("count") * F.col("count") / F.col("cs")) / F.sum("count")).alias("bp"),
            (F.sum(F.col("count") * F.col("count") / F.col("ps")) / F.sum("count")).alias("br"),
        )
        .first()
    )
    p1 = truth.withColumnRenamed("variantid", "id1").withColumnRenamed("p", "p1")
    p2 = truth.withColumnRenamed("variantid", "id2").withColumnRenamed("p", "p2")
    judged = scored.join(p1, "id1").join(p2, "id2").withColumn("same", F.col("p1") == F.col("p2"))
    c = judged.agg(
        F.sum(F.col("same").cast("int")).alias("same"),
        F.sum((F.col("same") & (F.col("score") >= threshold)).cast("int")).alias("tp"),
        F.sum((F.col("score") >= threshold).cast("int")).alias("kept"),
    ).first()
    same, tp_m, kept = int(c["same"] or 0), int(c["tp"] or 0), int(c["kept"] or 0)
    return {
        "truth": facts,
        f"candidate_recall_at_{config.k}": same / true if true else None,
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "bcubed_precision": float(bc["bp"]),
        "bcubed_recall": float(bc["br"]),
        "match_precision": tp_m / kept if kept else None,
        "match_recall_among_candidates": tp_m / same if same else None,
    }
