"""Candidates from shared rare values: listings that hold an attribute value or a name word few others hold.

An embedding places a listing by everything it shows, and a noisy listing (a poor photo, no name) can land
far from the other listings of its product. A model number, an article code or a rare name word is shared
by the few listings of one product family whatever the embeddings say. Token blocking with block purging
and meta-blocking (Papadakis et al., *Blocking and Filtering Techniques for Entity Resolution*, 2020) finds
them without a word list or a column name:

1. every item's tokens: each attribute value (under any key; lowercased, ё as е) and each word of its name;
2. block purging: a token held by more than ``max_block`` items (a brand, a colour, "черный") or by one item
   says nothing about identity and is dropped, so the work is bounded by ``max_block`` per token;
3. meta-blocking: each item's co-occurring items are weighted by the summed IDF, ``log((N + 1) / df)``, of the
   tokens they share, and the ``k`` heaviest (ties broken by the search vectors' inner product) become
   candidate pairs.

Nothing here depends on a dataset's column names: a token is rare or it is not.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prodmatch.attributes import parse_attributes
from prodmatch.catalogue import Catalogue

__all__ = ["TokenReport", "item_tokens", "shared_token_neighbours"]

log = logging.getLogger(__name__)

WORD_PATTERN = r"(?u)\w+"
TIE_PIECE = 16384  # pairs per inner-product piece when breaking ties


@dataclass
class TokenReport:
    """What token blocking did, for summary.json and metrics.json."""

    k: int
    max_block: int
    items_with_tokens: int = 0
    tokens: int = 0  # distinct tokens among the searchable items
    tokens_kept: int = 0  # held by 2 to max_block items
    tokens_purged: int = 0  # held by more than max_block items
    neighbours: int = 0  # (item, neighbour) pairs kept

    def to_dict(self) -> dict:
        return asdict(self)


def _normalise(text: pd.Series) -> pd.Series:
    return text.astype(str).str.strip().str.lower().str.replace("ё", "е", regex=False)


def item_tokens(catalogue: Catalogue, rows: np.ndarray | None = None) -> sp.csr_matrix:
    """(N, T) 0/1 matrix: which tokens (attribute values, name words) each item holds; rows outside ``rows``
    (None: all) are left empty. An item with neither attributes nor a name has no token."""
    n = len(catalogue)
    items, token = token_occurrences(catalogue, rows)
    if not len(items):
        return sp.csr_matrix((n, 0), dtype=np.float32)
    codes, uniques = pd.factorize(token)
    m = sp.csr_matrix((np.ones(len(codes), dtype=np.float32), (items, codes)), shape=(n, len(uniques)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def token_occurrences(catalogue: Catalogue, rows: np.ndarray | None = None) -> tuple[np.ndarray, pd.Series]:
    """(item row, token) of every token (attribute value, name word) the items of ``rows`` (None: all) hold,
    repeats included: what :func:`item_tokens` counts, and what the Spark engine explodes. A token depends
    on its item alone, so any subset of a catalogue gives its items' tokens."""
    from sklearn.feature_extraction.text import CountVectorizer

    n = len(catalogue)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    item_of: list[np.ndarray] = []
    token: list[pd.Series] = []
    if catalogue.attributes is not None:
        its, vals = [], []
        for i, obj in zip(rows, parse_attributes(catalogue, rows), strict=True):
            if obj is None:
                continue
            for values in obj.values():
                for v in values if isinstance(values, list) else [values]:
                    if v is not None and not isinstance(v, (dict, list)):
                        its.append(i)
                        vals.append(v)
        if vals:
            values = _normalise(pd.Series(vals, dtype=object))
            keep = (values != "").to_numpy()
            item_of.append(np.asarray(its, dtype=np.int64)[keep])
            token.append("v:" + values[keep])
    if catalogue.names is not None:
        names = pd.Series(catalogue.names[rows], dtype=object)
        text = names.where(names.map(lambda x: isinstance(x, str)), "").str.lower().str.replace("ё", "е")
        vec = CountVectorizer(binary=True, lowercase=False, token_pattern=WORD_PATTERN, dtype=np.float32)
        try:
            words = vec.fit_transform(text.tolist()).tocoo()
        except ValueError:  # no word at all
            words = None
        if words is not None and words.nnz:
            vocab = np.asarray(vec.get_feature_names_out(), dtype=object)
            item_of.append(rows[words.row])
            token.append("v:" + pd.Series(vocab[words.col], dtype=object))  # one space with values
    if not item_of:
        return np.zeros(0, dtype=np.int64), pd.Series([], dtype=object)
    return np.concatenate(item_of), pd.concat(token, ignore_index=True)


def shared_token_neighbours(
    tokens: sp.csr_matrix,
    queries: np.ndarray,
    targets: np.ndarray,
    k: int,
    max_block: int = 100,
    vectors: np.ndarray | None = None,
    chunk: int = 50_000,
    sources: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, TokenReport]:
    """Each query row's ``k`` target rows sharing the rarest tokens with it (see the module's docstring).

    Args:
        tokens: (N, T) from :func:`item_tokens`.
        queries, targets: rows that look, and rows that may be found.
        k: neighbours kept per query (0: none).
        max_block: tokens held by more targets than this are purged.
        vectors: (N, d) search vectors whose inner product breaks ties; None: ties in row order.
        chunk: queries per sparse product, to bound memory.
        sources: (N,) source of every row when linking two sources: a query's ``k`` are among the targets of
            another source (a token's rarity still counts every target that holds it).

    Returns:
        (query, neighbour, report): flat row pairs, a query never paired with itself.
    """
    report = TokenReport(k=k, max_block=max_block)
    queries, targets = np.asarray(queries, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    n = tokens.shape[0]
    in_targets = np.zeros(n, dtype=bool)
    in_targets[targets] = True
    target_tokens = sp.diags(in_targets.astype(np.float32)) @ tokens
    target_tokens = target_tokens.tocsr()
    df = np.asarray(target_tokens.sum(0)).ravel()
    report.items_with_tokens = int((np.diff(target_tokens.indptr) > 0).sum())
    report.tokens = int((df > 0).sum())
    report.tokens_purged = int((df > max_block).sum())
    useful = (df >= 2) & (df <= max_block)
    report.tokens_kept = int(useful.sum())
    if k <= 0 or not useful.any() or len(queries) == 0:
        return empty, empty, report
    weight = np.where(useful, np.log((len(targets) + 1) / np.maximum(df, 1)), 0.0).astype(np.float32)
    columns = np.flatnonzero(useful)
    found = target_tokens[:, columns].T.tocsr()  # tokens x items: who holds each kept token
    weighted = (tokens[:, columns] @ sp.diags(weight[columns])).tocsr()
    qs, js = [], []
    for start in range(0, len(queries), chunk):
        q_rows = queries[start : start + chunk]
        shared = (weighted[q_rows] @ found).tocoo()  # (queries, items): summed weight of shared tokens
        q, j, w = q_rows[shared.row], shared.col.astype(np.int64), shared.data
        ok = q != j if sources is None else sources[q] != sources[j]
        q, j, w = q[ok], j[ok], w[ok]
        if not len(q):
            continue
        tie = np.zeros(len(q), dtype=np.float32)
        if vectors is not None:
            # in small pieces: the gathered rows stay in the allocator's cache (pieces of a million pairs
            # were mapped and faulted in afresh every time, four times slower)
            for s in range(0, len(q), TIE_PIECE):
                tie[s : s + TIE_PIECE] = np.einsum(
                    "ij,ij->i", vectors[q[s : s + TIE_PIECE]], vectors[j[s : s + TIE_PIECE]]
                )
        order = np.lexsort((j, -tie, -w, q))  # heaviest first, then nearest, then in row order
        q, j = q[order], j[order]
        rank = np.arange(len(q)) - np.searchsorted(q, q, side="left")
        qs.append(q[rank < k])
        js.append(j[rank < k])
    q = np.concatenate(qs) if qs else empty
    j = np.concatenate(js) if js else empty
    report.neighbours = len(q)
    log.info(
        "shared rare values: %d items hold %d distinct tokens; %d held by 2 to %d items kept, %d held by more "
        "purged; %d (item, neighbour) pairs, up to %d per item",
        report.items_with_tokens,
        report.tokens,
        report.tokens_kept,
        max_block,
        report.tokens_purged,
        report.neighbours,
        k,
    )
    return q, j, report
