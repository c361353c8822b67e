"""Per-item side data of the pair features, parsed once for just the items a set of pairs touches: photos,
attributes, prices, numbers and name words, held as blocks of one sparse matrix; and a chunk of pairs with
every block's shared entries, intersected once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prodmatch.attributes import BRAND_KEYS, COLOUR_KEYS, NUMBER, PRICE_KEYS, parse_attributes
from prodmatch.catalogue import Catalogue
from prodmatch.fuzzy import ItemWords
from prodmatch.identifiers import ItemCodes, ItemQuantities
from prodmatch.kernels import DOT, LEFT, RATIO, blocks_shared
from prodmatch.sparse_text import (
    CODE_PATTERN,
    NUMBER_PATTERN,
    count_binary,
    hash_names,
    hash_words,
    indicator,
)

log = logging.getLogger(__name__)


class FittedFeaturizer(Protocol):
    """What side data reads of a fitted :class:`prodmatch.features.PairFeaturizer`."""

    modalities: list[str]
    whitening: dict
    discriminant: dict
    word_idf: np.ndarray
    name_idf: np.ndarray
    hashed_names: tuple | None

    @property
    def picture_modality(self) -> str | None: ...


MAX_EXTRA_PICTURES = 8  # per item; more are ignored (counted in the log)


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


# What a pair computes from the entries two items share in a block of the joint matrix (see SideData): DOT,
# a * b; LEFT, a (a weight both share); RATIO, exp(-|a - b|) (the ratio of two numbers' logs).


class PairRows:
    """A chunk of pairs: catalogue and local rows, and every sparse block's intersection, computed once.

    All the sparse side data of an item is one row of ``side.joint`` (blocks side by side). The entries the
    two items of each pair share are found in one compiled merge per pair (:func:`prodmatch.kernels.blocks_shared`)
    and summed per block in float64, in column order: the same sums, in the same order, as a dot product per
    block row by row.
    """

    def __init__(self, side: SideData, left: np.ndarray, right: np.ndarray) -> None:
        self.side, self.left, self.right = side, left, right
        self.la, self.lb = side.local(left), side.local(right)
        self._sums: np.ndarray | None = None

    def _intersect(self) -> None:
        side = self.side
        self._sums, self._counts, self._low = blocks_shared(
            side.joint, side.block_start, side.block_kind, self.la, self.lb
        )

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


@dataclass
class NameWords:
    """The local items' names as hashed-word matrices (see :func:`word_features`)."""

    tfidf: sp.csr_matrix  # L2-normalised TF-IDF
    weighted: sp.csr_matrix  # 0/1 times IDF
    codes: sp.csr_matrix  # long codes, 0/1 times IDF
    numbers: sp.csr_matrix  # words holding a digit, 0/1
    mass: np.ndarray  # each name's total IDF
    has: np.ndarray  # the name has any word


class SideData:
    """Per-item side data, parsed once for just the items the pairs touch ("local" rows)."""

    def __init__(self, cat: Catalogue, items: np.ndarray, featurizer: FittedFeaturizer, features: set[str]) -> None:
        self.items = items  # sorted catalogue rows
        self.pictures = self._pictures(cat, featurizer) if "pics_min" in features else None
        parsed = (
            self._parse_attributes(cat)
            if features & {"attr_key_jaccard", "price_ratio", "numeric_ratio_min", "brand_seen_min"}
            else None
        )
        self.prices = self._prices(parsed) if "price_ratio" in features else None
        blocks: list[tuple[str, sp.csr_matrix, int]] = []  # the sparse side data: (name, matrix, PairRows kind)
        if "attr_key_jaccard" in features:
            keys, kvs, brand, colour, self.attr_has = self._attributes(parsed)
            blocks += [("attr_keys", keys, DOT), ("attr_kvs", kvs, DOT), ("brand", brand, DOT)]
            blocks.append(("colour", colour, DOT))
        if "name_token_jaccard" in features:
            tokens, codes, tfidf, self.name_length, self.name_has = self._names(cat, featurizer)
            blocks += [("name_tokens", tokens, DOT), ("name_codes", codes, DOT), ("name_tfidf", tfidf, DOT)]
        if "numeric_ratio_min" in features:
            blocks.append(("numbers", self._numbers(parsed), RATIO))
        if "name_word_tfidf_cos" in features:
            w = self._words(cat, featurizer)
            blocks += [("word_tfidf", w.tfidf, DOT), ("word_idf", w.weighted, LEFT), ("word_codes", w.codes, LEFT)]
            blocks.append(("word_numbers", w.numbers, DOT))
            self.word_mass, self.word_has = w.mass, w.has
        self._join(blocks)
        names = cat.names[items] if cat.names is not None else None
        self.codes = (
            ItemCodes.build(names, cat.texts[items] if cat.texts is not None else None)
            if "code_shared" in features
            else None
        )
        self.quantities = ItemQuantities.build(names) if "quantity_agree" in features else None
        self.words = (
            ItemWords.build(
                names,
                cat.texts[items] if cat.texts is not None else None,
                self._brands(parsed) if cat.attributes is not None else None,
                featurizer.word_idf,
            )
            if "name_idf_jaccard" in features
            else None
        )
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
        """Put the sparse blocks side by side in one CSR matrix (see :class:`PairRows`), with each block's first
        column, its kind, and every item's number of entries per block."""
        n = len(self.items)
        self.blocks = {name: i for i, (name, _, _) in enumerate(blocks)}
        self.block_kind = np.array([kind for _, _, kind in blocks], dtype=np.int8)
        widths = [m.shape[1] for _, m, _ in blocks]
        self.block_start = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)[: len(blocks)]
        if blocks:
            self.joint = sp.hstack([m for _, m, _ in blocks], format="csr", dtype=np.float32)
            self.joint.sum_duplicates()  # canonical: sorted, unique columns per row, as PairRows needs
            self.nnz = np.stack([np.diff(m.indptr) for _, m, _ in blocks], axis=1).astype(np.float32)
        else:
            self.joint = sp.csr_matrix((n, 1), dtype=np.float32)
            self.nnz = np.zeros((n, 0), dtype=np.float32)

    def _pictures(self, cat: Catalogue, featurizer: FittedFeaturizer):
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
        key_matrix = indicator(key_pairs["item"].to_numpy(), key_pairs["key"].to_numpy(), n)
        kv_matrix = indicator(long["item"].to_numpy(), (long["key"] + "=" + long["value"]).to_numpy(), n)
        # Brand and colour: each item's set of values under any of the known key names.
        value_sets = []
        for wanted in (BRAND_KEYS, COLOUR_KEYS):
            sub = long[long["key"].isin(wanted)].drop_duplicates(["item", "value"])
            value_sets.append(indicator(sub["item"].to_numpy(), sub["value"].to_numpy(), n))
        for m in (key_matrix, kv_matrix, *value_sets):
            m.sum_duplicates()  # canonical: sorted, unique columns per row, as PairRows needs
        return key_matrix, kv_matrix, value_sets[0], value_sets[1], has

    def _words(self, cat: Catalogue, featurizer: FittedFeaturizer) -> NameWords:
        names = cat.names[self.items]
        idf = featurizer.word_idf[None, :]
        binary = hash_words(names)
        weighted = binary.multiply(idf).tocsr()
        mass = np.asarray(weighted.sum(1)).ravel()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(1)).ravel())
        tfidf = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted).tocsr()
        codes = hash_words(names, CODE_PATTERN).multiply(idf).tocsr()
        numbers = hash_words(names, NUMBER_PATTERN)
        for m in (weighted, tfidf, codes, numbers):
            m.sum_duplicates()  # canonical: sorted, unique columns per row
        return NameWords(tfidf, weighted, codes, numbers, mass, norms > 0)

    @staticmethod
    def _brands(parsed: list[dict | None]) -> list[str | None]:
        """Each local item's brand attribute (the first value under a brand key), or None."""
        out: list[str | None] = []
        for obj in parsed:
            found = None
            for key in BRAND_KEYS if obj is not None else ():
                values = obj.get(key)
                value = values[0] if isinstance(values, list) and values else values
                if isinstance(value, str) and value.strip():
                    found = value
                    break
            out.append(found)
        return out

    def _prices(self, parsed: list[dict | None]) -> np.ndarray:
        """Each local item's price (the first number under a price key), NaN where it has none."""
        out = np.full(len(parsed), np.nan, dtype=np.float64)
        for i, obj in enumerate(parsed):
            if obj is None:
                continue
            for key in PRICE_KEYS:
                values = obj.get(key)
                value = values[0] if isinstance(values, list) and values else values
                match = NUMBER.search(str(value)) if value is not None else None
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
                numbers = NUMBER.findall(str(value))
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

    def _names(self, cat: Catalogue, featurizer: FittedFeaturizer):
        names = pd.Series(cat.names[self.items], dtype=object)
        has = names.map(lambda x: isinstance(x, str)).to_numpy() & (names.fillna("").str.strip() != "").to_numpy()
        text = names.where(has, "").str.lower().str.replace("ё", "е", regex=False).tolist()
        tokens = count_binary(text, r"(?u)\w+")
        codes = count_binary(text, r"(?u)\w*\d\w*")  # tokens holding a digit: model numbers, codes
        cached = featurizer.hashed_names
        if cached is not None and cached[0] is cat and np.array_equal(cached[1], self.items):
            counts = cached[2]
        else:
            counts = hash_names(np.array(text, dtype=object))
        tfidf = counts.multiply(featurizer.name_idf[None, :]).tocsr()
        norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(1)).ravel())
        tfidf = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ tfidf
        length = np.array([len(t) for t in text], dtype=np.float32)
        tfidf = tfidf.tocsr()
        for m in (tokens, codes, tfidf):
            m.sum_duplicates()  # canonical: sorted, unique columns per row, as PairRows needs
        return tokens, codes, tfidf, length, has
