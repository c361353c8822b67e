"""How the synthetic generator draws its labelled pairs: positives within a product (each item once, or reused),
negatives by kind (random, same category, sibling products, nearest neighbours), and unique ids."""

from __future__ import annotations

import logging

import numpy as np

from prodmatch.errors import ConfigError
from prodmatch.synth_config import SynthConfig

log = logging.getLogger(__name__)


def unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct int64 ids in a realistic range, in random order."""
    ids = 10_000_000 + np.cumsum(rng.integers(1, 800, size=n, dtype=np.int64))
    return rng.permutation(ids)


def draw_pairs(
    rng: np.random.Generator,
    pool: np.ndarray,
    m: int,
    product: np.ndarray,
    fam: np.ndarray,
    cat2: np.ndarray,
    cfg: SynthConfig,
    space: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(left, right, target, n_reversed, n_conflicting) over the items in ``pool``."""
    n_pos = round(m * cfg.positive_rate)
    n_neg = m - n_pos
    pool = np.sort(pool)
    if cfg.pairs_per_item is None:
        pos_l, pos_r, neg_pool = _positives_once(rng, pool, n_pos, product, n_neg)
    else:
        pool, pos_l, pos_r = _positives_reused(rng, pool, m, n_pos, product, cfg.pairs_per_item)
        neg_pool = pool
    shares = {  # siblings, same category, nearest neighbours, random
        "mixed": (cfg.hard_negatives, cfg.category_negatives, 0.0),
        "random": (0.0, 0.0, 0.0),
        "category": (0.0, 1.0, 0.0),
        "siblings": (1.0, 0.0, 0.0),
        "neighbours": (0.0, 0.0, 1.0),
    }[cfg.negatives]
    n_hard, n_cat, n_nn = (round(n_neg * x) for x in shares)
    n_rand = max(n_neg - n_hard - n_cat - n_nn, 0)
    hard_l, hard_r = _negatives_within(rng, neg_pool, fam, product, n_hard)
    cat_l, cat_r = _negatives_within(rng, neg_pool, cat2, fam, n_cat)
    nn_l, nn_r = _nearest_negatives(rng, neg_pool, product, cat2, space, n_nn)
    rand = rng.permutation(neg_pool)[: 2 * n_rand] if 2 * n_rand <= len(neg_pool) else rng.choice(neg_pool, 2 * n_rand)
    rand_l, rand_r = rand[:n_rand], rand[n_rand:]
    ok = product[rand_l] != product[rand_r]
    rand_l, rand_r = rand_l[ok], rand_r[ok]

    left = np.concatenate([pos_l, hard_l, cat_l, nn_l, rand_l])
    right = np.concatenate([pos_r, hard_r, cat_r, nn_r, rand_r])
    target = np.concatenate([np.ones(len(pos_l)), np.zeros(len(left) - len(pos_l))]).astype(np.int8)
    flip = rng.random(len(left)) < cfg.label_noise
    target[flip] = 1 - target[flip]
    swap = rng.random(len(left)) < 0.5
    left, right = np.where(swap, right, left), np.where(swap, left, right)
    # Reversed duplicates, some with the opposite label.
    dup = np.flatnonzero(rng.random(len(left)) < cfg.reversed_duplicates)
    dup_target = target[dup].copy()
    conflict = rng.random(len(dup)) < cfg.conflicting
    dup_target[conflict] = 1 - dup_target[conflict]
    left, right = np.concatenate([left, right[dup]]), np.concatenate([right, left[dup]])
    target = np.concatenate([target, dup_target])
    order = rng.permutation(len(left))
    return left[order], right[order], target[order], len(dup), int(conflict.sum())


def _positives_once(
    rng: np.random.Generator, pool: np.ndarray, n_pos: int, product: np.ndarray, n_neg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positives reusing items as little as possible, and the items left for negatives."""
    # Consecutive listings of one product (items are sorted by product), so reuse stays low.
    same = product[pool[:-1]] == product[pool[1:]]
    cand = np.flatnonzero(same)
    cand = cand[rng.permutation(len(cand))]
    # Prefer non-overlapping pairs (even offsets within a product), then fill with the rest.
    starts = np.searchsorted(product[pool], product[pool[cand]])
    cand = np.concatenate([cand[(cand - starts) % 2 == 0], cand[(cand - starts) % 2 == 1]])
    if len(cand) == 0:
        raise ConfigError("no product has two listings; raise --items")
    pos_idx = cand[np.arange(n_pos) % len(cand)]
    pos_l, pos_r = pool[pos_idx], pool[pos_idx + 1]
    # Negatives from items no positive uses, drawn without replacement where the pool allows: real E-CUP
    # data has about one pair per item, so an item rarely appears in two pairs.
    free = np.setdiff1d(pool, np.concatenate([pos_l, pos_r]))
    return pos_l, pos_r, free if len(free) >= 2 * n_neg else pool


def _positives_reused(
    rng: np.random.Generator, pool: np.ndarray, m: int, n_pos: int, product: np.ndarray, per_item: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled items, positives) when items take part in ``per_item`` pairs on average: whole products
    are labelled (about 2m / per_item items), and positives are distinct pairs of their listings."""
    _, first, counts = np.unique(product[pool], return_index=True, return_counts=True)
    multi = np.flatnonzero(counts >= 2)  # products that can give a positive
    order = multi[rng.permutation(len(multi))]
    want_items = min(round(2 * m / per_item), len(pool))
    take = order[: int(np.searchsorted(np.cumsum(counts[order]), want_items)) + 1]
    rows = np.concatenate([pool[first[t] : first[t] + counts[t]] for t in take]) if len(take) else pool[:0]
    # Every distinct pair of listings within each labelled product, then a random n_pos of them.
    sizes = counts[take]
    pairs_per = sizes * (sizes - 1) // 2
    prod_of_pair = np.repeat(np.arange(len(take)), pairs_per)
    k = np.arange(len(prod_of_pair)) - np.repeat(np.cumsum(pairs_per) - pairs_per, pairs_per)
    # the k-th pair (i < j) of a product of size L
    size = sizes[prod_of_pair]
    i = (2 * size - 1 - np.sqrt((2 * size - 1) ** 2 - 8 * k)) // 2
    i = i.astype(np.int64)
    j = (k - i * (2 * size - i - 1) // 2 + i + 1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    a, b = rows[offsets[prod_of_pair] + i], rows[offsets[prod_of_pair] + j]
    pick = rng.permutation(len(a))[:n_pos]
    if len(pick) < n_pos:
        log.warning(
            "only %d distinct positive pairs among %d labelled items (asked for %d): raise --listings-per-product "
            "or lower --pairs-per-item",
            len(pick),
            len(rows),
            n_pos,
        )
    return np.sort(rows), a[pick], b[pick]


def _nearest_negatives(
    rng: np.random.Generator, pool: np.ndarray, product: np.ndarray, cat2: np.ndarray, space: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` pairs of a random pool item and its nearest pool item of another product, within its category
    (cosine in ``space``): the negatives a candidate search meets."""
    if m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    queries = rng.permutation(pool)[:m] if m <= len(pool) else rng.choice(pool, m)
    lefts, rights = [], []
    for c in np.unique(cat2[queries]):
        q = queries[cat2[queries] == c]
        cands = pool[cat2[pool] == c]
        if len(cands) < 2:
            continue
        for s in range(0, len(q), 2048):
            qs = q[s : s + 2048]
            sims = space[qs] @ space[cands].T  # (B, C)
            sims[product[qs][:, None] == product[cands][None, :]] = -np.inf  # another product only
            best = sims.argmax(axis=1)
            ok = np.isfinite(sims[np.arange(len(qs)), best])
            lefts.append(qs[ok])
            rights.append(cands[best[ok]])
    if not lefts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(lefts), np.concatenate(rights)


def _negatives_within(
    rng: np.random.Generator, pool: np.ndarray, group: np.ndarray, exclude: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` pairs of pool items in the same ``group`` but different ``exclude`` (e.g. family, not product)."""
    if m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = pool[np.argsort(group[pool], kind="stable")]
    g = group[order]
    starts = np.searchsorted(g, g, side="left")
    ends = np.searchsorted(g, g, side="right")
    lefts, rights = [], []
    need = m
    for _ in range(8):  # rejection rounds; each keeps the valid draws
        if need <= 0:
            break
        i = rng.permutation(len(order))[: need * 2] if need * 2 <= len(order) else rng.integers(0, len(order), need * 2)
        j = starts[i] + (rng.random(len(i)) * (ends[i] - starts[i])).astype(np.int64)
        ok = exclude[order[i]] != exclude[order[j]]
        lefts.append(order[i[ok]][:need])
        rights.append(order[j[ok]][:need])
        need -= len(lefts[-1])
    if need > 0:  # groups too small: fill with random pairs of different ``exclude``
        i, j = rng.choice(pool, size=need * 4), rng.choice(pool, size=need * 4)
        ok = exclude[i] != exclude[j]
        lefts.append(i[ok][:need])
        rights.append(j[ok][:need])
    return np.concatenate(lefts), np.concatenate(rights)
