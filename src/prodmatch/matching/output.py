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
    ids: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    evidence: np.ndarray,
    cluster: np.ndarray,
) -> pd.DataFrame:
    """matches.parquet's rows for the matched pairs (``left``, ``right``: rows of ``ids`` and of ``cluster``,
    each row's cluster in clusters.parquet): each pair once with ``variantid1 < variantid2``, sorted by the
    two ids, with ``same_cluster``: whether both items are in one cluster."""
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
    return frame.sort_values(["variantid1", "variantid2"], kind="stable", ignore_index=True)


def split_report(split: int | pd.DataFrame) -> dict:
    """summary.json's count of the matches the clusters keep apart (given, or counted in a matches frame), and
    why."""
    if isinstance(split, pd.DataFrame):
        split = int((~split["same_cluster"]).sum())
    return {"matches_in_different_clusters": split, "reason": GUARD_REASON if split else None}
