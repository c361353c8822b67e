"""Quality of a match against the truth (synthetic data): candidate recall, recall@k, pairwise and B-cubed
cluster quality, and the Bayes oracle's figures beside the model's."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from prodmatch.matching.clustering import cluster_items
from prodmatch.matching.config import RECALL_KS

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ quality


def pairs_of_groups(labels: np.ndarray) -> int:
    counts = np.bincount(labels)
    return int((counts * (counts - 1) // 2).sum())


def candidate_recall(left: np.ndarray, right: np.ndarray, product: np.ndarray) -> float | None:
    """Share of the true same-product pairs that are among the candidates."""
    _, prod = np.unique(product, return_inverse=True)
    true_pairs = pairs_of_groups(prod)
    if true_pairs == 0:
        return None
    return float((prod[left] == prod[right]).sum() / true_pairs)


def cluster_quality(labels: np.ndarray, product: np.ndarray) -> dict[str, float]:
    """Pairwise precision, recall and F1 of the clusters against true products, and B-cubed precision and recall."""
    _, prod = np.unique(product, return_inverse=True)
    both = pd.DataFrame({"c": labels, "p": prod}).value_counts().to_numpy()  # sizes of cluster ∩ product
    tp = float((both * (both - 1) / 2).sum())
    predicted, true = pairs_of_groups(labels), pairs_of_groups(prod)
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    frame = pd.DataFrame({"c": labels, "p": prod})
    inter = frame.groupby(["c", "p"])["c"].transform("size").to_numpy()
    c_size = frame.groupby("c")["c"].transform("size").to_numpy()
    p_size = frame.groupby("p")["p"].transform("size").to_numpy()
    return {
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": f1,
        "bcubed_precision": float((inter / c_size).mean()),
        "bcubed_recall": float((inter / p_size).mean()),
    }


THRESHOLD_GRID = tuple(round(x, 1) for x in np.arange(0.1, 1.0, 0.1))


def recall_at_ks(
    neighbours: np.ndarray, queries: np.ndarray, product: np.ndarray, ks: tuple[int, ...] = RECALL_KS
) -> dict[str, float | None]:
    """Share of the sampled queries' true partners (other listings of their product) found in each query's
    own top-k list, by k.

    Args:
        neighbours: (Q, K) rows ranked best first (-1: none), K >= max(ks); may hold the query itself.
        queries: (Q,) the query rows.
        product: (N,) true product of every row.
    """
    codes = pd.factorize(product)[0]
    counts = np.bincount(codes)
    partners = counts[codes[queries]] - 1
    total = int(partners.sum())
    hit = (neighbours >= 0) & (neighbours != queries[:, None])
    hit &= codes[np.maximum(neighbours, 0)] == codes[queries][:, None]
    return {str(k): (float(hit[:, :k].sum() / total) if total else None) for k in ks}


def best_threshold_f1(
    n_items: int,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    product: np.ndarray,
    grid: tuple[float, ...] = THRESHOLD_GRID,
    linkage_max: int = 5000,
) -> tuple[float, float]:
    """(threshold, pairwise F1) of the best of ``grid`` when the scores are clustered by :func:`cluster_items`."""
    best = (float("nan"), -1.0)
    for t in grid:
        labels, _ = cluster_items(n_items, left, right, score, t, linkage_max)
        f1 = cluster_quality(labels, product)["pairwise_f1"]
        if f1 > best[1]:
            best = (float(t), f1)
    return best


def oracle_quality(
    oracle,
    ids: np.ndarray,
    product: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    queries: np.ndarray,
    linkage_max: int = 5000,
    max_grid_pairs: int = 5_000_000,
) -> dict:
    """The model's catalogue figures next to the Bayes oracle's on the same catalogue (synthetic data only).

    - ``candidate_ap`` / ``oracle_candidate_ap``: average precision of the model's and the oracle's scores
      over the same candidate pairs (``candidate_base_rate``: the share of them that are one product);
    - ``oracle_recall_at_k``: the sampled queries' true partners found in their own top-k by the oracle's
      ranking of their whole category (``recall_at_k``: by the model's candidate search, the same sample);
    - ``best_threshold_f1`` / ``oracle_cluster_f1``: pairwise F1 of clustering the candidates with the same
      rule, at the best threshold of a grid, for the model's scores and the oracle's posterior (with the
      catalogue's prior of pair kinds).
    """
    from sklearn.metrics import average_precision_score

    orow = oracle.rows(ids)
    inverse = np.full(len(oracle), -1, dtype=np.int64)
    inverse[orow] = np.arange(len(ids))
    same = product[left] == product[right]
    oracle_p = oracle.probability(orow[left], orow[right])
    out: dict = {"candidate_base_rate": float(same.mean()) if len(same) else None}
    if same.any() and not same.all():
        out["candidate_ap"] = float(average_precision_score(same, score))
        out["oracle_candidate_ap"] = float(average_precision_score(same, oracle_p))
    top = oracle.top_k(orow[queries], max(RECALL_KS))
    out["oracle_recall_at_k"] = recall_at_ks(np.where(top >= 0, inverse[np.maximum(top, 0)], -1), queries, product)
    n = len(ids)
    if len(left) > max_grid_pairs:
        log.info("%d candidate pairs: the threshold grids of best F1 are left out (over %d)", len(left), max_grid_pairs)
        return out
    t, f1 = best_threshold_f1(n, left, right, score, product, linkage_max=linkage_max)
    out["best_threshold"], out["best_threshold_f1"] = t, f1
    t, f1 = best_threshold_f1(n, left, right, oracle_p, product, linkage_max=linkage_max)
    out["oracle_threshold"], out["oracle_cluster_f1"] = t, f1
    return out
