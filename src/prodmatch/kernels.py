"""Compiled loops over pairs of sparse rows: the merges every sparse pair feature is built from.

Each kernel walks the pairs one by one and merges the two items' rows of a canonical CSR matrix (columns
sorted and unique in every row). That is the same work for one pair or a million, with no fixed cost of
a few hundred numpy calls per batch: the served single pair and the training set take one code path, and a
pair's values never depend on which pairs are computed with it. Sums run in float64, in column order.

Compiled with numba on first use and cached on disk (``__pycache__`` beside this file, or numba's user cache
where that is read-only), so only the first process on a machine pays the compile (under half a second per
kernel; with nowhere to cache, each process compiles, and says so in the log). ``nogil``: a server's worker threads and a training job's chunks can run them side by side.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from numba import njit

__all__ = [
    "DOT",
    "LEFT",
    "RATIO",
    "best_words",
    "blocks_shared",
    "dims_compared",
    "rows_contain",
    "rows_dot",
]

log = logging.getLogger(__name__)

DOT, LEFT, RATIO = 0, 1, 2  # what a shared entry adds to its block's sum: a * b; a; exp(-|a - b|)


def _compiled(fn):
    """``fn`` compiled, cached on disk where numba finds a writable place for it, else compiled once per process.
    numpy's error model: 0/0 is NaN, not an exception."""
    try:
        return njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError as e:  # no cache locator (a read-only install with no writable user cache directory)
        log.info("%s: compiled in each process, not cached (%s)", fn.__name__, e)
        return njit(cache=False, nogil=True, error_model="numpy")(fn)


def rows_dot(m: sp.csr_matrix, n: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B,) float64: the dot product of rows m[a[i]] and n[b[i]] (two canonical CSR matrices of one width)."""
    out = np.empty(len(a), dtype=np.float64)
    _rows_dot(m.indptr, m.indices, m.data, n.indptr, n.indices, n.data, _rows(a), _rows(b), out)
    return out


def rows_contain(m: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(B,) bool: whether row rows[i] of ``m`` stores column columns[i] (False for a negative column)."""
    out = np.empty(len(rows), dtype=np.bool_)
    _rows_contain(m.indptr, m.indices, _rows(rows), np.ascontiguousarray(columns, dtype=np.int64), out)
    return out


def blocks_shared(
    m: sp.csr_matrix, block_start: np.ndarray, block_kind: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair and block of ``m``'s columns (blocks start at ``block_start``, sorted, the first at 0), over the
    entries rows m[a[i]] and m[b[i]] share: (B, blocks) float64 sums of each block's kind of value (see
    ``DOT``, ``LEFT``, ``RATIO``), (B, blocks) float64 counts, and (B,) the lowest ``RATIO`` value (1 for none)."""
    nb = len(block_start)
    sums, counts = np.zeros((len(a), nb)), np.zeros((len(a), nb))
    low = np.ones(len(a))
    starts = np.ascontiguousarray(block_start, dtype=np.int64)
    kinds = np.ascontiguousarray(block_kind, dtype=np.int64)
    _blocks_shared(m.indptr, m.indices, m.data, starts, kinds, _rows(a), _rows(b), sums, counts, low)
    return sums, counts, low


def best_words(
    tfidf: sp.csr_matrix, near: sp.csr_matrix, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft TF-IDF and Monge-Elkan of item x[i]'s name against item y[i]'s (one direction), and x[i]'s word count.

    For every word of x[i] (a column of ``tfidf``, the L2-normalised TF-IDF rows): its best similarity to a word
    of y[i], 1 for the word itself and else the largest ``near`` similarity (``near``: words x words,
    Jaro-Winkler of near spellings); and the largest of that similarity times y[i]'s TF-IDF weight of the
    word. Returns (B,) float64 each: soft TF-IDF (the sum of x's weight times the latter), Monge-Elkan (the
    mean of the former; NaN for no word), and the number of words.
    """
    soft, monge, count = np.zeros(len(x)), np.zeros(len(x)), np.zeros(len(x))
    _best_words(
        tfidf.indptr, tfidf.indices, tfidf.data, near.indptr, near.indices, near.data, _rows(x), _rows(y),
        soft, monge, count,
    )  # fmt: skip
    return soft, monge, count


def dims_compared(exact: sp.csr_matrix, wide: sp.csr_matrix, a: np.ndarray, b: np.ndarray, buckets: int, dims: int):
    """Quantities of the pairs (a[i], b[i]) by dimension. ``exact``: each item's (dimension, value bucket)
    columns, dimension = column // ``buckets``; ``wide``: the same with both neighbouring buckets. Returns (B,)
    float32 each: the dimensions where some value of a[i] lies within a bucket of one of b[i]'s, and those where
    each side holds a value that is near none of the other's."""
    agree, conflicts = np.zeros(len(a), dtype=np.float32), np.zeros(len(a), dtype=np.float32)
    _dims_compared(
        exact.indptr, exact.indices, wide.indptr, wide.indices, _rows(a), _rows(b), buckets, dims, agree, conflicts
    )
    return agree, conflicts


def _rows(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows, dtype=np.int64)


@_compiled
def _rows_dot(mp, mi, md, np_, ni, nd, a, b, out):  # pragma: no cover - compiled
    for i in range(len(a)):
        p, pe, q, qe = mp[a[i]], mp[a[i] + 1], np_[b[i]], np_[b[i] + 1]
        s = 0.0
        while p < pe and q < qe:
            cp, cq = mi[p], ni[q]
            if cp == cq:
                s += np.float64(md[p]) * np.float64(nd[q])
                p += 1
                q += 1
            elif cp < cq:
                p += 1
            else:
                q += 1
        out[i] = s


@_compiled
def _find(indices, start, end, column):  # pragma: no cover - compiled
    """The position of ``column`` in indices[start:end] (sorted), or -1."""
    lo, hi = start, end
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < column:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < end and indices[lo] == column else -1


@_compiled
def _rows_contain(mp, mi, rows, columns, out):  # pragma: no cover - compiled
    for i in range(len(rows)):
        out[i] = columns[i] >= 0 and _find(mi, mp[rows[i]], mp[rows[i] + 1], columns[i]) >= 0


@_compiled
def _blocks_shared(mp, mi, md, starts, kinds, a, b, sums, counts, low):  # pragma: no cover - compiled
    nb = len(starts)
    for i in range(len(a)):
        p, pe, q, qe = mp[a[i]], mp[a[i] + 1], mp[b[i]], mp[b[i] + 1]
        block = 0
        while p < pe and q < qe:
            cp, cq = mi[p], mi[q]
            if cp == cq:
                while block + 1 < nb and starts[block + 1] <= cp:  # columns rise, so blocks only move on
                    block += 1
                x, y = np.float64(md[p]), np.float64(md[q])
                kind = kinds[block]
                if kind == DOT:
                    value = x * y
                elif kind == LEFT:
                    value = x
                else:
                    value = np.exp(-np.abs(x - y))
                    if value < low[i]:
                        low[i] = value
                sums[i, block] += value
                counts[i, block] += 1.0
                p += 1
                q += 1
            elif cp < cq:
                p += 1
            else:
                q += 1


@_compiled
def _best_words(tp, ti, td, np_, ni, nd, x, y, soft, monge, count):  # pragma: no cover - compiled
    for i in range(len(x)):
        qs, qe = tp[y[i]], tp[y[i] + 1]
        s, total, n = 0.0, 0.0, 0
        for p in range(tp[x[i]], tp[x[i] + 1]):
            word = ti[p]
            best, weighted = 0.0, 0.0
            at = _find(ti, qs, qe, word)
            if at >= 0:
                best, weighted = 1.0, np.float64(td[at])
            for r in range(np_[word], np_[word + 1]):
                at = _find(ti, qs, qe, ni[r])
                if at >= 0:
                    sim = np.float64(nd[r])
                    best = max(best, sim)
                    weighted = max(weighted, sim * np.float64(td[at]))
            s += np.float64(td[p]) * weighted
            total += best
            n += 1
        soft[i] = s
        monge[i] = total / n if n else np.nan
        count[i] = n


@_compiled
def _dims_of(ep, ei, wp, wi, x, y, buckets, near, only):  # pragma: no cover - compiled
    """Marks, per dimension, whether some value of item x is near one of y's, and whether one is near none."""
    near[:] = False
    only[:] = False
    for p in range(ep[x], ep[x + 1]):
        column = ei[p]
        if _find(wi, wp[y], wp[y + 1], column) >= 0:
            near[column // buckets] = True
        else:
            only[column // buckets] = True


@_compiled
def _dims_compared(ep, ei, wp, wi, a, b, buckets, dims, agree, conflicts):  # pragma: no cover - compiled
    near_a, only_a = np.zeros(dims, dtype=np.bool_), np.zeros(dims, dtype=np.bool_)
    near_b, only_b = np.zeros(dims, dtype=np.bool_), np.zeros(dims, dtype=np.bool_)
    for i in range(len(a)):
        _dims_of(ep, ei, wp, wi, a[i], b[i], buckets, near_a, only_a)
        _dims_of(ep, ei, wp, wi, b[i], a[i], buckets, near_b, only_b)
        na, nc = 0, 0
        for d in range(dims):
            na += near_a[d]
            nc += only_a[d] and only_b[d]
        agree[i] = na
        conflicts[i] = nc
