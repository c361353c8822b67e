"""Stage 1, candidates: item vectors, and every item's nearest items by faiss (exact or HNSW), with the extra
candidates of items missing a modality."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from prodmatch.blocking import item_tokens, shared_token_neighbours
from prodmatch.catalogue import Catalogue, l2_normalize
from prodmatch.config import CALIBRATION_K, INFERENCE_BATCH, RECALL_KS, MatchConfig
from prodmatch.errors import ConfigError
from prodmatch.models.base import ItemEncoder
from prodmatch.text.records import item_records

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ vectors


def item_vectors(model, catalogue: Catalogue, batch_size: int = INFERENCE_BATCH) -> tuple[np.ndarray, str]:
    """(N, d) float32 item vectors for candidate search, and what they are.

    The siamese tower's vectors when the model has a siamese network (itself, or stacked in gbdt): the
    space its head compares items in. A bi-encoder's own unit vectors of the items' records, the space its
    score is the cosine in. Otherwise the normalised modalities side by side, each weighted equally (zeros
    where missing, so not all of unit length).
    """
    if reads_text_only(model):
        vectors = model.item_vectors(catalogue, np.arange(len(catalogue)))
        vectors[~informative_items(model, catalogue)] = 0.0
        return vectors, f"{model.name} vectors"
    return feature_vectors(model, catalogue.item_features([n for n, _ in model.modalities_]), batch_size)


def vector_kind(model) -> str:
    """What :func:`item_vectors` returns for ``model``, without computing any."""
    if reads_text_only(model):
        return f"{model.name} vectors"
    return "siamese tower" if model.search_tower() is not None else "normalised modalities"


def feature_vectors(model, features: np.ndarray, batch_size: int = INFERENCE_BATCH) -> tuple[np.ndarray, str]:
    """:func:`item_vectors` of raw item-feature rows (``Catalogue.item_features`` layout), for new items."""
    tower = model.search_tower()
    width = sum(d for _, d in model.modalities_)
    blank = ~features[:, width:].any(axis=1)  # no embedding at all: a zero vector, near nothing
    if tower is not None:
        out = tower(features, batch_size)
        out[blank] = 0.0
        return l2_normalize(out, eps=0.0), "siamese tower"
    # Not renormalised: an item missing a modality ranks others by the modalities it has (the missing part
    # adds 0 to every inner product) instead of finding only items that miss it too.
    out = np.ascontiguousarray(features[:, :width]) / np.float32(np.sqrt(len(model.modalities_)))
    return out.astype(np.float32), "normalised modalities"


def modality_vectors(catalogue: Catalogue, modalities: list[str]) -> np.ndarray:
    """(N, sum dims) search vectors: every normalised modality (zeros where missing), equally weighted.

    Not renormalised: an item missing a modality then ranks every other item by the modalities it has
    (the missing part adds 0 to every inner product), instead of finding only items that miss it too.
    """
    parts = [catalogue.modalities[m].matrix for m in modalities]
    return (np.concatenate(parts, axis=1) / np.float32(np.sqrt(len(parts)))).astype(np.float32)


# ------------------------------------------------------------------------------------------ search


def reads_text_only(model) -> bool:
    """A text model, which has no embedding column to search with. Only one with item vectors can search;
    a cross-encoder, which scores pairs only, is refused with what to do instead."""
    if model.modalities_ or not model.text_only:
        return False
    if not isinstance(model, ItemEncoder):
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
    if reads_text_only(model):  # a text model: items with any text
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
    calibration_k: int | None = None,
    sources: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every item's top-k neighbours as unique unordered pairs (left < right); with ``sources`` ((N,) 0 or 1:
    linking two sources), each item's top-k among the other source's items only.

    Args:
        vectors: (N, d) item vectors (inner product ranks neighbours).
        config: k, index kind, HNSW settings.
        groups: (N,) block of each item (-1: no block, searched among themselves); None: one block.
        searchable: (N,) bool, items that take part (see :func:`informative_items`); None: all.
        progress: called with the number of items searched after each batch.
        probe: (Q,) rows whose own top-``probe_k`` lists, by the same search, go to ``facts["probe_neighbours"]``
            ((Q, probe_k) rows, best first, -1 where none), for measuring recall at several k.
        calibration_k: ``facts["calibration_keys"]`` then holds the pairs (``left * N + right``, sorted)
            within either item's top ``calibration_k``, the pairs ``match`` calibrates on; the search reaches
            that far when k is smaller (the pairs beyond k are returned as keys only, not as candidates).

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
    if sources is not None:
        if probe is not None:
            raise ValueError("recall@k probes are not measured when linking two sources")
        return _link_pairs(vectors, config, blocks, sources, progress, calibration_k)
    lefts, rights = [], []
    near = calibration_k is not None
    near_keys = []
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
        reach = max(config.k, calibration_k) if near else config.k
        k = min(reach + 1, len(rows))  # +1: an item finds itself
        nbrs = search(index, vectors[rows], k, progress=progress)
        if probe is not None:
            at = np.flatnonzero(np.isin(probe, rows))
            if len(at):
                found = search(index, vectors[probe[at]], min(probe_k + 1, len(rows)))
                found = np.where(found >= 0, rows[np.maximum(found, 0)], -1)
                found[found == probe[at][:, None]] = -1  # not itself
                ranked = np.argsort(found < 0, axis=1, kind="stable")  # itself (now -1) to the end
                probe_out[at, : found.shape[1]] = np.take_along_axis(found, ranked, 1)
        a, b = _pairs_within(nbrs, rows, config.k)
        lefts.append(a)
        rights.append(b)
        if near:
            a, b = _pairs_within(nbrs, rows, calibration_k)
            near_keys.append(a * n + b)
    left = np.concatenate(lefts) if lefts else np.zeros(0, dtype=np.int64)
    right = np.concatenate(rights) if rights else np.zeros(0, dtype=np.int64)
    key = np.unique(left * n + right)
    facts = {"blocks": len(blocks), "index": sorted(kinds), "index_object": index if len(blocks) == 1 else None}
    if probe_out is not None:
        facts["probe_neighbours"] = probe_out[:, :probe_k]
    if near:
        facts["calibration_keys"] = np.unique(np.concatenate(near_keys)) if near_keys else np.zeros(0, np.int64)
    return key // n, key % n, facts


def _link_pairs(
    vectors: np.ndarray,
    config: MatchConfig,
    blocks: list[np.ndarray],
    sources: np.ndarray,
    progress: Callable[[int], None] | None,
    calibration_k: int | None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`candidate_pairs` across two sources: in every block, each source's items search an index of the
    other's."""
    n = len(vectors)
    reach = max(config.k, calibration_k or 0)
    keys, near_keys, kinds = [], [], set()
    for rows in blocks:
        for side in (0, 1):
            queries, targets = rows[sources[rows] == side], rows[sources[rows] != side]
            if len(targets) == 0 or len(queries) == 0:
                if progress:
                    progress(len(queries))
                continue
            kind = config.index_kind(len(targets))
            kinds.add(kind)
            nbrs = search(
                build_index(vectors[targets], kind, config),
                vectors[queries],
                min(reach, len(targets)),
                progress=progress,
            )
            for width, out in ((config.k, keys), (calibration_k, near_keys)):
                if width is None:
                    continue
                top = nbrs[:, :width]
                q, t = np.repeat(queries, top.shape[1]), top.ravel()
                ok = t >= 0
                q, t = q[ok], targets[t[ok]]
                out.append(np.minimum(q, t) * n + np.maximum(q, t))
    key = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    facts = {"blocks": len(blocks), "index": sorted(kinds), "index_object": None, "linked_sources": 2}
    if calibration_k is not None:
        facts["calibration_keys"] = np.unique(np.concatenate(near_keys)) if near_keys else np.zeros(0, np.int64)
    return key // n, key % n, facts


def _pairs_within(nbrs: np.ndarray, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) catalogue rows, left < right, of each item's first ``width`` neighbours in ``nbrs``
    (search results over ``rows``, best first, the item itself among the first ``width + 1``)."""
    top = nbrs[:, : width + 1]
    q, r = np.repeat(np.arange(len(rows)), top.shape[1]), top.ravel()
    ok = (r >= 0) & (r != q)
    return rows[np.minimum(q[ok], r[ok])], rows[np.maximum(q[ok], r[ok])]


def all_candidates(
    model,
    catalogue: Catalogue,
    vectors: np.ndarray,
    config: MatchConfig,
    groups: np.ndarray | None = None,
    advance: Callable[[int], None] | None = None,
    searchable: np.ndarray | None = None,
    probe: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    *,
    shared_values: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every candidate pair ``match`` scores, each unordered pair once: the searchable items'
    top-k neighbours (:func:`candidate_pairs`), the extra candidates of items missing a modality
    (:func:`incomplete_item_candidates`), and, with ``config.token_k`` and ``shared_values``, the items sharing
    rare values (:func:`shared_value_candidates`). With ``sources`` ((N,) 0 or 1: linking two sources), every
    stage pairs items of two sources only. Returns (left, right, facts of the search)."""
    n = len(catalogue)
    searchable = informative_items(model, catalogue) if searchable is None else searchable
    probe = (np.arange(0) if sources is None else None) if probe is None else probe
    left, right, facts = candidate_pairs(
        vectors, config, groups, advance, searchable, probe, calibration_k=CALIBRATION_K, sources=sources
    )
    facts["items_without_embeddings"] = int((~searchable).sum())
    more_left, more_right, facts["incomplete_items"] = incomplete_item_candidates(
        model, catalogue, searchable, config.k, exact_max_items=config.exact_max_items, sources=sources
    )
    if len(more_left):
        key = np.unique(np.concatenate([left * n + right, more_left * n + more_right]))
        facts["candidates_from_incomplete_items"] = int(len(key) - len(left))
        left, right = key // n, key % n
    check_two_sources(left, right, sources)
    if config.token_k > 0 and shared_values:
        left, right, facts["shared_values"] = shared_value_candidates(
            catalogue, vectors, searchable, config, left, right, sources
        )
    return left, right, facts


def check_two_sources(left: np.ndarray, right: np.ndarray, sources: np.ndarray | None) -> None:
    """Linking pairs items of two sources only: a pair within one is a bug, stopped here."""
    if sources is not None and (sources[left] == sources[right]).any():
        raise RuntimeError("prodmatch: linking produced a pair within one source (a bug; please report it)")


def shared_value_candidates(
    catalogue: Catalogue,
    vectors: np.ndarray,
    searchable: np.ndarray,
    config: MatchConfig,
    left: np.ndarray,
    right: np.ndarray,
    sources: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The candidates (``left``, ``right``) with each searchable item's ``config.token_k`` items sharing its
    rarest values added (see :mod:`prodmatch.blocking`), each unordered pair once; and the facts."""
    n = len(catalogue)
    rows = np.flatnonzero(searchable)
    q, j, token_report = shared_token_neighbours(
        item_tokens(catalogue, rows), rows, rows, config.token_k, config.token_max_block, vectors, sources=sources
    )
    key = np.unique(np.concatenate([left * n + right, np.minimum(q, j) * n + np.maximum(q, j)]))
    facts = token_report.to_dict() | {"new_candidates": int(len(key) - len(left))}
    check_two_sources(key // n, key % n, sources)
    return key // n, key % n, facts


def exact_top_k(targets: np.ndarray, queries: np.ndarray, k: int, budget: int = 1 << 26) -> np.ndarray:
    """(Q, k) rows of ``targets`` of highest inner product with each query, best first: exact, as a flat
    index finds them, by matrix products and a top-k (torch), about 3 times faster than faiss's flat search on
    2 cores (measured on 230,000 192-d vectors); ``budget``: the similarities held at once."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    out = np.empty((len(queries), k), dtype=np.int64)
    step = max(1, budget // max(1, len(targets)))
    with torch.inference_mode():
        for s in range(0, len(queries), step):
            out[s : s + step] = torch.topk(q[s : s + step] @ t.T, k, dim=1).indices.numpy()
    return out


def neighbours_within(
    vectors: np.ndarray,
    queries: np.ndarray,
    targets: np.ndarray,
    k: int,
    block: np.ndarray,
    kind: str = "flat",
    config: MatchConfig | None = None,
    disjoint: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's top-k target rows of its own block, as flat (query, neighbour) row pairs, itself and
    empty slots left out. One ``kind`` index per block. ``disjoint``: no query is among the targets."""
    config = config or MatchConfig()
    qs, js = [], []
    for b in np.unique(block[queries]):
        qb, tb = queries[block[queries] == b], targets[block[targets] == b]
        if len(tb) < (1 if disjoint else 2):
            continue
        kk = min(k + (0 if disjoint else 1), len(tb))  # +1: an item may find itself
        if kind == "flat":
            found = exact_top_k(vectors[tb], vectors[qb], kk)
        else:
            found = search(build_index(vectors[tb], kind, config), vectors[qb], kk)
        qs.append(np.repeat(qb, found.shape[1]))
        js.append(np.where(found >= 0, tb[np.maximum(found, 0)], -1).ravel())
    q = np.concatenate(qs) if qs else np.zeros(0, dtype=np.int64)
    j = np.concatenate(js) if js else np.zeros(0, dtype=np.int64)
    ok = (j >= 0) & (j != q)
    return q[ok], j[ok]


def incomplete_item_candidates(
    model,
    catalogue: Catalogue,
    searchable: np.ndarray,
    k: int,
    exact_max_items: int = 20_000,
    sources: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Extra candidates for the items missing one of the model's modalities: their exact top-k among all
    searchable items by the modalities they have (inner product of the normalised modalities, the missing
    one adding 0 to every item's score); over ``exact_max_items`` items, among the items of their level-2
    category when the data has categories.

    A tower's vectors place such items by what the network learnt of them, and its head, not the vectors'
    inner product, is what was trained to match them, so their partners can fall outside their top-k in
    the tower's space (measured on synthetic data: a third to a half of the pairs missing a picture). This
    pass costs one exact search per incomplete item (a few percent of a catalogue).

    With ``sources`` (linking), among the other source's items.

    Returns:
        (left, right, n_incomplete) with left < right.
    """
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
    if sources is None:
        q, r = neighbours_within(vectors, queries, targets, k, block)
    else:  # each side's incomplete items among the other side's items: one block per (block, side) pair
        found = [
            neighbours_within(
                vectors, queries[sources[queries] == side], targets[sources[targets] != side], k, block, disjoint=True
            )
            for side in (0, 1)
        ]
        q, r = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
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


def recall_probe(searchable: np.ndarray, sample: int = 2000, seed: int = 0) -> np.ndarray:
    """Rows of a random sample of searchable items whose top-k lists measure recall@k (where the data has the
    truth to measure it with)."""
    rows = np.flatnonzero(searchable)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=min(sample, len(rows)), replace=False))
