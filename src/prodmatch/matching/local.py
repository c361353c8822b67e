"""The local engine: the stages of :func:`prodmatch.matching.pipeline.run_match` in one process, on arrays."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import staged_output, write_json, write_parquet
from prodmatch.calibration import expected_f1_threshold
from prodmatch.candidates import (
    all_candidates,
    ann_recall,
    informative_items,
    item_vectors,
    recall_probe,
    shared_value_candidates,
)
from prodmatch.catalogue import NORM_EPS
from prodmatch.clustering import cluster_items
from prodmatch.errors import ConfigError
from prodmatch.evidence import capped, count_none, describe
from prodmatch.io import CLUSTERS_FILE, MATCHES_FILE, SUMMARY_FILE, TRUTH_FILE
from prodmatch.matching import link
from prodmatch.matching.evaluate import read_products, truth_files
from prodmatch.matching.output import clusters_frame, matches_frame
from prodmatch.matching.pipeline import MatchRun, Sums, run_match
from prodmatch.matching.quality import oracle_quality, recall_at_ks
from prodmatch.matching.scoring import calibrate_candidates, rescore_uncertain
from prodmatch.models import load_model
from prodmatch.oracle import ORACLE_ITEMS_FILE, Oracle
from prodmatch.pairs import PairSet, load_pairs
from prodmatch.runs import model_and_catalogue

log = logging.getLogger(__name__)


class LocalEngine:
    """Every stage in this process: faiss or exact search, the model's vectorised scoring, numpy rules.

    The outputs are written into a temporary directory beside ``out_dir`` and moved into place at the end, so
    an interrupted run leaves no partial output."""

    name = "local"

    def __init__(self) -> None:
        self.products: np.ndarray | None = None  # the items' true products, once read

    def check(self, run: MatchRun) -> None:
        pass

    def staged(self, out_dir, overwrite: bool):
        return staged_output(Path(out_dir), overwrite, SUMMARY_FILE)  # checks out_dir now, before any work

    def read_items(self, run: MatchRun) -> None:
        config = run.config
        if run.link_with is None:
            self.model, self.cat = model_and_catalogue(
                run.run_dir, run.data_dir, None, text=config.token_k > 0, job="catalogue"
            )
            self.sources = None
        else:
            self.model = load_model(run.run_dir).for_job("catalogue")
            self.cat, self.sources = link.read_linked(self.model, run.data_dir, run.link_with, text=config.token_k > 0)
            run.link = link.link_facts(
                run.data_dir, run.link_with, np.bincount(self.sources, minlength=2), config.one_to_one
            )
        run.model, run.items = self.model, len(self.cat)
        self.ids = self.cat.ids.to_numpy()
        self.id_column = self.model.data_config().id_column

    def truth_files(self, run: MatchRun) -> list | None:
        dirs = [run.data_dir] if run.link_with is None else [run.data_dir, run.link_with]
        return truth_files(dirs, run.config.truth_column, self.id_column)

    def item_vectors(self, run: MatchRun) -> str:
        self.vectors, kind = item_vectors(self.model, self.cat)
        return kind

    def candidate_search(self, run: MatchRun) -> dict:
        config, cat, n = run.config, self.cat, len(self.cat)
        groups = None
        if config.block_by == "category":
            if cat.categories is None:
                raise ConfigError(f"--block-by category: {run.data_dir} has no attributes.parquet with categories")
            groups = cat.categories["category2"].cat.codes.to_numpy()
        advance = run.progress("candidates", n) if run.progress else None
        self.searchable = informative_items(self.model, cat)
        if not self.searchable.all():
            log.warning(
                "%d of %d items have none of the model's embeddings (missing, or norm <= %g): they are not "
                "matched and stay single-item clusters",
                int((~self.searchable).sum()),
                n,
                NORM_EPS,
            )
        self.probe = recall_probe(self.searchable) if run.truths is not None and self.sources is None else None
        self.left, self.right, facts = all_candidates(
            self.model,
            cat,
            self.vectors,
            config,
            groups,
            advance,
            self.searchable,
            self.probe,
            self.sources,
            shared_values=False,  # the next stage
        )
        # the pairs calibration is fitted on: within either item's top CALIBRATION_K of the search
        self.near = facts.pop("calibration_keys")
        self.index_object = facts.pop("index_object", None)
        self.probe_neighbours = facts.pop("probe_neighbours", None)
        log.info("%d candidate pairs from %d items (k=%d, %s)", len(self.left), n, config.k, ", ".join(facts["index"]))
        return facts

    def shared_values(self, run: MatchRun) -> dict:
        self.left, self.right, facts = shared_value_candidates(
            self.cat, self.vectors, self.searchable, run.config, self.left, self.right, self.sources
        )
        return facts

    def score(self, run: MatchRun) -> int:
        n, left, right = len(self.cat), self.left, self.right
        # Where k is smaller than CALIBRATION_K, the calibration pairs beyond it are scored for calibration only.
        extra = np.setdiff1d(self.near, left * n + right) if run.config.calibrate == "prior" else self.near[:0]
        # One call: a tower-and-head model computes each item's vector once for all pairs (in chunks it would
        # recompute most items' vectors once per chunk).
        self.all_left, self.all_right = np.concatenate([left, extra // n]), np.concatenate([right, extra % n])
        pairs = PairSet(
            self.all_left.astype(np.int32),
            self.all_right.astype(np.int32),
            None,
            np.arange(len(self.all_left)),
            self.ids[self.all_left],
            self.ids[self.all_right],
        )
        done = run.progress("scoring", len(self.all_left)) if run.progress else None
        scores = self.model.score(self.cat, pairs)
        self.score_, self.evidence = self.model.calibrated(scores), scores.evidence
        if done:
            done(len(self.all_left))
        return len(left)

    def calibrate(self, run: MatchRun) -> dict:
        n, sample = len(self.cat), None
        if run.labelled_sample is not None:
            labelled = load_pairs(run.labelled_sample, self.cat, require_target=True)
            sample = (self.model.predict_proba(self.cat, labelled), labelled.target)
        self.fit = np.isin(self.all_left * n + self.all_right, self.near)
        self.score_, calibration = calibrate_candidates(
            self.model, self.score_, sample, fit=None if sample is not None else self.fit
        )
        return calibration

    def expected_f1_threshold(self) -> float:
        return expected_f1_threshold(self.score_[self.fit])

    def keep_candidates(self) -> None:
        kept = len(self.left)
        self.score_, self.evidence = self.score_[:kept], self.evidence[:kept]

    def gate(self, limit: float) -> None:
        self.score_ = capped(self.score_, self.evidence, limit)

    def rescore(self, run: MatchRun, threshold: float) -> dict:
        config = run.config
        self.score_, cascade = rescore_uncertain(
            config.rescore,
            run.data_dir,
            self.cat,
            self.left,
            self.right,
            self.score_,
            threshold,
            config.rescore_band,
            run.progress,
        )
        return cascade

    def sums(self, threshold: float) -> Sums:
        prob = np.asarray(self.score_, dtype=np.float64)
        kept = prob >= threshold
        self.kept = kept & (self.evidence != 0)
        return Sums(float(prob.sum()), float(prob[kept].sum()), int(self.kept.sum()), count_none(self.evidence))

    def cluster(self, run: MatchRun, threshold: float) -> dict:
        config = run.config
        ev = self.evidence != 0  # a pair without evidence is no edge, whatever the threshold (even --threshold 0)
        self.labels, report = cluster_items(
            len(self.cat),
            self.left[ev],
            self.right[ev],
            self.score_[ev],
            threshold,
            config.linkage_max,
            self.sources,
            config.one_to_one,
        )
        return asdict(report)

    def write(self, run: MatchRun, threshold: float, folder) -> int:
        kept = self.kept
        words = describe(self.evidence[kept], self.model.evidence_names())
        matches = matches_frame(
            self.ids, self.left[kept], self.right[kept], self.score_[kept], words, self.labels, self.sources
        )
        write_parquet(matches, Path(folder) / MATCHES_FILE)
        write_parquet(clusters_frame(self.ids, self.labels, self.sources), Path(folder) / CLUSTERS_FILE)
        return int((~matches["same_cluster"]).sum())

    def product(self, run: MatchRun) -> np.ndarray:
        """Every item's true product (None: unknown), read once."""
        if self.products is None:
            self.products = read_products(run.truths, self.ids, self.id_column)
        return self.products

    def candidate_truth(self, run: MatchRun, threshold: float) -> tuple[int, int]:
        codes = pd.factorize(pd.Series(self.product(run), dtype=object))[0]  # -1: no product
        same = (codes[self.left] == codes[self.right]) & (codes[self.left] >= 0)
        return int(same.sum()), int((same & self.kept).sum())

    def diagnostics(self, run: MatchRun, search: dict) -> dict:
        config, product, out = run.config, self.product(run), {}
        if run.items != int(sum(p is not None for p in product)):
            return out  # the oracle and recall at k ask for every item's product
        if self.sources is not None:
            oracle = link.linked_oracle(run.data_dir, run.link_with, self.ids)
            if oracle is not None:
                out |= oracle_quality(
                    oracle,
                    self.ids,
                    product,
                    self.left,
                    self.right,
                    self.score_,
                    np.arange(0),
                    config.linkage_max,
                    sources=self.sources,
                    one_to_one=config.one_to_one,
                )
            return out
        if search["index"] == ["hnsw"] and self.index_object is not None:
            # the index holds the searchable items only, in row order
            out["ann_recall_vs_exact"] = ann_recall(self.vectors[self.searchable], self.index_object, config.k)
        out["recall_sample"] = len(self.probe)
        out["recall_at_k"] = recall_at_ks(self.probe_neighbours, self.probe, product)
        truth_path = Path(run.truths[0][0])
        if truth_path.name == TRUTH_FILE and (Path(run.data_dir) / ORACLE_ITEMS_FILE).exists():
            out |= oracle_quality(
                Oracle.load(run.data_dir),
                self.ids,
                product,
                self.left,
                self.right,
                self.score_,
                self.probe,
                config.linkage_max,
            )
        return out

    def facts(self) -> dict:
        return {"name": "local"}

    def write_summary(self, summary: dict, folder) -> None:
        write_json(summary, Path(folder) / SUMMARY_FILE)


def match_local(run_dir, data_dir, out_dir, config=None, **kwargs) -> dict:
    """:func:`prodmatch.matching.pipeline.run_match` with a :class:`LocalEngine`: every group of listings that are
    one product in ``data_dir``, in this process (``kwargs``: ``overwrite``, ``progress``, ``labelled_sample``,
    ``link_with``, as there)."""
    return run_match(LocalEngine(), run_dir, data_dir, out_dir, config, **kwargs)
