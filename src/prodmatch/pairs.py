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
    "PairSet",
    "SplitReport",
    "augment_transitive",
    "both_orders",
    "clean_pairs",
    "group_folds",
    "load_pairs",
    "make_pairs",
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
    left = catalogue.rows(v1)
    right = catalogue.rows(v2)
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
    """What a split did, for logs and the run's metrics."""

    method: str
    train_pairs: int
    valid_pairs: int
    train_items: int
    valid_items: int
    overlap_items: int  # items on both sides: 0 for the group split by construction
    components: int | None = None  # connected components of the pair graph (group split)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def split_pairs(
    pairs: PairSet,
    *,
    method: str = "group",
    valid_fraction: float = 0.2,
    seed: int = 42,
) -> tuple[PairSet, PairSet, SplitReport]:
    """Split labelled pairs into train and validation.

    ``group`` puts whole connected components of the pair graph on one side, so no item (and no
    reversed duplicate) is seen on both sides. ``random`` is the notebook's
    ``train_test_split(test_size=valid_fraction, random_state=seed)``.

    Returns:
        (train, valid, report).
    """
    if method == "random":
        from sklearn.model_selection import train_test_split

        rows = np.arange(len(pairs))
        tr, va = train_test_split(rows, test_size=valid_fraction, random_state=seed)
        components = None
    elif method == "group":
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
        largest = int(sizes.max())
        if largest > valid_fraction * len(pairs):
            log.warning(
                "the largest connected component holds %d of %d pairs; the group split cannot balance well",
                largest,
                len(pairs),
            )
    else:
        raise DataError(f"unknown split {method!r}; use 'group' or 'random'")
    if len(tr) == 0 or len(va) == 0:
        raise DataError(f"the {method} split of {len(pairs)} pairs left one side empty; add more pairs")
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
        components=None if components is None else len(np.unique(comp)),
    )
    return train, valid, report


def _pair_components(pairs: PairSet) -> tuple[int, np.ndarray]:
    """(number of components, (M,) component of each pair) of the graph whose edges are the pairs."""
    n_nodes = int(max(pairs.left.max(), pairs.right.max())) + 1
    ones = np.ones(len(pairs), dtype=np.int8)
    graph = sp.coo_matrix((ones, (pairs.left, pairs.right)), shape=(n_nodes, n_nodes)).tocsr()
    components, label = connected_components(graph, directed=False)
    return components, label[pairs.left]


def group_folds(pairs: PairSet, n_folds: int, seed: int = 0) -> np.ndarray:
    """(M,) fold of each pair, 0..n_folds-1, keeping connected components whole (no item in two folds).

    When one component holds so many pairs that some fold would get less than half its share (a dense
    pair graph, as in the EM benchmarks), whole components cannot make useful folds: pairs are then
    assigned to folds at random, and a warning says that items may appear in more than one fold.
    """
    components, comp = _pair_components(pairs)
    rng = np.random.default_rng(seed)
    folds = (rng.permutation(components) % n_folds)[comp]
    smallest = np.bincount(folds, minlength=n_folds).min()
    if len(pairs) and smallest < 0.5 * len(pairs) / n_folds:
        log.warning(
            "one fold would hold only %d of %d pairs (the largest connected component has %d): folds are "
            "drawn by pair instead, so some items are in more than one fold",
            smallest,
            len(pairs),
            np.bincount(comp).max(),
        )
        folds = rng.permutation(len(pairs)) % n_folds
    return folds


def _unordered_key(left: np.ndarray, right: np.ndarray, n_items: int | None = None) -> np.ndarray:
    """(M,) int64, equal for (a, b) and (b, a). Keys compare across calls only with the same ``n_items``."""
    lo = np.minimum(left, right).astype(np.int64)
    hi = np.maximum(left, right).astype(np.int64)
    base = n_items if n_items is not None else int(max(hi.max(initial=0), 0)) + 1
    return lo * base + hi


def pair_hygiene(pairs: PairSet) -> dict[str, int]:
    """Counts of reversed duplicate pairs and of those whose labels conflict (vectorised)."""
    key = _unordered_key(pairs.left, pairs.right)
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
    key = _unordered_key(pairs.left, pairs.right)
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
    keys = _unordered_key(a, b, n_items)
    labelled = np.isin(keys, _unordered_key(pairs.left, pairs.right, n_items))
    is_negative = np.isin(keys, _unordered_key(pairs.left[~pos], pairs.right[~pos], n_items))
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
