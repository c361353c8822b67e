"""The item-feature store: what scoring a pair needs that depends on one item only, computed once per item.

A pair's ``gbdt`` features compare two items: their normalised embeddings, whitened and discriminant
projections, name tokens and TF-IDF vectors, attribute sets, category codes, photos, and the tower vectors
of the stacked networks. Parsing, tokenising and running towers per request would cost far more than the
comparison. :class:`ItemStore` holds all of it in arrays for a set of catalogue rows (the whole catalogue
for ``match`` and ``serve``, the pairs' items for ``predict``), so a pair is a handful of gathers, dot
products and the booster. ``predict``, ``match`` and ``serve`` all score through it.

Every per-item value is computed so that it does not depend on which other items are stored with it
(float64 arithmetic rounded to float32 where BLAS is involved), and every per-pair operation works row by
row, so a pair gets the same probability from any store and in any batch.

A store can be saved next to a catalogue's nearest-neighbour index (``prodmatch index``) and loaded by
``prodmatch serve --index-dir`` memory-mapped, so a server starts without recomputing it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from prodmatch.errors import ModelError

__all__ = ["STORE_DIR", "ItemStore", "StackedTowers", "fingerprint"]

log = logging.getLogger(__name__)

STORE_DIR = "store"  # inside a `prodmatch index` directory
STORE_META = "store.json"
STORE_FORMAT = (
    2  # raised whenever what a store holds changes (2: the fuzzy group's word data), so an older store is refused
)
# A stacked score within this distance (relative to max(1, |score|)) of a split threshold of the booster is
# recomputed in float64: float32 heads move a score by about 1e-6 with the batch (measured up to 5.5e-6 on
# logits of magnitude 16), so a score further away than this lands on the same side of every split in any batch.
GUARD_BAND = 1e-4


@dataclass
class StackedTowers:
    """The stacked tower-and-head networks of a ``gbdt`` model over a set of items: every network's item
    vectors, stored, and their heads in numpy; the mean of their logits is the ``stack_*`` feature."""

    items: np.ndarray  # sorted catalogue rows
    vectors: np.ndarray  # (networks, len(items), d) float32
    nets: object = None  # NumpySiamese of the networks (not saved: rebuilt from the model)
    thresholds: np.ndarray | None = None  # sorted split thresholds of the booster on the stacked feature

    def logits(self, left: np.ndarray, right: np.ndarray, cosines: np.ndarray, flags_a, flags_b) -> np.ndarray:
        """(B,) float32 mean logit of the networks for catalogue rows ``left``/``right``.

        Computed in float32; the few scores that land within ``GUARD_BAND`` of a split threshold are
        recomputed in float64, so the booster sends every pair down the same branches in any batch.
        """
        la, lb = np.searchsorted(self.items, left), np.searchsorted(self.items, right)
        out = self.nets.heads(self.vectors[:, la], self.vectors[:, lb], cosines, flags_a, flags_b).mean(axis=0)
        if self.thresholds is not None and len(self.thresholds):
            near = near_split(out, self.thresholds)
            if near.any():
                a, b = la[near], lb[near]
                sub = (cosines[near], flags_a[near], flags_b[near])
                exact = self.nets.heads(self.vectors[:, a], self.vectors[:, b], *sub, dtype=np.float64)
                out[near] = exact.mean(axis=0)
        return out.astype(np.float32)


def near_split(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Whether each of ``x`` lies within the guard band of one of the sorted ``thresholds``."""
    pos = np.searchsorted(thresholds, x)
    below = thresholds[np.maximum(pos - 1, 0)]
    above = thresholds[np.minimum(pos, len(thresholds) - 1)]
    gap = np.minimum(np.abs(x - below), np.abs(above - x))
    return gap <= GUARD_BAND * np.maximum(1.0, np.abs(x))


@dataclass
class ItemStore:
    """Per-item arrays for the sorted catalogue rows ``items`` (see the module docstring).

    Attributes:
        items: the catalogue rows covered, sorted.
        side: the pair features' side data (``PairFeaturizer.side_data``).
        words: the word-pair model's item data (``WordPairScorer.item_data``), or None.
        towers: the stacked networks' item vectors (``StackedTowers``), or None.
        catalogue: the catalogue it was built from (identity decides whether it applies); not saved.
    """

    items: np.ndarray
    side: object
    words: object | None
    towers: StackedTowers | None
    catalogue: object = field(default=None, repr=False)

    def covers(self, catalogue, rows: np.ndarray) -> bool:
        """Whether this store was built from ``catalogue`` and holds every one of ``rows``."""
        if catalogue is not self.catalogue or not len(self.items):
            return False
        if len(self.items) == len(catalogue):
            return True
        pos = np.minimum(np.searchsorted(self.items, rows), len(self.items) - 1)
        return bool((self.items[pos] == rows).all())

    def nbytes(self) -> int:
        """Bytes held in arrays."""
        return sum(a.nbytes for a in _flatten(self._parts()).values())

    def _parts(self) -> dict:
        """What is saved: everything but the model's own parts (heads, thresholds), which the model re-attaches."""
        towers = None if self.towers is None else {"items": self.towers.items, "vectors": self.towers.vectors}
        return {"items": self.items, "side": self.side, "words": self.words, "towers": towers}

    # ------------------------------------------------------------------------------- persistence

    def save(self, directory: str | Path, fingerprint: dict) -> Path:
        """Write every array as its own ``.npy`` (memory-mappable), then ``store.json`` with the structure and the
        model and catalogue fingerprint a loader checks. ``directory`` must not exist (the caller stages it)."""
        directory = Path(directory)
        directory.mkdir(parents=True)
        manifest = {}
        for i, (key, value) in enumerate(sorted(_flatten(self._parts()).items())):
            name = f"a{i:04d}.npy"
            np.save(directory / name, np.ascontiguousarray(value), allow_pickle=False)
            manifest[key] = name
        meta = {
            "format": STORE_FORMAT,
            "fingerprint": fingerprint,
            "arrays": manifest,
            "structure": _structure(self._parts()),
        }
        (directory / STORE_META).write_text(json.dumps(meta) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, fingerprint: dict, catalogue) -> ItemStore:
        """Memory-map a saved store; ModelError when it was built for another model or catalogue."""
        directory = Path(directory)
        meta = json.loads((directory / STORE_META).read_text())
        if meta.get("format") != STORE_FORMAT or meta.get("fingerprint") != fingerprint:
            raise ModelError(
                f"{directory} holds an item-feature store of another model, catalogue or prodmatch version; "
                "rebuild the index (`prodmatch index RUN --data DATA --out DIR --overwrite`)"
            )
        # memory-mapped, as plain ndarray views: np.memmap's own indexing costs microseconds per call
        arrays = {
            k: np.load(directory / n, mmap_mode="r", allow_pickle=False).view(np.ndarray)
            for k, n in meta["arrays"].items()
        }
        parts = _unflatten(meta["structure"], arrays, "")
        if parts["towers"] is not None:
            parts["towers"] = StackedTowers(**parts["towers"])
        return cls(**parts, catalogue=catalogue)


def fingerprint(model, catalogue) -> dict:
    """What a saved store must match: the model's weight files and the catalogue's ids, in order."""
    import pandas as pd

    run = Path(model.run_dir_)
    config = json.loads((run / "config.json").read_text())
    weights = config.get("weights", {})
    names = sorted(weights.values()) if isinstance(weights, dict) else [weights]
    files = [run / "config.json", *(run / n for n in names)]
    files += [run / sub / "model.safetensors" for sub in config.get("stack", [])]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    ids = pd.util.hash_pandas_object(pd.Index(np.asarray(catalogue.ids)), index=False).to_numpy()
    return {"model": digest.hexdigest(), "items": len(catalogue), "ids": hashlib.sha256(ids.tobytes()).hexdigest()}


# ----------------------------------------------------------------------- flattening to named arrays


def _skipped(obj) -> bool:
    return obj is None


def _flatten(obj, prefix: str = "") -> dict[str, np.ndarray]:
    """Every array inside ``obj`` (dicts, lists, tuples, objects, CSR matrices), keyed by its path."""
    out: dict[str, np.ndarray] = {}
    if _skipped(obj):
        return out
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif sp.issparse(obj):
        out |= {f"{prefix}.data": obj.data, f"{prefix}.indices": obj.indices, f"{prefix}.indptr": obj.indptr}
        out[f"{prefix}.shape"] = np.asarray(obj.shape, dtype=np.int64)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out |= _flatten(v, f"{prefix}.{i}")
    elif not isinstance(obj, bool | int | float | str):
        for k, v in _state(obj).items():
            out |= _flatten(v, f"{prefix}.{k}")
    return out


def _state(obj) -> dict:
    if is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in fields(obj)}
    return dict(vars(obj))


def _structure(obj):
    """A JSON description of ``obj``'s nesting, for :func:`_unflatten`."""
    if _skipped(obj):
        return None
    if isinstance(obj, np.ndarray):
        return "array"
    if sp.issparse(obj):
        return "csr"
    if isinstance(obj, dict):
        return {"dict": {k: _structure(v) for k, v in obj.items()}}
    if isinstance(obj, list | tuple):
        return {"list" if isinstance(obj, list) else "tuple": [_structure(v) for v in obj]}
    if isinstance(obj, bool | int | float | str):
        return {"value": obj}
    kind = type(obj)
    return {
        "object": f"{kind.__module__}:{kind.__qualname__}",
        "state": {k: _structure(v) for k, v in _state(obj).items()},
    }


def _unflatten(structure, arrays: dict, prefix: str):
    if structure is None:
        return None
    if structure == "array":
        return arrays[prefix]
    if structure == "csr":
        shape = tuple(int(x) for x in arrays[f"{prefix}.shape"])
        parts = (arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"])
        return sp.csr_matrix(parts, shape=shape, copy=False)
    if "dict" in structure:
        return {k: _unflatten(v, arrays, f"{prefix}.{k}" if prefix else k) for k, v in structure["dict"].items()}
    for kind in ("list", "tuple"):
        if kind in structure:
            items = [_unflatten(v, arrays, f"{prefix}.{i}") for i, v in enumerate(structure[kind])]
            return items if kind == "list" else tuple(items)
    if "value" in structure:
        return structure["value"]
    module, _, name = structure["object"].partition(":")
    if not module.startswith("prodmatch."):  # only our own classes, never an arbitrary import
        raise ModelError(f"the saved item store names a class outside prodmatch ({structure['object']}); rebuild it")
    cls = getattr(importlib.import_module(module), name)
    obj = cls.__new__(cls)
    for k, v in structure["state"].items():
        setattr(obj, k, _unflatten(v, arrays, f"{prefix}.{k}"))
    return obj
