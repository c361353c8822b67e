"""Sparse text matrices, vectorised over all items at once: hashed character 3-grams and words of names, 0/1
indicators, and row-by-row dot products of two sparse matrices' rows."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from prodmatch.kernels import rows_dot

log = logging.getLogger(__name__)


NAME_HASH_FEATURES = 2**18


NUMBER_PATTERN = r"(?u)\b\w*\d\w*\b"  # words holding a digit


CODE_PATTERN = r"(?u)\b(?=\w*\d)\w{4,}\b"  # words of 4+ characters holding a digit: part numbers, SKUs


def hash_names(names: np.ndarray) -> sp.csr_matrix:
    """(N, NAME_HASH_FEATURES) counts of each name's hashed character 3-grams (lowercased, ё as е, padded
    with a space at both ends).

    Vectorised over all names at once with numpy: sklearn's ``HashingVectorizer`` loops over every
    document in Python and was 40x slower here.
    """
    text = ["" if not isinstance(n, str) else n.lower().replace("ё", "е").replace("\x00", " ") for n in names]
    joined = "\x00".join(f" {t} " for t in text)  # \x00 separates names; no 3-gram may span it
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < 3:
        return sp.csr_matrix((len(text), NAME_HASH_FEATURES), dtype=np.float32)
    c0, c1, c2 = codes[:-2], codes[1:-1], codes[2:]
    valid = (c0 != 0) & (c1 != 0) & (c2 != 0)
    prime = np.uint64(1_000_003)
    with np.errstate(over="ignore"):  # wrap-around multiplication is the hash
        h = ((c0 * prime) ^ c1) * prime ^ c2
    h = (h % np.uint64(NAME_HASH_FEATURES)).astype(np.int64)[valid]
    starts = np.concatenate([[0], np.cumsum([len(t) + 3 for t in text])[:-1]])  # each name's first code
    item = np.searchsorted(starts, np.flatnonzero(valid), side="right") - 1
    data = np.ones(len(h), dtype=np.float32)
    out = sp.csr_matrix((data, (item, h)), shape=(len(text), NAME_HASH_FEATURES))
    out.sum_duplicates()
    return out


def normalise_texts(texts) -> list[str]:
    """Each text lowercased, ё as е ("" for a missing one): how names are compared word by word."""
    return ["" if not isinstance(t, str) else t.lower().replace("ё", "е") for t in texts]


def hash_words(names: np.ndarray, pattern: str = r"(?u)\w+", ngrams: tuple[int, int] = (1, 1)) -> sp.csr_matrix:
    """(N, NAME_HASH_FEATURES) 0/1: which hashed words (or word n-grams; lowercased, ё as е) each name holds."""
    from sklearn.feature_extraction.text import HashingVectorizer

    text = normalise_texts(names)
    vec = HashingVectorizer(
        n_features=NAME_HASH_FEATURES,
        token_pattern=pattern,
        ngram_range=ngrams,
        alternate_sign=False,
        norm=None,
        binary=True,
    )
    return vec.transform(text).astype(np.float32).tocsr()


def indicator(rows: np.ndarray, labels: np.ndarray, n_rows: int) -> sp.csr_matrix:
    """n_rows x distinct labels, 1 where (row, label) occurs (pairs must be unique)."""
    codes, uniques = pd.factorize(pd.Series(labels, dtype=object))
    data = np.ones(len(codes), dtype=np.float32)
    return sp.csr_matrix((data, (rows, codes)), shape=(n_rows, max(len(uniques), 1)))


def count_binary(text: list[str], pattern: str) -> sp.csr_matrix:
    """Items x distinct tokens matching ``pattern``, 1 where the item has the token."""
    vec = CountVectorizer(binary=True, lowercase=False, token_pattern=pattern, dtype=np.float32)
    try:
        return vec.fit_transform(text).tocsr()
    except ValueError:  # no token at all (empty vocabulary)
        return sp.csr_matrix((len(text), 1), dtype=np.float32)


def rowwise_dot_pair(
    m: sp.csr_matrix, n: sp.csr_matrix, a: np.ndarray, b: np.ndarray, dtype: type = np.float32
) -> np.ndarray:
    """(B,) dot products of rows m[a[i]] and n[b[i]] of two canonical CSR matrices of the same shape.

    One compiled loop for every batch size (:func:`prodmatch.kernels.rows_dot`), float64 sums in column
    order, so a pair's features do not depend on how many pairs are scored with it (scipy's row indexing
    and float32 product round differently for different shapes, and a tree split can turn a rounding
    difference into a different probability).
    """
    return rows_dot(m, n, a, b).astype(dtype, copy=False)
