"""The features a ``gbdt`` model scores: computed per chunk of pairs, from the item-feature store a server keeps
(:mod:`prodmatch.store`), or taken from the memo of the pairs training just featurised."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from prodmatch.catalogue import Catalogue
from prodmatch.config import INFERENCE_BATCH
from prodmatch.evidence import side_bit
from prodmatch.pairs import PairSet
from prodmatch.store import ItemStore, StackedTowers, near_split

log = logging.getLogger(__name__)


@dataclass
class FeatureMemo:
    """Feature rows of pairs fitting computed, found again by the ordered pair of rows of the same catalogue."""

    catalogue: Catalogue
    keys: np.ndarray  # sorted left * n + right
    order: np.ndarray  # row of x for each key
    x: np.ndarray

    @classmethod
    def of(cls, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, x: np.ndarray) -> FeatureMemo:
        n = len(catalogue)
        keys = left.astype(np.int64) * n + right.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        return cls(catalogue, keys[order], order, x)

    def find(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> np.ndarray | None:
        """Rows of ``x`` for every pair, or None unless all of them are kept (for this very catalogue)."""
        if catalogue is not self.catalogue or not len(self.keys) or not len(left):
            return None
        n = len(catalogue)
        keys = np.asarray(left).astype(np.int64) * n + np.asarray(right).astype(np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        if not (self.keys[pos] == keys).all():
            return None
        return self.order[pos]


class PairFeatures:
    """How a gbdt model computes the features of pairs: in chunks, from its item-feature store, or memoised (mixed
    into :class:`GBDTModel`)."""

    def _pair_features(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, chunk: int = 1 << 18):
        """(M, F) features of pairs through the item-feature store: fitting's own when it covers them, else one
        per chunk of pairs (memory bounded by the chunk's items, not the catalogue's)."""
        out = np.empty((len(left), len(self.feature_names_)), dtype=np.float32)
        for s in range(0, len(left), chunk):
            sl = slice(s, s + chunk)
            store = self._store_for(catalogue, left[sl], right[sl])
            out[sl] = self._features(catalogue, store, left[sl], right[sl])
        return out

    def release_store(self) -> None:
        """Drop the item-feature store fitting kept (or ``prepare`` built), and the features of the validation
        pairs it kept, freeing their memory."""
        self.store_ = None
        self._memo = None

    def item_store(self, catalogue: Catalogue, items: np.ndarray | None = None, side: object = None) -> ItemStore:
        """Everything scoring needs that depends on one item only, for the sorted catalogue rows ``items``
        (all by default): see :mod:`prodmatch.store`. ``side``: their pair-feature side data, if already built."""
        t0 = time.perf_counter()
        items = np.arange(len(catalogue)) if items is None else np.asarray(items)
        side = self.featurizer_.side_data(catalogue, items) if side is None else side
        words = None
        if self.word_scorer_ is not None and catalogue.names is not None:
            words = self.word_scorer_.item_data(catalogue, items)
        towers = None
        if self._stack_towers():
            features = catalogue.item_features([n for n, _ in self.modalities_])
            nets = self._numpy_stack()
            vectors = np.empty((len(nets), len(items), self.stack_models_[0].params.item_dim), dtype=np.float32)
            for s in range(0, len(items), 8192):
                vectors[:, s : s + 8192] = nets.towers(features[items[s : s + 8192]])
            towers = StackedTowers(items, vectors)
        store = self.use_store(ItemStore(items, side, words, towers, catalogue=catalogue))
        log.info(
            "gbdt: item-feature store of %d items (%.0f MB) in %.1fs",
            len(items),
            store.nbytes() / 2**20,
            time.perf_counter() - t0,
        )
        return store

    def use_store(self, store: ItemStore) -> ItemStore:
        """Attach what a store does not save (the networks' heads, the booster's thresholds) and return it."""
        if store.towers is not None:
            store.towers.nets = self._numpy_stack()
            store.towers.thresholds = self._split_thresholds(f"stack_{self.params.stack}")
        return store

    def _split_thresholds(self, feature: str) -> np.ndarray | None:
        """Sorted thresholds of every split, on ``feature``, of the used trees of both jobs' boosters; None
        before boosting."""
        if getattr(self, "booster_", None) is None or feature not in self.feature_names_:
            return None
        j = self.feature_names_.index(feature)
        found: list[float] = []

        def walk(node: dict) -> None:
            if "split_feature" in node:
                if node["split_feature"] == j:
                    found.append(float(node["threshold"]))
                walk(node["left_child"])
                walk(node["right_child"])

        boosters = [(self.booster_, self.best_iteration_)]
        if getattr(self, "catalogue_booster_", None) is not None:
            boosters.append((self.catalogue_booster_, self.catalogue_iteration_))
        for booster, iteration in boosters:
            for tree in booster.dump_model(num_iteration=iteration)["tree_info"]:
                walk(tree["tree_structure"])
        return np.unique(np.asarray(found, dtype=np.float64))

    def _store_for(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> ItemStore:
        """The prepared store when it covers these pairs, else one for just their items."""
        store = getattr(self, "store_", None)
        rows = np.union1d(left, right)
        if store is not None and store.covers(catalogue, rows):
            return store
        return self.item_store(catalogue, rows)

    def _features(self, catalogue: Catalogue, store: ItemStore, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(B, F) float32: the pair features, then the stacked scores, from the item-feature store."""
        x, names = self.featurizer_.transform(catalogue, left, right, side=store.side)
        cols = [x]
        if self.stack_models_:
            if store.towers is not None:
                cols.append(self._stack_column(catalogue, store, left, right, x, names))
            else:  # networks without a tower: scored whole, by their own runtime
                pairs = PairSet(left, right, None, np.arange(len(left)), None, None)
                cols.append(np.mean([m.predict_logits(catalogue, pairs) for m in self.stack_models_], axis=0))
        if self.word_scorer_ is not None:
            cols.append(self.word_scorer_.logits(catalogue, left, right, items=store.words))
        if self.text_models_:
            pairs = PairSet(left, right, None, np.arange(len(left)), None, None)
            for models in self.text_models_.values():
                cols.append(np.mean([m.predict_logits(catalogue, pairs) for m in models], axis=0))
        return np.column_stack(cols) if len(cols) > 1 else x

    def evidence_of_features(self, x: np.ndarray) -> np.ndarray:
        """(B,) uint32 evidence masks of feature rows ``x``: an embedding both items have (its cosine is defined),
        a picture on both (the photos' cosines are), a name word both hold, an attribute value both hold."""
        mask = np.zeros(len(x), dtype=np.uint32)
        with np.errstate(invalid="ignore"):
            for column, defined, position in self._evidence_columns():
                cond = ~np.isnan(x[:, column]) if defined else x[:, column] > 0
                mask |= cond.astype(np.uint32) * position
        return mask

    def _evidence_columns(self) -> list[tuple[int, bool, np.uint32]]:
        """(feature column, whether defined is enough (else it must be > 0), evidence bit) of every feature the
        evidence reads; worked out once per list of feature names, not per call (a served pair's call)."""
        cached = getattr(self, "_evidence_plan", None)
        if cached is not None and cached[0] is self.feature_names_:
            return cached[1]
        index = {n: i for i, n in enumerate(self.feature_names_)}
        mods = [n for n, _ in self.modalities_]
        plan = [(index[f"{n}.cos"], True, np.uint32(1 << j)) for j, n in enumerate(mods) if f"{n}.cos" in index]
        if "pics_max" in index:
            plan.append((index["pics_max"], True, side_bit(mods, "pictures")))
        for column in ("name_token_jaccard", "name_word_tfidf_cos"):
            if column in index:
                plan.append((index[column], False, side_bit(mods, "name")))
        for column in ("attr_kv_jaccard", "brand_equal", "colour_equal"):
            if column in index:
                plan.append((index[column], False, side_bit(mods, "attributes")))
        self._evidence_plan = (self.feature_names_, plan)
        return plan

    def feature_batches(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH):
        """Yields (slice of ``pairs``, that batch's (B, F) float32 features in the order of ``feature_names_``),
        through the item-feature store (see :meth:`predict_logits`)."""
        self._check_fitted()
        self._check_catalogue(catalogue)
        memo = getattr(self, "_memo", None)
        rows = None if memo is None else memo.find(catalogue, pairs.left, pairs.right)
        if rows is not None:  # fitting featurized these pairs already
            x = self._from_memo(catalogue, memo.x[rows], pairs.left, pairs.right)  # one store for the few near a split
            for start in range(0, len(pairs), batch_size):
                sl = slice(start, start + batch_size)
                yield sl, x[sl]
            return
        store = self._store_for(catalogue, pairs.left, pairs.right)
        for start in range(0, len(pairs), batch_size):
            sl = slice(start, start + batch_size)
            yield sl, self._features(catalogue, store, pairs.left[sl], pairs.right[sl])

    def _from_memo(self, catalogue: Catalogue, x: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Kept feature rows, with the stacked score recomputed where it lies near one of the boosters' split
        thresholds (fitting computed it before the boosters existed): the rows the scoring path itself gives."""
        if not self.stack_models_:
            return x
        feature = f"stack_{self.params.stack}"
        thresholds = self._split_thresholds(feature)  # once per call: the rows come in whole, not per batch
        if thresholds is None or not len(thresholds):
            return x
        near = near_split(x[:, self.feature_names_.index(feature)], thresholds)
        if near.any():
            store = self._store_for(catalogue, left[near], right[near])
            x[near] = self._features(catalogue, store, left[near], right[near])
        return x
