"""The matches table every engine and mode writes: canonical pairs, and whether the clusters kept each together."""

from __future__ import annotations

import contextlib
import logging
import resource
import time

import numpy as np
import pandas as pd

# Why a match can fall in two clusters: clustering cuts every component of three or more items by average
# linkage at the threshold, so a pair at or above it stays apart when its groups match on average below it.
GUARD_REASON = (
    "average-linkage guard: inside a component of three or more items, groups join only when they match on "
    "average at the threshold (unscored pairs count as 0), so a match between two groups that do not stays apart"
)

ONE_TO_ONE_REASON = (
    "one-to-one: each component's matches are reduced to the matching of largest summed score, at most one item "
    "of each source per cluster, so a match that would give an item a second partner stays apart"
)
log = logging.getLogger(__name__)

SOURCE_NAMES = ("left", "right")  # linking: the source column's values for LEFT's and RIGHT's items


def matches_frame(
    ids: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    evidence: np.ndarray,
    cluster: np.ndarray,
    sources: np.ndarray | None = None,
) -> pd.DataFrame:
    """matches.parquet's rows for the matched pairs (``left``, ``right``: rows of ``ids`` and of ``cluster``,
    each row's cluster in clusters.parquet): each pair once with ``variantid1 < variantid2``, sorted by the
    two ids, with ``same_cluster``: whether both items are in one cluster. Linking (``sources``: each row's
    source, 0 or 1), ``source1`` and ``source2`` name the source of each (:data:`SOURCE_NAMES`)."""
    ids1, ids2 = ids[left], ids[right]
    swap = ids2 < ids1
    frame = pd.DataFrame(
        {
            "variantid1": np.where(swap, ids2, ids1),
            "variantid2": np.where(swap, ids1, ids2),
            "score": np.asarray(score),
            "evidence": np.asarray(evidence, dtype=object),
            "same_cluster": cluster[left] == cluster[right],
        }
    )
    if sources is not None:
        names = np.array(SOURCE_NAMES, dtype=object)
        frame["source1"] = names[np.where(swap, sources[right], sources[left])]
        frame["source2"] = names[np.where(swap, sources[left], sources[right])]
    return frame.sort_values(["variantid1", "variantid2"], kind="stable", ignore_index=True)


def clusters_frame(ids: np.ndarray, cluster: np.ndarray, sources: np.ndarray | None = None) -> pd.DataFrame:
    """clusters.parquet: every item's cluster (and, linking, its ``source``)."""
    frame = pd.DataFrame({"variantid": ids, "cluster_id": cluster})
    if sources is not None:
        frame["source"] = np.array(SOURCE_NAMES, dtype=object)[sources]
    return frame


def split_report(split: int | pd.DataFrame, one_to_one: bool = False) -> dict:
    """summary.json's count of the matches the clusters keep apart (given, or counted in a matches frame), and
    why."""
    if isinstance(split, pd.DataFrame):
        split = int((~split["same_cluster"]).sum())
    return {
        "matches_in_different_clusters": split,
        "reason": (ONE_TO_ONE_REASON if one_to_one else GUARD_REASON) if split else None,
    }


def timed(stages: dict, name: str):
    """Context manager recording a stage's wall seconds and peak RSS into ``stages``."""

    @contextlib.contextmanager
    def run():
        t0 = time.perf_counter()
        yield
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stages[name] = {"seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(peak_mb, 1)}
        log.info("%s: %.1fs (peak memory so far %.0f MB)", name, stages[name]["seconds"], peak_mb)

    return run()
