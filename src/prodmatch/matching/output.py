"""The matches table every engine and mode writes: canonical pairs, and whether the clusters kept each together."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Why a match can fall in two clusters: clustering cuts every component of three or more items by average
# linkage at the threshold, so a pair at or above it stays apart when its groups match on average below it.
GUARD_REASON = (
    "average-linkage guard: inside a component of three or more items, groups join only when they match on "
    "average at the threshold (unscored pairs count as 0), so a match between two groups that do not stays apart"
)


def matches_frame(
    ids1: np.ndarray,
    ids2: np.ndarray,
    score: np.ndarray,
    evidence: np.ndarray,
    cluster1: np.ndarray,
    cluster2: np.ndarray,
) -> pd.DataFrame:
    """matches.parquet's rows: each pair once with ``variantid1 < variantid2``, sorted by the two ids, with
    ``same_cluster``: whether clusters.parquet puts both items in one cluster."""
    ids1, ids2 = np.asarray(ids1), np.asarray(ids2)
    swap = ids2 < ids1
    frame = pd.DataFrame(
        {
            "variantid1": np.where(swap, ids2, ids1),
            "variantid2": np.where(swap, ids1, ids2),
            "score": np.asarray(score),
            "evidence": np.asarray(evidence, dtype=object),
            "same_cluster": np.asarray(cluster1) == np.asarray(cluster2),
        }
    )
    return frame.sort_values(["variantid1", "variantid2"], kind="stable", ignore_index=True)


def split_report(split: int | pd.DataFrame) -> dict:
    """summary.json's count of the matches the clusters keep apart (given, or counted in a matches frame), and
    why."""
    if isinstance(split, pd.DataFrame):
        split = int((~split["same_cluster"]).sum())
    return {"matches_in_different_clusters": split, "reason": GUARD_REASON if split else None}
