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
  TF-IDF cosine, the length ratio, and the cosine of word TF-IDF vectors;
- codes (:mod:`prodmatch.identifiers`): product codes in the names, shared, one held in the other, within edit
  distance 2, of one family but different, and absent from the other side's whole text;
- quantities: numbers with units in the names (16 GB, 2.5", pack of 6), agreeing or conflicting per dimension.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from prodmatch.catalogue import Catalogue
from prodmatch.fuzzy import FUZZY_FEATURES, compare_words
from prodmatch.identifiers import CODE_FEATURES, QUANTITY_FEATURES, compare_codes, compare_quantities
from prodmatch.side_data import PairRows, SideData
from prodmatch.sparse_text import NAME_HASH_FEATURES, hash_names, hash_words

__all__ = ["PairFeaturizer", "monotone_direction"]

log = logging.getLogger(__name__)


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
    "name_word_containment_max", "name_shared_code_idf", "code_shared", "code_contained", "quantity_agree",
    "name_idf_jaccard", "name_soft_tfidf_min", "name_soft_tfidf_max", "name_monge_elkan_min", "name_monge_elkan_max",
    "brand_seen_min", "brand_seen_max",
}  # fmt: skip


_DECREASING = {
    "l2", "attr_conflicts", "name_number_conflicts", "code_family_conflict", "code_unseen_min", "code_unseen_max",
    "quantity_conflicts",
}  # fmt: skip


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
            "extra_pictures", "categories", "attributes", "numbers", "names", "words", "codes", "quantities", "fuzzy"
            (a saved run keeps its own list, so it scores as it was trained).
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
            "codes",
            "quantities",
            "fuzzy",
        ]
    )
    whitening: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (mean, W)
    discriminant: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (D, k) projection, after the mean
    name_idf: np.ndarray | None = None
    word_idf: np.ndarray | None = None  # IDF of hashed name words ("words" group)
    hashed_names: tuple | None = field(default=None, repr=False)
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
            counts = hash_names(catalogue.names[rows])
            df = np.bincount(counts.indices, minlength=NAME_HASH_FEATURES)
            self.name_idf = (np.log((1 + len(rows)) / (1 + df)) + 1.0).astype(np.float32)
            self.hashed_names = (catalogue, rows, counts)  # the training pairs' transform reuses these counts
        if ("words" in self.use or "fuzzy" in self.use) and catalogue.names is not None:
            df = np.bincount(hash_words(catalogue.names[rows]).indices, minlength=NAME_HASH_FEATURES)
            self.word_idf = (np.log((1 + len(rows)) / (1 + df)) + 1.0).astype(np.float32)
        self._group_cache = None  # which groups apply depends on what was just fitted
        return self

    # ----------------------------------------------------------------------------------- transform

    def feature_names(self, catalogue: Catalogue) -> list[str]:
        return [n for names, _ in self._groups(catalogue) for n in names]

    def side_data(self, catalogue: Catalogue, items: np.ndarray | None = None) -> SideData:
        """Everything the features need that depends on one item only, for the sorted catalogue rows ``items``
        (all by default): parsed once, then every pair is a handful of array operations. Each item's values
        do not depend on which other items are with it, so a pair scores the same from any store."""
        names = set(self.feature_names(catalogue))
        return SideData(catalogue, np.arange(len(catalogue)) if items is None else items, self, names)

    def transform(
        self,
        catalogue: Catalogue,
        left: np.ndarray,
        right: np.ndarray,
        chunk: int = 65536,
        side: SideData | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """(M, F) float32 features of the pairs (left[i], right[i]), and the feature names.

        ``side``: the items' side data (:meth:`side_data`), covering every item of the pairs; built for just
        those items when None. Each group computes its columns for the whole chunk at once, the sparse
        ones (names, words, attributes, numbers) from one intersection of the pairs' items (:class:`PairRows`).
        """
        groups = self._groups(catalogue)
        names = [n for group_names, _ in groups for n in group_names]
        out = np.full((len(left), len(names)), np.nan, dtype=np.float32)
        if side is None:
            side = self.side_data(catalogue, np.union1d(left, right))
        for start in range(0, len(left), chunk):
            sl = slice(start, start + chunk)
            pairs = PairRows(side, left[sl], right[sl])
            columns = [column for _, compute in groups for column in compute(catalogue, side, pairs)]
            out[sl] = np.column_stack(columns) if columns else out[sl]
        return out, names

    def _groups(self, catalogue: Catalogue) -> list[tuple[list[str], Callable]]:
        """(feature names, the function computing them) for every group this catalogue supports; each function
        takes (catalogue, side data, PairRows) and returns its columns in the order of the names."""
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
            groups.append((names, word_features))
        if "codes" in self.use and catalogue.names is not None:
            groups.append((list(CODE_FEATURES), _code_features))
        if "quantities" in self.use and catalogue.names is not None:
            groups.append((list(QUANTITY_FEATURES), _quantity_features))
        if "fuzzy" in self.use and catalogue.names is not None and self.word_idf is not None:
            groups.append((list(FUZZY_FEATURES), _fuzzy_features))
        return groups

    @property
    def picture_modality(self) -> str | None:
        """The modality holding the items' main picture (its name has "pic" in it), or None."""
        return next((m for m in self.modalities if "pic" in m), None)

    def to_dict(self) -> dict:
        return {"modalities": self.modalities, "use": self.use}


def _modality_features(name: str, whitened: bool):
    def compute(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
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
    def compute(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
        m = cat.modalities[name]
        z = side.projected[f"{name}.dcos"]
        cos = (z[pairs.la] * z[pairs.lb]).sum(1)
        cos[~(m.present[pairs.left] & m.present[pairs.right])] = np.nan
        return [cos]

    return compute


def _picture_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
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


def _category_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
    out = []
    for codes in side.categories:
        a, b = codes[pairs.left], codes[pairs.right]
        out.append(np.where((a < 0) | (b < 0), np.nan, (a == b).astype(np.float32)))
    return out


def _jaccard(pairs: PairRows, side: SideData, block: str) -> tuple[np.ndarray, np.ndarray]:
    """Shared entries of block ``block`` and the size of the union, per pair."""
    inter = pairs.sums(block)
    union = pairs.nnz(block, "a") + pairs.nnz(block, "b") - inter
    return inter, union


def _attribute_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
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


def _price_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
    """The lower price over the higher one, where both items have a positive price attribute."""
    a, b = side.prices[pairs.la], side.prices[pairs.lb]
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(np.minimum(a, b) / np.maximum(a, b)).astype(np.float32)]


def _numeric_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
    """Agreement of the numeric attributes both items fill, whatever they are called (price, weight, size,
    memory...): over the keys both give a number for, the smallest and the mean of lower / higher value,
    and how many such keys there are. NaN where the two share no numeric key."""
    shared = pairs.counts("numbers")
    has = shared > 0
    low = np.where(has, pairs.lowest_ratio, np.nan)
    mean = np.full(len(shared), np.nan)
    mean[has] = pairs.sums("numbers")[has] / shared[has]
    return [low, mean, shared]


def word_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
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


def _name_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
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


def _code_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
    return compare_codes(side.codes, pairs.la, pairs.lb)


def _quantity_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
    return compare_quantities(side.quantities, pairs.la, pairs.lb)


def _fuzzy_features(cat: Catalogue, side: SideData, pairs: PairRows) -> list[np.ndarray]:
    return compare_words(side.words, pairs.la, pairs.lb)
