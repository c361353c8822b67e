"""Quality of a match's output files against a known truth: the clusters' pairwise and B-cubed figures and the
matches' precision and recall, read from ``clusters.parquet`` and ``matches.parquet`` (either engine's, on any
file system pyarrow reads), whichever engine wrote them.

``match`` runs it on its own outputs when the data holds a truth; ``prodmatch quality OUT --data DIR`` runs it on
any match's outputs afterwards. What the output files cannot tell (the candidates' recall, the search's recall at
k) the engine that searched reports beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.errors import DataError
from prodmatch.io import CLUSTERS_FILE, MATCHES_FILE
from prodmatch.matching.output import SOURCE_NAMES
from prodmatch.matching.quality import cluster_quality, pairs_of_groups, read_truth, truth_source

log = logging.getLogger(__name__)


def read_table(path, columns: list[str] | None = None) -> pd.DataFrame:
    """A parquet file, or a folder of parquet parts (as Spark writes them), on a local path, a ``file:`` URI or
    any URI pyarrow's file systems open (``hdfs://``, ``s3://``, ...)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    path, filesystem = str(path), None
    if path.startswith("file:"):
        path = "/" + path[len("file:") :].lstrip("/")
    elif "://" in path:
        filesystem, path = pafs.FileSystem.from_uri(path)
    return pq.read_table(path, columns=columns, filesystem=filesystem).to_pandas()


def read_output(out_dir, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One output table of a match (:func:`read_table`)."""
    path = f"{str(out_dir).rstrip('/')}/{name}"
    try:
        return read_table(path, columns)
    except FileNotFoundError as e:
        raise DataError(f"{path} not found: give the output directory of a `prodmatch match` run") from e


def evaluate_outputs(out_dir, truths: list[tuple[object, str]], id_column: str = "variantid") -> dict:
    """The match in ``out_dir`` against the items' true products, over the items that have one.

    Args:
        out_dir: a match's outputs (``clusters.parquet``, ``matches.parquet``).
        truths: (file, column) of the true products: one, or one per source when the match linked two (the
            pairwise figures then count the pairs of two sources only, as the match paired them).
        id_column: the id column of the truth files.

    Returns:
        ``truth`` (file, column, items with a product, items, true pairs), the clusters' pairwise precision,
        recall and F1 and B-cubed precision and recall, and the matches' precision and recall (``match_precision``:
        the matched pairs that are one product; ``match_recall``: the true pairs matched directly, not through a
        cluster). An item without a product counts as a product of its own: it makes no true pair, and no pair of
        it is counted right.
    """
    clusters = read_output(out_dir, CLUSTERS_FILE)
    ids = clusters["variantid"].to_numpy()
    product = read_products(truths, ids, id_column)
    path, column = truths[0]
    covered = pd.notna(product)
    facts = {
        "file": str(path).rstrip("/").rsplit("/", 1)[-1],
        "column": column,
        "items_with_truth": int(covered.sum()),
        "items": len(ids),
    }
    if not covered.any():
        log.warning("%s: no item of the catalogue has a %r; quality is not computed", path, column)
        return {"truth": facts}
    if not covered.all():
        log.info(
            "quality against %s's %r over the %d of %d items that have one (pairs with an item without one are "
            "left out)",
            facts["file"],
            column,
            covered.sum(),
            len(ids),
        )
    sources = None
    if "source" in clusters.columns:
        sources = pd.Categorical(clusters["source"], categories=list(SOURCE_NAMES)).codes
        if (sources < 0).any():
            raise DataError(f"{out_dir}/{CLUSTERS_FILE}: source must be one of {list(SOURCE_NAMES)}")
    codes = pd.factorize(pd.Series(product, dtype=object))[0]
    codes = np.where(covered, codes, codes.max(initial=-1) + 1 + np.arange(len(codes)))
    labels = pd.factorize(clusters["cluster_id"])[0]
    true_pairs = pairs_of_groups(codes[covered], None if sources is None else sources[covered])
    facts["true_pairs"] = true_pairs
    matches = read_output(out_dir, MATCHES_FILE, ["variantid1", "variantid2"])
    row = pd.Index(ids)
    left, right = row.get_indexer(matches["variantid1"]), row.get_indexer(matches["variantid2"])
    unknown = np.concatenate([matches["variantid1"].to_numpy()[left < 0], matches["variantid2"].to_numpy()[right < 0]])
    if len(unknown):
        raise DataError(
            f"{out_dir}/{MATCHES_FILE} names item {unknown.tolist()[0]!r} ({len(unknown)} ids in all), which "
            f"{CLUSTERS_FILE} lacks: the two files are of different runs"
        )
    judged = covered[left] & covered[right]
    same = codes[left[judged]] == codes[right[judged]]
    return {
        "truth": facts,
        **cluster_quality(labels[covered], codes[covered], None if sources is None else sources[covered]),
        "match_precision": float(same.mean()) if len(same) else None,
        "match_recall": float(same.sum() / true_pairs) if true_pairs else None,
    }


def candidate_figures(k: int, true_pairs: int, same_candidates: int, same_matched: int) -> dict:
    """The candidates' share of the true pairs (``candidate_recall_at_{k}``) and the matches' share of the true
    candidate pairs (``match_recall_among_candidates``), from counts either engine takes of its candidates."""
    return {
        f"candidate_recall_at_{k}": same_candidates / true_pairs if true_pairs else None,
        "match_recall_among_candidates": same_matched / same_candidates if same_candidates else None,
    }


def read_products(truths: list[tuple[object, str]], ids: np.ndarray, id_column: str = "variantid") -> np.ndarray:
    """(N,) object: each of ``ids``' true product (None: unknown), from the first of ``truths`` ((file, column),
    one per source when linking) that has one (:func:`prodmatch.matching.quality.read_truth`)."""
    product = np.full(len(ids), None, dtype=object)
    for path, column in truths:
        found = read_truth(path, column, ids, id_column, read_table(path, [id_column, column]))
        product = np.where(pd.notna(product), product, found)
    return product


def truth_files(
    data_dirs: list, column: str | None, id_column: str, find=truth_source
) -> list[tuple[Path, str]] | None:
    """(file, column) of each data directory's true products (``find``: :func:`prodmatch.matching.quality.truth_source`,
    or the Spark engine's, with the same arguments), or None where any lacks one. Of two sources, both or none:
    where only one has them, no pair of two sources could be judged (logged)."""
    found = [find(d, column, id_column) for d in data_dirs]
    if None in found and any(f is not None for f in found):
        lacks = data_dirs[found.index(None)]
        log.warning(
            "%s has no true products (%s): the link's quality is not measured", lacks, column or "truth.parquet"
        )
    return None if None in found else found
