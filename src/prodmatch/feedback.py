"""A review's labels (``prodmatch review``) as training pairs: read the decided ones, fold them into
train.parquet's pairs without letting a test pair in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.errors import DataError

__all__ = ["decided_pairs", "with_labels"]


def decided_pairs(path: str | Path) -> pd.DataFrame:
    """The decided labels of a review's labels file (``prodmatch review``) as pairs: variantid1, variantid2, target.
    The last decision on a pair wins, in either order; unsure rows (no target) are left out."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: --labels takes the labels file `prodmatch review` writes")
    frame = pd.read_parquet(path)
    missing = [c for c in ("variantid1", "variantid2", "target") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {missing}; a labels file has variantid1, variantid2, target")
    frame = frame[frame.target.notna()]
    key = [(min(a, b), max(a, b)) for a, b in zip(frame.variantid1, frame.variantid2, strict=True)]
    frame = frame.assign(_key=key).drop_duplicates("_key", keep="last")
    out = frame[["variantid1", "variantid2"]].assign(target=frame.target.astype(np.int8))
    return out.reset_index(drop=True)


def with_labels(table: pd.DataFrame, labels: pd.DataFrame, held_out: pd.DataFrame | None) -> tuple[pd.DataFrame, dict]:
    """Training pairs with a review's decided ``labels`` folded in: a relabelled pair takes the person's label
    (its old row goes), and a labelled pair that is also a held-out (test) pair is left out, so test stays unseen.
    Returns the pairs and the counts."""

    def keys(f: pd.DataFrame) -> pd.Series:
        a, b = f.variantid1.to_numpy(), f.variantid2.to_numpy()
        return pd.Series([(min(x, y), max(x, y)) for x, y in zip(a, b, strict=True)], index=f.index, dtype=object)

    given = keys(labels)
    held = set(keys(held_out)) if held_out is not None and len(held_out) else set()
    leaking = given.isin(held).to_numpy()
    labels = labels[~leaking]
    relabelled = keys(table).isin(set(given[~leaking])).to_numpy()
    out = pd.concat([table[~relabelled], labels.astype({"target": table.target.dtype})], ignore_index=True)
    counts = {"labels": len(given), "relabelled": int(relabelled.sum()), "test_pairs_left_out": int(leaking.sum())}
    return out, counts
