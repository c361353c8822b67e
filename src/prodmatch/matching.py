"""Catalogue matching: candidate search, scoring and clustering of a whole catalogue into products.

1. **Candidates.** Every item's top-k nearest items by inner product of normalised item vectors, with
   faiss: exact (``flat``) for small catalogues, HNSW for large ones (``auto`` picks by size). Item
   vectors are the siamese tower's when the model has one (``siamese``, or the networks stacked in
   ``gbdt``), else the normalised concatenated modalities. Optional blocking by level-2 category.
   Each unordered pair appears once.
2. **Scoring** of every candidate pair with the model, in large vectorised batches.
3. **Clustering.** Pairs at or above the threshold are edges; connected components are the first cut.
   Guard against chaining: inside every component of three or more items, average-linkage clustering on
   the scores (a pair that was not scored counts as 0) cut at the same threshold. A chain a-b-c whose ends
   were never matched has an average a-c link of at most (s_ab + 0) / 2, so one weak link cannot merge two
   groups: a group joins another only if it matches it on average.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

from prodmatch.catalogue import NORM_EPS, Catalogue, l2_normalize
from prodmatch.config import INFERENCE_BATCH
from prodmatch.errors import ConfigError

__all__ = [
    "INDEX_KINDS",
    "MatchConfig",
    "build_index",
    "candidate_pairs",
    "cluster_items",
    "cluster_quality",
    "feature_vectors",
    "informative_items",
    "item_vectors",
]

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "hnsw")
RECALL_KS = (5, 10, 20, 50)  # recall@k is reported at these k (synthetic data)
MAX_K = 1000  # neighbours per item: beyond this, items x k candidate pairs outgrow memory on any catalogue


@dataclass(frozen=True)
class MatchConfig:
    """How to match a catalogue.

    Attributes:
        k: neighbours searched per item.
        threshold: a pair at or above this probability is a match; None: with ``calibrate="prior"``, the
            threshold of the best F1 the calibrated candidate probabilities expect; else the model's own.
        calibrate: ``prior`` re-calibrates the probabilities for the share of true matches among the
            candidates (estimated, see :func:`calibrate_candidates`); ``none`` keeps the model's, which
            are calibrated for its labelled validation pairs.
        block_by: ``"category"`` searches only within each level-2 category; None searches everything.
        index: ``flat`` (exact), ``hnsw`` (approximate), or ``auto``: flat up to ``exact_max_items`` items.
        exact_max_items: the size up to which ``auto`` searches exactly.
        hnsw_m, hnsw_ef_construction, hnsw_ef_search: HNSW graph degree and search breadth.
        linkage_max: components larger than this are not re-clustered (counted), to bound memory.
        token_k: extra candidates per item from shared rare values (attribute values, name words; see
            :mod:`prodmatch.blocking`); 0 turns them off.
        token_max_block: a value held by more items than this is too common to block on.
        rescore: a second run directory (a text model, or ``gbdt`` with one stacked) whose evidence updates
            the candidates whose probability lies within ``rescore_band`` of the threshold: a cascade, where
            the costly model reads only the pairs the first is unsure of (see :func:`rescore_uncertain`).
            None: off.
        rescore_band: the half-width of that band, in (candidate-calibrated) probability.
    """

    k: int = 20
    threshold: float | None = None
    calibrate: str = "prior"
    block_by: str | None = None
    index: str = "auto"
    exact_max_items: int = 20_000
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    # 64: on the 1M-item bench's 64-d vectors, recall of the exact top-20 0.987 in 93 s of search; 96: 0.993
    # in 144 s (48: 0.981 in 79 s). The shared-value candidates recover pairs the graph misses.
    hnsw_ef_search: int = 64
    linkage_max: int = 5000
    token_k: int = 10
    token_max_block: int = 100
    rescore: str | None = None
    rescore_band: float = 0.2

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(
                f"--k must be between 1 and {MAX_K:,}, got {self.k:,}: every item's k nearest neighbours become "
                "candidate pairs to score (items x k of them); 20 to 100 finds nearly every match"
            )
        if not 0 <= self.token_k <= MAX_K:
            raise ConfigError(f"--token-k must be between 0 (off) and {MAX_K:,}, got {self.token_k:,}")
        if self.token_max_block < 2:
            raise ConfigError(
                f"--token-max-block must be at least 2 (a value two items share), got {self.token_max_block}"
            )
        if self.calibrate not in ("prior", "none"):
            raise ConfigError(f"--calibrate must be 'prior' or 'none', got {self.calibrate!r}")
        if self.index not in INDEX_KINDS:
            raise ConfigError(f"--index must be one of {list(INDEX_KINDS)}, got {self.index!r}")
        if self.block_by not in (None, "category"):
            raise ConfigError(f"--block-by must be 'category' or left out, got {self.block_by!r}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 < self.rescore_band <= 1.0:
            raise ConfigError(
                f"--rescore-band must be in (0, 1], got {self.rescore_band}: the pairs within it of the threshold "
                "are re-scored (1 re-scores every candidate)"
            )

    def index_kind(self, n_items: int) -> str:
        if self.index != "auto":
            return self.index
        return "flat" if n_items <= self.exact_max_items else "hnsw"

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ vectors


def item_vectors(model, catalogue: Catalogue, batch_size: int = INFERENCE_BATCH) -> tuple[np.ndarray, str]:
    """(N, d) float32 item vectors for candidate search, and what they are.

    The siamese tower's vectors when the model has a siamese network (itself, or stacked in gbdt): the
    space its head compares items in. A bi-encoder's own unit vectors of the items' records, the space its
    score is the cosine in. Otherwise the normalised modalities side by side, each weighted equally (zeros
    where missing, so not all of unit length).
    """
    if _reads_text_only(model):
        vectors = model.item_vectors(catalogue, np.arange(len(catalogue)))
        vectors[~informative_items(model, catalogue)] = 0.0
        return vectors, f"{model.name} vectors"
    return feature_vectors(model, catalogue.item_features([n for n, _ in model.modalities_]), batch_size)


def feature_vectors(model, features: np.ndarray, batch_size: int = INFERENCE_BATCH) -> tuple[np.ndarray, str]:
    """:func:`item_vectors` of raw item-feature rows (``Catalogue.item_features`` layout), for new items."""
    import torch

    from prodmatch.models.siamese import SiameseNet
    from prodmatch.models.torch_model import tower_vectors

    network = getattr(model, "network_", None)
    if not isinstance(network, SiameseNet):
        stacked = [
            m for m in getattr(model, "stack_models_", []) if isinstance(getattr(m, "network_", None), SiameseNet)
        ]
        network = stacked[0].network_ if stacked else None
    width = sum(d for _, d in model.modalities_)
    blank = ~features[:, width:].any(axis=1)  # no embedding at all: a zero vector, near nothing
    if network is not None:
        rows = np.arange(len(features))
        out = tower_vectors(network, torch.from_numpy(features), rows, batch_size).numpy()
        out[blank] = 0.0
        return l2_normalize(out, eps=0.0), "siamese tower"
    # Not renormalised: an item missing a modality ranks others by the modalities it has (the missing part
    # adds 0 to every inner product) instead of finding only items that miss it too.
    out = np.ascontiguousarray(features[:, :width]) / np.float32(np.sqrt(len(model.modalities_)))
    return out.astype(np.float32), "normalised modalities"


# ------------------------------------------------------------------------------------------ search


def _reads_text_only(model) -> bool:
    """A text model, which has no embedding column to search with. Only one with item vectors can search;
    a cross-encoder, which scores pairs only, is refused with what to do instead."""
    if model.modalities_ or not hasattr(model, "graph"):
        return False
    if not hasattr(model, "item_vectors"):
        raise ConfigError(
            f"{model.name} scores pairs only: it has no item vectors to find candidates with; match with another "
            f"run (gbdt, siamese or bi-encoder) and give this one as --rescore RUN to re-score the uncertain pairs"
        )
    return True


def informative_items(model, catalogue: Catalogue) -> np.ndarray:
    """(N,) bool: items with at least one of the model's embeddings present.

    An item with none (every vector missing, or with norm <= NORM_EPS) carries no evidence: a model's score
    for it is its prior, not a comparison, so catalogue search leaves it out rather than join such items.
    """
    if _reads_text_only(model):  # a text model: items with any text
        from prodmatch.text.records import item_records

        return np.array([bool(r) for r in item_records(catalogue, np.arange(len(catalogue)))], dtype=bool)
    present = np.zeros(len(catalogue), dtype=bool)
    for name, _ in model.modalities_:
        present |= catalogue.modalities[name].present
    return present


def build_index(vectors: np.ndarray, kind: str, config: MatchConfig):
    """A faiss inner-product index over ``vectors`` (flat: exact; hnsw: approximate)."""
    import faiss

    d = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    else:
        raise ConfigError(f"unknown index kind {kind!r}")
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def search(index, vectors: np.ndarray, k: int, batch: int = 65536, progress: Callable[[int], None] | None = None):
    """(M, k) neighbour rows (-1 where fewer exist) of each query vector."""
    out = np.empty((len(vectors), k), dtype=np.int64)
    for start in range(0, len(vectors), batch):
        _, idx = index.search(np.ascontiguousarray(vectors[start : start + batch]), k)
        out[start : start + batch] = idx
        if progress:
            progress(min(batch, len(vectors) - start))
    return out


def candidate_pairs(
    vectors: np.ndarray,
    config: MatchConfig,
    groups: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    searchable: np.ndarray | None = None,
    probe: np.ndarray | None = None,
    probe_k: int = max(RECALL_KS),
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every item's top-k neighbours as unique unordered pairs (left < right).

    Args:
        vectors: (N, d) item vectors (inner product ranks neighbours).
        config: k, index kind, HNSW settings.
        groups: (N,) block of each item (-1: no block, searched among themselves); None: one block.
        searchable: (N,) bool, items that take part (see :func:`informative_items`); None: all.
        progress: called with the number of items searched after each batch.
        probe: (Q,) rows whose own top-``probe_k`` lists, by the same search, go to ``facts["probe_neighbours"]``
            ((Q, probe_k) rows, best first, -1 where none), for measuring recall at several k.

    Returns:
        (left, right, facts): int64 rows with left < right, and what was searched how; ``facts["index_object"]``
        is the faiss index when there was one block (for measuring its recall), else None.
    """
    n = len(vectors)
    blocks = [np.arange(n)] if groups is None else [np.flatnonzero(groups == g) for g in np.unique(groups)]
    if searchable is not None:
        blocks = [rows[searchable[rows]] for rows in blocks]
        if progress and not searchable.all():
            progress(int((~searchable).sum()))
    lefts, rights = [], []
    kinds = set()
    index = None
    probe_out = None if probe is None else np.full((len(probe), probe_k + 1), -1, dtype=np.int64)
    for rows in blocks:
        if len(rows) < 2:
            if progress:
                progress(len(rows))
            continue
        kind = config.index_kind(len(rows))
        kinds.add(kind)
        index = build_index(vectors[rows], kind, config)
        k = min(config.k + 1, len(rows))  # +1: an item finds itself
        nbrs = search(index, vectors[rows], k, progress=progress)
        if probe is not None:
            at = np.flatnonzero(np.isin(probe, rows))
            if len(at):
                found = search(index, vectors[probe[at]], min(probe_k + 1, len(rows)))
                found = np.where(found >= 0, rows[np.maximum(found, 0)], -1)
                found[found == probe[at][:, None]] = -1  # not itself
                ranked = np.argsort(found < 0, axis=1, kind="stable")  # itself (now -1) to the end
                probe_out[at, : found.shape[1]] = np.take_along_axis(found, ranked, 1)
        q = np.repeat(np.arange(len(rows)), k)
        r = nbrs.ravel()
        ok = (r >= 0) & (r != q)
        lefts.append(rows[np.minimum(q[ok], r[ok])])
        rights.append(rows[np.maximum(q[ok], r[ok])])
    left = np.concatenate(lefts) if lefts else np.zeros(0, dtype=np.int64)
    right = np.concatenate(rights) if rights else np.zeros(0, dtype=np.int64)
    key = np.unique(left * n + right)
    facts = {"blocks": len(blocks), "index": sorted(kinds), "index_object": index if len(blocks) == 1 else None}
    if probe_out is not None:
        facts["probe_neighbours"] = probe_out[:, :probe_k]
    return key // n, key % n, facts


def neighbours_within(
    vectors: np.ndarray,
    queries: np.ndarray,
    targets: np.ndarray,
    k: int,
    block: np.ndarray,
    kind: str = "flat",
    config: MatchConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's top-k target rows of its own block, as flat (query, neighbour) row pairs, itself and
    empty slots left out. One ``kind`` index per block."""
    config = config or MatchConfig()
    qs, js = [], []
    for b in np.unique(block[queries]):
        qb, tb = queries[block[queries] == b], targets[block[targets] == b]
        if len(tb) < 2:
            continue
        index = build_index(vectors[tb], kind, config)
        found = search(index, vectors[qb], min(k + 1, len(tb)))  # +1: an item may find itself
        qs.append(np.repeat(qb, found.shape[1]))
        js.append(np.where(found >= 0, tb[np.maximum(found, 0)], -1).ravel())
    q = np.concatenate(qs) if qs else np.zeros(0, dtype=np.int64)
    j = np.concatenate(js) if js else np.zeros(0, dtype=np.int64)
    ok = (j >= 0) & (j != q)
    return q[ok], j[ok]


def incomplete_item_candidates(
    model, catalogue: Catalogue, searchable: np.ndarray, k: int, exact_max_items: int = 20_000
) -> tuple[np.ndarray, np.ndarray, int]:
    """Extra candidates for the items missing one of the model's modalities: their exact top-k among all
    searchable items by the modalities they have (inner product of the normalised modalities, the missing
    one adding 0 to every item's score); over ``exact_max_items`` items, among the items of their level-2
    category when the data has categories.

    A tower's vectors place such items by what the network learnt of them, and its head, not the vectors'
    inner product, is what was trained to match them, so their partners can fall outside their top-k in
    the tower's space (measured on synthetic data: a third to a half of the pairs missing a picture). This
    pass costs one exact search per incomplete item (a few percent of a catalogue).

    Returns:
        (left, right, n_incomplete) with left < right.
    """
    from prodmatch.mining import modality_vectors

    names = [name for name, _ in model.modalities_]
    if len(names) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    complete = np.ones(len(catalogue), dtype=bool)
    for name in names:
        complete &= catalogue.modalities[name].present
    queries = np.flatnonzero(searchable & ~complete)
    targets = np.flatnonzero(searchable)
    if len(queries) == 0 or len(targets) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), len(queries)
    vectors = modality_vectors(catalogue, names)
    if len(targets) > exact_max_items and catalogue.categories is not None:
        block = catalogue.categories["category2"].cat.codes.to_numpy()  # large: within each category
    else:
        block = np.zeros(len(catalogue), dtype=np.int64)
    q, r = neighbours_within(vectors, queries, targets, k, block)
    return np.minimum(q, r), np.maximum(q, r), len(queries)


def ann_recall(vectors: np.ndarray, index, k: int, sample: int = 2000, seed: int = 0) -> float:
    """Share of the exact top-k neighbours that ``index`` also returns, on a sample of query items."""
    import faiss

    rng = np.random.default_rng(seed)
    queries = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    k = min(k + 1, len(vectors))
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors))
    exact = search(flat, vectors[queries], k)
    approx = search(index, vectors[queries], k)
    hits = sum(len(np.intersect1d(e, a)) for e, a in zip(exact, approx, strict=True))
    return hits / exact.size


# ------------------------------------------------------------------------------------------ clusters


@dataclass
class ClusterReport:
    """What clustering did, for summary.json."""

    edges: int = 0
    components: int = 0
    components_relinked: int = 0  # components of 3+ items that average linkage re-clustered
    components_split: int = 0  # of those, the ones it cut into more than one cluster
    components_too_large: int = 0  # over linkage_max: kept whole
    clusters: int = 0
    items_in_multi_item_clusters: int = 0
    largest_cluster: int = 0
    sizes: dict = field(default_factory=dict)


SMALL_COMPONENT = 16  # components up to this size are re-clustered together (see average_linkage_cut)


def cluster_items(
    n_items: int, left: np.ndarray, right: np.ndarray, score: np.ndarray, threshold: float, linkage_max: int = 5000
) -> tuple[np.ndarray, ClusterReport]:
    """(N,) cluster label of every item (0..C-1), and counts. See the module docstring for the rule.

    A component larger than ``linkage_max`` (too big for a dense linkage) is first cut by raising the
    threshold inside it, step by step, until every piece fits; each piece is then re-clustered the same way.
    """
    report = ClusterReport(edges=int((score >= threshold).sum()))
    labels = np.arange(n_items, dtype=np.int64)  # every item alone until an edge joins it
    _cluster_into(labels, np.arange(len(left)), left, right, score, threshold, linkage_max, report, top=True)
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
) -> None:
    """Label the items joined by ``pairs`` (indices into left/right/score) at ``threshold``, in place."""
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
            first = average_linkage_cut(sim, threshold)
            labels[members] = np.take_along_axis(members, first, 1)
            report.components_relinked += len(cs)
            report.components_split += int((first != 0).any(axis=1).sum())
    for c in np.flatnonzero((sizes >= 3) & ~small):
        members = nodes[node_order[node_starts[c] : node_starts[c + 1]]]  # ascending
        inner = inner_pairs[pair_starts[c] : pair_starts[c + 1]]
        if len(members) > linkage_max:
            report.components_too_large += 1
            higher = threshold + (1.0 - threshold) * 0.25
            if higher - threshold < 1e-6:
                continue  # cannot cut further: keep it whole
            labels[members] = members  # undo, then cut at a higher threshold
            _cluster_into(labels, inner, left, right, score, higher, linkage_max, report)
            continue
        report.components_relinked += 1
        sim = np.zeros((len(members), len(members)))
        ia, ib = np.searchsorted(members, left[inner]), np.searchsorted(members, right[inner])
        sim[ia, ib] = sim[ib, ia] = score[inner]
        dist = 1.0 - sim
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        sub = fcluster(tree, t=1.0 - threshold, criterion="distance")  # 1..K
        if sub.max() > 1:
            report.components_split += 1
            uniq, first = np.unique(sub, return_index=True)
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


def timed(stages: dict, name: str):
    """Context manager recording a stage's wall seconds and peak RSS into ``stages``."""
    import contextlib
    import resource

    @contextlib.contextmanager
    def run():
        t0 = time.perf_counter()
        yield
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stages[name] = {"seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(peak_mb, 1)}
        log.info("%s: %.1fs (peak memory so far %.0f MB)", name, stages[name]["seconds"], peak_mb)

    return run()


# ------------------------------------------------------------------------------------------ the job

MATCHES_FILE = "matches.parquet"
CLUSTERS_FILE = "clusters.parquet"
SUMMARY_FILE = "summary.json"


def match_catalogue(
    run_dir,
    data_dir,
    out_dir,
    config: MatchConfig | None = None,
    *,
    overwrite: bool = False,
    progress=None,
    labelled_sample=None,
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

    Returns:
        The summary dict (also in summary.json).
    """
    from pathlib import Path

    from prodmatch.api import _model_and_catalogue
    from prodmatch.calibration import expected_f1_threshold, expected_quality
    from prodmatch.io import write_json, write_parquet
    from prodmatch.oracle import ORACLE_ITEMS_FILE, Oracle
    from prodmatch.pairs import PairSet
    from prodmatch.synth import TRUTH_FILE

    config = config or MatchConfig()
    out_dir = Path(out_dir)
    staging = _staged_output(out_dir, overwrite, SUMMARY_FILE)  # checks out_dir now, before any work
    stages: dict[str, dict] = {}
    t_start = time.perf_counter()
    with timed(stages, "load"):
        model, cat = _model_and_catalogue(run_dir, data_dir, None, text=config.token_k > 0)
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
        probe = _recall_probe(data_dir, searchable)
        left, right, search_facts = candidate_pairs(vectors, config, groups, advance, searchable, probe)
        search_facts["items_without_embeddings"] = int((~searchable).sum())
        more_left, more_right, search_facts["incomplete_items"] = incomplete_item_candidates(
            model, cat, searchable, config.k, exact_max_items=config.exact_max_items
        )
        if len(more_left):
            key = np.unique(np.concatenate([left * n + right, more_left * n + more_right]))
            search_facts["candidates_from_incomplete_items"] = int(len(key) - len(left))
            left, right = key // n, key % n
        if config.token_k > 0:
            from prodmatch.blocking import item_tokens, shared_token_neighbours

            rows = np.flatnonzero(searchable)
            q, j, token_report = shared_token_neighbours(
                item_tokens(cat, rows), rows, rows, config.token_k, config.token_max_block, vectors
            )
            key = np.unique(np.concatenate([left * n + right, np.minimum(q, j) * n + np.maximum(q, j)]))
            search_facts["shared_values"] = token_report.to_dict() | {"new_candidates": int(len(key) - len(left))}
            left, right = key // n, key % n
    log.info("%d candidate pairs from %d items (k=%d, %s)", len(left), n, config.k, ", ".join(search_facts["index"]))

    with timed(stages, "scoring"):
        # One call: a tower-and-head model computes each item's vector once for all pairs (in chunks it
        # would recompute most items' vectors once per chunk).
        ids = cat.ids.to_numpy()
        pairs = PairSet(
            left.astype(np.int32), right.astype(np.int32), None, np.arange(len(left)), ids[left], ids[right]
        )
        done = progress("scoring", len(left)) if progress else None
        score = model.predict_proba(cat, pairs)
        if done:
            done(len(left))
    calibration: dict = {"method": "none"}
    if config.calibrate == "prior":
        sample = None
        if labelled_sample is not None:
            from prodmatch.pairs import load_pairs

            labelled = load_pairs(labelled_sample, cat, require_target=True)
            sample = (model.predict_proba(cat, labelled), labelled.target)
        score, calibration = calibrate_candidates(model, score, sample)
        if config.threshold is None and calibration["method"] != "none":  # else the model's own threshold
            threshold = expected_f1_threshold(score)
            calibration["threshold_rule"] = "best expected F1 over the candidates"
    cascade: dict = {}
    if config.rescore:
        with timed(stages, "re-scoring"):
            score, cascade = rescore_uncertain(
                config.rescore, data_dir, cat, left, right, score, threshold, config.rescore_band, progress
            )
    estimated = expected_quality(score, threshold)
    calibration |= {"estimated_precision": estimated[0], "estimated_recall_among_candidates": estimated[1]}
    with timed(stages, "clustering"):
        done = whole("clustering")
        labels, cluster_report = cluster_items(n, left, right, score, threshold, config.linkage_max)
        done(1)

    quality: dict = {}
    truth_path = Path(data_dir) / TRUTH_FILE
    if truth_path.exists():
        with timed(stages, "quality"):
            done = whole("quality")
            truth = pd.read_parquet(truth_path, columns=["variantid", "product_id"])
            product = truth.set_index("variantid")["product_id"].reindex(cat.ids).to_numpy()
            if not pd.isna(product).any():
                quality = {
                    f"candidate_recall_at_{config.k}": candidate_recall(left, right, product),
                    **cluster_quality(labels, product),
                }
                same = product[left] == product[right]
                kept_now = score >= threshold
                quality["match_precision"] = float(same[kept_now].mean()) if kept_now.any() else None
                quality["match_recall_among_candidates"] = (
                    float(same[kept_now].sum() / same.sum()) if same.any() else None
                )
                if search_facts["index"] == ["hnsw"] and search_facts["index_object"] is not None:
                    # the index holds the searchable items only, in row order
                    index_vectors = vectors[searchable]
                    quality["ann_recall_vs_exact"] = ann_recall(index_vectors, search_facts["index_object"], config.k)
                neighbours = search_facts.pop("probe_neighbours")
                quality["recall_sample"] = len(probe)
                quality["recall_at_k"] = recall_at_ks(neighbours, probe, product)
                if (Path(data_dir) / ORACLE_ITEMS_FILE).exists():
                    quality |= oracle_quality(
                        Oracle.load(data_dir), ids, product, left, right, score, probe, config.linkage_max
                    )
            else:
                log.warning("%s does not cover every item; quality is not computed", truth_path)
            done(1)

    with timed(stages, "writing"), staging as tmp:
        kept = score >= threshold
        write_parquet(
            pd.DataFrame({"variantid1": ids[left[kept]], "variantid2": ids[right[kept]], "score": score[kept]}),
            tmp / MATCHES_FILE,
        )
        write_parquet(pd.DataFrame({"variantid": ids, "cluster_id": labels}), tmp / CLUSTERS_FILE)
        summary = {
            "model": model.name,
            "run_dir": str(run_dir),
            "data": str(data_dir),
            "items": n,
            "parameters": {**config.to_dict(), "threshold": threshold},
            "item_vectors": vector_kind,
            "search": {k: v for k, v in search_facts.items() if k not in ("index_object", "probe_neighbours")},
            "candidates": len(left),
            "matches": int(kept.sum()),
            "calibration": calibration,
            "cascade": cascade,
            "clustering": asdict(cluster_report),
            "quality": quality,
            "stages": stages,
            "seconds": round(time.perf_counter() - t_start, 3),
        }
        write_json(summary, tmp / SUMMARY_FILE)
    summary["stages"] = stages
    return summary


RESCORE_CHUNK = 4096  # pairs per re-scoring call (the progress bar's step)


def rescore_uncertain(
    run_dir,
    data_dir,
    cat: Catalogue,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    threshold: float,
    band: float,
    progress=None,
) -> tuple[np.ndarray, dict]:
    """The cascade's second stage: the candidates scored within ``band`` of ``threshold`` are updated with the
    evidence of the model in ``run_dir``.

    Bayes' rule, with the two models' evidence taken as independent given the label: a pair's odds become
    the first model's odds times the second model's likelihood ratio, its probability's odds over the odds
    of the share of matches it was calibrated for (both calibrated on labelled pairs). Not a replacement:
    the pairs in the band were chosen because the first model put them near the threshold, so the second
    model's probability alone, moved to the candidates' share of matches, would throw that away (on the
    demo it was below the threshold for every pair of the band, where half are matches); and not a mean,
    which would ignore how far each model is from its prior. Where both models read the same evidence (the
    names) the update over-counts it; the threshold stays the first model's.

    Returns:
        (the candidates' probabilities, facts for summary.json's ``cascade``).
    """
    from pathlib import Path

    from scipy.special import expit, logit

    from prodmatch.api import _model_and_catalogue
    from prodmatch.pairs import PairSet

    t0 = time.perf_counter()
    model, other = _model_and_catalogue(run_dir, data_dir, None)
    prior = model.calibrator.prior
    if prior is None:
        raise ConfigError(
            f"--rescore {run_dir}: the run does not record the share of matches it was calibrated for (trained "
            "before prodmatch 0.12), so its evidence cannot be weighed; train it again"
        )
    rows = other.ids.get_indexer(cat.ids)
    touch = np.flatnonzero(np.abs(score - threshold) <= band)
    used = np.unique(np.concatenate([left[touch], right[touch]]))
    if (rows[used] < 0).any():
        missing = cat.ids[used[rows[used] < 0]][:5].tolist()
        raise ConfigError(f"--rescore {run_dir}: {data_dir} read for that model lacks candidate items, e.g. {missing}")
    ids = other.ids.to_numpy()
    advance = progress("re-scoring", len(touch)) if progress else None
    second = np.empty(len(touch), dtype=np.float64)
    for s in range(0, len(touch), RESCORE_CHUNK):
        part = touch[s : s + RESCORE_CHUNK]
        a, b = rows[left[part]], rows[right[part]]
        pairs = PairSet(a.astype(np.int32), b.astype(np.int32), None, np.arange(len(part)), ids[a], ids[b])
        second[s : s + len(part)] = model.predict_proba(other, pairs)
        if advance:
            advance(len(part))
    eps = 1e-12
    old = score[touch]
    evidence = logit(np.clip(second, eps, 1 - eps)) - logit(prior)
    fresh = expit(logit(np.clip(old, eps, 1 - eps)) + evidence)
    out = score.copy()
    out[touch] = fresh
    changed = int(((old >= threshold) != (fresh >= threshold)).sum())
    seconds = time.perf_counter() - t0
    log.info(
        "cascade: %s re-scored %d of %d candidate pairs (%.2f%%, within %.2f of the threshold %.3f) in %.1fs; "
        "%d decisions changed",
        model.name,
        len(touch),
        len(score),
        100 * len(touch) / max(len(score), 1),
        band,
        threshold,
        seconds,
        changed,
    )
    return out, {
        "run_dir": str(Path(run_dir)),
        "model": model.name,
        "band": band,
        "rescored": len(touch),
        "share_rescored": float(len(touch) / max(len(score), 1)),
        "decisions_changed": changed,
        "now_matches": int(((fresh >= threshold) & (old < threshold)).sum()),
        "no_longer_matches": int(((fresh < threshold) & (old >= threshold)).sum()),
        "combination": "odds of the first model times the second model's likelihood ratio",
        "second_model_prior": float(prior),
        "pairs_per_second": float(len(touch) / seconds) if seconds > 0 else None,
        "seconds": round(seconds, 3),
    }


def calibrate_candidates(
    model, prob: np.ndarray, sample: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, dict]:
    """The candidates' probabilities re-calibrated for the candidates, and how.

    The model's probabilities are calibrated on its labelled validation pairs, where matches are often half
    of all pairs; among a catalogue's candidates they are usually a few percent. Without a sample, the share
    of matches among the candidates is estimated by the EM of Saerens et al. (the prior under which the
    shifted probabilities average to it) and the probabilities are moved to it by Bayes' rule: exact if the
    model's evidence means the same for labelled and candidate pairs, an over-estimate where candidates'
    negatives look more like matches than the labelled ones did. With ``sample`` (the model's probabilities
    of a labelled random sample of candidate pairs, and the labels), Platt scaling on the sample calibrates
    on candidates directly and the prior is the calibrated probabilities' mean.

    Returns:
        (probabilities, facts for summary.json).
    """
    from scipy.special import expit, logit

    from prodmatch.calibration import Calibrator, PriorEstimate, estimate_prior, shift_prior

    training_prior = model.calibrator.prior
    if sample is not None:
        sample_prob, target = sample
        if len(np.unique(target)) < 2:
            raise ConfigError("--labelled-sample needs both matches (1) and non-matches (0) among its pairs")
        fitted = Calibrator.fit("platt", logit(np.clip(sample_prob, 1e-12, 1 - 1e-12)), target)
        if fitted.method != "platt":
            raise ConfigError("--labelled-sample: the model's scores do not rank its matches above its non-matches")
        out = expit(fitted.a * logit(np.clip(prob, 1e-12, 1 - 1e-12)) + fitted.b)
        estimate = PriorEstimate(float(out.mean()), "labelled-sample", training_prior, sample_pairs=len(target))
        return out, estimate.to_dict() | {"platt": {"a": fitted.a, "b": fitted.b}}
    if training_prior is None:
        log.warning(
            "the model's run directory does not record the share of matches it was calibrated for (trained "
            "before prodmatch 0.12); its probabilities are used as they are: retrain to calibrate for candidates"
        )
        return prob, PriorEstimate(float("nan"), "none", None).to_dict()
    estimate = estimate_prior(prob, training_prior)
    if estimate.prior < 1e-4:
        # The likelihood is highest with no matches at all: the candidates look less like matches than the
        # labelled negatives did, so the model's evidence does not mean the same on both and the shift
        # would be arbitrary.
        log.warning(
            "the share of matches among the candidates cannot be estimated from the model's probabilities "
            "(the estimate falls to %.2g): they are used as they are; give --labelled-sample to calibrate",
            estimate.prior,
        )
        return prob, estimate.to_dict() | {"method": "none", "reason": "the EM estimate fell to zero"}
    log.info(
        "matches among the candidates: %.2f%% estimated (EM over the model's probabilities; %.1f%% among the "
        "pairs it was calibrated on)",
        100 * estimate.prior,
        100 * training_prior,
    )
    return shift_prior(prob, training_prior, estimate.prior), estimate.to_dict()


def _recall_probe(data_dir, searchable: np.ndarray, sample: int = 2000, seed: int = 0) -> np.ndarray | None:
    """Rows of a random sample of searchable items whose top-k lists measure recall@k, when the data has the
    truth to measure it with; else None."""
    from pathlib import Path

    from prodmatch.synth import TRUTH_FILE

    if not (Path(data_dir) / TRUTH_FILE).exists():
        return None
    rows = np.flatnonzero(searchable)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(sample, len(rows)), replace=False))


# ------------------------------------------------------------------------------------ incremental

INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.parquet"
INDEX_META_FILE = "index.json"


def _staged_output(out_dir, overwrite: bool, marker: str):
    """A context manager yielding a temporary directory that replaces ``out_dir`` on success only."""
    import contextlib
    import shutil
    import tempfile
    from pathlib import Path

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out_dir} is not empty; pass --overwrite to replace it or choose another --out")
        if not (out_dir / marker).exists():
            raise ConfigError(f"{out_dir} holds files that prodmatch did not write; refusing to delete them")

    @contextlib.contextmanager
    def staged():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            yield tmp
            if out_dir.exists():
                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return staged()


def build_catalogue_index(
    run_dir, data_dir, out_dir, config: MatchConfig | None = None, *, overwrite: bool = False
) -> dict:
    """Save the catalogue's item vectors and their nearest-neighbour index, for matching new items later."""
    import faiss

    from prodmatch.api import _model_and_catalogue
    from prodmatch.io import write_json, write_parquet

    config = config or MatchConfig()
    with _staged_output(out_dir, overwrite, INDEX_META_FILE) as tmp:
        t0 = time.perf_counter()
        model, cat = _model_and_catalogue(run_dir, data_dir, None)
        vectors, vector_kind = item_vectors(model, cat)
        kind = config.index_kind(len(cat))
        index = build_index(vectors, kind, config)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        with open(tmp / VECTORS_FILE, "wb") as f:
            np.save(f, vectors)
        write_parquet(pd.DataFrame({"variantid": cat.ids.to_numpy()}), tmp / IDS_FILE)
        store = None
        if hasattr(model, "item_store"):  # what serving needs of every item, saved so a server loads it
            from prodmatch.store import STORE_DIR, fingerprint

            store = model.item_store(cat)
            store.save(tmp / STORE_DIR, fingerprint(model, cat))
        meta = {
            "run_dir": str(run_dir),
            "data": str(data_dir),
            "items": len(cat),
            "item_vectors": vector_kind,
            "index": kind,
            "parameters": config.to_dict(),
            "item_store": None if store is None else {"directory": STORE_DIR, "bytes": store.nbytes()},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(meta, tmp / INDEX_META_FILE)
    return meta


def check_index_items(index_dir, catalogue: Catalogue, data_dir) -> None:
    """Raise ConfigError unless the saved index at ``index_dir`` holds exactly ``catalogue``'s items, in order."""
    from pathlib import Path

    saved = pd.read_parquet(Path(index_dir) / IDS_FILE)["variantid"].to_numpy()
    if len(saved) != len(catalogue) or not np.array_equal(saved, catalogue.ids.to_numpy()):
        raise ConfigError(f"{index_dir} indexes other items than {data_dir}; rebuild it with `prodmatch index`")


def match_new_items(
    run_dir,
    data_dir,
    index_dir,
    new_dir,
    clusters_path,
    out_dir,
    config: MatchConfig | None = None,
    *,
    overwrite: bool = False,
) -> dict:
    """Match newly listed items against a saved index and assign them to existing clusters or new ones.

    Candidates of a new item: its top-k among the indexed catalogue (the saved index, not rebuilt) and its
    top-k among the other new items. Scored pairs at or above the threshold are clustered with the same
    guard as a full run, over the new items and the catalogue items they match. A resulting group that
    can join the existing cluster it matches best on average over all that cluster's members (pairs never
    scored count as 0), if that average reaches the threshold, the rule average linkage applies in a full
    run; otherwise it becomes a new cluster. Existing clusters are never merged or split: that is where
    the result can differ from a full rebuild, which may re-cut old clusters once new items link them.

    Writes ``matches.parquet`` (new pairs), ``clusters.parquet`` (variantid, cluster_id, is_new_cluster for
    the new items) and ``summary.json``.
    """
    import json as _json
    from pathlib import Path

    import faiss

    from prodmatch.api import _model_and_catalogue
    from prodmatch.io import read_catalogue, write_json, write_parquet
    from prodmatch.pairs import PairSet

    config = config or MatchConfig()
    if config.rescore:
        raise ConfigError("rescore applies to a full match; incremental matching scores with run_dir only")
    index_dir = Path(index_dir)
    meta = _json.loads((index_dir / INDEX_META_FILE).read_text())
    t0 = time.perf_counter()
    model, cat = _model_and_catalogue(run_dir, data_dir, None)
    check_index_items(index_dir, cat, data_dir)
    new_cat = read_catalogue(new_dir, model.data_config())
    combined = cat.concat(new_cat)
    n_old, n_new = len(cat), len(new_cat)
    index = faiss.read_index(str(index_dir / INDEX_FILE))
    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = config.hnsw_ef_search
    new_vectors, _ = item_vectors(model, new_cat)
    k = min(config.k, n_old)
    nbrs = search(index, new_vectors, k)
    q = np.repeat(np.arange(n_new), k)
    r = nbrs.ravel()
    ok = r >= 0
    left = [r[ok]]  # old rows
    right = [n_old + q[ok]]
    if n_new > 1:
        wl, wr, _ = candidate_pairs(new_vectors, replace_index(config, "flat"))  # new among new: exact
        left.append(n_old + wl)
        right.append(n_old + wr)
    left, right = np.concatenate(left), np.concatenate(right)
    key = np.unique(left * (n_old + n_new) + right)
    left, right = key // (n_old + n_new), key % (n_old + n_new)
    ids = combined.ids.to_numpy()
    pairs = PairSet(left.astype(np.int32), right.astype(np.int32), None, np.arange(len(left)), ids[left], ids[right])
    score = model.predict_proba(combined, pairs)
    threshold = model.threshold if config.threshold is None else config.threshold
    labels, report = cluster_items(n_old + n_new, left, right, score, threshold, config.linkage_max)

    existing = pd.read_parquet(clusters_path).set_index("variantid")["cluster_id"]
    old_cluster = existing.reindex(cat.ids).to_numpy()
    if pd.isna(old_cluster).any():
        raise ConfigError(f"{clusters_path} lacks some catalogue items; use the clusters of a full `match` run")
    old_cluster = old_cluster.astype(np.int64)
    next_id = int(old_cluster.max()) + 1 if len(old_cluster) else 0
    assigned = np.full(n_new, -1, dtype=np.int64)
    is_new = np.zeros(n_new, dtype=bool)
    kept = score >= threshold
    # A group of new items joins the existing cluster it matches best *on average over all its members*
    # (unscored pairs count as 0), the rule average linkage applies in a full run; else it is a new cluster.
    new_old = (left < n_old) & (right >= n_old)
    frame = pd.DataFrame({"g": labels[right[new_old]], "c": old_cluster[left[new_old]], "s": score[new_old]})
    total = frame.groupby(["g", "c"])["s"].sum().reset_index()
    group_size = pd.Series(labels[n_old:]).value_counts()
    cluster_size = pd.Series(old_cluster).value_counts()
    total["avg"] = total["s"] / (
        group_size.reindex(total["g"]).to_numpy() * cluster_size.reindex(total["c"]).to_numpy()
    )
    best = (
        total[total["avg"] >= threshold]
        .sort_values(["g", "avg"], ascending=[True, False])
        .drop_duplicates("g")
        .set_index("g")["c"]
    )
    group_of_new = labels[n_old:]
    joins = best.reindex(group_of_new).to_numpy()
    has = ~pd.isna(joins)
    assigned[has] = joins[has].astype(np.int64)
    fresh_groups, fresh = np.unique(group_of_new[~has], return_inverse=True)
    assigned[~has] = next_id + fresh
    is_new[~has] = True

    with _staged_output(out_dir, overwrite, SUMMARY_FILE) as tmp:
        write_parquet(
            pd.DataFrame({"variantid1": ids[left[kept]], "variantid2": ids[right[kept]], "score": score[kept]}),
            tmp / MATCHES_FILE,
        )
        write_parquet(
            pd.DataFrame({"variantid": new_cat.ids.to_numpy(), "cluster_id": assigned, "is_new_cluster": is_new}),
            tmp / CLUSTERS_FILE,
        )
        summary = {
            "mode": "incremental",
            "index": meta,
            "new_items": n_new,
            "candidates": len(left),
            "matches": int(kept.sum()),
            "joined_existing_clusters": int(has.sum()),
            "new_clusters": len(fresh_groups),
            "parameters": {**config.to_dict(), "threshold": threshold},
            "clustering": asdict(report),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(summary, tmp / SUMMARY_FILE)
    return summary


def replace_index(config: MatchConfig, kind: str) -> MatchConfig:
    from dataclasses import replace

    return replace(config, index=kind)
