"""The catalogue: every item's embeddings as contiguous float32 matrices, addressed by row.

Ids (int64 or strings) map to rows through a hashed ``pandas.Index``; lookups of millions of ids are
one vectorised call, never a Python loop or dict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prodmatch.errors import DataError, UnknownIdsError

__all__ = ["NORM_EPS", "Catalogue", "Modality", "l2_normalize"]

log = logging.getLogger(__name__)

# The notebook's rule: divide by the L2 norm only where it exceeds this, else leave the vector alone.
NORM_EPS = 0.001


def l2_normalize(matrix: np.ndarray, eps: float = NORM_EPS, *, out: np.ndarray | None = None) -> np.ndarray:
    """L2-normalise the rows of ``matrix``, the notebook's way.

    Rows whose norm is at most ``eps`` (zero vectors, near-zero noise) are left as they are.

    Args:
        matrix: (N, D) float array.
        eps: norm threshold.
        out: where to write the result; ``matrix`` itself (in place) by default.

    Returns:
        ``out`` (or ``matrix``), for chaining.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))  # (N,); einsum avoids an (N, D) temporary
    scale = np.where(norms > eps, norms, 1.0).astype(matrix.dtype)
    return np.divide(matrix, scale[:, None], out=matrix if out is None else out)


@dataclass
class Modality:
    """One named embedding of every item, e.g. ``name_bert_64``.

    Attributes:
        name: the column name the embedding came from.
        matrix: (N, D) float32, C-contiguous, normalised; zeros where the item lacks it.
        present: (N,) bool, whether the item has this embedding at all.
        source: the file it was read from (for messages).
    """

    name: str
    matrix: np.ndarray
    present: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        assert self.matrix.dtype == np.float32 and self.matrix.flags.c_contiguous
        assert self.matrix.ndim == 2 and self.present.shape == (self.matrix.shape[0],)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


@dataclass
class Catalogue:
    """Everything known about the items, row-aligned.

    Attributes:
        ids: the item ids (int64 or strings), unique, in row order.
        modalities: name -> Modality, every one with ``len(ids)`` rows.
        categories: optional DataFrame with columns ``category1``..``category4`` (pandas
            categoricals, missing as NaN), one row per item.
        names: optional (N,) object array of product names.
        texts: optional (N,) object array of long texts (a whole serialised record, or a description;
            None where an item has none), read by the text models.
        attributes: optional (N,) object array of raw ``characteristic_attributes_mapping`` JSON strings
            (None where an item has none); parsed by the features that use them.
        extra_pictures: optional (offsets, vectors): item i's extra photos are rows
            ``offsets[i]:offsets[i + 1]`` of the (K, D) float32 normalised ``vectors``.
    """

    ids: pd.Index
    modalities: dict[str, Modality]
    categories: pd.DataFrame | None = None
    names: np.ndarray | None = None
    attributes: np.ndarray | None = None
    texts: np.ndarray | None = None
    extra_pictures: tuple[np.ndarray, np.ndarray] | None = None
    _features_cache: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for m in self.modalities.values():
            assert m.matrix.shape[0] == n, (m.name, m.matrix.shape, n)
        if self.ids.has_duplicates:
            dup = self.ids[self.ids.duplicated()].unique()[:5].tolist()
            raise DataError(f"catalogue ids are not unique, e.g. {dup}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def id_kind(self) -> str:
        """``"int"`` or ``"str"``: the kind of ids this catalogue holds."""
        return "int" if pd.api.types.is_integer_dtype(self.ids.dtype) else "str"

    def rows(self, ids: np.ndarray | pd.Series | list) -> np.ndarray:
        """Row of each id, -1 where the catalogue does not have it. Vectorised.

        Args:
            ids: ids of the same kind as the catalogue's.

        Returns:
            (len(ids),) int64 row positions.
        """
        query = pd.Index(np.asarray(ids))
        if self.id_kind == "int" and not pd.api.types.is_integer_dtype(query.dtype):
            raise DataError(
                f"ids of dtype {query.dtype} cannot be looked up in a catalogue of integer ids; "
                "convert them to int64 first"
            )
        if self.id_kind == "str" and pd.api.types.is_integer_dtype(query.dtype):
            query = query.astype(str)
        return self.ids.get_indexer(query)

    def lookup(self, ids: np.ndarray | pd.Series | list, *, what: str = "ids") -> np.ndarray:
        """Like :meth:`rows` but raises :class:`UnknownIdsError` listing every unknown id."""
        rows = self.rows(ids)
        missing = rows < 0
        if missing.any():
            unknown = pd.unique(np.asarray(ids)[missing])
            raise UnknownIdsError(
                f"{len(unknown)} {what} are not in the catalogue (no embedding in any item file), "
                f"e.g. {unknown[:10].tolist()}; add their embeddings or remove them",
                unknown.tolist(),
            )
        return rows

    def item_features(self, modalities: list[str] | tuple[str, ...]) -> np.ndarray:
        """The model input of every item: the modalities side by side, then one presence flag each.

        Cached, since every model call on the same catalogue needs the same matrix.

        Returns:
            (N, sum(dims) + len(modalities)) float32, C-contiguous.
        """
        key = tuple(modalities)
        cached = self._features_cache.get(key)
        if cached is not None:
            return cached
        missing = [m for m in key if m not in self.modalities]
        if missing:
            raise DataError(
                f"the model needs modalities {missing}, but the data has only "
                f"{sorted(self.modalities)}; point --data at the layout the model was trained on"
            )
        mods = [self.modalities[m] for m in key]
        width = sum(m.dim for m in mods) + len(mods)
        out = np.empty((len(self), width), dtype=np.float32)  # (N, F)
        col = 0
        for m in mods:
            out[:, col : col + m.dim] = m.matrix
            col += m.dim
        for m in mods:
            out[:, col] = m.present
            col += 1
        self._features_cache = {key: out}  # keep one: these can be gigabytes
        return out

    def concat(self, other: Catalogue) -> Catalogue:
        """This catalogue's items followed by ``other``'s (for matching new listings against a catalogue).

        Both must hold the same modalities with the same dimensions, and no id may be in both. Side data
        that only one of them has is dropped.

        Raises:
            DataError: on different modalities or dimensions, or shared ids.
        """
        if [(n, m.dim) for n, m in self.modalities.items()] != [(n, m.dim) for n, m in other.modalities.items()]:
            raise DataError(
                "the new items' modalities differ from the catalogue's: "
                f"{[(n, m.dim) for n, m in other.modalities.items()]} against "
                f"{[(n, m.dim) for n, m in self.modalities.items()]}"
            )
        shared = self.ids.intersection(other.ids)
        if len(shared):
            raise DataError(
                f"{len(shared)} new ids are already in the catalogue, e.g. {shared[:5].tolist()}; "
                "new items must be new (remove them, or rebuild the index with them)"
            )
        modalities = {
            name: Modality(
                name,
                np.ascontiguousarray(np.concatenate([m.matrix, other.modalities[name].matrix])),
                np.concatenate([m.present, other.modalities[name].present]),
                m.source,
            )
            for name, m in self.modalities.items()
        }
        categories = None
        if self.categories is not None and other.categories is not None:
            categories = pd.DataFrame(
                {
                    c: pd.Categorical(
                        pd.concat([self.categories[c].astype(object), other.categories[c].astype(object)]),
                    )
                    for c in self.categories.columns
                }
            ).reset_index(drop=True)

        def join(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else np.concatenate([a, b])

        extra = None
        if self.extra_pictures is not None and other.extra_pictures is not None:
            (oa, va), (ob, vb) = self.extra_pictures, other.extra_pictures
            if va.shape[1:] == vb.shape[1:] or len(vb) == 0 or len(va) == 0:
                vectors = np.concatenate([va, vb]) if len(va) and len(vb) else (va if len(va) else vb)
                extra = (np.concatenate([oa, ob[1:] + oa[-1]]), vectors)
        return Catalogue(
            ids=self.ids.append(other.ids),
            modalities=modalities,
            categories=categories,
            names=join(self.names, other.names),
            attributes=join(self.attributes, other.attributes),
            texts=join(self.texts, other.texts),
            extra_pictures=extra,
        )

    def describe(self) -> dict:
        """Counts for logs and reports: items, and per modality its dimension and coverage."""
        return {
            "items": len(self),
            "id_kind": self.id_kind,
            "modalities": {
                name: {
                    "dim": m.dim,
                    "present": int(m.present.sum()),
                    "missing": int((~m.present).sum()),
                    "source": m.source,
                }
                for name, m in self.modalities.items()
            },
            "has_categories": self.categories is not None,
            "has_names": self.names is not None,
            "has_attributes": self.attributes is not None,
            "has_texts": self.texts is not None,
            "extra_pictures": None if self.extra_pictures is None else len(self.extra_pictures[1]),
        }
