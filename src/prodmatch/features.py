"""Pairwise similarity features, computed vectorised over all pairs: the input of the ``gbdt`` model.

Every feature is a symmetric function of the two items, so a model on them scores (a, b) and (b, a)
alike. A feature that an item cannot provide (no picture, no attributes) is NaN, which LightGBM treats
as missing. The groups:

- per embedding modality: cosine, L2 distance, the largest coordinate gap, the spread of the
  coordinate-wise product, and the cosine after whitening (centre on the training items' mean, project on the
  top principal components, scale each to unit variance: "BERT-whitening", Su et al. 2021);
- per embedding modality (``discriminant``), the cosine in the directions where products differ more than
  the listings of one product do: the generalised eigenvectors of the items' covariance against the
  covariance of the differences within the training matches (linear discriminant analysis for
  verification, as in speaker and face verification), keeping those whose ratio is at least
  ``DISCRIMINANT_MIN_RATIO``. Whitening weighs every principal direction alike, noise included; this keeps
  the directions that tell products apart, however many there are. It needs about 12 matches per dimension
  (see ``DISCRIMINANT_MIN_PAIRS``) and is left out below that;
- extra photos (``pic_embeddings_resnet_v1`` with the main picture): min, mean and max cross cosine;
- equality of category levels 1 to 4;
- attributes: Jaccard over keys and over key=value, brand and colour agreement, and the number of keys
  both items fill with different values; the agreement of the numeric attributes both items fill
  (price, weight, size... whatever they are called): the smallest and mean lower/higher ratio;
- names: token Jaccard, Jaccard of tokens holding digits (model numbers, codes), character 3-gram
  TF-IDF cosine, the length ratio, and the cosine of word TF-IDF vectors.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from prodmatch.catalogue import Catalogue
from prodmatch.errors import DataError

__all__ = ["BRAND_KEYS", "COLOUR_KEYS", "PairFeaturizer", "WordItems", "WordPairScorer", "monotone_direction"]

log = logging.getLogger(__name__)

BRAND_KEYS = ("Бренд", "brand", "Brand", "manufacturer")
PRICE_KEYS = ("price", "Price", "Цена")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
COLOUR_KEYS = ("Цвет товара", "Цвет", "color", "colour", "Color")
MAX_EXTRA_PICTURES = 8  # per item; more are ignored (counted in the log)
WHITEN_DIM = 32
# A direction is kept for the discriminant cosine when the items vary along it at least this many times more
# than two listings of one product do: 1 is pure listing noise. On synthetic data the ratios fall in two
# groups, 4-17 (the product subspace) and about 1.1-1.3 (noise), so the rule does not need the subspace's size.
DISCRIMINANT_MIN_RATIO = 2.0
# Matches needed per dimension to fit it: with n differences in d dimensions the sample covariance's
# eigenvalues spread to (1 +- sqrt(d / n))^2 of the truth (Marchenko-Pastur), so a pure-noise direction can
# show a ratio up to 1 / (1 - sqrt(d / n))^2. Below this many matches per dimension that edge passes
# DISCRIMINANT_MIN_RATIO and noise would be kept as signal (11.7 for a ratio of 2). Measured: WDC-cameras'
# 512-d embeddings with 2,796 matches (5.5 per dimension) lost 4.6 points of test F1 to it (seed 0).
DISCRIMINANT_MIN_PAIRS = 1.0 / (1.0 - DISCRIMINANT_MIN_RATIO**-0.5) ** 2
NAME_HASH_FEATURES = 2**18
NUMBER_PATTERN = r"(?u)\b\w*\d\w*\b"  # words holding a digit
CODE_PATTERN = r"(?u)\b(?=\w*\d)\w{4,}\b"  # words of 4+ characters holding a digit: part numbers, SKUs


# The direction in which each feature can only move a pair towards a match, all else equal: +1 a similarity
# (two listings of one product agree more), -1 a distance or a count of conflicts, 0 no such rule (a spread, a
# length ratio, how many keys both fill). A boosted model held to them cannot learn that less agreement means
# more likely the same product, which its training pairs may happen to show (a few near-miss negatives with
# very similar names) and which pairs far from anything it was trained on then exploit: a catalogue's
# far-down candidates, cross-category, scored as matches.
_INCREASING = {
    "cos", "wcos", "dcos", "pics_min", "pics_mean", "pics_max", "attr_key_jaccard", "attr_kv_jaccard",
    "brand_equal", "colour_equal", "price_ratio", "numeric_ratio_min", "numeric_ratio_mean", "name_token_jaccard",
    "name_code_jaccard", "name_tfidf_cos", "name_word_tfidf_cos", "name_word_containment_min",
    "name_word_containment_max", "name_shared_code_idf",
}  # fmt: skip
_DECREASING = {"l2", "attr_conflicts", "name_number_conflicts"}


def monotone_direction(feature: str) -> int:
    """+1, -1 or 0: how ``feature`` (a :class:`PairFeaturizer` feature name, or a stacked model's score
    ``stack_*``, a logit) may move the probability of a match (see ``_INCREASING``)."""
    if feature.startswith("stack_") or re.fullmatch(r"category\d_equal", feature):
        return 1
    short = feature.rsplit(".", 1)[-1]  # "<modality>.cos" -> "cos"
    return 1 if short in _INCREASING else -1 if short in _DECREASING else 0


@dataclass
class PairFeaturizer:
    """Learns the few statistics features need (whitening, name IDF) on the training items, then
    turns pairs into a (M, F) float32 matrix.

    Attributes:
        modalities: embedding modalities to use.
        use: feature groups beyond the embeddings' plain similarities, any of "discriminant",
            "extra_pictures", "categories", "attributes", "numbers", "names", "words" (a saved run keeps its
            own list, so it scores as it was trained).
    """

    modalities: list[str]
    use: list[str] = field(
        default_factory=lambda: [
            "discriminant",
            "extra_pictures",
            "categories",
            "attributes",
            "numbers",
            "names",
            "words",
        ]
    )
    whitening: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (mean, W)
    discriminant: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (D, k) projection, after the mean
    name_idf: np.ndarray | None = None
    word_idf: np.ndarray | None = None  # IDF of hashed name words ("words" group)
    _hashed: tuple | None = field(default=None, repr=False)
    _group_cache: tuple | None = field(default=None, repr=False)  # (which side data, the groups)

    # ----------------------------------------------------------------------------------------- fit

    def fit(
        self, catalogue: Catalogue, rows: np.ndarray, matches: tuple[np.ndarray, np.ndarray] | None = None
    ) -> PairFeaturizer:
        """Fit whitening and the name IDF on the catalogue rows ``rows`` (the training items), and the
        discriminant directions on ``matches`` (the training pairs labelled a match: left, right rows)."""
        rows = np.unique(rows)
        for name in self.modalities:
            m = catalogue.modalities[name]
            x = m.matrix[rows[m.present[rows]]].astype(np.float64)
            if len(x) < 2:
                continue
            mean = x.mean(axis=0)
            cov = np.cov(x - mean, rowvar=False)
            eigval, eigvec = np.linalg.eigh(cov)  # ascending
            k = min(WHITEN_DIM, len(eigval))
            top = np.argsort(eigval)[::-1][:k]
            w = eigvec[:, top] / np.sqrt(np.maximum(eigval[top], 1e-12))
            self.whitening[name] = (mean.astype(np.float32), w.astype(np.float32))
            if "discriminant" in self.use and matches is not None:
                projection = _discriminant(name, m, cov, *matches)
                if projection is not None:
                    self.discriminant[name] = projection
        if "names" in self.use and catalogue.names is not None:
            counts = _hash_names(catalogue.names[rows])
            df = np.bincount(counts.indices, minlength=NAME_HASH_FEATURES)
            self.name_idf = (np.log((1 + len(rows)) / (1 + df)) + 1.0).astype(np.float32)
            self._hashed = (catalogue, rows, counts)  # the training pairs' transform reuses these counts
        if "words" in self.use and catalogue.names is not None:
            df = np.bincount(_hash_words(catalogue.names[rows]).indices, minlength=NAME_HASH_FEATURES)
            self.word_idf = (np.log((1 + len(rows)) / (1 + df)) + 1.0).astype(np.float32)
        self._group_cache = None  # which groups apply depends on what was just fitted
        return self

    # ----------------------------------------------------------------------------------- transform

    def feature_names(self, catalogue: Catalogue) -> list[str]:
        return [n for names, _ in self._groups(catalogue) for n in names]

    def side_data(self, catalogue: Catalogue, items: np.ndarray | None = None) -> _SideData:
        """Everything the features need that depends on one item only, for the sorted catalogue rows ``items``
        (all by default): parsed once, then every pair is a handful of array operations. Each item's values
        do not depend on which other items are with it, so a pair scores the same from any store."""
        names = set(self.feature_names(catalogue))
        return _SideData(catalogue, np.arange(len(catalogue)) if items is None else items, self, names)

    def transform(
        self,
        catalogue: Catalogue,
        left: np.ndarray,
        right: np.ndarray,
        chunk: int = 65536,
        side: _SideData | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """(M, F) float32 features of the pairs (left[i], right[i]), and the feature names.

        ``side``: the items' side data (:meth:`side_data`), covering every item of the pairs; built for just
        those items when None. Each group computes its columns for the whole chunk at once, the sparse
        ones (names, words, attributes, numbers) from one intersection of the pairs' items (:class:`_Pairs`).
        """
        groups = self._groups(catalogue)
        names = [n for group_names, _ in groups for n in group_names]
        out = np.full((len(left), len(names)), np.nan, dtype=np.float32)
        if side is None:
            side = self.side_data(catalogue, np.union1d(left, right))
        for start in range(0, len(left), chunk):
            sl = slice(start, start + chunk)
            pairs = _Pairs(side, left[sl], right[sl])
            columns = [column for _, compute in groups for column in compute(catalogue, side, pairs)]
            out[sl] = np.column_stack(columns) if columns else out[sl]
        return out, names

    def _groups(self, catalogue: Catalogue) -> list[tuple[list[str], Callable]]:
        """(feature names, the function computing them) for every group this catalogue supports; each function
        takes (catalogue, side data, _Pairs) and returns its columns in the order of the names."""
        # the groups depend only on which side data the catalogue has (keyed so, not by the catalogue, which
        # the cache would otherwise keep alive)
        has = tuple(getattr(catalogue, a) is not None for a in ("extra_pictures", "categories", "attributes", "names"))
        if self._group_cache is not None and self._group_cache[0] == has:
            return self._group_cache[1]
        groups = self._make_groups(catalogue)
        self._group_cache = (has, groups)
        return groups

    def _make_groups(self, catalogue: Catalogue) -> list[tuple[list[str], Callable]]:
        groups: list[tuple[list[str], Callable]] = []
        for name in self.modalities:
            names = [f"{name}.{f}" for f in ("cos", "l2", "maxgap", "prodstd", "wcos")]
            groups.append((names, _modality_features(name, name in self.whitening)))
        if "discriminant" in self.use:
            for name in self.modalities:
                if name in self.discriminant and name in self.whitening:
                    groups.append(([f"{name}.dcos"], _discriminant_features(name)))
        if "extra_pictures" in self.use and catalogue.extra_pictures is not None and self.picture_modality is not None:
            groups.append((["pics_min", "pics_mean", "pics_max"], _picture_features))
        if "categories" in self.use and catalogue.categories is not None:
            groups.append(([f"category{level}_equal" for level in range(1, 5)], _category_features))
        if "attributes" in self.use and catalogue.attributes is not None:
            names = ["attr_key_jaccard", "attr_kv_jaccard", "attr_conflicts", "brand_equal", "colour_equal"]
            groups.append((names, _attribute_features))
        if "price" in self.use and catalogue.attributes is not None:  # runs saved before "numbers"
            groups.append((["price_ratio"], _price_features))
        if "numbers" in self.use and catalogue.attributes is not None:
            groups.append((["numeric_ratio_min", "numeric_ratio_mean", "numeric_shared"], _numeric_features))
        if "names" in self.use and catalogue.names is not None and self.name_idf is not None:
            names = ["name_token_jaccard", "name_code_jaccard", "name_tfidf_cos", "name_len_ratio"]
            groups.append((names, _name_features))
        if "words" in self.use and catalogue.names is not None and self.word_idf is not None:
            names = [
                "name_word_tfidf_cos",
                "name_word_containment_min",
                "name_word_containment_max",
                "name_shared_code_idf",
                "name_number_conflicts",
            ]
            groups.append((names, _word_features))
        return groups

    @property
    def picture_modality(self) -> str | None:
        """The modality holding the items' main picture (its name has "pic" in it), or None."""
        return next((m for m in self.modalities if "pic" in m), None)

    def to_dict(self) -> dict:
        return {"modalities": self.modalities, "use": self.use}


# ------------------------------------------------------------------------------------------ groups


def _modality_features(name: str, whitened: bool):
    def compute(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
        m = cat.modalities[name]
        a, b = m.matrix[pairs.left], m.matrix[pairs.right]  # (B, D) normalised
        missing = ~(m.present[pairs.left] & m.present[pairs.right])
        prod = a * b
        diff = a - b
        out = [prod.sum(1), np.sqrt((diff * diff).sum(1)), np.abs(diff).max(1), prod.std(1)]
        if whitened:
            z = side.projected[f"{name}.wcos"]
            out.append((z[pairs.la] * z[pairs.lb]).sum(1))
        else:
            out.append(np.full(len(a), np.nan, dtype=np.float32))
        for column in out:
            column[missing] = np.nan
        return out

    return compute


def _unit_projection(x: np.ndarray, mean: np.ndarray, projection: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(N, k) float32: the rows of ``x`` centred on ``mean``, projected (whitening, the discriminant) and scaled to
    unit length (zero stays zero), so a projected cosine is one row-wise dot product. Computed in float64 and
    rounded, so an item's row does not depend on how many rows are projected with it (float32 BLAS sums in a
    different order for different shapes)."""
    out = np.empty((len(x), projection.shape[1]), dtype=np.float32)
    p, mu = projection.astype(np.float64), mean.astype(np.float64)
    for s in range(0, len(x), chunk):
        z = (x[s : s + chunk].astype(np.float64) - mu) @ p
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        out[s : s + chunk] = z
    return out


def _discriminant(name: str, m, cov: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray | None:
    """(D, k) projection onto the directions where the items vary at least ``DISCRIMINANT_MIN_RATIO`` times more
    than matched listings do, scaled to unit within-match variance; None (logged) when it cannot be fitted."""
    from scipy.linalg import eigh

    both = m.present[left] & m.present[right]
    d = cov.shape[0]
    if both.sum() < DISCRIMINANT_MIN_PAIRS * d:
        log.info(
            "%s: %d training matches have it on both sides, fewer than the %d its %d dimensions need to tell "
            "signal from noise: no discriminant cosine",
            name,
            int(both.sum()),
            int(np.ceil(DISCRIMINANT_MIN_PAIRS * d)),
            d,
        )
        return None
    diff = (m.matrix[left[both]] - m.matrix[right[both]]).astype(np.float64)
    within = diff.T @ diff / (2 * len(diff))  # the covariance of one listing around its product
    within += 1e-3 * np.trace(within) / d * np.eye(d)
    ratio, vectors = eigh(cov, within)  # ascending; vectors.T @ within @ vectors = I
    keep = np.flatnonzero(ratio >= DISCRIMINANT_MIN_RATIO)[::-1][:WHITEN_DIM]
    log.info(
        "%s: %d of %d directions vary at least %g times more across products than within a match (largest ratio %.1f)",
        name,
        len(keep),
        d,
        DISCRIMINANT_MIN_RATIO,
        float(ratio[-1]),
    )
    return vectors[:, keep].astype(np.float32) if len(keep) else None


def _discriminant_features(name: str):
    def compute(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
        m = cat.modalities[name]
        z = side.projected[f"{name}.dcos"]
        cos = (z[pairs.la] * z[pairs.lb]).sum(1)
        cos[~(m.present[pairs.left] & m.present[pairs.right])] = np.nan
        return [cos]

    return compute


def _picture_features(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
    """min, mean, max cosine over every (photo of a, photo of b), main picture included."""
    ptr, vectors = side.pictures
    la, lb = pairs.la, pairs.lb
    ca, cb = ptr[la + 1] - ptr[la], ptr[lb + 1] - ptr[lb]
    n_cross = ca * cb
    pair = np.repeat(np.arange(len(la)), n_cross)
    within = np.arange(len(pair)) - np.repeat(np.cumsum(n_cross) - n_cross, n_cross)
    i, j = within // cb[pair], within % cb[pair]
    dots = np.einsum("ij,ij->i", vectors[ptr[la[pair]] + i], vectors[ptr[lb[pair]] + j])
    out = [np.full(len(la), np.nan, dtype=np.float32) for _ in range(3)]
    has = n_cross > 0
    if has.any():
        starts = (np.cumsum(n_cross) - n_cross)[has]
        out[0][has] = np.minimum.reduceat(dots, starts)
        out[1][has] = np.add.reduceat(dots, starts) / n_cross[has]
        out[2][has] = np.maximum.reduceat(dots, starts)
    return out


def _category_features(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
    out = []
    for codes in side.categories:
        a, b = codes[pairs.left], codes[pairs.right]
        out.append(np.where((a < 0) | (b < 0), np.nan, (a == b).astype(np.float32)))
    return out


def _jaccard(pairs: _Pairs, side: _SideData, block: str) -> tuple[np.ndarray, np.ndarray]:
    """Shared entries of block ``block`` and the size of the union, per pair."""
    inter = pairs.sums(block)
    union = pairs.nnz(block, "a") + pairs.nnz(block, "b") - inter
    return inter, union


def _attribute_features(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
    both = side.attr_has[pairs.la] & side.attr_has[pairs.lb]
    key_inter, key_union = _jaccard(pairs, side, "attr_keys")
    kv_inter, kv_union = _jaccard(pairs, side, "attr_kvs")
    out = [
        key_inter / np.maximum(key_union, 1),
        kv_inter / np.maximum(kv_union, 1),
        # keys both fill, minus the key=value pairs they share: exact when each key holds one value
        np.maximum(key_inter - kv_inter, 0),
    ]
    for column in out:
        column[~both] = np.nan
    for block in ("brand", "colour"):
        shared = (pairs.sums(block) > 0).astype(np.float32)  # 1 when the two items share any value
        shared[(pairs.nnz(block, "a") == 0) | (pairs.nnz(block, "b") == 0)] = np.nan
        out.append(shared)
    return out


def _price_features(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
    """The lower price over the higher one, where both items have a positive price attribute."""
    a, b = side.prices[pairs.la], side.prices[pairs.lb]
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(np.minimum(a, b) / np.maximum(a, b)).astype(np.float32)]


def _numeric_features(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
    """Agreement of the numeric attributes both items fill, whatever they are called (price, weight, size,
    memory...): over the keys both give a number for, the smallest and the mean of lower / higher value,
    and how many such keys there are. NaN where the two share no numeric key."""
    shared = pairs.counts("numbers")
    has = shared > 0
    low = np.where(has, pairs.lowest_ratio, np.nan)
    mean = np.full(len(shared), np.nan)
    mean[has] = pairs.sums("numbers")[has] / shared[has]
    return [low, mean, shared]


def _word_features(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
    """Word TF-IDF similarities of the names: rare shared words (model numbers, editions) weigh most.

    - the cosine of the two TF-IDF vectors;
    - containment: the IDF mass of one name's words that the other name also has, over that name's
      whole IDF mass, for each side; the smaller and the larger of the two (a short title wholly inside
      a long one contains 1, which the cosine does not show);
    - the IDF mass of the long codes both names hold: a shared part number is strong evidence;
    - number conflicts: words with a digit that each name has and the other lacks, counted on the side
      with fewer: versions and sizes that disagree ("2007" against "2008") count, a number that only one
      side spells out does not.
    """
    la, lb = pairs.la, pairs.lb
    missing = ~(side.word_has[la] & side.word_has[lb])
    shared = pairs.sums("word_idf")  # the IDF mass of the words both names hold
    with np.errstate(invalid="ignore", divide="ignore"):
        in_b, in_a = shared / side.word_mass[la], shared / side.word_mass[lb]
    conflicts = np.minimum(pairs.nnz("word_numbers", "a"), pairs.nnz("word_numbers", "b")) - pairs.sums("word_numbers")
    out = [
        pairs.sums("word_tfidf"),
        np.minimum(in_a, in_b),
        np.maximum(in_a, in_b),
        pairs.sums("word_codes"),
        np.maximum(conflicts, 0),
    ]
    for column in out:
        column[missing] = np.nan
    return out


def _name_features(cat: Catalogue, side: _SideData, pairs: _Pairs) -> list[np.ndarray]:
    la, lb = pairs.la, pairs.lb
    missing = ~(side.name_has[la] & side.name_has[lb])
    out = []
    for block in ("name_tokens", "name_codes"):
        inter, union = _jaccard(pairs, side, block)
        out.append(np.where(union > 0, inter / np.maximum(union, 1), np.nan))
    out.append(pairs.sums("name_tfidf"))
    length = side.name_length
    with np.errstate(invalid="ignore", divide="ignore"):
        out.append(np.minimum(length[la], length[lb]) / np.maximum(np.maximum(length[la], length[lb]), 1))
    for column in out:
        column[missing] = np.nan
    return out


# What a pair computes from the entries two items share in a block of the joint matrix (see _SideData).
_DOT, _LEFT, _RATIO = 0, 1, 2  # a * b; a (a weight both share); exp(-|a - b|) (the ratio of two numbers' logs)


class _Pairs:
    """A chunk of pairs: catalogue and local rows, and every sparse block's intersection, computed once.

    All the sparse side data of an item is one row of ``side.joint`` (blocks side by side). The entries the
    two items of each pair share are found in one merge, and summed per (pair, block) with one bincount in
    float64, in column order: the same sums, in the same order, as a dot product per block row by row.
    """

    def __init__(self, side: _SideData, left: np.ndarray, right: np.ndarray) -> None:
        self.side, self.left, self.right = side, left, right
        self.la, self.lb = side.local(left), side.local(right)
        self._sums: np.ndarray | None = None

    def _intersect(self) -> None:
        side = self.side
        m, nb, n = side.joint, len(side.block_kind), len(self.la)
        ka, va = _row_entries(m, self.la)
        kb, vb = _row_entries(m, self.lb)
        sums, counts, low = np.zeros(n * nb), np.zeros(n * nb), np.ones(n)
        if len(ka) and len(kb):
            pos = np.minimum(np.searchsorted(kb, ka), len(kb) - 1)
            hit = kb[pos] == ka
            key = ka[hit]
            pair = key // m.shape[1]
            block = np.searchsorted(side.block_start, key - pair * m.shape[1], side="right") - 1
            a, b = va[hit].astype(np.float64), vb[pos[hit]].astype(np.float64)
            kind = side.block_kind[block]
            value = np.where(kind == _DOT, a * b, a)
            ratio = kind == _RATIO
            if ratio.any():
                value[ratio] = np.exp(-np.abs(a[ratio] - b[ratio]))  # lower / higher
                np.minimum.at(low, pair[ratio], value[ratio])
            flat = pair * nb + block
            sums = np.bincount(flat, weights=value, minlength=n * nb)
            counts = np.bincount(flat, minlength=n * nb).astype(np.float64)
        self._sums, self._counts, self._low = sums.reshape(n, nb), counts.reshape(n, nb), low

    def sums(self, block: str) -> np.ndarray:
        """(B,) float32: per pair, the block's sum over shared entries (see the kinds above)."""
        if self._sums is None:
            self._intersect()
        return self._sums[:, self.side.blocks[block]].astype(np.float32)

    def counts(self, block: str) -> np.ndarray:
        if self._sums is None:
            self._intersect()
        return self._counts[:, self.side.blocks[block]].astype(np.float32)

    @property
    def lowest_ratio(self) -> np.ndarray:
        if self._sums is None:
            self._intersect()
        return self._low

    def nnz(self, block: str, side: str) -> np.ndarray:
        """(B,) float32: entries of the left (``"a"``) or right item in the block."""
        return self.side.nnz[self.la if side == "a" else self.lb, self.side.blocks[block]]


# -------------------------------------------------------------------------------------- side data


@dataclass
class _Words:
    """The local items' names as hashed-word matrices (see :func:`_word_features`)."""

    tfidf: sp.csr_matrix  # L2-normalised TF-IDF
    weighted: sp.csr_matrix  # 0/1 times IDF
    codes: sp.csr_matrix  # long codes, 0/1 times IDF
    numbers: sp.csr_matrix  # words holding a digit, 0/1
    mass: np.ndarray  # each name's total IDF
    has: np.ndarray  # the name has any word


class _SideData:
    """Per-item side data, parsed once for just the items the pairs touch ("local" rows)."""

    def __init__(self, cat: Catalogue, items: np.ndarray, featurizer: PairFeaturizer, features: set[str]) -> None:
        self.items = items  # sorted catalogue rows
        self.pictures = self._pictures(cat, featurizer) if "pics_min" in features else None
        parsed = (
            self._parse_attributes(cat) if features & {"attr_key_jaccard", "price_ratio", "numeric_ratio_min"} else None
        )
        self.prices = self._prices(parsed) if "price_ratio" in features else None
        blocks: list[tuple[str, sp.csr_matrix, int]] = []  # the sparse side data: (name, matrix, _Pairs kind)
        if "attr_key_jaccard" in features:
            keys, kvs, brand, colour, self.attr_has = self._attributes(parsed)
            blocks += [("attr_keys", keys, _DOT), ("attr_kvs", kvs, _DOT), ("brand", brand, _DOT)]
            blocks.append(("colour", colour, _DOT))
        if "name_token_jaccard" in features:
            tokens, codes, tfidf, self.name_length, self.name_has = self._names(cat, featurizer)
            blocks += [("name_tokens", tokens, _DOT), ("name_codes", codes, _DOT), ("name_tfidf", tfidf, _DOT)]
        if "numeric_ratio_min" in features:
            blocks.append(("numbers", self._numbers(parsed), _RATIO))
        if "name_word_tfidf_cos" in features:
            w = self._words(cat, featurizer)
            blocks += [("word_tfidf", w.tfidf, _DOT), ("word_idf", w.weighted, _LEFT), ("word_codes", w.codes, _LEFT)]
            blocks.append(("word_numbers", w.numbers, _DOT))
            self.word_mass, self.word_has = w.mass, w.has
        self._join(blocks)
        self.projected: dict[str, np.ndarray] = {}  # "<modality>.wcos" / ".dcos" -> (local items, k) unit rows
        for name in featurizer.modalities:
            m = cat.modalities[name]
            if f"{name}.wcos" in features and name in featurizer.whitening:
                mean, w = featurizer.whitening[name]
                self.projected[f"{name}.wcos"] = _unit_projection(m.matrix[items], mean, w)
                if f"{name}.dcos" in features:
                    self.projected[f"{name}.dcos"] = _unit_projection(
                        m.matrix[items], mean, featurizer.discriminant[name]
                    )
        self.categories = (  # every catalogue row's code per level (-1: none)
            [cat.categories[f"category{level}"].cat.codes.to_numpy() for level in range(1, 5)]
            if "category1_equal" in features
            else None
        )

    def local(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.items, rows)

    def _join(self, blocks: list[tuple[str, sp.csr_matrix, int]]) -> None:
        """Put the sparse blocks side by side in one CSR matrix (see :class:`_Pairs`), with each block's first
        column, its kind, and every item's number of entries per block."""
        n = len(self.items)
        self.blocks = {name: i for i, (name, _, _) in enumerate(blocks)}
        self.block_kind = np.array([kind for _, _, kind in blocks], dtype=np.int8)
        widths = [m.shape[1] for _, m, _ in blocks]
        self.block_start = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)[: len(blocks)]
        if blocks:
            self.joint = sp.hstack([m for _, m, _ in blocks], format="csr", dtype=np.float32)
            self.joint.sum_duplicates()  # canonical: sorted, unique columns per row, as _Pairs needs
            self.nnz = np.stack([np.diff(m.indptr) for _, m, _ in blocks], axis=1).astype(np.float32)
        else:
            self.joint = sp.csr_matrix((n, 1), dtype=np.float32)
            self.nnz = np.zeros((n, 0), dtype=np.float32)

    def _pictures(self, cat: Catalogue, featurizer: PairFeaturizer):
        """The local items' photos, main picture first: local item i's are vectors[ptr[i]:ptr[i + 1]]."""
        main = cat.modalities[featurizer.picture_modality]
        offsets, extra = cat.extra_pictures
        items = self.items
        n_extra = offsets[items + 1] - offsets[items]
        capped = np.minimum(n_extra, MAX_EXTRA_PICTURES)
        if (n_extra > MAX_EXTRA_PICTURES).any():
            log.info(
                "%d items have more than %d extra photos; the rest are ignored in picture features",
                int((n_extra > MAX_EXTRA_PICTURES).sum()),
                MAX_EXTRA_PICTURES,
            )
        has_main = main.present[items] & (np.abs(main.matrix[items]).sum(1) > 0)
        ptr = np.concatenate([[0], np.cumsum(has_main.astype(np.int64) + capped)])
        vectors = np.empty((ptr[-1], main.dim), dtype=np.float32)
        vectors[ptr[:-1][has_main]] = main.matrix[items[has_main]]
        item = np.repeat(np.arange(len(items)), capped)
        k = np.arange(len(item)) - np.repeat(np.cumsum(capped) - capped, capped)
        vectors[ptr[:-1][item] + has_main[item] + k] = extra[offsets[items[item]] + k]
        return ptr, vectors

    def _parse_attributes(self, cat: Catalogue) -> list[dict | None]:
        """The local items' attribute mappings, parsed once for every group that reads them (None: none)."""
        return parse_attributes(cat, self.items)

    def _attributes(self, parsed: list[dict | None]):
        """Key and key=value indicator matrices, brand and colour codes (-1: none), has-attributes flags."""
        item_of, keys, values = [], [], []
        has = np.zeros(len(parsed), dtype=bool)
        for i, obj in enumerate(parsed):
            if obj is None:
                continue
            has[i] = True
            for key, vals in obj.items():
                for v in vals if isinstance(vals, list) else [vals]:
                    item_of.append(i)
                    keys.append(key)
                    values.append(v)
        long = pd.DataFrame(  # object columns even when no item has any attribute (then empty)
            {
                "item": np.asarray(item_of, dtype=np.int64),
                "key": pd.Series(keys, dtype=object),
                "value": pd.Series(values, dtype=object),
            }
        )
        long = long[long["value"].notna()]
        long["value"] = long["value"].astype(str).str.strip().str.lower().str.replace("ё", "е", regex=False)
        long = long.drop_duplicates()
        n = len(parsed)
        key_pairs = long[["item", "key"]].drop_duplicates()
        key_matrix = _indicator(key_pairs["item"].to_numpy(), key_pairs["key"].to_numpy(), n)
        kv_matrix = _indicator(long["item"].to_numpy(), (long["key"] + "=" + long["value"]).to_numpy(), n)
        # Brand and colour: each item's set of values under any of the known key names.
        value_sets = []
        for wanted in (BRAND_KEYS, COLOUR_KEYS):
            sub = long[long["key"].isin(wanted)].drop_duplicates(["item", "value"])
            value_sets.append(_indicator(sub["item"].to_numpy(), sub["value"].to_numpy(), n))
        for m in (key_matrix, kv_matrix, *value_sets):
            m.sum_duplicates()  # canonical: sorted, unique columns per row, as _Pairs needs
        return key_matrix, kv_matrix, value_sets[0], value_sets[1], has

    def _words(self, cat: Catalogue, featurizer: PairFeaturizer) -> _Words:
        names = cat.names[self.items]
        idf = featurizer.word_idf[None, :]
        binary = _hash_words(names)
        weighted = binary.multiply(idf).tocsr()
        mass = np.asarray(weighted.sum(1)).ravel()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(1)).ravel())
        tfidf = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted).tocsr()
        codes = _hash_words(names, CODE_PATTERN).multiply(idf).tocsr()
        numbers = _hash_words(names, NUMBER_PATTERN)
        for m in (weighted, tfidf, codes, numbers):
            m.sum_duplicates()  # canonical: sorted, unique columns per row
        return _Words(tfidf, weighted, codes, numbers, mass, norms > 0)

    def _prices(self, parsed: list[dict | None]) -> np.ndarray:
        """Each local item's price (the first number under a price key), NaN where it has none."""
        out = np.full(len(parsed), np.nan, dtype=np.float64)
        for i, obj in enumerate(parsed):
            if obj is None:
                continue
            for key in PRICE_KEYS:
                values = obj.get(key)
                value = values[0] if isinstance(values, list) and values else values
                match = _NUMBER.search(str(value)) if value is not None else None
                if match:
                    out[i] = float(match.group().replace(",", ""))
                    break
        out[out <= 0] = np.nan
        return out

    def _numbers(self, parsed: list[dict | None]) -> sp.csr_matrix:
        """(local items, keys) CSR of log(value) for every attribute whose (first) value is a positive number.

        A value counts as a number when it is one, possibly with a unit or thousands separators around it
        ("1,299.00", "500 г"), but not when it holds several ("2 x 3 cm").
        """
        item_of, keys, values = [], [], []
        for i, obj in enumerate(parsed):
            if obj is None:
                continue
            for key, vals in obj.items():
                value = vals[0] if isinstance(vals, list) and vals else vals
                if value is None or isinstance(value, bool):
                    continue
                numbers = _NUMBER.findall(str(value))
                if len(numbers) != 1:
                    continue
                number = float(numbers[0].replace(",", ""))
                if number > 0:
                    item_of.append(i)
                    keys.append(key)
                    values.append(np.log(number))
        codes, _ = pd.factorize(pd.Series(keys, dtype=object))
        m = sp.csr_matrix(
            (np.asarray(values, dtype=np.float64), (np.asarray(item_of, dtype=np.int64), codes)),
            shape=(len(parsed), max(int(codes.max(initial=-1)) + 1, 1)),
        )
        m.sum_duplicates()
        return m

    def _names(self, cat: Catalogue, featurizer: PairFeaturizer):
        names = pd.Series(cat.names[self.items], dtype=object)
        has = names.map(lambda x: isinstance(x, str)).to_numpy() & (names.fillna("").str.strip() != "").to_numpy()
        text = names.where(has, "").str.lower().str.replace("ё", "е", regex=False).tolist()
        tokens = _count_binary(text, r"(?u)\w+")
        codes = _count_binary(text, r"(?u)\w*\d\w*")  # tokens holding a digit: model numbers, codes
        cached = featurizer._hashed
        if cached is not None and cached[0] is cat and np.array_equal(cached[1], self.items):
            counts = cached[2]
        else:
            counts = _hash_names(np.array(text, dtype=object))
        tfidf = counts.multiply(featurizer.name_idf[None, :]).tocsr()
        norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(1)).ravel())
        tfidf = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ tfidf
        length = np.array([len(t) for t in text], dtype=np.float32)
        tfidf = tfidf.tocsr()
        for m in (tokens, codes, tfidf):
            m.sum_duplicates()  # canonical: sorted, unique columns per row, as _Pairs needs
        return tokens, codes, tfidf, length, has


def parse_attributes(cat: Catalogue, rows: np.ndarray) -> list[dict | None]:
    """The attribute mappings of catalogue ``rows`` (None where an item has none); DataError naming the item
    when one is not a JSON object."""
    parsed: list[dict | None] = []
    for row, text in zip(rows, cat.attributes[rows], strict=True):  # json.loads is the only per-item work
        if not text:
            parsed.append(None)
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            raise DataError(
                f"attributes.parquet: characteristic_attributes_mapping of item {cat.ids[row]} "
                f"is not a JSON object ({e}): {str(text)[:80]!r}; fix it or drop the column"
            ) from e
        parsed.append(obj)
    return parsed


def _hash_names(names: np.ndarray) -> sp.csr_matrix:
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


def _hash_words(names: np.ndarray, pattern: str = r"(?u)\w+", ngrams: tuple[int, int] = (1, 1)) -> sp.csr_matrix:
    """(N, NAME_HASH_FEATURES) 0/1: which hashed words (or word n-grams; lowercased, ё as е) each name holds."""
    from sklearn.feature_extraction.text import HashingVectorizer

    text = ["" if not isinstance(n, str) else n.lower().replace("ё", "е") for n in names]
    vec = HashingVectorizer(
        n_features=NAME_HASH_FEATURES,
        token_pattern=pattern,
        ngram_range=ngrams,
        alternate_sign=False,
        norm=None,
        binary=True,
    )
    return vec.transform(text).astype(np.float32).tocsr()


def _indicator(rows: np.ndarray, labels: np.ndarray, n_rows: int) -> sp.csr_matrix:
    """n_rows x distinct labels, 1 where (row, label) occurs (pairs must be unique)."""
    codes, uniques = pd.factorize(pd.Series(labels, dtype=object))
    data = np.ones(len(codes), dtype=np.float32)
    return sp.csr_matrix((data, (rows, codes)), shape=(n_rows, max(len(uniques), 1)))


def _count_binary(text: list[str], pattern: str) -> sp.csr_matrix:
    """Items x distinct tokens matching ``pattern``, 1 where the item has the token."""
    vec = CountVectorizer(binary=True, lowercase=False, token_pattern=pattern, dtype=np.float32)
    try:
        return vec.fit_transform(text).tocsr()
    except ValueError:  # no token at all (empty vocabulary)
        return sp.csr_matrix((len(text), 1), dtype=np.float32)


def _rowwise_dot_pair(
    m: sp.csr_matrix, n: sp.csr_matrix, a: np.ndarray, b: np.ndarray, dtype: type = np.float32
) -> np.ndarray:
    """(B,) dot products of rows m[a[i]] and n[b[i]] of two matrices of the same shape.

    One path for every batch size, straight on the CSR arrays with float64 sums, so a pair's features do
    not depend on how many pairs are scored with it (scipy's row indexing and float32 product would be
    about 2.5x faster for large batches, but they round differently from this path, and a tree split
    can turn a rounding difference into a different probability).
    """
    ka, va = _row_entries(m, a)
    kb, vb = _row_entries(n, b)
    if not len(ka) or not len(kb):
        return np.zeros(len(a), dtype=dtype)
    pos = np.minimum(np.searchsorted(kb, ka), len(kb) - 1)
    hit = kb[pos] == ka
    products = va[hit].astype(np.float64) * vb[pos[hit]]
    return np.bincount(ka[hit] // m.shape[1], weights=products, minlength=len(a)).astype(dtype)


def _row_entries(m: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored entries of m[rows[i]] for every i, as keys i * n_columns + column, and their values."""
    starts, counts = m.indptr[rows], m.indptr[rows + 1] - m.indptr[rows]
    total = int(counts.sum())
    pair = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    idx = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
    return pair * m.shape[1] + m.indices[idx], m.data[idx]


# ------------------------------------------------------------------------------ learned word pairs


@dataclass
class WordPairScorer:
    """A logistic regression over the words two names share and the words only one of them has.

    Fixed similarities weigh a shared word by its rarity (IDF); this learns from the labelled pairs which
    words decide a match (a model code, "kit", "refurbished") and which do not ("camera", a colour the
    sellers disagree on). Features of a pair, hashed words of the lowercased names: one indicator per word
    in both names, and one per word in exactly one of them (so symmetric in the two items). ``gbdt``
    cross-fits it like its stacked network and feeds its out-of-fold logit to the trees.
    """

    c: float = 1.0  # inverse regularisation strength
    coef: np.ndarray | None = None  # (4 * NAME_HASH_FEATURES,) float32
    intercept: float = 0.0
    _cache: tuple | None = field(default=None, repr=False)  # (catalogue, its hashed words over all items)

    def fit(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, target: np.ndarray) -> WordPairScorer:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        x = self.pair_matrix(catalogue, left, right)
        if len(np.unique(target)) < 2:  # one class only: no words to learn; the prior alone
            self.coef = np.zeros(x.shape[1], dtype=np.float32)
            rate = float(np.clip(np.mean(target), 1e-6, 1 - 1e-6))
            self.intercept = float(np.log(rate / (1 - rate)))
            return self
        # Fitted on the hashed columns the pairs use (a few percent of them): the solver's work grows with the
        # number of columns, and the unused ones would get a zero weight anyway (measured with liblinear: 6.2 s
        # to 2.2 s on 20,000 pairs, the same weights to 1e-3).
        used = np.unique(x.indices)
        local = np.full(x.shape[1], -1, dtype=np.int64)
        local[used] = np.arange(len(used))
        compact = sp.csr_matrix((x.data, local[x.indices], x.indptr), shape=(x.shape[0], len(used)))
        # L-BFGS: each iteration is two sparse products, so its cost grows with the pairs; liblinear's primal
        # Newton solver grew faster than that (20,000 / 45,000 pairs: 2.8 s / 11.9 s, against 3.7 s for
        # L-BFGS at 45,000, with the same held-out average precision, 0.8927 / 0.8928), and had not finished
        # after 12 minutes on the two 460,000-pair folds at E-CUP size (L-BFGS: 157 s for both).
        lr = LogisticRegression(C=self.c, solver="lbfgs", max_iter=200)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr.fit(compact, target)
        if lr.n_iter_[0] >= lr.max_iter:  # said once, in words, rather than scikit-learn's warning
            log.info(
                "word-pair model: L-BFGS stopped at %d iterations on %d pairs before its tolerance; its weights "
                "are used as they are (a ranking feature of the trees)",
                lr.max_iter,
                compact.shape[0],
            )
        self.coef = np.zeros(x.shape[1], dtype=np.float32)
        self.coef[used] = lr.coef_.ravel()
        self.intercept = float(lr.intercept_[0])
        return self

    def logits(
        self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, items: WordItems | None = None
    ) -> np.ndarray:
        """(M,) float32 logits; row by row in float64, so a pair's value does not depend on its batch.

        ``items``: the items' stored words (:meth:`item_data`), covering every item of the pairs; built for
        just those items when None.
        """
        if items is None:
            items = self.item_data(catalogue, np.union1d(left, right))
        return items.logits(left, right, self.intercept)

    def item_data(self, catalogue: Catalogue, items: np.ndarray | None = None) -> WordItems:
        """What the logits need of each of the sorted catalogue ``items`` (all by default), once per item.

        The logit is linear in indicators of the words in both names and in exactly one: with c_both and
        c_one their weights, sum(c_one over A xor B) = sum(c_one over A) + sum(c_one over B) - 2 sum(c_one over
        A and B). So each item keeps its tokens and sum(c_one) over them, and a pair costs one sparse dot
        product: its shared tokens weighted by c_both - 2 c_one.
        """
        items = np.arange(len(catalogue)) if items is None else items
        cached = self._cache
        tokens = (
            cached[1][items] if cached is not None and cached[0] is catalogue else _name_tokens(catalogue.names[items])
        )
        half = tokens.shape[1]
        coef = self.coef.astype(np.float64)
        both, one = coef[:half], coef[half:]
        shared = tokens.multiply((both - 2.0 * one)[None, :]).tocsr().astype(np.float64)
        tokens = tokens.tocsr()
        for m in (tokens, shared):
            m.sum_duplicates()  # canonical: sorted, unique columns per row, as _rowwise_dot_pair needs
        return WordItems(items, tokens, shared, tokens @ one)

    def prepare(self, catalogue: Catalogue) -> WordPairScorer:
        """Hash every item's name once (a server's catalogue)."""
        self._cache = (catalogue, _name_tokens(catalogue.names))
        return self

    def pair_matrix(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> sp.csr_matrix:
        """(M, 2 * 2 * NAME_HASH_FEATURES) 0/1: [tokens in both names | tokens in exactly one], tokens being
        the words and the character 3-grams (which see a code inside a longer word) of the names."""
        if self._cache is not None and self._cache[0] is catalogue:
            tokens, la, lb = self._cache[1], left, right
        else:
            items = np.union1d(left, right)
            tokens = _name_tokens(catalogue.names[items])
            la, lb = np.searchsorted(items, left), np.searchsorted(items, right)
        a, b = tokens[la], tokens[lb]
        both = a.multiply(b).tocsr()
        either = ((a + b) - 2 * both).tocsr()
        either.eliminate_zeros()
        out = sp.hstack([both, either], format="csr", dtype=np.float32)
        out.sum_duplicates()
        return out


@dataclass
class WordItems:
    """The word-pair model's per-item data (see :meth:`WordPairScorer.item_data`)."""

    items: np.ndarray  # sorted catalogue rows
    tokens: sp.csr_matrix  # (items, 2 * NAME_HASH_FEATURES) 0/1
    shared: sp.csr_matrix  # tokens weighted by c_both - 2 c_one, float64
    one: np.ndarray  # (items,) float64: sum of c_one over the item's tokens

    def logits(self, left: np.ndarray, right: np.ndarray, intercept: float) -> np.ndarray:
        la, lb = np.searchsorted(self.items, left), np.searchsorted(self.items, right)
        inter = _rowwise_dot_pair(self.tokens, self.shared, la, lb, dtype=np.float64)
        return (intercept + self.one[la] + self.one[lb] + inter).astype(np.float32)


def _name_tokens(names: np.ndarray) -> sp.csr_matrix:
    """(N, 2 * NAME_HASH_FEATURES) 0/1: hashed words and word pairs, then hashed character 3-grams, of each name."""
    grams = _hash_names(names)
    grams.data[:] = 1.0
    return sp.hstack([_hash_words(names, ngrams=(1, 2)), grams], format="csr", dtype=np.float32)
