"""Names compared word by word, the way record linkage compares strings: a rare word weighs more than a common
one, and a word spelt a little differently ("videostudio" / "video studio" aside, "kindergarden" /
"kindergarten", "ultra" / "ultr") still counts. Derived from the values only:

- **IDF-weighted Jaccard**: the IDF mass of the words both names hold over that of the words either holds;
- **soft TF-IDF** (Cohen, Ravikumar and Fienberg, "A comparison of string distance metrics for name-matching
  tasks", 2003): the TF-IDF cosine where a word also meets its closest word of the other name when their
  Jaro-Winkler similarity is at least ``NEAR_SIMILARITY``; one per direction, the smaller and the larger;
- **Monge-Elkan** with Jaro-Winkler: the mean over one name's words of the best similarity to the other's
  words (a similarity below ``NEAR_SIMILARITY`` counts as 0), one per direction;
- **the brand seen**: an item's brand is its brand attribute, or else the first word of its name; whether each
  side's brand appears among the other side's words (name, long text and brand attribute), the smaller and the
  larger. A brand missing from one side's attributes is read from its title.

Near words are found once per set of items, over their vocabulary: words of at least ``NEAR_MIN_LETTERS``
letters (no digit: codes and numbers are compared by :mod:`prodmatch.identifiers`, where one digit changes the
product) that share a one-character deletion (within edit distance 2), kept when their Jaro-Winkler
similarity (rapidfuzz) is at least ``NEAR_SIMILARITY``. Each similarity depends on the two words only, so a
pair's features are the same whatever other items are scored with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from rapidfuzz.distance import JaroWinkler

from prodmatch.kernels import best_words, rows_contain
from prodmatch.sparse_text import hash_words, normalise_texts, rowwise_dot_pair

__all__ = ["FUZZY_FEATURES", "ItemWords", "compare_words", "near_words"]

NEAR_MIN_LETTERS = 4  # shorter words differ by design ("pro" / "pre", "mini" / "mino" is still compared)
NEAR_SIMILARITY = 0.9  # Jaro-Winkler; Cohen et al. use 0.9 for soft TF-IDF

FUZZY_FEATURES = [
    "name_idf_jaccard",
    "name_soft_tfidf_min",
    "name_soft_tfidf_max",
    "name_monge_elkan_min",
    "name_monge_elkan_max",
    "brand_seen_min",
    "brand_seen_max",
]

_WORD = r"(?u)\w+"


def near_words(vocabulary: list[str]) -> sp.csr_matrix:
    """(V, V) Jaro-Winkler similarity of every two distinct words of ``vocabulary`` that are letters only, at
    least ``NEAR_MIN_LETTERS`` long, within edit distance 2 (a shared one-character deletion), and at least
    ``NEAR_SIMILARITY`` alike; symmetric, no diagonal."""
    n = len(vocabulary)
    ids, keys = [], []
    for i, word in enumerate(vocabulary):
        if len(word) >= NEAR_MIN_LETTERS and word.isalpha():
            for d in {word, *(word[:k] + word[k + 1 :] for k in range(len(word)))}:
                ids.append(i)
                keys.append(d)
    if not ids:
        return sp.csr_matrix((n, n), dtype=np.float32)
    frame = pd.DataFrame({"id": np.asarray(ids, dtype=np.int64), "key": keys})
    pairs = frame.merge(frame, on="key", suffixes=("_a", "_b"))
    pairs = pairs[pairs["id_a"] < pairs["id_b"]].drop_duplicates(["id_a", "id_b"])
    a, b = pairs["id_a"].to_numpy(), pairs["id_b"].to_numpy()
    sim = np.fromiter(
        (JaroWinkler.normalized_similarity(vocabulary[i], vocabulary[j]) for i, j in zip(a, b, strict=True)),
        dtype=np.float64,
        count=len(a),
    )
    keep = sim >= NEAR_SIMILARITY
    rows, cols, vals = np.r_[a[keep], b[keep]], np.r_[b[keep], a[keep]], np.r_[sim[keep], sim[keep]]
    out = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, n))
    out.sum_duplicates()
    return out


@dataclass
class ItemWords:
    """Every item's name words over the items' own vocabulary, with their IDF, the near words of that vocabulary,
    each item's brand and the words of its whole text."""

    tfidf: sp.csr_matrix  # (items, V) L2-normalised IDF weights of the name's words (0/1 term frequency)
    idf: sp.csr_matrix  # (items, V) the IDF of the name's words
    mass: np.ndarray  # (items,) float64: the IDF of all the name's words, summed
    words: sp.csr_matrix  # (items, V) 0/1, the name's words (for the IDF of the words both names hold)
    near: sp.csr_matrix  # (V, V) Jaro-Winkler of near words (see near_words)
    brand: np.ndarray  # (items,) the vocabulary id of the item's brand, -1 where it is in no name
    has_brand: np.ndarray
    seen: sp.csr_matrix  # (items, V) 0/1, the words of the name, the long text and the brand attribute
    has_name: np.ndarray
    has_text: np.ndarray  # a name or a long text

    @classmethod
    def build(
        cls,
        names: np.ndarray,
        texts: np.ndarray | None,
        brands: list[str | None] | None,
        word_idf: np.ndarray,
    ) -> ItemWords:
        """``word_idf``: the fitted IDF of hashed name words (:func:`prodmatch.sparse_text.hash_words`'s columns);
        ``brands``: each item's brand attribute, or None."""
        from sklearn.feature_extraction.text import CountVectorizer

        low = normalise_texts(names)
        vec = CountVectorizer(binary=True, lowercase=False, token_pattern=_WORD, dtype=np.float32)
        try:
            words = vec.fit_transform(low).tocsr()
            vocabulary = vec.get_feature_names_out().tolist()
        except ValueError:  # no word at all
            words, vocabulary = sp.csr_matrix((len(low), 0), dtype=np.float32), []
        words.sum_duplicates()
        n, v = words.shape
        idf_of_word = (
            word_idf[hash_words(np.array(vocabulary, dtype=object)).indices].astype(np.float32)
            if vocabulary
            else np.zeros(0, dtype=np.float32)
        )
        idf = (words @ sp.diags(idf_of_word)).tocsr() if v else words.copy()
        norms = np.sqrt(np.asarray(idf.multiply(idf).sum(1)).ravel())
        tfidf = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ idf).tocsr()
        index = {w: i for i, w in enumerate(vocabulary)}
        brand, has_brand = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
        for i, name in enumerate(low):
            given = brands[i] if brands is not None else None
            source = normalise_texts([given])[0] if isinstance(given, str) and given.strip() else name
            first = next((w for w in _words(source) if not w.isdigit()), None)
            if first is not None:
                brand[i], has_brand[i] = index.get(first, -1), True
        # what an item says: its name, its long text and its brand attribute
        given = normalise_texts(brands) if brands is not None else [""] * n
        whole = [f"{a} {b}" for a, b in zip(low, given, strict=True)]
        has_text = np.array([bool(t.strip()) for t in low])
        if texts is not None:
            long = normalise_texts(texts)
            whole = [f"{a} {b}" for a, b in zip(whole, long, strict=True)]
            has_text |= np.array([bool(t.strip()) for t in long])
        if vocabulary:
            seen = CountVectorizer(
                binary=True, lowercase=False, token_pattern=_WORD, vocabulary=index, dtype=np.float32
            ).transform(whole)
            seen = seen.tocsr()
        else:
            seen = sp.csr_matrix((n, 0), dtype=np.float32)
        for m in (tfidf, idf, seen):
            m.sum_duplicates()
        mass = np.asarray(idf.sum(1), dtype=np.float64).ravel()
        return cls(tfidf, idf, mass, words, near_words(vocabulary), brand, has_brand, seen, norms > 0, has_text)


def _words(text: str) -> list[str]:
    return re.findall(_WORD, text)


def compare_words(items: ItemWords, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Per pair of item rows (a[i], b[i]), in the order of ``FUZZY_FEATURES`` (see the module). The name
    features are NaN where either name has no word; the brand features where either side has no brand or no
    text."""
    shared = rowwise_dot_pair(items.idf, items.words, a, b, dtype=np.float64)  # the IDF of the words both hold
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = shared / (items.mass[a] + items.mass[b] - shared)
    soft_a, me_a, _ = best_words(items.tfidf, items.near, a, b)
    soft_b, me_b, _ = best_words(items.tfidf, items.near, b, a)
    out = [
        jaccard,
        np.minimum(soft_a, soft_b),
        np.maximum(soft_a, soft_b),
        np.minimum(me_a, me_b),
        np.maximum(me_a, me_b),
    ]
    missing = ~(items.has_name[a] & items.has_name[b])
    for column in out:
        column[missing] = np.nan
    seen = [rows_contain(items.seen, y, items.brand[x]).astype(np.float64) for x, y in ((a, b), (b, a))]
    low, high = np.minimum(*seen), np.maximum(*seen)
    no_brand = ~(items.has_brand[a] & items.has_brand[b] & items.has_text[a] & items.has_text[b])
    low[no_brand], high[no_brand] = np.nan, np.nan
    return [c.astype(np.float32) for c in [*out, low, high]]
