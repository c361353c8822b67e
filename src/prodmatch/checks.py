"""Checking a data directory the way the commands will read it: every problem a command would refuse, said with
the command, and every fact a command handles by a stated policy, said with the policy (``prodmatch info``, and
``prodmatch import`` after it writes one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.catalogue import Catalogue
from prodmatch.errors import DataError
from prodmatch.io import PAIR_COLUMNS, TEST_FILE, TRAIN_FILE, read_pairs_table
from prodmatch.pairs import make_pairs, pair_graph, pair_hygiene

__all__ = ["DirectoryCheck", "PairsCheck", "check_directory", "check_pairs"]


@dataclass
class PairsCheck:
    """What a pairs file holds, and each problem with what the commands do about it (see :func:`check_pairs`)."""

    path: str
    rows: int = 0
    labelled: bool = False
    positive_rate: float | None = None
    unknown_pairs: int = 0
    unknown_ids: list = field(default_factory=list)
    hygiene: dict = field(default_factory=dict)
    graph: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # a command refuses these: one line each, saying which
    notes: list[str] = field(default_factory=list)  # handled by a stated policy: one line each, saying how


def check_pairs(path: str | Path, catalogue: Catalogue, *, training: bool) -> PairsCheck:
    """Validate a pairs file the way ``train`` (``training``: it needs labels) or ``evaluate`` / ``predict`` will
    read it, without stopping at the first problem: a file ``train`` would refuse is reported, not raised.

    Problems: the file or its id columns unreadable; no labels (train and evaluate refuse; predict and match
    need none); labels that are not 0/1; ids absent from every item file (train drops those pairs with a count,
    or refuses with --strict-ids; evaluate and predict refuse); pairs labelled both ways (train keeps one by
    --conflicts).
    """
    out = PairsCheck(str(path))
    try:
        df = read_pairs_table(path, require_target=False)
    except DataError as e:
        out.problems.append(f"{e} - train, evaluate and predict refuse it")
        return out
    out.rows = len(df)
    out.labelled = "target" in df
    if not out.labelled:
        who = "train refuses it (it learns from labels)" if training else "evaluate refuses it; predict scores it"
        out.problems.append(f"no 'target' column: the pairs carry no labels - {who}")
    try:
        left, right = catalogue.rows(df[PAIR_COLUMNS[0]]), catalogue.rows(df[PAIR_COLUMNS[1]])
    except DataError as e:
        out.problems.append(f"{path}: {e} - train, evaluate and predict refuse it")
        return out
    bad = (left < 0) | (right < 0)
    if bad.any():
        ids = pd.unique(
            np.concatenate([df[PAIR_COLUMNS[0]].to_numpy()[left < 0], df[PAIR_COLUMNS[1]].to_numpy()[right < 0]])
        )
        out.unknown_pairs, out.unknown_ids = int(bad.sum()), ids[:10].tolist()
        out.problems.append(
            f"{out.unknown_pairs:,} pairs name {len(ids):,} ids absent from every item file (e.g. {out.unknown_ids[:5]})"
            " - evaluate and predict refuse them; train drops these pairs with a count (--strict-ids refuses them)"
        )
    pairs = make_pairs(catalogue, df[~bad].reset_index(drop=True), unknown="error", source=str(path))
    if len(pairs):
        out.hygiene = pair_hygiene(pairs)
        out.graph = pair_graph(pairs)
        if out.labelled:
            out.positive_rate = pairs.positive_rate()
            if out.hygiene["conflicting_labels"]:
                how = (
                    "train drops them (--conflicts keeps the first, positive or negative label instead)"
                    if training
                    else "evaluate scores every row as labelled"
                )
                out.notes.append(f"{out.hygiene['conflicting_labels']:,} pairs are labelled both 1 and 0 - {how}")
    return out


@dataclass
class DirectoryCheck:
    """A data directory's items and pairs files, checked (see :func:`check_directory`)."""

    pairs: dict[str, PairsCheck]  # file name -> its check, for the pairs files present
    problems: list[str]  # a command refuses these
    notes: list[str]  # handled by a stated policy


def check_directory(data_dir: str | Path, catalogue: Catalogue) -> DirectoryCheck:
    """Check ``catalogue`` (read from ``data_dir``) and the directory's train and test pairs files."""
    data_dir = Path(data_dir)
    problems, notes, checks = [], [], {}
    present = [m.present for m in catalogue.modalities.values()]
    nothing = ~np.logical_or.reduce(present) if present else np.zeros(len(catalogue), dtype=bool)
    if nothing.any():
        notes.append(
            f"{int(nothing.sum()):,} items ({100 * nothing.mean():.2f}%) have no embedding in any modality - "
            "train, predict and match accept them, and never call a pair naming one a match (no evidence)"
        )
    for fname in (TRAIN_FILE, TEST_FILE):
        path = data_dir / fname
        if not path.exists():
            if fname == TRAIN_FILE:
                problems.append(f"{path} not found - train refuses the directory; predict and match need none")
            continue
        check = checks[fname] = check_pairs(path, catalogue, training=fname == TRAIN_FILE)
        problems += [f"{fname}: {p}" for p in check.problems]
        notes += [f"{fname}: {p}" for p in check.notes]
    return DirectoryCheck(checks, problems, notes)
