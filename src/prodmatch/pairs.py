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

__all__ = ["PairSet", "SplitReport", "load_pairs", "make_pairs", "pair_hygiene", "split_pairs"]

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
        n_nodes = int(max(pairs.left.max(), pairs.right.max())) + 1
        ones = np.ones(len(pairs), dtype=np.int8)
        graph = sp.coo_matrix((ones, (pairs.left, pairs.right)), shape=(n_nodes, n_nodes)).tocsr()
        components, label = connected_components(graph, directed=False)
        comp = label[pairs.left]  # (M,) component of each pair
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


def pair_hygiene(pairs: PairSet) -> dict[str, int]:
    """Counts of reversed duplicate pairs and of those whose labels conflict (vectorised)."""
    lo = np.minimum(pairs.left, pairs.right).astype(np.int64)
    hi = np.maximum(pairs.left, pairs.right).astype(np.int64)
    key = lo * (int(max(hi.max(), 0)) + 1) + hi
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
