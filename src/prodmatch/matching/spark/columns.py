"""The numeric rules on Spark columns: the candidates' calibration, the expected-F1 threshold and the evidence gate, each the shared rule of :mod:`prodmatch.calibration` and :mod:`prodmatch.evidence` fed with aggregates; and the matches table."""

from __future__ import annotations

import logging

import numpy as np

from prodmatch.calibration import PriorEstimate, em_prior, expected_f1_threshold_binned
from prodmatch.config import CALIBRATION_K, MatchConfig
from prodmatch.evidence import cap, describe
from prodmatch.io import (
    SUMMARY_FILE,
)
from prodmatch.matching.incremental import full_match_calibration
from prodmatch.matching.spark.session import FileSystem, join_path, read_json

log = logging.getLogger(__name__)

MATCHES_ORDER = ("variantid1", "variantid2")  # matches.parquet's rows, as the local engine sorts them


def expected_f1_threshold_column(scores, bins: int = 4096) -> float:
    """:func:`prodmatch.calibration.expected_f1_threshold` of a Spark column of probabilities, exactly: per-bin
    counts and sums are aggregated here, and :func:`prodmatch.calibration.expected_f1_threshold_binned` fetches
    the few bins that could hold the best threshold."""
    from pyspark.sql import functions as F

    bin_of = F.least(F.floor(F.col("score") * bins), F.lit(bins - 1)).cast("int")
    table = (
        scores.select(bin_of.alias("b"), "score").groupBy("b").agg(F.count("*").alias("n"), F.sum("score").alias("s"))
    )
    table = table.toPandas()

    def values_in(wanted: list[int]) -> np.ndarray:
        inside = scores.where(bin_of.isin(wanted)).select("score").collect()
        return np.asarray([r[0] for r in inside], dtype=np.float64)

    return expected_f1_threshold_binned(
        table["b"].to_numpy(), table["n"].to_numpy(), table["s"].to_numpy(), values_in, bins
    )


def gate_column(scores, prior: float | None, threshold: float):
    """:func:`prodmatch.evidence.gate` on a Spark column: a pair without evidence scores at most ``prior``, below
    ``threshold``."""
    return capped_column(scores, cap(prior, threshold))


def capped_column(scores, limit: float):
    """:func:`prodmatch.evidence.capped` on a Spark column: a pair without evidence scores at most ``limit``."""
    from pyspark.sql import functions as F

    return scores.withColumn(
        "score", F.when(F.col("evidence") == 0, F.least(F.col("score"), F.lit(limit))).otherwise(F.col("score"))
    )


def matches_table(kept, clusters, model):
    """matches.parquet's rows, as the local engine writes them (:func:`prodmatch.matching.output.matches_frame`):
    ``variantid1 < variantid2``, sorted by the two ids, with ``same_cluster`` from ``clusters`` (variantid,
    cluster_id)."""
    from pyspark.sql import functions as F

    def side(name: str, alias: str):
        return clusters.select(F.col("variantid").alias(name), F.col("cluster_id").alias(alias))

    out = kept.select(
        F.least("id1", "id2").alias("variantid1"),
        F.greatest("id1", "id2").alias("variantid2"),
        "score",
        evidence_words(kept, model),
    )
    out = out.join(side("variantid1", "c1"), "variantid1", "left").join(side("variantid2", "c2"), "variantid2", "left")
    linked = []
    if "source" in clusters.columns:  # linking: each item's source, as the local engine writes it
        for name, alias in (("variantid1", "source1"), ("variantid2", "source2")):
            out = out.join(clusters.select(F.col("variantid").alias(name), F.col("source").alias(alias)), name, "left")
            linked.append(alias)
    return out.select(
        "variantid1",
        "variantid2",
        "score",
        "evidence",
        F.coalesce(F.col("c1") == F.col("c2"), F.lit(False)).alias("same_cluster"),
        *linked,
    )


def evidence_words(scores, model):
    """The evidence column in words (``prodmatch.evidence.describe``), from the few distinct masks."""
    from itertools import chain

    from pyspark.sql import functions as F

    masks = sorted(r[0] for r in scores.select("evidence").distinct().collect())
    words = list(describe(np.asarray(masks, dtype=np.uint32), model.evidence_names())) if masks else []
    pairs = list(chain.from_iterable((F.lit(int(m)), F.lit(str(w))) for m, w in zip(masks, words, strict=True)))
    if not pairs:
        return F.lit(None).cast("string").alias("evidence")
    return F.element_at(F.create_map(*pairs), F.col("evidence")).alias("evidence")


def shifted_score(old: float, new: float):
    """:func:`prodmatch.calibration.shift_prior` of the ``score`` column."""
    from pyspark.sql import functions as F

    p = F.least(F.greatest(F.col("score").cast("double"), F.lit(1e-12)), F.lit(1 - 1e-12))
    odds = p / (1 - p) * F.lit((new / (1 - new)) / (old / (1 - old)))
    return odds / (1 + odds)


def new_items_calibration(spark, scored, model, clusters_path: str, config: MatchConfig):
    """The local engine's :func:`prodmatch.matching.incremental._calibrated` on Spark: the new candidates'
    scores, threshold and calibration facts, as the full match whose summary.json sits beside
    ``clusters_path`` decided them; else calibrated on their own, logged."""
    from pyspark.sql import functions as F

    if config.calibrate == "none":
        threshold = model.threshold if config.threshold is None else config.threshold
        return scored, threshold, {"method": "none", "prior": model.calibrator.prior, "applied": "the model's own"}
    summary_path = join_path(clusters_path.rsplit("/", 1)[0], SUMMARY_FILE)
    full = read_json(spark, summary_path) if FileSystem(spark, summary_path).exists(summary_path) else None
    recorded = full_match_calibration(full, config)
    if recorded is not None:
        calibration, threshold = recorded
        method = calibration.get("method")
        if method == "em":
            scored = scored.withColumn("score", shifted_score(calibration["training_prior"], calibration["prior"]))
        elif method == "labelled-sample":
            p = F.least(F.greatest(F.col("score").cast("double"), F.lit(1e-12)), F.lit(1 - 1e-12))
            z = F.lit(calibration["platt"]["a"]) * F.log(p / (1 - p)) + F.lit(calibration["platt"]["b"])
            scored = scored.withColumn("score", 1 / (1 + F.exp(-z)))
        log.info("new candidates calibrated as the full match was (%s; threshold %.4f)", method, threshold)
        return scored, threshold, calibration | {"applied": f"the full match's, {summary_path}"}
    log.warning(
        "%s not found beside %s: the new items' candidates are calibrated on their own; give the clusters of a "
        "full `match` run to apply its calibration and threshold",
        SUMMARY_FILE,
        clusters_path,
    )
    scored, calibration = calibrate_column(scored, model)
    threshold = config.threshold
    if threshold is None:
        threshold = expected_f1_threshold_column(scored) if calibration["method"] != "none" else model.threshold
    return scored, threshold, {**calibration, "applied": "the new candidates' own"}


def calibrate_column(scores, model, fit: str | None = None) -> tuple[object, dict]:
    """:func:`prodmatch.matching.scoring.calibrate_candidates` (the EM estimate of the candidates' share of
    matches, then Bayes' rule) on a Spark column of probabilities; the estimate over the rows where the
    boolean column ``fit`` holds (None: all), the shift applied to every row."""
    from pyspark.sql import functions as F

    training_prior = model.calibrator.prior
    if training_prior is None:
        log.warning("the run does not record its calibration prior; probabilities are used as they are")
        return scores, PriorEstimate(float("nan"), "none", None).to_dict()

    # the EM's every iteration reads the scores again: held in the executors' memory (spilling to disk) for them
    fitted = (scores if fit is None else scores.where(F.col(fit))).select("score").persist()
    try:
        estimate = em_prior(
            lambda pi: fitted.agg(F.mean(shifted_score(training_prior, pi))).first()[0],
            fitted.agg(F.mean("score")).first()[0],
            training_prior,
        )
        fitted_pairs = fitted.count() if fit is not None else None
    finally:
        fitted.unpersist()
    pi = estimate.prior
    if pi < 1e-4:
        log.warning("the share of matches among the candidates cannot be estimated; probabilities used as they are")
        return scores, estimate.to_dict() | {"method": "none", "reason": "the EM estimate fell to zero"}
    log.info("matches among the candidates: %.2f%% estimated", 100 * pi)
    facts = estimate.to_dict()
    if fit is not None:
        facts["fitted_on"] = {"pairs": fitted_pairs, "within_top": CALIBRATION_K}
    return scores.withColumn("score", shifted_score(training_prior, pi)), facts
