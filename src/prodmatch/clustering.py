"""Stage 3, clustering: connected components of the pairs at or above the threshold, then the anti-chaining
guard (average linkage cut at the same threshold) inside each component. One implementation: the local
engine runs it over the whole catalogue, the Spark engine over each group of whole components."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ clusters


@dataclass
class ClusterReport:
    """What clustering did, for summary.json."""

    edges: int = 0
    components: int = 0
    components_relinked: int = 0  # components of 3+ items that average linkage re-clustered
    components_split: int = 0  # of those, the ones it cut into more than one cluster
    components_too_large: int = 0  # over linkage_max: clustered by the sparse average linkage
    clusters: int = 0
    items_in_multi_item_clusters: int = 0
    largest_cluster: int = 0
    sizes: dict = field(default_factory=dict)
    # linking with one-to-one: the pairs the maximum-weight matching kept, and the components too large for
    # an exact matching (over linkage_max items), matched greedily by score instead
    one_to_one_pairs: int = 0
    components_matched_greedily: int = 0


SMALL_COMPONENT = 16  # components up to this size are re-clustered together (see average_linkage_cut)
NEUTRAL_BELOW = 1e-9  # linking: a pair within one source counts as this far below the threshold


def cluster_items(
    n_items: int,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    threshold: float,
    linkage_max: int = 5000,
    sources: np.ndarray | None = None,
    one_to_one: bool = False,
) -> tuple[np.ndarray, ClusterReport]:
    """(N,) cluster label of every item (0..C-1), and counts. See the module docstring for the rule.

    A component larger than ``linkage_max`` (too big for a dense linkage matrix) gets the same average
    linkage from its scored pairs alone (:func:`sparse_average_linkage`: memory in its pairs, not its items
    squared).

    ``sources``: (N,) the source of each item when linking two sources (``match --link``), whose pairs within
    one source are never scored: the guard then averages over the pairs of two sources only (a pair within
    one source counts as just below the threshold, so two groups join exactly when their pairs of two sources
    match on average at the threshold). With ``one_to_one`` (clusters of at most one item of each source),
    instead of the guard, a maximum-weight matching of each component's pairs (see
    :func:`one_to_one_matching`).
    """
    report = ClusterReport(edges=int((score >= threshold).sum()))
    labels = np.arange(n_items, dtype=np.int64)  # every item alone until an edge joins it
    if one_to_one:
        if sources is None:
            raise ValueError("one-to-one clustering needs each item's source")
        one_to_one_matching(labels, left, right, score, threshold, sources, linkage_max, report)
    else:
        pairs = np.arange(len(left))
        _cluster_into(labels, pairs, left, right, score, threshold, linkage_max, report, top=True, sources=sources)
    _, labels = np.unique(labels, return_inverse=True)
    counts = np.bincount(labels)
    report.clusters = len(counts)
    report.items_in_multi_item_clusters = int(counts[counts > 1].sum())
    report.largest_cluster = int(counts.max()) if len(counts) else 0
    size_hist = pd.Series(counts).value_counts().sort_index()
    report.sizes = {str(k): int(v) for k, v in size_hist.items() if k <= 10}
    report.sizes[">10"] = int(size_hist[size_hist.index > 10].sum())
    return labels, report


def _cluster_into(
    labels: np.ndarray,
    pairs: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    threshold: float,
    linkage_max: int,
    report: ClusterReport,
    *,
    top: bool = False,
    sources: np.ndarray | None = None,
) -> None:
    """Label the items joined by ``pairs`` (indices into left/right/score) at ``threshold``, in place."""
    neutral = threshold - NEUTRAL_BELOW  # a pair within one source, when linking (see cluster_items)
    kept = pairs[score[pairs] >= threshold]
    if len(kept) == 0:
        return
    nodes, inverse = np.unique(np.concatenate([left[kept], right[kept]]), return_inverse=True)
    a, b = inverse[: len(kept)], inverse[len(kept) :]
    graph = sp.coo_matrix((np.ones(len(kept)), (a, b)), shape=(len(nodes), len(nodes)))
    n_comp, comp = connected_components(graph, directed=False)
    if top:
        report.components = int(n_comp)
    sizes = np.bincount(comp, minlength=n_comp)
    first = np.full(n_comp, -1, dtype=np.int64)
    first[comp[::-1]] = nodes[::-1]  # a representative item of each component
    labels[nodes] = first[comp]
    # Every scored pair inside a component of 3+ items, kept or not, informs the linkage.
    comp_of = np.full(len(labels), -1, dtype=np.int64)
    comp_of[nodes] = comp
    ca, cb = comp_of[left[pairs]], comp_of[right[pairs]]
    inside = (ca >= 0) & (ca == cb)
    # Members and inner pairs of every component, by sorting once (no per-component scans).
    node_order = np.argsort(comp, kind="stable")
    node_starts = np.searchsorted(comp[node_order], np.arange(n_comp + 1))
    pair_comp, inner_pairs = ca[inside], pairs[inside]
    order = np.argsort(pair_comp, kind="stable")
    pair_comp, inner_pairs = pair_comp[order], inner_pairs[order]
    pair_starts = np.searchsorted(pair_comp, np.arange(n_comp + 1))
    small = (sizes >= 3) & (sizes <= min(SMALL_COMPONENT, linkage_max))
    if small.any():
        rank = np.empty(len(labels), dtype=np.int64)  # each node's place among its component's members
        rank[nodes[node_order]] = np.arange(len(nodes)) - node_starts[comp[node_order]]
        for m in np.unique(sizes[small]):
            cs = np.flatnonzero(small & (sizes == m))
            members = nodes[node_order[node_starts[cs][:, None] + np.arange(m)]]  # (C, m), each row ascending
            in_batch = np.isin(pair_comp, cs)  # pair_comp is sorted, so the pairs come component by component
            inner, batch = inner_pairs[in_batch], np.searchsorted(cs, pair_comp[in_batch])
            sim = np.zeros((len(cs), m, m))
            ia, ib = rank[left[inner]], rank[right[inner]]
            sim[batch, ia, ib] = sim[batch, ib, ia] = score[inner]
            if sources is not None:
                side = sources[members]
                sim[side[:, :, None] == side[:, None, :]] = neutral
            first = average_linkage_cut(sim, threshold)
            labels[members] = np.take_along_axis(members, first, 1)
            report.components_relinked += len(cs)
            report.components_split += int((first != 0).any(axis=1).sum())
    for c in np.flatnonzero((sizes >= 3) & ~small):
        members = nodes[node_order[node_starts[c] : node_starts[c + 1]]]  # ascending
        inner = inner_pairs[pair_starts[c] : pair_starts[c + 1]]
        ia, ib = np.searchsorted(members, left[inner]), np.searchsorted(members, right[inner])
        side = None if sources is None else sources[members]
        if len(members) > linkage_max:  # the same linkage without a dense matrix
            report.components_too_large += 1
            sub = sparse_average_linkage(len(members), ia, ib, score[inner], threshold, side)
        else:
            report.components_relinked += 1
            sim = np.zeros((len(members), len(members)))
            sim[ia, ib] = sim[ib, ia] = score[inner]
            if side is not None:
                sim[side[:, None] == side[None, :]] = neutral
            dist = 1.0 - sim
            np.fill_diagonal(dist, 0.0)
            tree = linkage(squareform(dist, checks=False), method="average")
            sub = fcluster(tree, t=1.0 - threshold, criterion="distance")  # 1..K
        uniq, first = np.unique(sub, return_index=True)
        if len(uniq) > 1:
            report.components_split += 1
            labels[members] = members[first][np.searchsorted(uniq, sub)]  # each labelled by its first member


def average_linkage_cut(sim: np.ndarray, threshold: float) -> np.ndarray:
    """Average linkage of many small components at once, cut at ``threshold``.

    ``sim`` is (C, m, m): the scores between the m members of each of C components (0 where a pair was not
    scored). Clusters are merged closest first while their average distance, 1 - score, is at most
    1 - ``threshold``: the partition ``scipy``'s ``linkage(method="average")`` and ``fcluster(criterion=
    "distance")`` give, computed for all components together instead of two calls per component (which
    took most of the clustering time on a million items). Returns (C, m): each member's cluster, as the
    position of that cluster's first member.
    """
    c, m = sim.shape[:2]
    dist = 1.0 - np.asarray(sim, dtype=np.float64)
    diagonal = np.arange(m)
    dist[:, diagonal, diagonal] = np.inf
    size = np.ones((c, m))
    first = np.tile(diagonal, (c, 1))
    live = np.arange(c)
    for _ in range(m - 1):
        flat = dist[live].reshape(len(live), m * m)
        best = flat.argmin(axis=1)  # row-major: the upper triangle's copy, so i < j
        close = flat[np.arange(len(live)), best] <= 1.0 - threshold
        live, best = live[close], best[close]
        if not len(live):
            break
        i, j = np.divmod(best, m)
        ni, nj = size[live, i], size[live, j]
        merged = (ni[:, None] * dist[live, i] + nj[:, None] * dist[live, j]) / (ni + nj)[:, None]
        dist[live, i, :] = merged
        dist[live, :, i] = merged
        dist[live, j, :] = np.inf
        dist[live, :, j] = np.inf
        dist[live, i, i] = np.inf
        size[live, i] = ni + nj
        first[live] = np.where(first[live] == j[:, None], i[:, None], first[live])  # i < j: still the first
    return first


def sparse_average_linkage(
    m: int,
    ia: np.ndarray,
    ib: np.ndarray,
    sim: np.ndarray,
    threshold: float,
    sources: np.ndarray | None = None,
) -> np.ndarray:
    """Average linkage of ``m`` items cut at ``threshold``, from their scored pairs alone: the partition
    ``scipy``'s ``linkage(method="average")`` and ``fcluster(criterion="distance")`` give on the dense matrix
    where an unscored pair scores 0 (linking two ``sources``: a pair within one source counts as just below
    the threshold, see :func:`cluster_items`), in memory and time linear in the pairs.

    Only clusters joined by a scored pair can average at or above a positive threshold, so the clusters'
    summed scores live on the pairs' sparsity pattern. Each round merges every pair of clusters that are each
    other's best (reciprocal nearest neighbours, ties to the smaller id) at or above the threshold. Average
    linkage is reducible: merging reciprocal nearest neighbours, in any order and several at once, builds the
    same hierarchy as merging the closest pair first, and each round merges at least the globally best pair.

    Args:
        ia, ib: the scored pairs' two items (0..m-1), each unordered pair once.
        sim: their scores.

    Returns:
        (m,) int64 cluster of each item, 0..C-1.
    """
    neutral = threshold - NEUTRAL_BELOW
    label = np.arange(m, dtype=np.int64)  # each item's cluster
    size = np.ones(m)
    ones = None if sources is None else (np.asarray(sources) == 1).astype(np.float64)  # items of source 1
    a, b = np.minimum(ia, ib).astype(np.int64), np.maximum(ia, ib).astype(np.int64)
    w = np.asarray(sim, dtype=np.float64)
    keep = a != b
    a, b, w = a[keep], b[keep], w[keep]
    while len(a):
        c = len(size)
        total = w
        if ones is not None:  # the unscored pairs within one source, between the two clusters
            zeros = size - ones
            total = w + neutral * (zeros[a] * zeros[b] + ones[a] * ones[b])
        avg = total / (size[a] * size[b])
        ok = avg >= threshold
        if not ok.any():
            break
        # each cluster's best: highest average, ties to the smaller id
        ends = np.concatenate([a[ok], b[ok]])
        other = np.concatenate([b[ok], a[ok]])
        value = np.concatenate([avg[ok], avg[ok]])
        order = np.lexsort((other, -value, ends))
        ends, other = ends[order], other[order]
        head = np.r_[True, ends[1:] != ends[:-1]]
        best = np.full(c, -1, dtype=np.int64)
        best[ends[head]] = other[head]
        lead = np.flatnonzero(best >= 0)
        lead = lead[(best[best[lead]] == lead) & (lead < best[lead])]  # reciprocal pairs, once each
        root = np.arange(c, dtype=np.int64)
        root[best[lead]] = lead
        uniq, new = np.unique(root, return_inverse=True)
        label = new[label]
        size = np.bincount(new, weights=size, minlength=len(uniq))
        if ones is not None:
            ones = np.bincount(new, weights=ones, minlength=len(uniq))
        a, b = new[a], new[b]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        inside = lo == hi
        key, at = np.unique(lo[~inside] * len(uniq) + hi[~inside], return_inverse=True)
        w = np.bincount(at, weights=w[~inside], minlength=len(key))
        a, b = key // len(uniq), key % len(uniq)
    _, label = np.unique(label, return_inverse=True)
    return label.astype(np.int64)


def one_to_one_matching(
    labels: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    threshold: float,
    sources: np.ndarray,
    linkage_max: int,
    report: ClusterReport,
) -> None:
    """Clusters of at most one item per source, in place in ``labels`` (each item its own label on entry):
    inside every connected component of the pairs at or above the threshold, the matching of largest summed
    score (the Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``); each matched pair is a cluster,
    every other item of the component stays alone. A component of more than ``linkage_max`` items (a dense
    matrix too large) is matched greedily, best pair first, and counted.

    Raises:
        ValueError: on a pair of two items of one source (linking never scores one).
    """
    kept = np.flatnonzero(score >= threshold)
    if len(kept) == 0:
        return
    a, b, w = left[kept], right[kept], score[kept]
    if (sources[a] == sources[b]).any():
        raise ValueError("one-to-one matching got a pair of two items of one source")
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    graph = sp.coo_matrix((np.ones(len(kept)), (inverse[: len(kept)], inverse[len(kept) :])), (len(nodes),) * 2)
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[inverse[: len(kept)]]
    order = np.argsort(edge_comp, kind="stable")
    a, b, w, edge_comp = a[order], b[order], w[order], edge_comp[order]
    starts = np.flatnonzero(np.r_[True, edge_comp[1:] != edge_comp[:-1], True])
    lone = np.diff(starts) == 1  # a component of one pair: that pair
    first = starts[:-1]
    pairs_a, pairs_b = [a[first[lone]]], [b[first[lone]]]
    for s, e in zip(first[~lone], starts[1:][~lone], strict=True):
        ca, cb, cw = a[s:e], b[s:e], w[s:e]
        # rows: the component's items of the first pair's source side; columns: the other side's
        on_left = sources[ca] == sources[ca[0]]
        rows_items = np.unique(np.where(on_left, ca, cb))
        cols_items = np.unique(np.where(on_left, cb, ca))
        ri = np.searchsorted(rows_items, np.where(on_left, ca, cb))
        ci = np.searchsorted(cols_items, np.where(on_left, cb, ca))
        if len(rows_items) + len(cols_items) > linkage_max:
            report.components_matched_greedily += 1
            free_r, free_c = np.ones(len(rows_items), bool), np.ones(len(cols_items), bool)
            for j in np.argsort(-cw, kind="stable"):
                if free_r[ri[j]] and free_c[ci[j]]:
                    free_r[ri[j]] = free_c[ci[j]] = False
                    pairs_a.append(ca[j : j + 1])
                    pairs_b.append(cb[j : j + 1])
            continue
        weight = np.zeros((len(rows_items), len(cols_items)))
        edge = np.zeros(weight.shape, dtype=bool)
        weight[ri, ci], edge[ri, ci] = cw, True
        r, c = linear_sum_assignment(weight, maximize=True)
        ok = edge[r, c]  # an assignment without a pair between them is no match
        pairs_a.append(rows_items[r[ok]])
        pairs_b.append(cols_items[c[ok]])
    pa_, pb_ = np.concatenate(pairs_a), np.concatenate(pairs_b)
    labels[np.maximum(pa_, pb_)] = np.minimum(pa_, pb_)
    report.components = len(starts) - 1
    report.one_to_one_pairs = len(pa_)
