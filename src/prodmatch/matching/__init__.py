"""Catalogue matching: candidate search, scoring and clustering of a whole catalogue into products.

One pipeline (:func:`prodmatch.matching.pipeline.run_match`) runs the stages, and an engine executes them:
:class:`LocalEngine` (one process, the default) or :class:`SparkEngine` (Apache Spark, for catalogues beyond one
machine), writing the same output files.

1. **Candidates.** Every item's top-k nearest items by inner product of normalised item vectors: exact
   (``flat``) for small catalogues, HNSW (local) or IVF (Spark) for large ones (``auto`` picks by size). Item
   vectors are the siamese tower's when the model has one (``siamese``, or the networks stacked in
   ``gbdt``), else the normalised concatenated modalities. Optional blocking by level-2 category, and the items
   sharing rare values. Each unordered pair appears once.
2. **Scoring** of every candidate pair with the model, in large vectorised batches; calibration for the
   candidates (the EM prior and the best expected-F1 threshold) and the evidence gate.
3. **Clustering.** Pairs at or above the threshold are edges; connected components are the first cut.
   Guard against chaining: inside every component of three or more items, average-linkage clustering on
   the scores (a pair that was not scored counts as 0) cut at the same threshold. A chain a-b-c whose ends
   were never matched has an average a-c link of at most (s_ab + 0) / 2, so one weak link cannot merge two
   groups: a group joins another only if it matches it on average.
4. **Quality**, where the data holds a truth: the written files are measured
   (:func:`prodmatch.matching.evaluate.evaluate_outputs`, also ``prodmatch quality``).

The stages' pieces live in their own modules (:mod:`prodmatch.candidates`, :mod:`.scoring`,
:mod:`prodmatch.clustering`, :mod:`.quality`, :mod:`.evaluate`, :mod:`.incremental`).
"""

from __future__ import annotations

from prodmatch.atomic import staged_output
from prodmatch.candidates import (
    ann_recall,
    build_index,
    candidate_pairs,
    feature_vectors,
    incomplete_item_candidates,
    informative_items,
    item_vectors,
    neighbours_within,
    reads_text_only,
    search,
)
from prodmatch.clustering import ClusterReport, average_linkage_cut, cluster_items
from prodmatch.config import INDEX_KINDS, MAX_K, RECALL_KS, MatchConfig, replace_index
from prodmatch.errors import ConfigError
from prodmatch.io import CLUSTERS_FILE, MATCHES_FILE, SUMMARY_FILE
from prodmatch.matching.evaluate import evaluate_outputs
from prodmatch.matching.incremental import (
    IDS_FILE,
    INDEX_FILE,
    INDEX_META_FILE,
    VECTORS_FILE,
    build_catalogue_index,
    check_index_items,
    match_new_items,
)
from prodmatch.matching.local import LocalEngine, match_local
from prodmatch.matching.output import timed
from prodmatch.matching.pipeline import Engine, MatchRun, run_match
from prodmatch.matching.quality import (
    best_threshold_f1,
    candidate_recall,
    cluster_quality,
    oracle_quality,
    pairs_of_groups,
    recall_at_ks,
)
from prodmatch.matching.scoring import calibrate_candidates, rescore_uncertain
from prodmatch.matching.spark import SparkEngine, build_spark_index, match_new_spark

__all__ = [
    "CLUSTERS_FILE",
    "ENGINES",
    "IDS_FILE",
    "INDEX_FILE",
    "INDEX_KINDS",
    "INDEX_META_FILE",
    "MATCHES_FILE",
    "MAX_K",
    "RECALL_KS",
    "SUMMARY_FILE",
    "VECTORS_FILE",
    "ClusterReport",
    "Engine",
    "LocalEngine",
    "MatchConfig",
    "MatchRun",
    "SparkEngine",
    "ann_recall",
    "average_linkage_cut",
    "best_threshold_f1",
    "build_catalogue_index",
    "build_index",
    "build_index_dir",
    "calibrate_candidates",
    "candidate_pairs",
    "candidate_recall",
    "check_index_items",
    "cluster_items",
    "cluster_quality",
    "evaluate_outputs",
    "feature_vectors",
    "incomplete_item_candidates",
    "informative_items",
    "item_vectors",
    "link_sources",
    "match_catalogue",
    "match_local",
    "match_new",
    "match_new_items",
    "neighbours_within",
    "oracle_quality",
    "pairs_of_groups",
    "reads_text_only",
    "recall_at_ks",
    "replace_index",
    "rescore_uncertain",
    "run_match",
    "search",
    "staged_output",
    "timed",
]

ENGINES = ("local", "spark")


def match_catalogue(
    run_dir,
    data_dir,
    out_dir,
    config: MatchConfig | None = None,
    *,
    engine: str = "local",
    spark=None,
    master: str | None = None,
    spark_conf: dict[str, str] | None = None,
    options=None,
    overwrite: bool = False,
    progress=None,
    labelled_sample=None,
    link_with=None,
) -> dict:
    """Find every group of listings that are one product in ``data_dir``; write ``matches.parquet``,
    ``clusters.parquet`` and ``summary.json`` into ``out_dir``.

    Args:
        engine: ``local`` (:class:`LocalEngine`, one process; see :func:`run_match` for the other arguments)
            or ``spark`` (:class:`SparkEngine`, Apache Spark): one pipeline (:func:`run_match`), the same files,
            columns and dtypes either way.
        spark: a running ``SparkSession`` to use (Databricks, YARN, ...); None starts one on ``master``.
        master: the Spark master for a session started here (default ``local[*]``).
        spark_conf: extra Spark settings for a session started here.
        options: :class:`prodmatch.matching.spark.SparkOptions` (partitions, cells, probes, cell cap,
            checkpoints).
        link_with: a second data directory: link ``data_dir``'s items (source ``left``) with its items (source
            ``right``), pairing items of two sources only (see :func:`link_sources`).
    """
    _check_engine(engine, spark, master, spark_conf, options)
    runner = LocalEngine() if engine == "local" else SparkEngine(spark, master, spark_conf, options)
    return run_match(
        runner,
        run_dir,
        data_dir,
        out_dir,
        config,
        overwrite=overwrite,
        progress=progress,
        labelled_sample=labelled_sample,
        link_with=link_with,
    )


def _check_engine(engine: str, spark, master, spark_conf, options) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {list(ENGINES)}, got {engine!r}")
    if engine == "local" and (spark is not None or master is not None or spark_conf or options is not None):
        raise ConfigError("--master, --spark-conf and a Spark session apply to --engine spark only")


def match_new(
    run_dir,
    data_dir,
    index_dir,
    new_dir,
    clusters_path,
    out_dir,
    config: MatchConfig | None = None,
    *,
    engine: str = "local",
    spark=None,
    master: str | None = None,
    spark_conf: dict[str, str] | None = None,
    options=None,
    overwrite: bool = False,
) -> dict:
    """Match newly listed items (``new_dir``) against a catalogue's saved index (:func:`build_index_dir` with the
    same ``engine``) and its clusters: the incremental counterpart of :func:`match_catalogue`, on either engine
    (:func:`match_new_items` locally, :func:`prodmatch.matching.spark.match_new_spark` on Spark)."""
    _check_engine(engine, spark, master, spark_conf, options)
    if engine == "local":
        return match_new_items(
            run_dir, data_dir, index_dir, new_dir, clusters_path, out_dir, config, overwrite=overwrite
        )
    return match_new_spark(
        run_dir,
        data_dir,
        index_dir,
        new_dir,
        clusters_path,
        out_dir,
        config,
        spark=spark,
        master=master,
        spark_conf=spark_conf,
        options=options,
        overwrite=overwrite,
    )


def build_index_dir(
    run_dir,
    data_dir,
    out_dir,
    config: MatchConfig | None = None,
    *,
    engine: str = "local",
    spark=None,
    master: str | None = None,
    spark_conf: dict[str, str] | None = None,
    options=None,
    overwrite: bool = False,
) -> dict:
    """Save a catalogue's item vectors and search index for :func:`match_new` on the same ``engine``
    (:func:`build_catalogue_index` locally, :func:`prodmatch.matching.spark.build_spark_index` on Spark)."""
    _check_engine(engine, spark, master, spark_conf, options)
    if engine == "local":
        return build_catalogue_index(run_dir, data_dir, out_dir, config, overwrite=overwrite)
    return build_spark_index(
        run_dir,
        data_dir,
        out_dir,
        config,
        spark=spark,
        master=master,
        spark_conf=spark_conf,
        options=options,
        overwrite=overwrite,
    )


def link_sources(run_dir, left_dir, right_dir, out_dir, config: MatchConfig | None = None, **kwargs) -> dict:
    """Link two sources: a supplier's feed against the catalogue, or two catalogues (``match --link LEFT
    RIGHT``). Candidates pair one item of each source only; with ``config.one_to_one`` a cluster holds at most
    one item of each. The outputs are :func:`match_catalogue`'s, with ``source1``/``source2`` in
    matches.parquet and ``source`` in clusters.parquet (``left``, ``right``); ``kwargs`` as there (engine,
    spark, overwrite, ...)."""
    return match_catalogue(run_dir, left_dir, out_dir, config, link_with=right_dir, **kwargs)
