"""Pairs as row indices into one catalogue, and leak-free train/validation splits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from prodmatch.catalogue import Catalogue
from prodmatch.errors import DataError, UnknownIdsError
from prodmatch.io import read_pairs_table

__all__ = [
    "CONFLICT_POLICIES",
    "SPLITS",
    "Folds",
    "PairSet",
    "SplitReport",
    "augment_transitive",
    "both_orders",
    "clean_pairs",
    "group_folds",
    "load_pairs",
    "make_pairs",
    "pair_graph",
    "pair_hygiene",
    "split_pairs",
]

# What to do with an unordered pair labelled both 1 and 0: drop it, keep its first row's label, or force one.
CONFLICT_POLICIES = ("drop", "first", "positive", "negative")

log = logging.getLogger(__name__)


@dataclass
class PairSet:
    """Pairs of catalogue rows.

    Attributes:
        left, right: (M,) int32 catalogue rows of the two items.
        target: (M,) float32 labels, or None for unlabelled pairs.
        source_rows: (M,) int64 row of each pair in the file it came from, to write results back in order.
        ids1, ids2: (M,) the original ids, for output files.
        category: (M,) optional group label per pair (E-CUP level-2 category), object array.
    """

    left: np.ndarray
    right: np.ndarray
    target: np.ndarray | None
    source_rows: np.ndarray
    ids1: np.ndarray
    ids2: np.ndarray
    category: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.left)

    def subset(self, mask_or_rows: np.ndarray) -> PairSet:
        """The pairs selected by a boolean mask or an index array, in that order."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[mask_or_rows]

        return PairSet(
            left=self.left[mask_or_rows],
            right=self.right[mask_or_rows],
            target=pick(self.target),
            source_rows=self.source_rows[mask_or_rows],
            ids1=self.ids1[mask_or_rows],
            ids2=self.ids2[mask_or_rows],
            category=pick(self.category),
        )

    def positive_rate(self) -> float:
        return float(self.target.mean()) if self.target is not None and len(self) else float("nan")

    def concat(self, other: PairSet) -> PairSet:
        """These pairs followed by ``other``'s."""

        def join(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else np.concatenate([a, b])

        return PairSet(
            left=np.concatenate([self.left, other.left]),
            right=np.concatenate([self.right, other.right]),
            target=join(self.target, other.target),
            source_rows=np.concatenate([self.source_rows, other.source_rows]),
            ids1=np.concatenate([self.ids1, other.ids1]),
            ids2=np.concatenate([self.ids2, other.ids2]),
            category=join(self.category, other.category),
        )

    def swapped(self) -> PairSet:
        """The same pairs with the two items exchanged."""
        return PairSet(
            left=self.right,
            right=self.left,
            target=self.target,
            source_rows=self.source_rows,
            ids1=self.ids2,
            ids2=self.ids1,
            category=self.category,
        )


def make_pairs(
    catalogue: Catalogue,
    df: pd.DataFrame,
    *,
    unknown: str = "error",
    source: str = "pairs",
) -> PairSet:
    """Turn a pairs DataFrame (``variantid1``, ``variantid2``, optional ``target``, ``category2``) into a PairSet.

    Args:
        catalogue: where the ids are looked up.
        df: as returned by :func:`prodmatch.io.read_pairs_table`.
        unknown: ``"error"`` raises on ids without data; ``"drop"`` drops those pairs and logs the count.
        source: a name for messages (usually the file path).

    Returns:
        The pairs, with categories from ``category2`` or else from the catalogue via ``variantid1``.

    Raises:
        UnknownIdsError: with ``unknown="error"``, listing the unknown ids.
    """
    v1 = df["variantid1"].to_numpy()
    v2 = df["variantid2"].to_numpy()
    try:
        left = catalogue.rows(v1)
        right = catalogue.rows(v2)
    except DataError as e:  # ids of another kind than the catalogue's: say which file and column
        column = "variantid1" if not pd.api.types.is_integer_dtype(v1.dtype) else "variantid2"
        example = (v1 if column == "variantid1" else v2)[:3].tolist()
        raise DataError(f"{source}: column {column} (e.g. {example}): {e}") from None
    bad = (left < 0) | (right < 0)
    keep = np.arange(len(df), dtype=np.int64)
    if bad.any():
        unknown_ids = pd.unique(np.concatenate([v1[left < 0], v2[right < 0]]))
        if unknown == "error":
            raise UnknownIdsError(
                f"{source}: {bad.sum()} pairs name {len(unknown_ids)} ids with no data in any item file, "
                f"e.g. {unknown_ids[:10].tolist()}. Add their embeddings, or remove those pairs",
                unknown_ids.tolist(),
            )
        log.warning(
            "%s: dropped %d of %d pairs naming %d ids with no data at all (e.g. %s)",
            source,
            bad.sum(),
            len(df),
            len(unknown_ids),
            unknown_ids[:5].tolist(),
        )
        keep = np.flatnonzero(~bad)
    category = None
    if "category2" in df:
        category = df["category2"].to_numpy(dtype=object)[keep]
    elif catalogue.categories is not None:
        category = np.asarray(catalogue.categories["category2"].to_numpy(dtype=object))[left[keep]]
    target = df["target"].to_numpy(dtype=np.float32)[keep] if "target" in df else None
    return PairSet(
        left=left[keep].astype(np.int32),
        right=right[keep].astype(np.int32),
        target=target,
        source_rows=keep,
        ids1=v1[keep],
        ids2=v2[keep],
        category=category,
    )


def load_pairs(
    path: str | Path,
    catalogue: Catalogue,
    *,
    require_target: bool,
    unknown: str = "error",
) -> PairSet:
    """Read, validate and resolve a pairs file against ``catalogue`` (see :func:`make_pairs`)."""
    df = read_pairs_table(path, require_target=require_target)
    return make_pairs(catalogue, df, unknown=unknown, source=str(path))


@dataclass
class SplitReport:
    """What a split did, and why, for logs and the run's metrics."""

    method: str  # the split made: group, items, random or given
    train_pairs: int
    valid_pairs: int
    train_items: int
    valid_items: int
    overlap_items: int  # items on both sides: 0 for the group and items splits by construction
    components: int | None = None  # connected components of the pair graph (group split)
    requested: str | None = None  # the split asked for, when another one was made
    reason: str | None = None  # why the split made differs from the one asked for
    pairs_lost: int = 0  # pairs across the two sides of an items split, in neither

    def to_dict(self) -> dict:
        return dict(self.__dict__)


SPLITS = ("group", "items", "random")


def split_pairs(
    pairs: PairSet,
    *,
    method: str = "group",
    valid_fraction: float = 0.2,
    seed: int = 42,
    min_valid_fraction: float = 0.1,
) -> tuple[PairSet, PairSet, SplitReport]:
    """Split labelled pairs into train and validation.

    ``group`` puts whole connected components of the pair graph on one side, so no item (and no
    reversed duplicate) is seen on both sides. When one component is so large that validation would get
    less than ``min_valid_fraction`` of the pairs (item reuse makes the pair graph one giant component),
    it falls back to ``items``, with a logged reason. ``items`` assigns items to sides (items joined by
    positive pairs together) and keeps the pairs whose two items are on one side: still no item on both
    sides, at the price of the pairs across (reported as ``pairs_lost``). ``random`` is the notebook's
    ``train_test_split(test_size=valid_fraction, random_state=seed)``, which lets items leak.

    Args:
        pairs: labelled pairs.
        method: group, items or random.
        valid_fraction: the share of pairs to validate on.
        seed: the split's seed.
        min_valid_fraction: the least share of pairs validation may get; 0 accepts any.

    Returns:
        (train, valid, report).

    Raises:
        DataError: no split gives validation ``min_valid_fraction`` of the pairs.
    """
    if method not in SPLITS:
        raise DataError(f"unknown split {method!r}; use one of {list(SPLITS)}")
    requested, reason, lost = None, None, 0
    components = None
    min_valid_fraction = min(min_valid_fraction, 0.5 * valid_fraction)  # a small valid_fraction asked for is kept
    if method == "random":
        from sklearn.model_selection import train_test_split

        rows = np.arange(len(pairs))
        tr, va = train_test_split(rows, test_size=valid_fraction, random_state=seed)
    if method == "group":
        components, comp = _pair_components(pairs)
        sizes = np.bincount(comp, minlength=components)  # pairs per component
        order = np.random.default_rng(seed).permutation(components)
        # Take whole components in random order until the validation share is reached.
        cum = np.cumsum(sizes[order])
        n_valid_comp = int(np.searchsorted(cum, valid_fraction * len(pairs), side="right"))
        is_valid = np.zeros(components, dtype=bool)
        is_valid[order[: max(n_valid_comp, 1)]] = True
        va = np.flatnonzero(is_valid[comp])
        tr = np.flatnonzero(~is_valid[comp])
        components = len(np.unique(comp))
        if len(va) < min_valid_fraction * len(pairs) or len(tr) == 0:
            requested, method = "group", "items"
            gave = (
                "left train no pairs"
                if len(tr) == 0
                else f"gave validation only {len(va):,} pairs ({100 * len(va) / max(len(pairs), 1):.1f}%, "
                f"under {100 * min_valid_fraction:.0f}%)"
            )
            reason = (
                f"the largest connected component of the pair graph holds {int(sizes.max()):,} of {len(pairs):,} "
                f"pairs, so whole components {gave}"
            )
    if method == "items":
        target = max(min_valid_fraction, 0.1 * valid_fraction) if requested else valid_fraction
        side = _item_sides(pairs, target, seed)  # (M,) 0 train, 1 valid, -1 across
        tr, va = np.flatnonzero(side == 0), np.flatnonzero(side == 1)
        lost = int((side < 0).sum())
        if reason:
            log.warning(
                "%s: split by items instead (items joined by positive pairs stay together; no item on both "
                "sides): %d train / %d validation pairs, %d pairs across the sides left out",
                reason,
                len(tr),
                len(va),
                lost,
            )
    if len(tr) == 0 or len(va) == 0 or len(va) < min_valid_fraction * (len(tr) + len(va)) * 0.75:
        # ("about" the minimum: a little under is accepted)
        raise DataError(
            f"the {method} split of {len(pairs):,} pairs gave {len(tr):,} train and {len(va):,} validation pairs: "
            "the pair graph is too connected to hold items out. Give a validation file (--valid-pairs), use "
            "--split random (items then leak into validation), or accept a small validation set with "
            "--min-valid-fraction 0"
        )
    train, valid = pairs.subset(np.sort(tr)), pairs.subset(np.sort(va))
    train_items = np.union1d(train.left, train.right)
    valid_items = np.union1d(valid.left, valid.right)
    report = SplitReport(
        method=method,
        train_pairs=len(train),
        valid_pairs=len(valid),
        train_items=len(train_items),
        valid_items=len(valid_items),
        overlap_items=len(np.intersect1d(train_items, valid_items, assume_unique=True)),
        components=components,
        requested=requested,
        reason=reason,
        pairs_lost=lost,
    )
    return train, valid, report


def _pair_components(pairs: PairSet) -> tuple[int, np.ndarray]:
    """(number of components, (M,) component of each pair) of the graph whose edges are the pairs."""
    n_nodes = int(max(pairs.left.max(), pairs.right.max())) + 1
    ones = np.ones(len(pairs), dtype=np.int8)
    graph = sp.coo_matrix((ones, (pairs.left, pairs.right)), shape=(n_nodes, n_nodes)).tocsr()
    components, label = connected_components(graph, directed=False)
    return components, label[pairs.left]


def pair_graph(pairs: PairSet) -> dict[str, float]:
    """How connected the pairs are: items, pairs per item, and the largest connected component's share."""
    _, comp = _pair_components(pairs)
    items = len(np.union1d(pairs.left, pairs.right))
    return {
        "items": items,
        "pairs_per_item": 2 * len(pairs) / max(items, 1),
        "largest_component_share": float(np.bincount(comp).max() / len(pairs)),
    }


def _item_units(pairs: PairSet) -> tuple[np.ndarray, np.ndarray, int]:
    """(unit of each pair's left item, of its right item, number of units): items joined by positive pairs
    form one unit, so an item-disjoint split never cuts a positive pair (nor a chain of duplicates)."""
    n_nodes = int(max(pairs.left.max(), pairs.right.max())) + 1
    pos = pairs.target > 0.5 if pairs.target is not None else np.zeros(len(pairs), dtype=bool)
    ones = np.ones(int(pos.sum()), dtype=np.int8)
    graph = sp.coo_matrix((ones, (pairs.left[pos], pairs.right[pos])), shape=(n_nodes, n_nodes)).tocsr()
    n_units, label = connected_components(graph, directed=False)
    return label[pairs.left], label[pairs.right], n_units


def _item_sides(pairs: PairSet, target: float, seed: int) -> np.ndarray:
    """(M,) 1 for validation, 0 for train, -1 for a pair across: units go to validation with the
    probability (found by bisection) that gives validation ``target`` of the kept pairs."""
    ul, ur, n_units = _item_units(pairs)
    u = np.random.default_rng(seed).random(n_units)

    def sides(q: float) -> np.ndarray:
        a, b = u[ul] < q, u[ur] < q
        return np.where(a & b, 1, np.where(~a & ~b, 0, -1))

    lo, hi = 0.0, 1.0
    for _ in range(30):
        q = 0.5 * (lo + hi)
        s = sides(q)
        share = (s == 1).sum() / max((s >= 0).sum(), 1)
        lo, hi = (q, hi) if share < target else (lo, q)
    return sides(hi)


@dataclass
class Folds:
    """Cross-fitting folds of training pairs: which pairs each fold network trains on, and which
    networks score each pair out of fold.

    Attributes:
        train_masks: (K, M) bool; network k trains on the pairs where ``train_masks[k]``.
        scorers: (M, 2) int; a pair's out-of-fold score is the mean of networks ``scorers[i, 0]`` and
            ``scorers[i, 1]`` (the same one twice when both items are in one fold). Neither trained on it.
        method: ``group`` (connected components whole) or ``items`` (items assigned to folds).
        reason: why ``items`` was used, or None.
    """

    train_masks: np.ndarray
    scorers: np.ndarray
    method: str
    reason: str | None = None

    def report(self) -> dict:
        return {
            "method": self.method,
            "folds": len(self.train_masks),
            "train_pairs_per_fold": [int(m.sum()) for m in self.train_masks],
            "reason": self.reason,
        }


def group_folds(pairs: PairSet, n_folds: int, seed: int = 0) -> Folds:
    """Cross-fitting folds that never let a network score a pair, or an item, it trained on.

    Connected components of the pair graph are kept whole when that gives every fold at least half its
    share. When one component is too large (item reuse), items are assigned to folds instead (items
    joined by positive pairs together): network k trains on the pairs with no item in fold k, and a pair
    across folds k and j is scored by the mean of networks k and j, so every pair gets a score from
    networks that never saw it, and each of them saw at most one of its two items, in other pairs. Each
    network then trains on about ((K - 1) / K)^2 of the pairs, so more folds pay: callers may ask for more.
    """
    components, comp = _pair_components(pairs)
    rng = np.random.default_rng(seed)
    folds = (rng.permutation(components) % n_folds)[comp]
    smallest = np.bincount(folds, minlength=n_folds).min()
    if not len(pairs) or smallest >= 0.5 * len(pairs) / n_folds:
        masks = np.stack([folds != k for k in range(n_folds)])
        return Folds(masks, np.column_stack([folds, folds]), "group")
    reason = (
        f"one fold would hold only {smallest:,} of {len(pairs):,} pairs (the largest connected component has "
        f"{int(np.bincount(comp).max()):,})"
    )
    ul, ur, n_units = _item_units(pairs)
    fold_of_unit = rng.permutation(n_units) % n_folds
    fa, fb = fold_of_unit[ul], fold_of_unit[ur]
    masks = np.stack([(fa != k) & (fb != k) for k in range(n_folds)])
    log.warning(
        "%s: folds are drawn by item instead, so no network scores an item it trained on; each of the %d "
        "networks trains on %s pairs",
        reason,
        n_folds,
        "/".join(f"{int(m.sum()):,}" for m in masks),
    )
    return Folds(masks, np.column_stack([fa, fb]), "items", reason)


def unordered_key(left: np.ndarray, right: np.ndarray, n_items: int | None = None) -> np.ndarray:
    """(M,) int64, equal for (a, b) and (b, a). Keys compare across calls only with the same ``n_items``."""
    lo = np.minimum(left, right).astype(np.int64)
    hi = np.maximum(left, right).astype(np.int64)
    base = n_items if n_items is not None else int(max(hi.max(initial=0), 0)) + 1
    return lo * base + hi


def pair_hygiene(pairs: PairSet) -> dict[str, int]:
    """Counts of reversed duplicate pairs and of those whose labels conflict (vectorised)."""
    key = unordered_key(pairs.left, pairs.right)
    frame = pd.DataFrame({"key": key, "reversed": pairs.left > pairs.right})
    if pairs.target is not None:
        frame["target"] = pairs.target
    grouped = frame.groupby("key")
    sizes = grouped.size()
    dup_keys = sizes.index[sizes > 1]
    exact = int(len(frame) - frame.drop_duplicates(["key", "reversed"]).shape[0])
    conflicting = 0
    if pairs.target is not None and len(dup_keys):
        nunique = grouped["target"].nunique()
        conflicting = int((nunique > 1).sum())
    return {
        "pairs": len(pairs),
        "duplicate_groups": len(dup_keys),
        "reversed_duplicates": int((sizes[sizes > 1] - 1).sum()) - exact,
        "exact_duplicates": exact,
        "conflicting_labels": conflicting,
    }


def clean_pairs(pairs: PairSet, conflicts: str = "drop") -> tuple[PairSet, dict[str, int | str]]:
    """Keep one row per unordered pair; resolve pairs labelled both ways by the ``conflicts`` policy.

    Args:
        pairs: labelled pairs.
        conflicts: ``drop`` removes every row of a conflicting pair; ``first`` keeps the first row's label;
            ``positive`` / ``negative`` keep the pair with label 1 / 0.

    Returns:
        (the cleaned pairs in their original order, counts for the log and metrics.json).
    """
    if conflicts not in CONFLICT_POLICIES:
        raise DataError(f"unknown conflict policy {conflicts!r}; use one of {list(CONFLICT_POLICIES)}")
    if pairs.target is None:
        raise DataError("clean_pairs needs labelled pairs")
    key = unordered_key(pairs.left, pairs.right)
    frame = pd.DataFrame({"key": key, "target": pairs.target})
    grouped = frame.groupby("key", sort=False)["target"]
    conflicting = (grouped.transform("nunique") > 1).to_numpy()
    first = ~frame.duplicated("key").to_numpy()  # the first row of every unordered pair
    keep = first.copy()
    target = pairs.target.copy()
    if conflicts == "drop":
        keep &= ~conflicting
    elif conflicts in ("positive", "negative"):
        target[conflicting] = 1.0 if conflicts == "positive" else 0.0
    n_groups = int(first.sum())
    n_conflicting = int((first & conflicting).sum())
    out = pairs.subset(np.flatnonzero(keep))
    out.target = target[keep]
    report: dict[str, int | str] = {
        "input_pairs": len(pairs),
        "duplicate_rows_dropped": int(len(pairs) - n_groups),
        "conflicting_pairs": n_conflicting,
        "conflict_policy": conflicts,
        "conflicting_pairs_dropped": n_conflicting if conflicts == "drop" else 0,
        "output_pairs": len(out),
    }
    log.info(
        "pair hygiene: %d pairs -> %d: dropped %d duplicate rows (reversed or repeated); %d pairs had "
        "conflicting labels, resolved by policy %r",
        len(pairs),
        len(out),
        report["duplicate_rows_dropped"],
        n_conflicting,
        conflicts,
    )
    return out, report


def augment_transitive(pairs: PairSet, n_items: int, *, max_component: int = 32) -> tuple[PairSet, dict[str, int]]:
    """Add the positives implied by connected components of positive pairs (a~b, b~c => a~c).

    Implied pairs that the data labels negative are not added (counted as contradicted). Components larger
    than ``max_component`` items are left alone (counted): one wrong label there would add hundreds of
    wrong positives. New pairs carry ``source_rows`` -1 and the category of their component's first pair.

    Args:
        pairs: labelled pairs, typically the training side of a split (never validation or test).
        n_items: number of catalogue rows.
        max_component: largest component to expand.

    Returns:
        (pairs followed by the added positives, counts).
    """
    if pairs.target is None:
        raise DataError("augment_transitive needs labelled pairs")
    pos = pairs.target > 0.5
    graph = sp.coo_matrix(
        (np.ones(int(pos.sum()), dtype=np.int8), (pairs.left[pos], pairs.right[pos])), shape=(n_items, n_items)
    )
    _, label = connected_components(graph, directed=False)
    nodes = np.union1d(pairs.left[pos], pairs.right[pos])
    comp_of = label[nodes]
    sizes = np.bincount(comp_of)
    big = sizes > max_component
    grow = (sizes >= 3) & ~big
    members = nodes[grow[comp_of]]
    member_comp = label[members]
    order = np.argsort(member_comp, kind="stable")
    members, member_comp = members[order], member_comp[order]
    # Every pair of members within one component: each member with the members after it in its component.
    ends = np.searchsorted(member_comp, member_comp, side="right")
    after = ends - (np.arange(len(members)) + 1)
    a_idx = np.repeat(np.arange(len(members)), after)
    b_idx = a_idx + 1 + (np.arange(len(a_idx)) - np.repeat(np.cumsum(after) - after, after))
    a, b = members[a_idx], members[b_idx]
    keys = unordered_key(a, b, n_items)
    labelled = np.isin(keys, unordered_key(pairs.left, pairs.right, n_items))
    is_negative = np.isin(keys, unordered_key(pairs.left[~pos], pairs.right[~pos], n_items))
    new = ~labelled
    a, b = a[new], b[new]
    # Category: that of any positive pair in the same component.
    category = None
    if pairs.category is not None:
        comp_category = pd.Series(pairs.category[pos], index=label[pairs.left[pos]])
        comp_category = comp_category[~comp_category.index.duplicated()]
        category = comp_category.reindex(label[a]).to_numpy(dtype=object)
    ids = _ids_of_rows(pairs)
    added = PairSet(
        left=a.astype(np.int32),
        right=b.astype(np.int32),
        target=np.ones(len(a), dtype=np.float32),
        source_rows=np.full(len(a), -1, dtype=np.int64),
        ids1=ids.reindex(a).to_numpy(),
        ids2=ids.reindex(b).to_numpy(),
        category=category,
    )
    report = {
        "components_expanded": int(grow.sum()),
        "components_too_large": int(big.sum()),
        "positives_added": len(a),
        "contradicted_by_negative_labels": int(is_negative.sum()),
    }
    log.info(
        "transitive augmentation: added %d implied positives from %d components of 3+ items; skipped %d "
        "implied pairs labelled negative and %d components over %d items",
        len(a),
        report["components_expanded"],
        report["contradicted_by_negative_labels"],
        report["components_too_large"],
        max_component,
    )
    return pairs.concat(added), report


def both_orders(pairs: PairSet) -> PairSet:
    """Every pair as (a, b) and as (b, a), for training order-sensitive models."""
    return pairs.concat(pairs.swapped())


def _ids_of_rows(pairs: PairSet) -> pd.Series:
    """Catalogue row -> original id, for the rows these pairs name."""
    rows = np.concatenate([pairs.left, pairs.right])
    ids = np.concatenate([pairs.ids1, pairs.ids2])
    series = pd.Series(ids, index=rows)
    return series[~series.index.duplicated()]
