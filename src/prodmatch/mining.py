"""Hard negatives mined from the catalogue: the pairs catalogue matching will score, added to training.

Labelled pairs are rarely drawn like a catalogue's nearest neighbours. ``match`` scores every item's top-k
neighbours, most of which are near-misses (other products of the same family, the same category); a model
that never saw such pairs labels them all as matches. So training adds, for every item of the training
pairs, a few of its top-k neighbours in the catalogue, found by the same kind of search ``match`` runs
(faiss, inner product of the normalised modalities; over 20,000 items, exact within each level-2 category
when the data has categories), and the items sharing its rarest attribute values or name words (see
:mod:`prodmatch.blocking`), as negatives.

They are unlabelled, and a few of them are in fact the same product (another seller's listing of it). The
risk is handled in three ways:

- a pair the labels connect is never mined: two items in one component of the positive training pairs
  (the labels say, through a chain, they are one product), and any pair labelled already;
- only items outside the validation and test pairs are mined, so evaluation stays leak-free;
- few are taken per item (``per_item``, drawn uniformly among the top-k as candidate search draws them),
  so the share of unlabelled positives among all training negatives stays small. ``match`` then corrects
  the probabilities for the share of true matches among its candidates (see ``prodmatch.calibration``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from prodmatch.blocking import item_tokens, shared_token_neighbours
from prodmatch.candidates import modality_vectors, neighbours_within
from prodmatch.catalogue import Catalogue
from prodmatch.config import MatchConfig
from prodmatch.features import PairFeaturizer
from prodmatch.pairs import PairSet, unordered_key

__all__ = ["MiningReport", "drop_likely_positives", "likely_positives", "mine_negatives"]

log = logging.getLogger(__name__)


@dataclass
class MiningReport:
    """What mining did, for metrics.json."""

    per_item: int
    k: int
    query_items: int = 0  # training items with an embedding (the sample mined from)
    sampled_from: int | None = None  # the items there were, when a sample was mined from
    searchable_items: int = 0  # items with an embedding, outside validation and test
    neighbours: int = 0
    shared_value_neighbours: int = 0  # of them, found by shared rare values (see prodmatch.blocking)
    linked_by_labels: int = 0  # same component of the positive pairs: never a negative
    already_labelled: int = 0
    mined: int = 0
    dropped_as_likely_positive: int = 0
    far: int = 0  # of the mined, drawn at random from the whole catalogue (far_per_item)
    blocked_by_category: bool = False  # over 20,000 items: exact search within each level-2 category

    def to_dict(self) -> dict:
        return asdict(self)


def mine_negatives(
    catalogue: Catalogue,
    train: PairSet,
    modalities: list[str],
    *,
    per_item: int | None = 2,
    k: int = 20,
    exclude_items: np.ndarray | None = None,
    seed: int = 0,
    token_k: int = 10,
    token_max_block: int = 100,
    max_queries: int | None = None,
    far_per_item: int = 0,
) -> tuple[PairSet, MiningReport]:
    """Up to ``per_item`` negatives for every item of ``train``: neighbours in its top-``k`` that the labels
    do not connect to it.

    Args:
        catalogue: the items.
        train: the labelled training pairs.
        modalities: the modalities the search compares.
        per_item: negatives per training item, drawn uniformly among its eligible top-k neighbours; None:
            every one (the pairs ``match`` would score for these items).
        k: neighbours searched per item (``match``'s k).
        exclude_items: rows never mined (validation and test items).
        seed: sampling seed.
        token_k, token_max_block: neighbours by shared rare values too, as ``match`` adds them (0: none).
        max_queries: mine for a random sample of at most this many of the items (None: every one).
        far_per_item: also this many negatives per item drawn uniformly from the whole catalogue (not only
            its top-k): ``match --k`` beyond the mining search scores pairs far down an item's list, often of
            two categories, which a model trained on near neighbours alone never saw.

    Returns:
        (pairs, report): the mined pairs (target 0, ``source_rows`` -1, category of the query item).
    """
    report = MiningReport(per_item=per_item, k=k)
    n = len(catalogue)
    vectors = modality_vectors(catalogue, modalities)
    present = np.zeros(n, dtype=bool)
    for m in modalities:
        present |= catalogue.modalities[m].present
    searchable = present.copy()
    if exclude_items is not None:
        searchable[exclude_items] = False
    queries = np.unique(np.concatenate([train.left, train.right]))
    queries = queries[present[queries]]
    if max_queries is not None and len(queries) > max_queries:
        # a random sample of the items: mining's search, the pairs' features and the models' rows all grow with it
        report.sampled_from = len(queries)
        queries = np.sort(np.random.default_rng(seed).choice(queries, max_queries, replace=False))
        log.info("mining from %d of the %d items (a random sample; --mine-max-items)", max_queries, report.sampled_from)
    targets = np.flatnonzero(searchable)
    report.query_items, report.searchable_items = len(queries), len(targets)
    empty = train.subset(np.zeros(0, dtype=np.int64))
    if (per_item is not None and per_item <= 0) or len(queries) == 0 or len(targets) < 2:
        return empty, report

    config = MatchConfig(k=min(k, len(targets) - 1))
    kind = config.index_kind(len(targets))
    if kind == "hnsw" and catalogue.categories is not None:
        # Large catalogues: exact search within each level-2 category, cheaper than building an approximate
        # index over everything, and the hard negatives are there.
        block = catalogue.categories["category2"].cat.codes.to_numpy()
        report.blocked_by_category = True
    else:
        block = np.zeros(n, dtype=np.int64)
    kind = "flat" if report.blocked_by_category else kind
    q, j = neighbours_within(vectors, queries, targets, config.k, block, kind, config)
    if token_k > 0:  # and those sharing rare values, as `match` finds them
        tq, tj, _ = shared_token_neighbours(
            item_tokens(catalogue, np.union1d(queries, targets)), queries, targets, token_k, token_max_block, vectors
        )
        report.shared_value_neighbours = len(tq)
        qq, jj = np.concatenate([q, tq]).astype(np.int64), np.concatenate([j, tj]).astype(np.int64)
        directed = np.unique(qq * n + jj)  # (query, neighbour), once
        q, j = directed // n, directed % n
    report.neighbours = len(q)

    # Components of the positive training pairs: the labels say, through a chain, that they are one product.
    pos = train.target > 0.5
    graph = sp.coo_matrix((np.ones(int(pos.sum())), (train.left[pos], train.right[pos])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    labelled_keys = unordered_key(train.left, train.right, n)
    linked = component[q] == component[j]
    labelled = np.isin(unordered_key(q, j, n), labelled_keys)
    report.linked_by_labels, report.already_labelled = int(linked.sum()), int((labelled & ~linked).sum())
    q, j = q[~linked & ~labelled], j[~linked & ~labelled]

    # per_item of each query's eligible neighbours, uniformly: a random order, then the first per_item per query
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(q)), q))
    q, j = q[order], j[order]
    starts = np.searchsorted(q, q, side="left")
    keep = (np.arange(len(q)) - starts) < (len(q) if per_item is None else per_item)
    q, j = q[keep], j[keep]
    if far_per_item > 0:
        fq = np.repeat(queries, far_per_item)
        fj = targets[rng.integers(0, len(targets), len(fq))]
        # the same rule as the near ones: never a pair the labels link or already hold
        ok = (fq != fj) & (component[fq] != component[fj]) & ~np.isin(unordered_key(fq, fj, n), labelled_keys)
        report.far = int(ok.sum())
        q, j = np.concatenate([q, fq[ok]]), np.concatenate([j, fj[ok]])
    # a pair mined from both ends once
    _, first = np.unique(unordered_key(q, j, n), return_index=True)
    q, j = q[first], j[first]
    report.mined = len(q)

    category = None
    if train.category is not None and catalogue.categories is not None:
        category = np.asarray(catalogue.categories["category2"].to_numpy(dtype=object))[q]
    elif train.category is not None:
        category = np.full(len(q), None, dtype=object)
    ids = catalogue.ids.to_numpy()
    mined = PairSet(
        left=q.astype(np.int32),
        right=j.astype(np.int32),
        target=np.zeros(len(q), dtype=np.float32),
        source_rows=np.full(len(q), -1, dtype=np.int64),
        ids1=ids[q],
        ids2=ids[j],
        category=category,
    )
    log.info(
        "mined %d hard negatives: %d training items' top-%d neighbours among %d items (validation and test items "
        "left out), %d per item; skipped %d pairs the positive labels link and %d already labelled",
        report.mined,
        report.query_items,
        config.k,
        report.searchable_items,
        per_item,
        report.linked_by_labels,
        report.already_labelled,
    )
    return mined, report


def drop_likely_positives(
    catalogue: Catalogue,
    labelled: PairSet,
    mined: PairSet,
    modalities: list[str],
    seed: int = 0,
    threshold: float | None = 0.2,
) -> tuple[PairSet, int]:
    """The mined pairs without those :func:`likely_positives` flags, and how many were dropped."""
    likely = likely_positives(catalogue, labelled, mined, modalities, seed, threshold)
    return mined.subset(~likely), int(likely.sum())


def likely_positives(
    catalogue: Catalogue,
    labelled: PairSet,
    mined: PairSet,
    modalities: list[str],
    seed: int = 0,
    threshold: float | None = 0.2,
) -> np.ndarray:
    """Which mined pairs look like the labelled positives (a positive-unlabelled filter).

    A quick LightGBM on the generic pair features (cosines, side data) learns labelled positives against
    labelled and mined negatives, cross-fitted in two halves so no mined pair is scored by trees that saw it.
    A mined pair it gives a probability of ``threshold`` or more looks like the labelled positives: many such
    pairs are unlabelled listings of one product, and they are dropped rather than taught as negatives (a
    network would otherwise learn to pull those very items apart, and ``match`` meets them again). On the
    synthetic catalogues 0.2 drops about a tenth of the mined pairs, a third of them true matches, and leaves
    about 1 % of the mined negatives wrong instead of 5 %. But the pairs it drops are also the hardest
    negatives (other products of the same family, one colour), which the model needs most: with it, the
    clusters' F1 on the catalogue-single scenario fell from 0.957 to 0.822, so training leaves it off unless
    ``TrainConfig.drop_mined_above`` asks for it (the catalogue job's calibration uses it, see ``prodmatch.api``).

    ``threshold`` None: the share of labelled positives among the quick model's pairs, so a pair is flagged when
    it is more likely a match than a pair drawn from them. A fixed 0.2 suits labelled pairs of about half
    matches; with 10 % it left 264 of a validation set's 497 unlabelled matches among its 12,787 mined pairs
    (against 553 labelled matches), and calibration read every high score as half a match. Relative, it
    flags pairs at 0.03 there and at 0.13 on half-matched labels, near the fixed rule's 0.2.

    Returns:
        (M,) bool: the mined pairs that look like the labelled positives.
    """
    import lightgbm as lgb

    if len(mined) == 0 or labelled.target is None or not (labelled.target > 0.5).any():
        return np.zeros(len(mined), dtype=bool)
    use = ["extra_pictures", "categories", "attributes", "numbers", "names", "words"]
    items = np.concatenate([labelled.left, labelled.right, mined.left, mined.right])
    featurizer = PairFeaturizer(modalities, use).fit(catalogue, items)
    left = np.concatenate([labelled.left, mined.left])
    right = np.concatenate([labelled.right, mined.right])
    x, _ = featurizer.transform(catalogue, left, right)
    y = np.concatenate([labelled.target > 0.5, np.zeros(len(mined), dtype=bool)]).astype(np.float32)
    half = np.random.default_rng(seed).random(len(y)) < 0.5
    score = np.zeros(len(y))
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.1, "verbose": -1, "seed": seed}
    for side in (False, True):
        booster = lgb.train(params, lgb.Dataset(x[half != side], y[half != side]), num_boost_round=200)
        score[half == side] = booster.predict(x[half == side])
    if threshold is None:  # relative: more likely a match than a pair drawn from the quick model's own pairs
        threshold = float(y.mean())
    return score[len(labelled) :] >= threshold
