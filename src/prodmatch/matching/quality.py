"""Quality of a match against the truth (synthetic data): candidate recall, recall@k, pairwise and B-cubed
cluster quality, and the Bayes oracle's figures beside the model's."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.clustering import cluster_items
from prodmatch.config import RECALL_KS
from prodmatch.errors import ConfigError, DataError
from prodmatch.io import TRUTH_FILE

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ quality


def truth_source(data_dir, column: str | None, id_column: str = "variantid") -> tuple[Path, str] | None:
    """(file, column) of the items' true products: with ``column``, the first parquet file of ``data_dir`` (by
    name) that holds it beside the id column; without, ``truth.parquet``'s ``product_id`` if there is one.
    ConfigError naming the files and their columns when ``column`` is in none of them."""
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    if column is None:
        path = data_dir / TRUTH_FILE
        return (path, "product_id") if path.exists() else None
    schemas = ((path, pq.read_schema(path).names) for path in sorted(data_dir.glob("*.parquet")))
    return Path(first_with_column(schemas, column, id_column, data_dir)), column


def first_with_column(schemas, column: str, id_column: str, data_dir) -> str:
    """The first of ``schemas`` ((path, column names), in name order) holding ``column`` beside the id column;
    ConfigError naming every file and its columns when none does."""
    seen = {}
    for path, names in schemas:
        if column in names and id_column in names:
            return path
        seen[str(path).rstrip("/").rsplit("/", 1)[-1]] = names
    listing = "; ".join(f"{name}: {', '.join(cols)}" for name, cols in seen.items()) or "no parquet files"
    raise ConfigError(
        f"--truth-column {column!r}: no parquet file of {data_dir} has it beside {id_column!r} ({listing}); name a "
        "column one of them holds"
    )


def read_truth(
    path: Path, column: str, ids: np.ndarray, id_column: str = "variantid", frame: pd.DataFrame | None = None
) -> np.ndarray:
    """(N,) object: each item's true product from ``path``'s ``column`` (None where it has none). An item listed
    twice with two products is an error that names it. ``frame``: the file's two columns, already read (from
    a file system pandas does not open)."""
    if frame is None:
        frame = pd.read_parquet(path, columns=[id_column, column])
    frame = frame[[id_column, column]].dropna(subset=[column]).drop_duplicates()
    twice = frame[id_column].duplicated(keep=False)
    if twice.any():
        example = frame.loc[twice, id_column].iloc[0]
        raise DataError(f"{path}: item {example} has more than one {column!r}; give each item one true product")
    product = frame.set_index(id_column)[column].reindex(ids).to_numpy(dtype=object)
    return np.where(pd.isna(product), None, product)


def pairs_of_groups(labels: np.ndarray, sources: np.ndarray | None = None) -> int:
    """Pairs of items that share a label; with ``sources`` ((N,) source of each item), only the pairs of two
    sources (linking: the pairs within one source are not asked for)."""
    if sources is None:
        counts = np.bincount(labels)
        return int((counts * (counts - 1) // 2).sum())
    counts = np.bincount(labels).astype(np.int64)
    by_source = pd.DataFrame({"g": labels, "s": sources}).value_counts().to_numpy().astype(np.int64)
    return int(((counts**2).sum() - (by_source**2).sum()) // 2)


def candidate_recall(
    left: np.ndarray, right: np.ndarray, product: np.ndarray, sources: np.ndarray | None = None
) -> float | None:
    """Share of the true same-product pairs (of two sources, with ``sources``) that are among the candidates."""
    _, prod = np.unique(product, return_inverse=True)
    true_pairs = pairs_of_groups(prod, sources)
    if true_pairs == 0:
        return None
    same = prod[left] == prod[right]
    if sources is not None:
        same &= sources[left] != sources[right]
    return float(same.sum() / true_pairs)


def cluster_quality(labels: np.ndarray, product: np.ndarray, sources: np.ndarray | None = None) -> dict[str, float]:
    """Pairwise precision, recall and F1 of the clusters against true products, and B-cubed precision and recall.

    With ``sources`` (linking two sources), the pairwise figures count the pairs of two sources only; B-cubed
    is over every item either way."""
    _, prod = np.unique(product, return_inverse=True)
    if sources is None:
        both = pd.DataFrame({"c": labels, "p": prod}).value_counts().to_numpy()  # sizes of cluster ∩ product
        tp = float((both * (both - 1) / 2).sum())
    else:
        _, both = np.unique(labels.astype(np.int64) * (int(prod.max(initial=0)) + 1) + prod, return_inverse=True)
        tp = float(pairs_of_groups(both, sources))
    predicted, true = pairs_of_groups(labels, sources), pairs_of_groups(prod, sources)
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
    sources: np.ndarray | None = None,
    one_to_one: bool = False,
) -> tuple[float, float]:
    """(threshold, pairwise F1) of the best of ``grid`` when the scores are clustered by :func:`cluster_items`
    (linking two ``sources``: their pairs only, and with ``one_to_one`` as ``match --one-to-one`` clusters)."""
    best = (float("nan"), -1.0)
    for t in grid:
        labels, _ = cluster_items(n_items, left, right, score, t, linkage_max, sources, one_to_one)
        f1 = cluster_quality(labels, product, sources)["pairwise_f1"]
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
    sources: np.ndarray | None = None,
    one_to_one: bool = False,
) -> dict:
    """The model's catalogue figures next to the Bayes oracle's on the same catalogue (synthetic data only).

    - ``candidate_ap`` / ``oracle_candidate_ap``: average precision of the model's and the oracle's scores
      over the same candidate pairs (``candidate_base_rate``: the share of them that are one product);
    - ``oracle_recall_at_k``: the sampled queries' true partners found in their own top-k by the oracle's
      ranking of their whole category (``recall_at_k``: by the model's candidate search, the same sample);
    - ``best_threshold_f1`` / ``oracle_cluster_f1``: pairwise F1 of clustering the candidates with the same
      rule, at the best threshold of a grid, for the model's scores and the oracle's posterior (with the
      catalogue's prior of pair kinds).

    Linking two ``sources``: the pairs of two sources only, and no ``oracle_recall_at_k`` (the oracle ranks a
    whole category, both sources together).
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
    if sources is None:
        top = oracle.top_k(orow[queries], max(RECALL_KS))
        ranked = np.where(top >= 0, inverse[np.maximum(top, 0)], -1)
        out["oracle_recall_at_k"] = recall_at_ks(ranked, queries, product)
    n = len(ids)
    if len(left) > max_grid_pairs:
        log.info("%d candidate pairs: the threshold grids of best F1 are left out (over %d)", len(left), max_grid_pairs)
        return out
    grid = {"linkage_max": linkage_max, "sources": sources, "one_to_one": one_to_one}
    t, f1 = best_threshold_f1(n, left, right, score, product, **grid)
    out["best_threshold"], out["best_threshold_f1"] = t, f1
    t, f1 = best_threshold_f1(n, left, right, oracle_p, product, **grid)
    out["oracle_threshold"], out["oracle_cluster_f1"] = t, f1
    return out
