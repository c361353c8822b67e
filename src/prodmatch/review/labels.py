"""A person's labels of pairs, kept in one parquet file that is rewritten whole and atomically on every change.

``labels.parquet`` holds one row per decision, in the order they were made: ``variantid1``, ``variantid2``
(the pair as shown), ``target`` (1 a match, 0 not a match, null unsure), ``label`` (the word), ``queue`` (what
chose the pair: ``uncertain``, ``diverse``, ``audit``, or ``split`` for a member split out of a cluster),
``reviewer``, ``labelled_at`` (UTC) and ``decision`` (a number per decision: a split writes a row per
member under one number, and undo takes the last number back). The file is the whole state: a page or server that dies loses nothing,
and a later session carries on from it. ``prodmatch train --labels`` reads the decided rows (target not null).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import write_parquet
from prodmatch.errors import ConfigError, DataError, UnknownIdsError

__all__ = ["LABELS", "LabelBook", "check_writable"]

LABELS = {"match": 1, "no": 0, "unsure": None}  # the words a person gives, and the target each writes
COLUMNS = ["variantid1", "variantid2", "target", "label", "queue", "reviewer", "labelled_at", "decision"]


@dataclass
class LabelBook:
    """The labels of one review: read from ``path`` when it exists, rewritten at every change."""

    path: Path
    frame: pd.DataFrame

    @classmethod
    def open(cls, path: str | Path, catalogue_ids: pd.Index) -> LabelBook:
        """The labels at ``path`` (none yet when it does not exist), checked against the catalogue.

        Raises:
            ConfigError: ``path`` cannot be written (checked now, before any page opens).
            DataError: the file lacks a column, or holds a word other than :data:`LABELS`.
            UnknownIdsError: it labels ids the catalogue does not hold (another run's labels), naming them.
        """
        path = Path(path)
        check_writable(path)
        if not path.exists():
            return cls(path, pd.DataFrame({c: pd.Series(dtype=_dtype(c, catalogue_ids)) for c in COLUMNS}))
        frame = pd.read_parquet(path)
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: no column {missing}; it is not a prodmatch labels file (columns {COLUMNS})")
        bad = sorted(set(frame["label"].dropna()) - set(LABELS))
        if bad:
            raise DataError(f"{path}: unknown labels {bad[:5]}; a label is one of {list(LABELS)}")
        ids = pd.unique(np.concatenate([frame.variantid1.to_numpy(), frame.variantid2.to_numpy()]))
        unknown = [x.item() if isinstance(x, np.generic) else x for x in ids if x not in catalogue_ids]
        if unknown:
            raise UnknownIdsError(
                f"{path} labels {len(unknown)} ids that this catalogue does not hold, e.g. {unknown[:10]}: they are "
                "another catalogue's (or another run's) labels; give a new --labels path for this one",
                unknown,
            )
        return cls(path, frame[COLUMNS].reset_index(drop=True))

    def __len__(self) -> int:
        return len(self.frame)

    def add(self, pairs: list[tuple], label: str, queue: str, reviewer: str) -> None:
        """Record ``label`` for every pair of ``pairs`` ((variantid1, variantid2)), then write the file."""
        if label not in LABELS:
            raise DataError(f"unknown label {label!r}; use one of {list(LABELS)}")
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        rows = pd.DataFrame(
            {
                "variantid1": [a for a, _ in pairs],
                "variantid2": [b for _, b in pairs],
                "target": pd.array([LABELS[label]] * len(pairs), dtype="Int8"),
                "label": label,
                "queue": queue,
                "reviewer": reviewer,
                "labelled_at": now,
                "decision": int(self.frame.decision.max()) + 1 if len(self.frame) else 0,
            }
        )
        rows = rows.astype({"variantid1": self.frame.variantid1.dtype, "variantid2": self.frame.variantid2.dtype})
        self.frame = pd.concat([self.frame, rows], ignore_index=True) if len(self.frame) else rows
        self._write()

    def undo(self) -> dict | None:
        """Take back the last decision (every row it wrote); returns its pairs and label, or None when there is
        nothing to undo."""
        if not len(self.frame):
            return None
        last = self.frame.decision == self.frame.decision.max()
        taken = self.frame[last]
        self.frame = self.frame[~last].reset_index(drop=True)
        self._write()
        return {"pairs": taken[["variantid1", "variantid2"]].to_numpy().tolist(), "label": str(taken.label.iloc[0])}

    def seen(self) -> set[tuple]:
        """Every labelled pair, both orders."""
        a, b = self.frame.variantid1.tolist(), self.frame.variantid2.tolist()
        return set(zip(a, b, strict=True)) | set(zip(b, a, strict=True))

    def _write(self) -> None:
        write_parquet(self.frame, self.path)


def check_writable(path: Path) -> None:
    """Raise ConfigError unless ``path`` can be written: its folder exists and takes a new file (tried, not guessed
    from permission bits), and the file, if there, is writable. Said before a page opens, not at the first label."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"--labels {path} is a directory; give a file path such as {path / 'labels.parquet'}")
    if not folder.is_dir():
        raise ConfigError(f"--labels {path}: the folder {folder} does not exist; create it or choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"--labels {path} cannot be written ({e.strerror} in {folder}); labels are saved at every decision, "
            "so choose a writable path"
        ) from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"--labels {path} is read-only; labels are saved at every decision, so make it writable")


def _dtype(column: str, ids: pd.Index) -> object:
    if column in ("variantid1", "variantid2"):
        return ids.dtype if pd.api.types.is_integer_dtype(ids.dtype) else object
    return {"target": "Int8", "decision": "int64"}.get(column, object)
