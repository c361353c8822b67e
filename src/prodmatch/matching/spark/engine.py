"""The Spark engine: the stages of :func:`prodmatch.matching.pipeline.run_match` (read items, item vectors, candidate search, shared values, scoring, calibration, components, cluster guard and write) on Spark DataFrames."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tarfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.candidates import vector_kind
from prodmatch.config import CALIBRATION_K
from prodmatch.errors import ConfigError, DataError
from prodmatch.io import (
    CLUSTERS_FILE,
    MATCHES_FILE,
    SUMMARY_FILE,
    TEXT_FILE,
)
from prodmatch.matching.evaluate import truth_files
from prodmatch.matching.link import check_disjoint_ids, link_facts
from prodmatch.matching.output import SOURCE_NAMES
from prodmatch.matching.pipeline import MatchRun, Sums, run_match
from prodmatch.matching.spark.columns import (
    MATCHES_ORDER,
    calibrate_column,
    capped_column,
    expected_f1_threshold_column,
    matches_table,
)
from prodmatch.matching.spark.executors import GUARD_COUNTS, guard_fn, item_rows_fn, score_fn
from prodmatch.matching.spark.graph import cluster_report, connected_components, consecutive_ids
from prodmatch.matching.spark.ivf import cell_regions, ivf_search, recall_vs_exact, search_rows, shared_values
from prodmatch.matching.spark.quality import candidate_truth_counts, spark_truth_source
from prodmatch.matching.spark.session import (
    RUN_FILES_SKIPPED,
    FileSystem,
    SparkOptions,
    fail_staging,
    finish_staging,
    join_path,
    materialise,
    read_items,
    stage_output,
    start_session,
    write_table,
)
from prodmatch.models import load_model

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What every stage of a Spark run shares: the session, the model broadcast once, the items read."""

    spark: object
    model: object
    bundle: object
    data_config: object
    partitions: int
    work: str
    items: object = None
    layout: dict = field(default_factory=dict)
    id_type: str = "bigint"


def load_job(
    spark,
    run_dir,
    data_dir: str,
    partitions: int,
    work: str,
    data_config=None,
    *,
    text: bool = False,
    categories: bool = False,
) -> Job:
    """The model, broadcast once (its run directory's files, unpacked once per Python worker), and the items."""
    from dataclasses import replace

    model = load_model(run_dir).for_job("catalogue")
    data_config = data_config or model.data_config()
    if text:
        data_config = replace(data_config, load_names=True, load_attributes=True)
    if categories:
        data_config = replace(data_config, load_categories=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(Path(run_dir).iterdir()):
            if path.name not in RUN_FILES_SKIPPED:
                tar.add(path, arcname=path.name)
    bundle = spark.sparkContext.broadcast((uuid.uuid4().hex, buffer.getvalue()))
    job = Job(spark, model, bundle, data_config, partitions, work)
    job.items, job.layout, job.id_type = items_of(job, data_dir, "items")
    return job


def items_of(job: Job, data_dir: str, tag: str):
    """(items, layout, id type) of a data directory, the ids cast to bigint or string, written once."""
    from pyspark.sql import functions as F

    id_column = job.data_config.id_column
    items, layout = read_items(job.spark, data_dir, job.data_config, FileSystem(job.spark, data_dir))
    id_type = items.schema[id_column].dataType.simpleString()
    if id_type not in ("bigint", "int", "smallint", "tinyint", "string"):
        raise DataError(f"{data_dir}: {id_column} has type {id_type}; ids must be integers or strings")
    id_type = "string" if id_type == "string" else "bigint"
    items = items.withColumn(id_column, F.col(id_column).cast(id_type))
    return materialise(job.spark, items.repartition(job.partitions), join_path(job.work, tag)), layout, id_type


def linked_items(job: Job, left_dir: str, right_dir: str):
    """Linking: LEFT's items (``job.items``) and RIGHT's as one items table, and (id, source) of every item
    (0: left, 1: right), each written once. Both are read with the model's data settings; the columns are
    the ones both sources have (side data only one has is left out, with a warning, as the local engine's
    :meth:`prodmatch.catalogue.Catalogue.concat` does), named in ``job.layout`` as LEFT's files name them.

    Raises:
        DataError: ids of different types, or ids in both sources.
    """
    from pyspark.sql import functions as F

    id_col = job.data_config.id_column
    right, right_layout, right_id_type = items_of(job, right_dir, "items_right")
    if right_id_type != job.id_type:
        raise DataError(
            f"{left_dir} has {job.id_type} ids and {right_dir} has {right_id_type} ids: linking needs one id type "
            "(write both sources' ids as integers, or both as strings)"
        )
    left_columns = {c for cols in job.layout.values() for c in cols}
    right_columns = {c for cols in right_layout.values() for c in cols}
    for has, lacks, only in (  # the model's embeddings are in both: the reader asks each source for them
        (left_dir, right_dir, left_columns - right_columns),
        (right_dir, left_dir, right_columns - left_columns),
    ):
        if only:
            log.warning("%s has %s and %s has none: linking does without them", has, sorted(only), lacks)
    shared = left_columns & right_columns
    layout = {name: [c for c in cols if c in shared] for name, cols in job.layout.items()}
    layout = {name: cols for name, cols in layout.items() if cols or name == TEXT_FILE}
    kept = [id_col, *(c for cols in layout.values() for c in cols)]
    both = job.items.select(id_col).join(right.select(id_col), id_col)
    some = [r[id_col] for r in both.limit(5).collect()]
    if some:  # counted only to say how many
        check_disjoint_ids(some, left_dir, right_dir, count=both.count())
    items = job.items.select(*kept).unionByName(right.select(*kept))
    side_of = job.items.select(F.col(id_col).alias("id"), F.lit(0).cast("tinyint").alias("source")).unionByName(
        right.select(F.col(id_col).alias("id"), F.lit(1).cast("tinyint").alias("source"))
    )
    job.layout = layout
    items = materialise(job.spark, items.repartition(job.partitions), join_path(job.work, "items_linked"))
    return items, materialise(job.spark, side_of, join_path(job.work, "sources"))


def vectors_of(job: Job, items, tag: str, *, tokens: bool = False, modality_vectors: bool = False):
    """(id, vec, searchable, category[, tokens][, mvec, complete]) of every item, written once; and counts."""
    from pyspark.sql import functions as F

    schema = f"id {job.id_type}, vec binary, searchable boolean, category string"
    if tokens:
        schema += ", tokens array<string>"
    if modality_vectors:
        schema += ", mvec binary, complete boolean"
    fn = item_rows_fn(job.bundle, job.layout, job.data_config.id_column, job.data_config, tokens, modality_vectors)
    vec = materialise(job.spark, items.mapInArrow(fn, schema), join_path(job.work, tag))
    counts = vec.agg(F.count("*").alias("n"), F.sum(F.col("searchable").cast("int")).alias("s")).first()
    n, n_searchable = int(counts["n"]), int(counts["s"] or 0)
    if n_searchable < n:
        log.warning(
            "%d of %d items have none of the model's embeddings: they are not matched and stay single-item clusters",
            n - n_searchable,
            n,
        )
    return vec, n, n_searchable


def score_stage(job: Job, pairs, part_of, items, tag: str):
    """(id1, id2, score) of every pair, written once, and the item rows shipped to scoring groups.

    ``part_of`` (id, part) puts a pair in its first item's group; a group's pairs and the rows of the items
    they name meet in one ``cogroup`` call and are scored by the model's own ``predict_proba``."""
    from pyspark.sql import functions as F

    spark, id_col = job.spark, job.data_config.id_column
    grouped = pairs.join(part_of.withColumnRenamed("id", "id1"), "id1")
    grouped.write.parquet(join_path(job.work, f"{tag}_grouped"))
    grouped = spark.read.parquet(join_path(job.work, f"{tag}_grouped"))  # two reads, two plans: cogroup's sides
    seen = spark.read.parquet(join_path(job.work, f"{tag}_grouped"))
    needed = (
        seen.select("part", F.col("id1").alias("id"))
        .unionByName(seen.select("part", F.col("id2").alias("id")))
        .distinct()
    )
    group_items = needed.join(items.withColumnRenamed(id_col, "id"), "id").withColumnRenamed("id", id_col)
    shipped = spark.sparkContext.accumulator(0)
    scored = (
        grouped.groupBy("part")
        .cogroup(group_items.groupBy("part"))
        .applyInArrow(
            score_fn(job.bundle, job.layout, id_col, job.data_config, shipped),
            f"id1 {job.id_type}, id2 {job.id_type}, score double, evidence bigint",
        )
    )
    scored = materialise(spark, scored, join_path(job.work, tag))
    if scored.count() != pairs.count():
        raise RuntimeError("prodmatch: scoring lost candidate pairs (a bug; please report it)")
    return scored, shipped.value


# Items a scoring group holds at least, where there are more groups than partitions: each group's call has a
# fixed cost (an Arrow batch to Python, the model's per-call set-up), which many small groups pay for nothing.
SCORING_GROUP_ITEMS = 2_000


def scoring_groups(spark, vec, home, centroids, groups: int):
    """(id, part) of every searchable item: the scoring group its pairs go to (a pair goes to its first item's).

    A group scores with the items its pairs name, so an item is shipped to every group where it has a pair.
    Nearest neighbours lie in nearby cells: a group is a region of cells (their centroids' cluster, see
    :func:`prodmatch.matching.spark.ivf.cell_regions`) within a block, which ships each item about half as many
    times as groups of cells drawn at random. ``groups`` regions (up to 4 per task, to even out the tasks' work).
    Without cells (an exact search), groups are drawn by id."""
    from pyspark.sql import functions as F

    if home is None:
        return vec.where("searchable").select("id", F.pmod(F.xxhash64("id"), F.lit(groups)).alias("part"))
    region = cell_regions(centroids, groups)
    region_of = spark.createDataFrame(
        pd.DataFrame({"cell": np.arange(len(region), dtype=np.int64), "sregion": region.astype(np.int64)})
    )
    return home.join(F.broadcast(region_of), "cell").select(
        "id", F.pmod(F.xxhash64("block", "sregion"), F.lit(groups)).alias("part")
    )


def cluster_stage(job: Job, scored, threshold: float, linkage_max: int, options, side_of=None, one_to_one=False):
    """(id, rep, report counts) of every item in a component, by the local engine's guard, and the rounds
    connected components took. ``side_of``: (id, source) of every item, when linking two sources."""
    from pyspark.sql import functions as F

    scored = scored.where(F.col("evidence") != 0)  # a pair without evidence is no edge, whatever the threshold
    edges = scored.where(F.col("score") >= threshold).select(F.col("id1").alias("src"), F.col("id2").alias("dst"))
    labels, rounds = connected_components(
        job.spark,
        edges,
        join_path(job.work, "cc"),
        checkpoint_every=options.checkpoint_every,
        driver_max_edges=options.driver_components_max_edges,
    )
    comp1 = labels.withColumnRenamed("id", "id1").withColumnRenamed("component", "c1")
    comp2 = labels.withColumnRenamed("id", "id2").withColumnRenamed("component", "c2")
    inner = scored.join(comp1, "id1").join(comp2, "id2").where(F.col("c1") == F.col("c2"))
    inner = inner.withColumn("bucket", F.pmod(F.xxhash64("c1"), F.lit(job.partitions)))
    columns = ["bucket", "id1", "id2", "score"]
    if side_of is not None:
        for name, alias in (("id1", "s1"), ("id2", "s2")):
            inner = inner.join(side_of.select(F.col("id").alias(name), F.col("source").alias(alias)), name)
        columns += ["s1", "s2"]
    guarded = (
        inner.select(*columns)
        .groupBy("bucket")
        .applyInArrow(
            guard_fn(threshold, linkage_max, side_of is not None, one_to_one),
            f"id {job.id_type}, rep {job.id_type}, " + ", ".join(f"{c} bigint" for c in GUARD_COUNTS),
        )
    )
    return materialise(job.spark, guarded, join_path(job.work, "guarded")), rounds


class SparkEngine:
    """The stages of :func:`prodmatch.matching.pipeline.run_match` on Apache Spark (see the package docstring):
    the same outputs as the local engine.

    Args:
        spark: a running SparkSession (Databricks, YARN, ...); None starts one with ``master`` and ``conf``
            (or ``options.master`` / ``options.conf``).
        options: the engine's own settings (partitions, cells, probes, cell cap, checkpoints).

    Linking, every search is one source's items among the other's (each item queries with its block and the
    other source, and is a target with its own).
    """

    name = "spark"

    def __init__(self, spark=None, master: str | None = None, conf: dict | None = None, options=None):
        self.spark, self.master, self.conf = spark, master, conf
        self.options = options or SparkOptions()
        self.rounds, self.shipped, self.n_searchable = 0, 0, 0

    def check(self, run: MatchRun) -> None:
        if run.labelled_sample is not None:
            raise ConfigError("--labelled-sample is not supported with --engine spark yet; use --engine local")
        if run.config.rescore:
            raise ConfigError("--rescore is not supported with --engine spark yet; use --engine local")
        run.data_dir = str(run.data_dir).rstrip("/")
        if run.linking:
            run.link_with = str(run.link_with).rstrip("/")

    @contextlib.contextmanager
    def staged(self, out_dir, overwrite: bool):
        self.spark, self.partitions = start_session(self.spark, self.master, self.conf, self.options)
        out_dir = str(out_dir).rstrip("/")
        fs, staging, self.work = stage_output(self.spark, out_dir, overwrite, SUMMARY_FILE, self.options)
        tmp_out = join_path(staging, "out")
        try:
            yield tmp_out
            finish_staging(fs, staging, self.work, tmp_out, out_dir)
        except BaseException as e:
            fail_staging(fs, staging, self.work, e)
            raise

    def read_items(self, run: MatchRun) -> None:
        config = run.config
        job = load_job(
            self.spark,
            run.run_dir,
            run.data_dir,
            self.partitions,
            self.work,
            text=config.token_k > 0,
            categories=config.block_by == "category",
        )
        self.side_of = None
        if run.linking:
            job.items, self.side_of = linked_items(job, run.data_dir, run.link_with)
            run.link = link_summary(self.side_of, run.data_dir, run.link_with, config.one_to_one)
        self.job, run.model = job, job.model

    def truth_files(self, run: MatchRun) -> list | None:
        dirs = [run.data_dir] if not run.linking else [run.data_dir, run.link_with]
        return truth_files(
            dirs,
            run.config.truth_column,
            self.job.data_config.id_column,
            lambda d, column, id_column: spark_truth_source(self.spark, d, column, id_column),
        )

    def item_vectors(self, run: MatchRun) -> str:
        job, config = self.job, run.config
        self.multi = len(job.model.modalities_) >= 2
        self.vec, run.items, self.n_searchable = vectors_of(
            job, job.items, "vectors", tokens=config.token_k > 0, modality_vectors=self.multi
        )
        if run.linking:
            self.vec = materialise(
                self.spark, self.vec.join(self.side_of, "id"), join_path(self.work, "vectors_linked")
            )
        return vector_kind(job.model)

    def candidate_search(self, run: MatchRun) -> dict:
        from pyspark.sql import functions as F

        spark, work, config, options, vec = self.spark, self.work, run.config, self.options, self.vec
        n, n_searchable, linking = run.items, self.n_searchable, run.linking
        done = run.bar("candidates")
        block = F.col("category") if config.block_by == "category" else F.lit("")
        block = F.coalesce(block, F.lit("\x00none"))  # no category: searched among themselves, as locally
        exact = config.index_kind(n_searchable) == "flat"
        cells = 1 if exact and options.cells is None else (options.cells or max(1, round(math.sqrt(n_searchable))))
        base = search_rows(vec.where("searchable"), block, F.lit(True), linking)
        # as far as the calibration pairs (each item's top CALIBRATION_K) where k is smaller
        reach = max(config.k, CALIBRATION_K)
        itself = 0 if linking else 1  # a search list counts the query itself where it is a target
        top, ivf_facts, self.home, self.centroids = ivf_search(
            spark,
            base,
            reach,
            cells,
            options.probes,
            options.cell_cap,
            options.centroid_sample,
            work,
            "ivf",
            ranked=True,
            queries_are_targets=not linking,
        )
        top = materialise(spark, top, join_path(work, "ivf_ranked"))
        near = top.where(F.col("r") <= CALIBRATION_K + itself).select(
            F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2")
        )
        self.near = materialise(spark, near.distinct(), join_path(work, "calibration_pairs"))
        top = top.where(F.col("r") <= config.k + itself).select("q", "t", "s")
        if ivf_facts["cells"] > 1:  # approximate: how much of the exact top-k it finds, on a sample
            top = materialise(spark, top, join_path(work, "ivf_top"))
            ivf_facts["recall_vs_exact"] = recall_vs_exact(
                spark, base.where("is_target"), top, config.k, queries=base.where("is_query")
            )
        pairs = top.select(F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2")).distinct()
        self.pairs = materialise(spark, pairs, join_path(work, "candidates_ivf"))
        facts = {
            "blocks": ivf_facts.pop("blocks"),
            "index": ["flat"] if ivf_facts["cells"] <= 1 else ["ivf"],
            "ivf": ivf_facts,
            "items_without_embeddings": n - n_searchable,
            "incomplete_items": 0,
            **({"linked_sources": 2} if linking else {}),
        }
        if self.multi:
            big = n_searchable > config.exact_max_items and "category" in vec.columns
            inc_block = F.coalesce(F.col("category"), F.lit("\x00none")) if big else F.lit("")
            with_mvec = vec.where("searchable").withColumn("vec", F.col("mvec"))
            inc = search_rows(with_mvec, inc_block, ~F.col("complete"), linking)
            facts["incomplete_items"] = vec.where("searchable AND NOT complete").count()
            if facts["incomplete_items"]:
                more, _, _, _ = ivf_search(
                    spark,
                    inc,
                    config.k,
                    1,
                    1,
                    options.cell_cap,
                    options.centroid_sample,
                    work,
                    "incomplete",
                    queries_are_targets=not linking,
                )
                more = more.select(F.least("q", "t").alias("id1"), F.greatest("q", "t").alias("id2"))
                before = self.pairs.count()
                self.pairs = materialise(
                    spark, self.pairs.unionByName(more).distinct(), join_path(work, "candidates_inc")
                )
                facts["candidates_from_incomplete_items"] = self.pairs.count() - before
        self.cells = cells
        done(1)
        return facts

    def shared_values(self, run: MatchRun) -> dict:
        token_pairs, report = shared_values(self.spark, self.vec, run.config, self.n_searchable, self.work, run.linking)
        before = self.pairs.count()
        self.pairs = materialise(
            self.spark, self.pairs.unionByName(token_pairs).distinct(), join_path(self.work, "candidates")
        )
        return report | {"new_candidates": self.pairs.count() - before}

    def score(self, run: MatchRun) -> int:

        spark, work, partitions = self.spark, self.work, self.partitions
        self.n_candidates = self.pairs.count()
        log.info(
            "%d candidate pairs from %d items (k=%d, %d cells)", self.n_candidates, run.items, run.config.k, self.cells
        )
        done = run.bar("scoring")
        groups = min(4 * partitions, max(partitions, math.ceil(self.n_searchable / SCORING_GROUP_ITEMS)))
        part_of = scoring_groups(spark, self.vec, self.home, self.centroids, groups)
        # the calibration pairs beyond k are scored for calibration only, as locally
        near = self.near
        extra = near.join(self.pairs, ["id1", "id2"], "left_anti") if run.config.calibrate == "prior" else near.limit(0)
        self.extra = materialise(spark, extra, join_path(work, "calibration_extra"))
        self.scored, self.shipped = score_stage(
            self.job, self.pairs.unionByName(self.extra), part_of, self.job.items, "scored"
        )
        done(1)
        return self.n_candidates

    def calibrate(self, run: MatchRun) -> dict:
        from pyspark.sql import functions as F

        fit = self.near.withColumn("fit", F.lit(True))
        scored = self.scored.join(fit, ["id1", "id2"], "left").withColumn("fit", F.coalesce("fit", F.lit(False)))
        scored = materialise(self.spark, scored, join_path(self.work, "scored_fit"))
        scored, calibration = calibrate_column(scored, run.model, fit="fit")
        self.scored = materialise(self.spark, scored, join_path(self.work, "calibrated"))
        return calibration

    def expected_f1_threshold(self) -> float:
        return expected_f1_threshold_column(self.scored.where("fit"))

    def keep_candidates(self) -> None:
        if "fit" in self.scored.columns:
            self.scored = self.scored.join(self.extra, ["id1", "id2"], "left_anti").drop("fit")
        if self.scored.count() != self.n_candidates:
            raise RuntimeError("prodmatch: scoring lost candidate pairs (a bug; please report it)")

    def gate(self, limit: float) -> None:
        self.scored = materialise(self.spark, capped_column(self.scored, limit), join_path(self.work, "gated"))

    def rescore(self, run: MatchRun, threshold: float) -> dict:
        raise ConfigError("--rescore is not supported with --engine spark yet; use --engine local")

    def sums(self, threshold: float) -> Sums:
        from pyspark.sql import functions as F

        scored = self.scored
        without_evidence = scored.where(F.col("evidence") == 0).count()
        agg = scored.agg(
            F.sum("score").alias("total"),
            F.sum(F.when(F.col("score") >= threshold, F.col("score"))).alias("kept_sum"),
            F.sum((F.col("score") >= threshold).cast("int")).alias("kept"),
        ).first()
        self.kept_n = int(agg["kept"] or 0)
        return Sums(float(agg["total"] or 0.0), float(agg["kept_sum"] or 0.0), self.kept_n, without_evidence)

    def cluster(self, run: MatchRun, threshold: float) -> dict:
        from pyspark.sql import functions as F

        spark, config = self.spark, run.config
        guarded, self.rounds = cluster_stage(
            self.job,
            self.scored,
            threshold,
            config.linkage_max,
            self.options,
            self.side_of,
            config.one_to_one,
        )
        reps = (
            self.vec.select("id")
            .join(guarded.select("id", "rep"), "id", "left")
            .select("id", F.coalesce("rep", "id").alias("rep"))
        )
        numbered, n_clusters = consecutive_ids(spark, reps.select("rep"), join_path(self.work, "reps"))
        clusters = reps.join(numbered, "rep").select(F.col("id").alias("variantid"), F.col("cluster_id").cast("bigint"))
        if run.linking:  # each item's source, named as the local engine names it
            names = F.array(*[F.lit(x) for x in SOURCE_NAMES])
            source = self.side_of.select(
                F.col("id").alias("variantid"), F.element_at(names, F.col("source") + 1).alias("source")
            )
            clusters = clusters.join(source, "variantid")
        self.clusters = materialise(spark, clusters, join_path(self.work, "clusters"))
        return asdict(cluster_report(self.clusters, guarded, self.kept_n, n_clusters))

    def write(self, run: MatchRun, threshold: float, folder) -> int:
        from pyspark.sql import functions as F

        spark, part_files = self.spark, self.options.part_files
        kept = self.scored.where((F.col("score") >= threshold) & (F.col("evidence") != 0))
        matches = materialise(spark, matches_table(kept, self.clusters, run.model), join_path(self.work, "matches"))
        write_table(spark, matches, join_path(folder, MATCHES_FILE), part_files, MATCHES_ORDER)
        write_table(spark, self.clusters, join_path(folder, CLUSTERS_FILE), part_files, ("variantid",))
        return matches.where(~F.col("same_cluster")).count()

    def candidate_truth(self, run: MatchRun, threshold: float) -> tuple[int, int]:
        return candidate_truth_counts(
            self.spark, run.truths, self.scored, threshold, self.job.id_type, self.job.data_config.id_column
        )

    def diagnostics(self, run: MatchRun, search: dict) -> dict:
        recall = search["ivf"].get("recall_vs_exact")
        return {} if recall is None else {"ann_recall_vs_exact": recall}

    def facts(self) -> dict:
        return {
            "name": "spark",
            "master": self.spark.sparkContext.master,
            "spark_version": self.spark.version,
            **{k: v for k, v in asdict(self.options).items() if k not in ("master", "conf")},
            "partitions": self.partitions,
            "connected_components_rounds": self.rounds,
            "items_shipped_per_item_scored": float(self.shipped / max(self.n_searchable, 1)),
        }

    def write_summary(self, summary: dict, folder) -> None:
        FileSystem(self.spark, folder).write_text(
            join_path(folder, SUMMARY_FILE), json.dumps(summary, indent=2, default=str)
        )


def match_spark(
    run_dir, data_dir, out_dir, config=None, *, spark=None, master=None, spark_conf=None, options=None, **kwargs
) -> dict:
    """:func:`prodmatch.matching.pipeline.run_match` with a :class:`SparkEngine` (its arguments: ``spark``,
    ``master``, ``spark_conf``, ``options``): the local engine's outputs, on Apache Spark (``kwargs``: as
    ``run_match``)."""
    return run_match(SparkEngine(spark, master, spark_conf, options), run_dir, data_dir, out_dir, config, **kwargs)


def link_summary(side_of, left_dir: str, right_dir: str, one_to_one: bool) -> dict:
    counts = dict(side_of.groupBy("source").count().collect())
    return link_facts(left_dir, right_dir, (counts.get(0, 0), counts.get(1, 0)), one_to_one)
