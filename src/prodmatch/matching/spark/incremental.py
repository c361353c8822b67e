"""Incremental matching on Spark: save a catalogue's vectors and centroids, then match newly listed items against it."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict

import numpy as np
import pandas as pd

from prodmatch.candidates import vector_kind
from prodmatch.config import MatchConfig
from prodmatch.errors import ConfigError, DataError
from prodmatch.io import (
    CLUSTERS_FILE,
    MATCHES_FILE,
    SUMMARY_FILE,
)
from prodmatch.matching.incremental import INDEX_META_FILE, MATES_MAX_CLUSTER
from prodmatch.matching.output import split_report
from prodmatch.matching.spark.columns import MATCHES_ORDER, gate_column, matches_table, new_items_calibration
from prodmatch.matching.spark.engine import cluster_stage, items_of, load_job, score_stage, vectors_of
from prodmatch.matching.spark.graph import cluster_report, consecutive_ids
from prodmatch.matching.spark.ivf import ivf_search, train_centroids
from prodmatch.matching.spark.session import (
    FileSystem,
    SparkOptions,
    fail_staging,
    finish_staging,
    join_path,
    materialise,
    read_json,
    stage_output,
    start_session,
    write_table,
)

log = logging.getLogger(__name__)


INDEX_VECTORS = "vectors.parquet"


INDEX_CENTROIDS = "centroids.parquet"


def build_spark_index(
    run_dir,
    data_dir,
    out_dir,
    config: MatchConfig | None = None,
    *,
    spark=None,
    master: str | None = None,
    spark_conf: dict | None = None,
    options: SparkOptions | None = None,
    overwrite: bool = False,
) -> dict:
    """The catalogue's item vectors and coarse centroids, saved for matching new items later with
    :func:`match_new_spark`: ``vectors.parquet`` (id, vec, searchable, category), ``centroids.parquet`` and
    ``index.json``. One cell (exact search) where the local engine would search exactly."""
    config = config or MatchConfig()
    options = options or SparkOptions()
    spark, partitions = start_session(spark, master, spark_conf, options)
    data_dir, out_dir = str(data_dir).rstrip("/"), str(out_dir).rstrip("/")
    fs, staging, work = stage_output(spark, out_dir, overwrite, INDEX_META_FILE, options)
    t0 = time.perf_counter()
    try:
        job = load_job(spark, run_dir, data_dir, partitions, work)
        vec, n, n_searchable = vectors_of(job, job.items, "vectors")
        exact = config.index_kind(n_searchable) == "flat"
        cells = 1 if exact and options.cells is None else (options.cells or max(1, round(math.sqrt(n_searchable))))
        dim = len(vec.select("vec").first()[0]) // 4  # float32 bytes
        targets = vec.where("searchable")
        centroids = (
            train_centroids(targets, cells, options.centroid_sample)
            if cells > 1
            else np.zeros((1, dim), dtype=np.float32)
        )
        tmp_out = join_path(staging, "out")
        vec.select("id", "vec", "searchable", "category").write.parquet(join_path(tmp_out, INDEX_VECTORS))
        frame = pd.DataFrame({"cell": np.arange(len(centroids)), "vec": [c.tolist() for c in centroids]})
        spark.createDataFrame(frame, "cell bigint, vec array<float>").coalesce(1).write.parquet(
            join_path(tmp_out, INDEX_CENTROIDS)
        )
        meta = {
            "engine": "spark",
            "run_dir": str(run_dir),
            "data": data_dir,
            "items": n,
            "searchable_items": n_searchable,
            "item_vectors": vector_kind(job.model),
            "index": "flat" if len(centroids) == 1 else "ivf",
            "cells": len(centroids),
            "id_type": job.id_type,
            "parameters": config.to_dict(),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        FileSystem(spark, tmp_out).write_text(join_path(tmp_out, INDEX_META_FILE), json.dumps(meta, indent=2))
        finish_staging(fs, staging, work, tmp_out, out_dir)
    except BaseException as e:
        fail_staging(fs, staging, work, e)
        raise
    return meta


def match_new_spark(
    run_dir,
    data_dir,
    index_dir,
    new_dir,
    clusters_path,
    out_dir,
    config: MatchConfig | None = None,
    *,
    spark=None,
    master: str | None = None,
    spark_conf: dict | None = None,
    options: SparkOptions | None = None,
    overwrite: bool = False,
) -> dict:
    """:func:`prodmatch.matching.incremental.match_new_items` on Spark, against an index saved by
    :func:`build_spark_index`, with the same join rule: a group of new items joins the existing cluster
    it matches best on average over all that cluster's members (unscored pairs count as 0), if that
    average reaches the threshold; else it is a new cluster. Existing clusters are never merged or split."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    config = config or MatchConfig()
    options = options or SparkOptions()
    if config.rescore:
        raise ConfigError("rescore applies to a full match; incremental matching scores with run_dir only")
    spark, partitions = start_session(spark, master, spark_conf, options)
    data_dir, out_dir = str(data_dir).rstrip("/"), str(out_dir).rstrip("/")
    index_dir, new_dir, clusters_path = (str(x).rstrip("/") for x in (index_dir, new_dir, clusters_path))
    meta_path = join_path(index_dir, INDEX_META_FILE)
    if not FileSystem(spark, meta_path).exists(meta_path):
        raise ConfigError(f"{meta_path} not found: build the index with `prodmatch index --engine spark`")
    meta = read_json(spark, meta_path)
    if meta.get("engine") != "spark":
        raise ConfigError(
            f"{index_dir} is a local engine's index (faiss); with --engine spark build one with "
            "`prodmatch index RUN --data DATA --out DIR --engine spark`"
        )
    fs, staging, work = stage_output(spark, out_dir, overwrite, SUMMARY_FILE, options)
    t0 = time.perf_counter()
    try:
        job = load_job(spark, run_dir, data_dir, partitions, work)
        id_col, id_type = job.data_config.id_column, job.id_type
        index_vec = spark.read.parquet(join_path(index_dir, INDEX_VECTORS)).withColumn("id", F.col("id").cast(id_type))
        if index_vec.schema["vec"].dataType.simpleString() != "binary":
            raise ConfigError(
                f"{index_dir} holds its vectors as {index_vec.schema['vec'].dataType.simpleString()}, as an earlier "
                "prodmatch wrote them: rebuild it with `prodmatch index --engine spark`"
            )
        old_ids = job.items.select(F.col(id_col).alias("id"))
        stray = (
            old_ids.join(index_vec, "id", "left_anti").limit(1).count()
            + index_vec.join(old_ids, "id", "left_anti").limit(1).count()
        )
        if stray:
            raise ConfigError(f"{index_dir} indexes other items than {data_dir}; rebuild it with `prodmatch index`")
        new_items, _, _ = items_of(job, new_dir, "new_items")
        columns = [c for c in job.items.columns]
        types = {f.name: f.dataType for f in job.items.schema.fields}
        new_items = new_items.select(
            *[(F.col(c) if c in new_items.columns else F.lit(None)).cast(types[c]).alias(c) for c in columns]
        )
        again = new_items.join(job.items, id_col, "left_semi").limit(5).collect()
        if again:
            raise DataError(
                f"{new_dir}: items already in the catalogue {data_dir}, e.g. {[r[id_col] for r in again]}; "
                "new items must be new"
            )
        new_vec, n_new, _ = vectors_of(job, new_items, "new_vectors")
        centroids = np.asarray(
            [r["vec"] for r in spark.read.parquet(join_path(index_dir, INDEX_CENTROIDS)).orderBy("cell").collect()],
            dtype=np.float32,
        )
        old_rows = index_vec.where("searchable").select(
            "id", "vec", F.lit("").alias("block"), F.lit(False).alias("is_query"), F.lit(True).alias("is_target")
        )
        queries = new_vec.where("searchable").select(
            "id", "vec", F.lit("").alias("block"), F.lit(True).alias("is_query"), F.lit(False).alias("is_target")
        )
        to_old, facts, _, _ = ivf_search(
            spark,
            old_rows.unionByName(queries),
            config.k,
            len(centroids),
            options.probes,
            options.cell_cap,
            options.centroid_sample,
            work,
            "new_old",
            centroids=centroids,
            queries_are_targets=False,
        )
        among_new, _, _, _ = ivf_search(  # new among new: exact, as locally
            spark,
            queries.withColumn("is_target", F.lit(True)),
            config.k,
            1,
            1,
            options.cell_cap,
            options.centroid_sample,
            work,
            "new_new",
        )
        existing = spark.read.parquet(clusters_path).select(
            F.col("variantid").cast(id_type).alias("id"), F.col("cluster_id").cast("bigint").alias("c")
        )
        if old_ids.join(existing, "id", "left_anti").limit(1).count():
            raise ConfigError(f"{clusters_path} lacks some catalogue items; use the clusters of a full `match` run")
        # every member of the candidates' clusters, as the local engine's cluster_mates
        members = existing.withColumnRenamed("id", "t")
        reached = to_old.select("q", "t").join(members, "t").select("q", "c").distinct()
        size = existing.groupBy("c").agg(F.count("*").alias("n"))
        reached = materialise(spark, reached.join(size, "c"), join_path(work, "reached"))
        mates = reached.where(F.col("n") <= MATES_MAX_CLUSTER).join(members, "c").select("q", "t")
        mates = materialise(spark, mates, join_path(work, "mates"))
        expansion = {
            "max_cluster": MATES_MAX_CLUSTER,
            "pairs": mates.count(),
            "clusters_too_large": reached.where(F.col("n") > MATES_MAX_CLUSTER).select("c").distinct().count(),
        }
        pairs = (
            to_old.select("q", "t")
            .unionByName(mates)
            .unionByName(among_new.select("q", "t"))
            .select(F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2"))
            .distinct()
        )
        pairs = materialise(spark, pairs, join_path(work, "candidates"))
        n_candidates = pairs.count()
        everyone = index_vec.select("id").unionByName(new_vec.select("id"))
        part_of = everyone.select("id", F.pmod(F.xxhash64("id"), F.lit(partitions)).alias("part"))
        scored, _ = score_stage(job, pairs, part_of, job.items.unionByName(new_items), "scored")
        scored, threshold, calibration = new_items_calibration(spark, scored, job.model, clusters_path, config)
        scored = materialise(
            spark, gate_column(scored, calibration.get("prior"), threshold), join_path(work, "calibrated")
        )
        guarded, rounds = cluster_stage(job, scored, threshold, config.linkage_max, options)

        next_id = int(existing.agg(F.max("c")).first()[0] or -1) + 1
        group = (
            new_vec.select("id")
            .join(guarded.select("id", "rep"), "id", "left")
            .select("id", F.coalesce("rep", "id").alias("g"))
        )
        group = materialise(spark, group, join_path(work, "new_groups"))
        new_side = group.select(F.col("id").alias("x"), "g")
        old_side = existing.select(F.col("id").alias("o"), "c")
        cross = (
            scored.join(old_side.withColumnRenamed("o", "id1"), "id1")
            .join(new_side.withColumnRenamed("x", "id2"), "id2")
            .select("g", "c", "score")
            .unionByName(
                scored.join(old_side.withColumnRenamed("o", "id2"), "id2")
                .join(new_side.withColumnRenamed("x", "id1"), "id1")
                .select("g", "c", "score")
            )
        )
        total = cross.groupBy("g", "c").agg(F.sum("score").alias("s"))
        sizes_g = group.groupBy("g").agg(F.count("*").alias("gn"))
        sizes_c = existing.groupBy("c").agg(F.count("*").alias("cn"))
        avg = total.join(sizes_g, "g").join(sizes_c, "c").withColumn("avg", F.col("s") / (F.col("gn") * F.col("cn")))
        order = Window.partitionBy("g").orderBy(F.col("avg").desc(), F.col("c"))
        best = avg.where(F.col("avg") >= threshold).withColumn("r", F.row_number().over(order)).where("r = 1")
        joined = group.join(best.select("g", "c"), "g", "left")
        fresh, n_fresh = consecutive_ids(
            spark, joined.where(F.col("c").isNull()).select(F.col("g").alias("rep")), join_path(work, "fresh")
        )
        assigned = joined.join(fresh.withColumnRenamed("rep", "g"), "g", "left").select(
            F.col("id").alias("variantid"),
            F.coalesce("c", F.col("cluster_id") + F.lit(next_id)).cast("bigint").alias("cluster_id"),
            F.col("c").isNull().alias("is_new_cluster"),
        )
        assigned = materialise(spark, assigned, join_path(work, "assigned"))
        n_joined = assigned.where(~F.col("is_new_cluster")).count()
        reps = everyone.join(guarded.select("id", "rep"), "id", "left").select(
            F.coalesce("rep", "id").alias("cluster_id")
        )
        kept = scored.where((F.col("score") >= threshold) & (F.col("evidence") != 0))
        report = cluster_report(reps, guarded, kept.count(), reps.distinct().count())

        tmp_out = join_path(staging, "out")
        cluster_of = existing.select(F.col("id").alias("variantid"), F.col("c").alias("cluster_id")).unionByName(
            assigned.select("variantid", "cluster_id")
        )
        matches = materialise(spark, matches_table(kept, cluster_of, job.model), join_path(work, "matches"))
        write_table(spark, matches, join_path(tmp_out, MATCHES_FILE), options.part_files, MATCHES_ORDER)
        write_table(spark, assigned, join_path(tmp_out, CLUSTERS_FILE), options.part_files, ("variantid",))
        split = matches.where(~F.col("same_cluster")).count()
        summary = {
            "mode": "incremental",
            "index": meta,
            "new_items": n_new,
            "candidates": n_candidates,
            "cluster_mates": expansion,
            "matches": report.edges,
            "joined_existing_clusters": n_joined,
            "new_clusters": n_fresh,
            "parameters": {**config.to_dict(), "threshold": threshold},
            "calibration": calibration,
            "clustering": asdict(report) | split_report(split),
            "engine": {
                "name": "spark",
                "master": spark.sparkContext.master,
                "partitions": partitions,
                "connected_components_rounds": rounds,
                "search": facts,
            },
            "seconds": round(time.perf_counter() - t0, 3),
        }
        FileSystem(spark, tmp_out).write_text(join_path(tmp_out, SUMMARY_FILE), json.dumps(summary, indent=2))
        finish_staging(fs, staging, work, tmp_out, out_dir)
    except BaseException as e:
        fail_staging(fs, staging, work, e)
        raise
    return summary
