"""A review's labels (``prodmatch review``) as training pairs: read the decided ones, fold them into
train.parquet's pairs without letting a test pair in, and keep them out of validation.

A review's queues pick pairs for what a label would teach (nearest the threshold, one per cluster, a sample of
the kept matches), not as the pairs to be scored are drawn. Such labels teach, but they must not choose the
model: validation (early stopping, the threshold, calibration) stays on the pairs of train.parquet, and the new
labels join the training side after the split."""

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


def with_labels(
    table: pd.DataFrame, labels: pd.DataFrame, held_out: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Fold a review's decided ``labels`` into train.parquet's pairs ``table``.

    A pair of ``table`` that was labelled takes the person's label where it is (a correction, on whichever side
    of the split it falls); a labelled pair that is also a held-out (test) pair is left out, so test stays
    unseen; the rest are new pairs, returned apart for the training side only (see the module's note).

    Returns:
        (table with the relabels applied, the new pairs, the counts).
    """

    def keys(f: pd.DataFrame) -> pd.Series:
        a, b = f.variantid1.to_numpy(), f.variantid2.to_numpy()
        return pd.Series([(min(x, y), max(x, y)) for x, y in zip(a, b, strict=True)], index=f.index, dtype=object)

    given = keys(labels)
    held = set(keys(held_out)) if held_out is not None and len(held_out) else set()
    leaking = given.isin(held).to_numpy()
    label_of = dict(zip(given[~leaking], labels.target[~leaking], strict=True))
    table_keys = keys(table)
    relabelled = table_keys.isin(set(label_of)).to_numpy()
    table = table.copy()
    table.loc[relabelled, "target"] = [label_of[k] for k in table_keys[relabelled]]
    new = labels[~leaking & ~given.isin(set(table_keys)).to_numpy()]
    counts = {
        "labels": len(given),
        "relabelled": int(relabelled.sum()),
        "test_pairs_left_out": int(leaking.sum()),
        "new_pairs": len(new),
    }
    return table, new.astype({"target": table.target.dtype}).reset_index(drop=True), counts
