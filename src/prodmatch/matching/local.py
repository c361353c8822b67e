"""The local engine: a whole catalogue matched in one process."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np

from prodmatch.atomic import staged_output, write_json, write_parquet
from prodmatch.calibration import expected_f1_threshold, expected_quality
from prodmatch.candidates import all_candidates, ann_recall, informative_items, item_vectors, recall_probe
from prodmatch.catalogue import NORM_EPS
from prodmatch.clustering import cluster_items
from prodmatch.config import CALIBRATION_K, MatchConfig
from prodmatch.errors import ConfigError
from prodmatch.evidence import count_none, describe, gate
from prodmatch.io import CLUSTERS_FILE, MATCHES_FILE, SUMMARY_FILE, TRUTH_FILE
from prodmatch.matching import link
from prodmatch.matching.output import clusters_frame, matches_frame, split_report, timed
from prodmatch.matching.quality import oracle_quality, read_truth, recall_at_ks, truth_quality, truth_source
from prodmatch.matching.scoring import calibrate_candidates, rescore_uncertain
from prodmatch.models import load_model
from prodmatch.oracle import ORACLE_ITEMS_FILE, Oracle
from prodmatch.pairs import PairSet, load_pairs
from prodmatch.runs import model_and_catalogue

log = logging.getLogger(__name__)


def match_local(
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
    """Find every group of listings that are one product in ``data_dir``; write matches, clusters, summary.

    The outputs are written into a temporary directory beside ``out_dir`` and moved into place at the end,
    so an interrupted run leaves no partial output. When ``data_dir`` holds ``truth.parquet`` (synthetic
    data), candidate recall, ANN recall against exact search, and pairwise and B-cubed cluster quality are
    computed too.

    Args:
        run_dir: a trained run directory.
        data_dir: the catalogue (E-CUP layout; no pairs needed).
        out_dir: where matches.parquet, clusters.parquet and summary.json go.
        config: k, threshold, blocking, index.
        overwrite: replace an existing output directory.
        progress: ``progress(stage, total)`` returning a callable that advances by n, or None.
        labelled_sample: a pairs file (variantid1, variantid2, target) labelling a random sample of the
            candidate pairs, to calibrate on (see :func:`calibrate_candidates`).
        link_with: a second data directory to link ``data_dir`` with (see :mod:`prodmatch.matching.link`):
            only pairs of one item of each are candidates, and the outputs carry each item's ``source``.

    Returns:
        The summary dict (also in summary.json).
    """
    from pathlib import Path

    config = config or MatchConfig()
    out_dir = Path(out_dir)
    staging = staged_output(out_dir, overwrite, SUMMARY_FILE)  # checks out_dir now, before any work
    stages: dict[str, dict] = {}
    t_start = time.perf_counter()
    if config.one_to_one and link_with is None:
        raise ConfigError("--one-to-one applies to linking two sources: give them as --link LEFT RIGHT")
    with timed(stages, "load"):
        if link_with is None:
            model, cat = model_and_catalogue(run_dir, data_dir, None, text=config.token_k > 0, job="catalogue")
            sources = None
        else:
            model = load_model(run_dir).for_job("catalogue")
            cat, sources = link.read_linked(model, data_dir, link_with, text=config.token_k > 0)
    threshold = model.threshold if config.threshold is None else config.threshold
    n = len(cat)

    def whole(stage: str):  # a one-step bar for stages without finer progress
        return progress(stage, 1) if progress else (lambda _n: None)

    with timed(stages, "vectors"):
        done = whole("item vectors")
        vectors, vector_kind = item_vectors(model, cat)
        done(1)
    groups = None
    if config.block_by == "category":
        if cat.categories is None:
            raise ConfigError(f"--block-by category: {data_dir} has no attributes.parquet with categories")
        groups = cat.categories["category2"].cat.codes.to_numpy()
    with timed(stages, "candidates"):
        advance = progress("candidates", n) if progress else None
        searchable = informative_items(model, cat)
        if not searchable.all():
            log.warning(
                "%d of %d items have none of the model's embeddings (missing, or norm <= %g): they are not "
                "matched and stay single-item clusters",
                int((~searchable).sum()),
                n,
                NORM_EPS,
            )
        id_column = model.data_config().id_column
        if sources is None:
            truth = truth_source(data_dir, config.truth_column, id_column)
        else:
            linked = link.linked_truth(data_dir, link_with, config.truth_column, cat.ids.to_numpy(), id_column)
            truth = None if linked is None else linked[1]
        probe = recall_probe(searchable) if truth is not None and sources is None else None
        left, right, search_facts = all_candidates(
            model, cat, vectors, config, groups, advance, searchable, probe, sources
        )
    log.info("%d candidate pairs from %d items (k=%d, %s)", len(left), n, config.k, ", ".join(search_facts["index"]))

    # The pairs calibration is fitted on: within either item's top CALIBRATION_K of the search. Where k is
    # smaller, those beyond it are scored for calibration only.
    near = search_facts.pop("calibration_keys")
    extra = np.setdiff1d(near, left * n + right) if config.calibrate == "prior" else near[:0]
    with timed(stages, "scoring"):
        # One call: a tower-and-head model computes each item's vector once for all pairs (in chunks it
        # would recompute most items' vectors once per chunk).
        ids = cat.ids.to_numpy()
        all_left, all_right = np.concatenate([left, extra // n]), np.concatenate([right, extra % n])
        pairs = PairSet(
            all_left.astype(np.int32),
            all_right.astype(np.int32),
            None,
            np.arange(len(all_left)),
            ids[all_left],
            ids[all_right],
        )
        done = progress("scoring", len(all_left)) if progress else None
        scores = model.score(cat, pairs)
        score, evidence = model.calibrated(scores), scores.evidence
        if done:
            done(len(all_left))
    calibration: dict = {"method": "none"}
    if config.calibrate == "prior":
        sample = None
        if labelled_sample is not None:
            labelled = load_pairs(labelled_sample, cat, require_target=True)
            sample = (model.predict_proba(cat, labelled), labelled.target)
        fit = np.isin(all_left * n + all_right, near)
        score, calibration = calibrate_candidates(model, score, sample, fit=None if sample is not None else fit)
        if config.threshold is None and calibration["method"] != "none":  # else the model's own threshold
            threshold = expected_f1_threshold(score[fit])
            calibration["threshold_rule"] = (
                f"best expected F1 over the candidates within either item's top {CALIBRATION_K}"
            )
    # the candidates only, from here on
    score, evidence = score[: len(left)], evidence[: len(left)]
    # No evidence, no match: whatever the threshold and the candidates' prior came to, a pair with nothing to
    # compare stays below the threshold (and at most the candidates' estimated share of matches).
    score = gate(score, evidence, calibration.get("prior"), threshold)
    cascade: dict = {}
    if config.rescore:
        with timed(stages, "re-scoring"):
            score, cascade = rescore_uncertain(
                config.rescore, data_dir, cat, left, right, score, threshold, config.rescore_band, progress
            )
    score = gate(score, evidence, calibration.get("prior"), threshold)  # the cascade's update too
    estimated = expected_quality(score, threshold)
    calibration |= {"estimated_precision": estimated[0], "estimated_recall_among_candidates": estimated[1]}
    with timed(stages, "clustering"):
        done = whole("clustering")
        # a pair without evidence is no edge, whatever the threshold (even --threshold 0)
        ev = evidence != 0
        labels, cluster_report = cluster_items(
            n, left[ev], right[ev], score[ev], threshold, config.linkage_max, sources, config.one_to_one
        )
        done(1)

    quality: dict = {}
    if truth is not None:
        with timed(stages, "quality"):
            done = whole("quality")
            product = read_truth(*truth, ids, id_column) if sources is None else linked[0]
            quality = truth_quality(product, truth, config.k, left, right, score, evidence, threshold, labels, sources)
            if "pairwise_f1" in quality and quality["truth"]["items_with_truth"] == n and sources is not None:
                oracle = link.linked_oracle(data_dir, link_with, ids)
                if oracle is not None:
                    quality |= oracle_quality(
                        oracle,
                        ids,
                        product,
                        left,
                        right,
                        score,
                        np.arange(0),
                        config.linkage_max,
                        sources=sources,
                        one_to_one=config.one_to_one,
                    )
            elif "pairwise_f1" in quality and quality["truth"]["items_with_truth"] == n:
                if search_facts["index"] == ["hnsw"] and search_facts["index_object"] is not None:
                    # the index holds the searchable items only, in row order
                    index_vectors = vectors[searchable]
                    quality["ann_recall_vs_exact"] = ann_recall(index_vectors, search_facts["index_object"], config.k)
                quality["recall_sample"] = len(probe)
                quality["recall_at_k"] = recall_at_ks(search_facts["probe_neighbours"], probe, product)
                if truth[0].name == TRUTH_FILE and (Path(data_dir) / ORACLE_ITEMS_FILE).exists():
                    quality |= oracle_quality(
                        Oracle.load(data_dir), ids, product, left, right, score, probe, config.linkage_max
                    )
            done(1)
    search_facts.pop("probe_neighbours", None)

    with timed(stages, "writing"), staging as tmp:
        kept = (score >= threshold) & (evidence != 0)
        words = describe(evidence[kept], model.evidence_names())
        matches = matches_frame(ids, left[kept], right[kept], score[kept], words, labels, sources)
        write_parquet(matches, tmp / MATCHES_FILE)
        write_parquet(clusters_frame(ids, labels, sources), tmp / CLUSTERS_FILE)
        summary = {
            "model": model.name,
            "run_dir": str(run_dir),
            "data": str(data_dir),
            "items": n,
            **(
                {}
                if sources is None
                else {
                    "link": link.link_facts(data_dir, link_with, np.bincount(sources, minlength=2), config.one_to_one)
                }
            ),
            "engine": {"name": "local"},
            "parameters": {**config.to_dict(), "threshold": threshold},
            "item_vectors": vector_kind,
            "search": {k: v for k, v in search_facts.items() if k not in ("index_object", "probe_neighbours")},
            "candidates": len(left),
            "candidates_without_evidence": count_none(evidence),
            "matches": int(kept.sum()),
            "scorer": model.describe_job(),
            "calibration": calibration,
            "cascade": cascade,
            "clustering": asdict(cluster_report) | split_report(matches, config.one_to_one),
            "quality": quality,
            "stages": stages,
            "seconds": round(time.perf_counter() - t_start, 3),
        }
        write_json(summary, tmp / SUMMARY_FILE)
    summary["stages"] = stages
    return summary
