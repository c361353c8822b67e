"""Linking two sources (``match --link LEFT RIGHT``): a supplier's feed against the marketplace's catalogue,
or two catalogues against each other, as Splink's ``link_only`` and Zingg's linking do.

The two data directories are read with the model's data settings and matched as one catalogue whose every
stage pairs items of two sources only: each item's top-k are the other source's, the shared-value and
incomplete-item candidates too. Clusters are the catalogue job's (a cluster may hold several listings of
one source that all match the other's), or, with ``one_to_one``, at most one item of each source: a
maximum-weight matching of each component (:func:`prodmatch.clustering.one_to_one_matching`).
Quality counts the pairs of two sources only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from prodmatch.errors import DataError
from prodmatch.io import read_catalogue
from prodmatch.matching.output import SOURCE_NAMES
from prodmatch.oracle import ORACLE_ITEMS_FILE, Oracle

log = logging.getLogger(__name__)


def check_disjoint_ids(shared, left_dir, right_dir, count: int | None = None) -> None:
    """DataError naming a few ids that both sources hold (``shared``: some or all of them; ``count``: how many
    there are, if not ``len(shared)``): a linked item is known by its id alone."""
    count = len(shared) if count is None else count
    if count:
        raise DataError(
            f"{count:,} ids are in both {left_dir} and {right_dir}, e.g. {list(shared[:5])}: linking needs "
            "ids unique across the two sources; offset or prefix one source's ids (string ids may be any text)"
        )


def read_linked(model, left_dir, right_dir, text: bool):
    """(catalogue, sources): LEFT's items followed by RIGHT's, read as ``match`` reads one catalogue, and
    (N,) int8 of each item's source (0: left, 1: right)."""
    from dataclasses import replace

    config = model.data_config()
    if text:
        config = replace(config, load_names=True, load_attributes=True)
    left, right = read_catalogue(left_dir, config), read_catalogue(right_dir, config)
    check_disjoint_ids(left.ids.intersection(right.ids), left_dir, right_dir)
    for what in ("names", "attributes", "categories"):
        if (getattr(left, what) is None) != (getattr(right, what) is None):
            has, lacks = (left_dir, right_dir) if getattr(left, what) is not None else (right_dir, left_dir)
            log.warning("%s has %s and %s has none: linking does without them", has, what, lacks)
    catalogue = left.concat(right)
    sources = np.repeat(np.array([0, 1], dtype=np.int8), [len(left), len(right)])
    log.info("linking %d items of %s with %d of %s", len(left), left_dir, len(right), right_dir)
    return catalogue, sources


def linked_oracle(left_dir, right_dir, ids: np.ndarray):
    """The Bayes oracle covering both sources (synthetic sources drawn from one catalogue, as
    :func:`prodmatch.synth.split_sources` writes them), or None."""
    for d in (left_dir, right_dir):
        if not (Path(d) / ORACLE_ITEMS_FILE).exists():
            return None
    oracle = Oracle.load(left_dir)
    try:
        oracle.rows(ids)
    except DataError:
        return None
    return oracle


def link_facts(left_dir, right_dir, items: tuple[int, int], one_to_one: bool) -> dict:
    """summary.json's ``link``: which directory is which source, their sizes (``items``: left's, right's),
    and the clustering rule."""
    return {
        "left": str(left_dir),
        "right": str(right_dir),
        "items": {SOURCE_NAMES[0]: int(items[0]), SOURCE_NAMES[1]: int(items[1])},
        "one_to_one": one_to_one,
    }
