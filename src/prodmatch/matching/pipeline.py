"""One matching pipeline for every engine.

The stages, in order: read items, item vectors, candidate search, shared values, scoring, calibration, the
evidence gate, components and the cluster guard, write, and the quality of the written files against a truth.
:func:`run_match` runs them and decides everything that is decided once (the threshold, the calibration rule,
what goes into summary.json); an :class:`Engine` only executes them: :class:`prodmatch.matching.local.LocalEngine`
in one process, :class:`prodmatch.matching.spark.SparkEngine` on Apache Spark. The numeric rules both call are
pure functions of arrays or of aggregates (:func:`prodmatch.calibration.em_prior`,
:func:`prodmatch.calibration.expected_quality_of_sums`, :func:`prodmatch.evidence.cap`, the guard of
:func:`prodmatch.clustering.cluster_items`), and quality is read from the output files
(:func:`prodmatch.matching.evaluate.evaluate_outputs`), so both engines write the same files, columns and figures.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Protocol

from prodmatch.calibration import expected_quality_of_sums
from prodmatch.config import CALIBRATION_K, MatchConfig
from prodmatch.errors import ConfigError
from prodmatch.evidence import cap
from prodmatch.matching.evaluate import candidate_figures, evaluate_outputs
from prodmatch.matching.output import split_report, timed

THRESHOLD_RULE = f"best expected F1 over the candidates within either item's top {CALIBRATION_K}"


@dataclass
class MatchRun:
    """What the stages of one match share, whichever engine runs them."""

    run_dir: object
    data_dir: object
    config: MatchConfig
    link_with: object = None
    labelled_sample: object = None
    progress: object = None
    model: object = None
    items: int = 0
    truths: list | None = None  # (file, column) of the true products, one per source; None: no truth
    link: dict | None = None  # linking: the two sources' facts for summary.json
    stages: dict = field(default_factory=dict)

    @property
    def linking(self) -> bool:
        return self.link_with is not None

    def bar(self, stage: str, total: int = 1):
        """A progress callable advancing by n (a one-step bar for stages without finer progress)."""
        return self.progress(stage, total) if self.progress else (lambda _n: None)


@dataclass
class Sums:
    """Aggregates of the candidates' final scores, for the estimates and the summary."""

    total: float
    kept_sum: float
    kept: int
    without_evidence: int


class Engine(Protocol):
    """The stages of :func:`run_match`, executed where the engine runs; state stays inside the engine."""

    name: str

    def check(self, run: MatchRun) -> None:
        """Refuse the options this engine cannot run (ConfigError), before any work."""

    def staged(self, out_dir, overwrite: bool) -> contextlib.AbstractContextManager:
        """A context giving the folder the outputs are written into: moved to ``out_dir`` when the block ends,
        removed with the engine's intermediate data when it raises."""

    def read_items(self, run: MatchRun) -> None:
        """Load the model (``run.model``) and the items (``run.items``; linking: both sources', and ``run.link``)."""

    def truth_files(self, run: MatchRun) -> list | None:
        """(file, column) of the items' true products, one per source, or None."""

    def item_vectors(self, run: MatchRun) -> str:
        """Every item's search vector; returns their kind."""

    def candidate_search(self, run: MatchRun) -> dict:
        """Each item's top-k (and, for calibration, top CALIBRATION_K) by its vector; returns the search facts."""

    def shared_values(self, run: MatchRun) -> dict:
        """Candidates sharing rare values (``config.token_k`` per item); returns their facts."""

    def score(self, run: MatchRun) -> int:
        """Score every candidate and calibration pair with the model; returns how many candidates."""

    def calibrate(self, run: MatchRun) -> dict:
        """The candidates' prior by the shared EM (or a labelled sample), applied to every score; its facts."""

    def expected_f1_threshold(self) -> float:
        """:func:`prodmatch.calibration.expected_f1_threshold` over the calibration pairs."""

    def keep_candidates(self) -> None:
        """Drop the pairs scored for calibration only."""

    def gate(self, limit: float) -> None:
        """A candidate without evidence scores at most ``limit``."""

    def rescore(self, run: MatchRun, threshold: float) -> dict:
        """The cascade: re-score the candidates near the threshold; its facts."""

    def sums(self, threshold: float) -> Sums: ...

    def cluster(self, run: MatchRun, threshold: float) -> dict:
        """Components of the matched pairs with evidence, cut by the guard; the clustering report."""

    def write(self, run: MatchRun, threshold: float, folder) -> int:
        """matches.parquet and clusters.parquet into ``folder``; returns the matches the clusters split."""

    def candidate_truth(self, run: MatchRun, threshold: float) -> tuple[int, int]:
        """(true pairs among the candidates, true pairs among the matches), over items with a product."""

    def diagnostics(self, run: MatchRun, search: dict) -> dict:
        """Search figures against the truth that the output files cannot tell (recall at k, the oracle's)."""

    def facts(self) -> dict:
        """summary.json's ``engine``."""

    def write_summary(self, summary: dict, folder) -> None: ...


def run_match(
    engine: Engine,
    run_dir,
    data_dir,
    out_dir,
    config: MatchConfig | None = None,
    *,
    overwrite: bool = False,
    progress=None,
    labelled_sample=None,
    link_with=None,
) -> dict:
    """Find every group of listings that are one product in ``data_dir`` with ``engine``; write matches.parquet,
    clusters.parquet and summary.json into ``out_dir`` (all or nothing).

    Args:
        engine: what executes the stages (:class:`prodmatch.matching.local.LocalEngine`,
            :class:`prodmatch.matching.spark.SparkEngine`).
        run_dir: a trained run directory.
        data_dir: the catalogue (E-CUP layout; no pairs needed).
        out_dir: where matches.parquet, clusters.parquet and summary.json go.
        config: k, threshold, blocking, index (:class:`prodmatch.config.MatchConfig`).
        overwrite: replace an existing output directory.
        progress: ``progress(stage, total)`` returning a callable that advances by n, or None.
        labelled_sample: a pairs file (variantid1, variantid2, target) labelling a random sample of the
            candidate pairs, to calibrate on (see :func:`prodmatch.matching.scoring.calibrate_candidates`).
        link_with: a second data directory to link ``data_dir`` with (see :mod:`prodmatch.matching.link`):
            only pairs of one item of each are candidates, and the outputs carry each item's ``source``.

    Returns:
        The summary (also in summary.json); with a truth in the data (``truth.parquet``, or
        ``config.truth_column``), its ``quality`` (:func:`prodmatch.matching.evaluate.evaluate_outputs`).
    """
    config = config or MatchConfig()
    run = MatchRun(run_dir, data_dir, config, link_with, labelled_sample, progress)
    if config.one_to_one and not run.linking:
        raise ConfigError("--one-to-one applies to linking two sources: give them as --link LEFT RIGHT")
    engine.check(run)
    t_start = time.perf_counter()
    stages = run.stages
    with engine.staged(out_dir, overwrite) as folder:
        with timed(stages, "load"):
            engine.read_items(run)
            run.truths = engine.truth_files(run)
        model = run.model
        threshold = model.threshold if config.threshold is None else config.threshold
        with timed(stages, "vectors"):
            done = run.bar("item vectors")
            vector_kind = engine.item_vectors(run)
            done(1)
        with timed(stages, "candidates"):
            search = engine.candidate_search(run)
            if config.token_k > 0:
                search["shared_values"] = engine.shared_values(run)
        with timed(stages, "scoring"):
            candidates = engine.score(run)
        calibration: dict = {"method": "none"}
        if config.calibrate == "prior":
            calibration = engine.calibrate(run)
            if config.threshold is None and calibration["method"] != "none":  # else the model's own threshold
                threshold = engine.expected_f1_threshold()
                calibration["threshold_rule"] = THRESHOLD_RULE
        engine.keep_candidates()
        # No evidence, no match: whatever the threshold and the candidates' prior came to, a pair with nothing to
        # compare stays below the threshold (and at most the candidates' estimated share of matches).
        engine.gate(cap(calibration.get("prior"), threshold))
        cascade: dict = {}
        if config.rescore:
            with timed(stages, "re-scoring"):
                cascade = engine.rescore(run, threshold)
            engine.gate(cap(calibration.get("prior"), threshold))  # the cascade's update too
        sums = engine.sums(threshold)
        precision, recall = expected_quality_of_sums(sums.total, sums.kept_sum, sums.kept)
        calibration |= {"estimated_precision": precision, "estimated_recall_among_candidates": recall}
        with timed(stages, "clustering"):
            done = run.bar("clustering")
            report = engine.cluster(run, threshold)
            done(1)
        with timed(stages, "writing"):
            split = engine.write(run, threshold, folder)
        quality: dict = {}
        if run.truths is not None:
            with timed(stages, "quality"):
                done = run.bar("quality")
                quality = evaluate_outputs(folder, run.truths, model.data_config().id_column)
                if "pairwise_f1" in quality:
                    quality |= candidate_figures(
                        config.k, quality["truth"]["true_pairs"], *engine.candidate_truth(run, threshold)
                    )
                    quality |= engine.diagnostics(run, search)
                done(1)
        summary = {
            "model": model.name,
            "run_dir": str(run_dir),
            "data": str(run.data_dir),
            "items": run.items,
            **({"link": run.link} if run.linking else {}),
            "engine": engine.facts(),
            "parameters": {**config.to_dict(), "threshold": threshold},
            "item_vectors": vector_kind,
            "search": search,
            "candidates": candidates,
            "candidates_without_evidence": sums.without_evidence,
            "matches": sums.kept,
            "scorer": model.describe_job(),
            "calibration": calibration,
            "cascade": cascade,
            "clustering": report | split_report(split, config.one_to_one),
            "quality": quality,
            "stages": stages,
            "seconds": round(time.perf_counter() - t_start, 3),
        }
        engine.write_summary(summary, folder)
    return summary
