"""The truth on Spark: where the items' true products are, and the candidates' counts against them (the output files' quality is :func:`prodmatch.matching.evaluate.evaluate_outputs`, whichever engine wrote them)."""

from __future__ import annotations

import logging

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


def candidate_truth_counts(
    spark, truths: list[tuple[str, str]], scored, threshold: float, id_type: str, id_column: str = "variantid"
) -> tuple[int, int]:
    """(candidate pairs of one product, those of them matched) over the items with a product in ``truths``
    ((path, column), one per source): the counts :func:`prodmatch.matching.evaluate.candidate_figures` turns into
    the candidates' recall, as the local engine counts them."""
    from functools import reduce

    from pyspark.sql import functions as F

    products = reduce(
        lambda a, b: a.unionByName(b),
        [
            spark.read.parquet(p)
            .where(F.col(c).isNotNull())
            .select(F.col(id_column).cast(id_type).alias("variantid"), F.col(c).cast("string").alias("p"))
            for p, c in truths
        ],
    ).distinct()
    p1 = products.withColumnRenamed("variantid", "id1").withColumnRenamed("p", "p1")
    p2 = products.withColumnRenamed("variantid", "id2").withColumnRenamed("p", "p2")
    judged = scored.join(p1, "id1").join(p2, "id2").withColumn("same", F.col("p1") == F.col("p2"))
    c = judged.agg(
        F.sum(F.col("same").cast("int")).alias("same"),
        F.sum((F.col("same") & (F.col("score") >= threshold) & (F.col("evidence") != 0)).cast("int")).alias("tp"),
    ).first()
    return int(c["same"] or 0), int(c["tp"] or 0)
