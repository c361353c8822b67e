"""What a prodmatch server answers from: a loaded model, its catalogue, item vectors and ANN index.

:class:`MatchService` is plain Python (no web framework): the HTTP app is a thin layer over it, and it
can be used directly, e.g. from a batch job or another web stack. Every method validates its input and
raises :class:`~prodmatch.errors.DataError` (bad input), :class:`~prodmatch.errors.UnknownIdsError`
(ids the catalogue lacks) or :class:`~prodmatch.errors.ModelError` (a request the model cannot serve).

An item is given either by its variant id or by its raw embeddings, ``{modality: vector}``: they are
normalised like the catalogue's, so an item scores the same whichever way it is given.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import plain
from prodmatch.catalogue import NORM_EPS, Catalogue
from prodmatch.errors import ConfigError, DataError, ModelError, UnknownIdsError
from prodmatch.evidence import mask_words
from prodmatch.explain import explain_pairs
from prodmatch.io import read_catalogue
from prodmatch.matching import (
    INDEX_FILE,
    INDEX_META_FILE,
    VECTORS_FILE,
    MatchConfig,
    build_index,
    check_index_items,
    feature_vectors,
    informative_items,
    item_vectors,
)
from prodmatch.models import load_model
from prodmatch.models.base import ONNX_FILE, FeatureScorer, ItemStoring, PairModel, Scores
from prodmatch.pairs import PairSet
from prodmatch.store import STORE_DIR, STORE_META, ItemStore, fingerprint

__all__ = ["RUNTIME_CHOICES", "MatchService", "Scored", "SimilarItem"]

log = logging.getLogger(__name__)

RUNTIME_CHOICES = ("auto", "onnx", "torch")
ItemRef = int | str | Mapping[str, Sequence[float]]  # a variant id, or raw embeddings by modality


@dataclass(frozen=True)
class SimilarItem:
    """One catalogue item found for a query."""

    variantid: int | str
    score: float  # calibrated probability that it is the query's product
    similarity: float  # cosine of the two item vectors: what the search ranked by
    label: int | None  # 1 when score reaches the model's threshold
    cluster_id: int | None  # its product cluster, when clusters were loaded
    evidence: str = ""  # what the two items had to compare (see prodmatch.evidence)


@dataclass(frozen=True)
class Scored:
    """Probabilities of pairs and each pair's evidence mask (see :mod:`prodmatch.evidence`); slices like an
    array, so the pairs of several requests scored together are handed back request by request."""

    probabilities: np.ndarray  # (B,) float64
    evidence: np.ndarray  # (B,) uint32

    def __len__(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, sl: slice) -> Scored:
        return Scored(self.probabilities[sl], self.evidence[sl])


class MatchService:
    """A model with its catalogue, loaded once, answering scoring and similarity queries.

    Build it with :meth:`load`. Thread-safe for concurrent queries: nothing is written after loading.
    """

    def __init__(
        self,
        model: PairModel,
        catalogue: Catalogue,
        *,
        vectors: np.ndarray,
        vector_kind: str,
        index,
        index_kind: str,
        clusters: np.ndarray | None = None,
        runtime: str = "torch",
        metrics: dict | None = None,
    ) -> None:
        self.model = model  # the pairs job's: /v1/score
        self.catalogue_model = model.for_job("catalogue")  # the catalogue job's: /v1/similar
        self.catalogue = catalogue
        self.vectors = vectors
        self.vector_kind = vector_kind
        self.index = index
        self.index_kind = index_kind
        self.clusters = clusters  # (N,) int64 cluster of each catalogue row, -1 where unknown
        self.runtime = runtime
        self.metrics = metrics or {}
        self.modalities = list(model.modalities_)
        self.width = sum(d for _, d in self.modalities)
        self.by_features = isinstance(model, FeatureScorer)  # networks: any item, raw or known
        self.features = catalogue.item_features([n for n, _ in self.modalities])
        self.searchable = informative_items(model, catalogue)  # items with any embedding: similar's answers
        self.started = time.time()
        self._mask_words: dict[int, str] = {}
        self._ids = catalogue.ids.to_numpy()

    # ------------------------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        data_dir: str | Path,
        *,
        index_dir: str | Path | None = None,
        clusters: str | Path | None = None,
        runtime: str = "auto",
        threads: int = 1,
        max_k: int = 100,
    ) -> MatchService:
        """Load a run directory, its catalogue, the item vectors and their index, and optional clusters.

        Args:
            run_dir: a trained run directory.
            data_dir: the catalogue to serve (the layout the model was trained on).
            index_dir: a saved index (``prodmatch index``); built here when None.
            clusters: ``clusters.parquet`` of a ``prodmatch match`` run, for cluster ids in answers.
            runtime: ``onnx`` (needs ``prodmatch export``), ``torch``, or ``auto``: onnx when exported.
            threads: compute threads per request (torch, ONNX Runtime, LightGBM, numpy's BLAS), set for the
                whole process once loading is done.
            max_k: the largest k a similarity query may ask (sets the HNSW search breadth).
        """
        import faiss
        import torch
        from threadpoolctl import threadpool_limits

        if runtime not in RUNTIME_CHOICES:
            raise ConfigError(f"runtime must be one of {list(RUNTIME_CHOICES)}, got {runtime!r}")
        t0 = time.perf_counter()
        run_dir = Path(run_dir)
        model = load_model(run_dir)
        runtime = _use_runtime(model, run_dir, runtime, threads)
        catalogue = read_catalogue(data_dir, model.data_config())
        _prepare(model, catalogue, None if index_dir is None else Path(index_dir))  # every core while loading
        torch.set_num_threads(threads)
        # numpy's BLAS too: its default, a thread per core spinning for work, fights the event loop and the
        # other requests for the same cores (measured: a batch of 8 pairs took 3x longer inside the server)
        threadpool_limits(threads)
        if index_dir is not None:
            index_dir = Path(index_dir)
            check_index_items(index_dir, catalogue, data_dir)
            index = faiss.read_index(str(index_dir / INDEX_FILE))
            vectors = np.load(index_dir / VECTORS_FILE)
            meta = json.loads((index_dir / INDEX_META_FILE).read_text())
            vector_kind, index_kind = meta["item_vectors"], meta["index"]
        else:
            config = MatchConfig()
            vectors, vector_kind = item_vectors(model, catalogue)
            index_kind = config.index_kind(len(catalogue))
            log.info("building a %s index over %d item vectors (%s)", index_kind, len(catalogue), vector_kind)
            index = build_index(vectors, index_kind, config)
        if isinstance(index, faiss.IndexHNSWFlat):
            index.hnsw.efSearch = max(index.hnsw.efSearch, 2 * max_k + 1)  # k, the query, a margin of k
        labels = _read_clusters(Path(clusters), catalogue) if clusters is not None else None
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        service = cls(
            model,
            catalogue,
            vectors=vectors,
            vector_kind=vector_kind,
            index=index,
            index_kind=index_kind,
            clusters=labels,
            runtime=runtime,
            metrics=metrics,
        )
        log.info(
            "serving %s (%s runtime) over %d items, loaded in %.1f s",
            model.name,
            runtime,
            len(catalogue),
            time.perf_counter() - t0,
        )
        return service

    # ------------------------------------------------------------------------------------ queries

    def score(self, left: Sequence[ItemRef], right: Sequence[ItemRef], *, job: str = "pairs") -> np.ndarray:
        """(B,) float64 calibrated probabilities that ``left[i]`` and ``right[i]`` are the same product, by the
        ``job``'s model: ``pairs`` (labelled-like pairs, as /v1/score) or ``catalogue`` (a catalogue's
        candidates, as /v1/similar and ``match``).

        Raises:
            UnknownIdsError: listing every id of the request the catalogue lacks.
            DataError: malformed embeddings.
            ModelError: raw embeddings given to a model that needs the items' side data (gbdt).
        """
        return self.scored(left, right, job=job).probabilities

    def scored(self, left: Sequence[ItemRef], right: Sequence[ItemRef], *, job: str = "pairs") -> Scored:
        """:meth:`score`, with each pair's evidence."""
        if job not in ("pairs", "catalogue"):
            raise DataError(f"unknown job {job!r}; use 'pairs' or 'catalogue'")
        model = self.catalogue_model if job == "catalogue" else self.model
        if len(left) != len(right):
            raise DataError(f"left has {len(left)} items but right has {len(right)}")
        if not len(left):
            return Scored(np.empty(0, dtype=np.float64), np.empty(0, dtype=np.uint32))
        rows = self._rows([x for pair in zip(left, right, strict=True) for x in pair])  # unknown ids in request order
        rows_left, rows_right = rows[0::2], rows[1::2]
        if self.by_features:
            fa = self._features_of(left, rows_left, "left")
            fb = self._features_of(right, rows_right, "right")
            return self._scored_features(model, fa, fb)
        self._require_ids(rows)
        return self._scored_rows(model, rows_left, rows_right)

    def explain(self, left: Sequence[ItemRef], right: Sequence[ItemRef]) -> list[dict]:
        """The explanation of each pair of variant ids (see :mod:`prodmatch.explain`), in order.

        Raises:
            UnknownIdsError: listing every id of the request the catalogue lacks.
        """
        return explain_pairs(self.model, self.catalogue, self._pairs(*self.catalogue_rows(left, right))).to_dicts()

    def catalogue_rows(self, left: Sequence[ItemRef], right: Sequence[ItemRef]) -> tuple[np.ndarray, np.ndarray]:
        """The catalogue rows of pairs given by variant id; UnknownIdsError listing every unknown one, DataError
        for embeddings (use :meth:`score`)."""
        if len(left) != len(right):
            raise DataError(f"left has {len(left)} items but right has {len(right)}")
        rows = self._rows([x for pair in zip(left, right, strict=True) for x in pair])
        if (rows < 0).any():
            raise DataError("catalogue_rows takes variant ids only; score raw embeddings with score()")
        return rows[0::2], rows[1::2]

    def score_rows(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(B,) float64 calibrated probabilities of pairs of catalogue rows (the pairs job's model)."""
        return self.scored_rows(left, right).probabilities

    def scored_rows(self, left: np.ndarray, right: np.ndarray) -> Scored:
        """:meth:`score_rows`, with each pair's evidence."""
        if self.by_features:
            return self._scored_features(self.model, self.features[left], self.features[right])
        return self._scored_rows(self.model, left, right)

    def evidence_words(self, mask: np.ndarray) -> list[str]:
        """The evidence masks of :meth:`scored` in words (``"name_bert_64+name"``, ``"none"``)."""
        known = self._mask_words  # a model has a handful of distinct masks: each is put in words once
        out = []
        for m in np.asarray(mask, dtype=np.int64).tolist():
            word = known.get(m)
            if word is None:
                word = known[m] = mask_words(m, self.model.evidence_names())
            out.append(word)
        return out

    @property
    def batch_invariant(self) -> bool:
        """Whether a pair's probability is the same whatever it is scored with, so that concurrent requests
        can be scored in one call without changing an answer (the item-feature store's guarantee)."""
        return bool(self.model.batch_invariant)

    def labels(self, probabilities: np.ndarray) -> np.ndarray | None:
        """0/1 decisions at the model's saved threshold, or None when the run saved no threshold choice."""
        return None if self.model.threshold_choice is None else self.model.predict_labels(probabilities)

    def similar(self, query: ItemRef, k: int) -> list[SimilarItem]:
        """The ``k`` catalogue items nearest the query in item-vector space, scored by the model, best first.

        An id query never returns the item itself.
        """
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}")
        [row] = self._rows([query])
        if row >= 0:
            qfeat = self.features[row : row + 1]
            qvec = self.vectors[row : row + 1]
        else:
            if not self.by_features:
                self._require_ids(np.array([row]))
            qfeat = self._embedding_features([query], "query", [0])
            qvec, _ = feature_vectors(self.model, qfeat)
        if not qfeat[0, self.width :].any():
            raise DataError(
                f"the query {plain(query) if row >= 0 else 'item'} has none of the model's embeddings (missing, or "
                f"every vector of norm <= {NORM_EPS}): there is nothing to compare it by"
            )
        # Items without any embedding are never answers; ask for enough extra neighbours to skip them.
        # Their item vectors are zero (see feature_vectors), so few of them come near any query.
        margin = min(int((~self.searchable).sum()), k)
        want = int(min(k + int(row >= 0) + margin, len(self.catalogue)))
        sims, nbrs = self.index.search(np.ascontiguousarray(qvec, dtype=np.float32), want)
        keep = (nbrs[0] >= 0) & (nbrs[0] != row)
        keep[keep] &= self.searchable[nbrs[0][keep]]
        found, sims = nbrs[0][keep][:k], sims[0][keep][:k]
        if not len(found):
            return []
        # the catalogue job's model: a query's neighbours are candidates, not labelled-like pairs
        model = self.catalogue_model
        if self.by_features:
            scored = self._scored_features(model, np.repeat(qfeat, len(found), 0), self.features[found])
        else:
            scored = self._scored_rows(model, np.full(len(found), row), found)
        score = scored.probabilities
        order = np.argsort(-score, kind="stable")
        labels = None if model.threshold_choice is None else model.predict_labels(score)
        words = self.evidence_words(scored.evidence)
        ids = self.catalogue.ids
        return [
            SimilarItem(
                variantid=plain(ids[found[i]]),
                score=float(score[i]),
                similarity=float(sims[i]),
                label=None if labels is None else int(labels[i]),
                cluster_id=None
                if self.clusters is None or self.clusters[found[i]] < 0
                else int(self.clusters[found[i]]),
                evidence=words[i],
            )
            for i in order
        ]

    def info(self) -> dict:
        """The model's metadata and evaluation metrics, and what the server holds."""
        m = self.model
        choice = m.threshold_choice
        return {
            "name": m.name,
            "params": {k: v for k, v in vars(m.params).items()},
            "symmetric": m.symmetric,
            "modalities": [{"name": n, "dim": d} for n, d in self.modalities],
            "threshold": m.threshold if choice is not None else None,
            "threshold_rule": None if choice is None else choice.to_dict(),
            "calibration": m.calibrator.method,
            "runtime": self.runtime,
            "accepts_embeddings": self.by_features,
            "catalogue": {
                "items": len(self.catalogue),
                "id_kind": self.catalogue.id_kind,
                "index": self.index_kind,
                "item_vectors": self.vector_kind,
                "vector_dim": int(self.vectors.shape[1]),
                "clusters": self.clusters is not None,
            },
            "metrics": {
                split: {k: v for k, v in self.metrics[split].items() if isinstance(v, int | float) or v is None}
                for split in ("valid", "test")
                if isinstance(self.metrics.get(split), dict)
            },
            "train_seconds": self.metrics.get("train_seconds"),
        }

    # -------------------------------------------------------------------------------------- helpers

    def _rows(self, items: Sequence[ItemRef]) -> np.ndarray:
        """Catalogue row of each id item (-2 for embedding items); raises listing every unknown id."""
        rows = np.full(len(items), -2, dtype=np.int64)
        at = [i for i, it in enumerate(items) if not isinstance(it, Mapping)]
        if not at:
            return rows
        ids = [items[i] for i in at]
        if self.catalogue.id_kind == "int" and all(type(x) is int for x in ids) and _int64(ids):
            found = self.catalogue.rows(np.array(ids, dtype=np.int64))  # a JSON request's plain ints: no per-id work
        elif self.catalogue.id_kind == "int":
            query = np.array([_as_int(x) for x in ids], dtype=object)
            ok = np.array([x is not None for x in query], dtype=bool)
            found = np.full(len(ids), -1, dtype=np.int64)
            if ok.any():
                found[ok] = self.catalogue.rows(query[ok].astype(np.int64))
        else:
            found = self.catalogue.rows(np.array([str(x) for x in ids], dtype=object))
        if (found < 0).any():
            unknown = list(dict.fromkeys(ids[i] for i in np.flatnonzero(found < 0)))
            raise UnknownIdsError(
                f"{len(unknown)} variant id(s) are not in the served catalogue of {len(self.catalogue)} items: "
                f"{unknown[:20]}{' ...' if len(unknown) > 20 else ''}",
                unknown,
            )
        rows[at] = found
        return rows

    def _require_ids(self, rows: np.ndarray) -> None:
        if (rows < 0).any():
            raise ModelError(
                f"the {self.model.name} model cannot score raw embeddings: its features need the items' names, "
                "attributes, categories and photos. Give catalogue variant ids, or serve a network model "
                "(siamese, item-mlp, concat-mlp)"
            )

    def _scored_rows(self, model: PairModel, left: np.ndarray, right: np.ndarray) -> Scored:
        scores = model.score(self.catalogue, self._pairs(left, right))
        return Scored(model.calibrated(scores), scores.evidence)

    def _scored_features(self, model: PairModel, fa: np.ndarray, fb: np.ndarray) -> Scored:
        """A network's pairs of item-feature rows: the presence flags (the last columns) say which modalities
        both items have."""
        k = len(self.modalities)
        both = (fa[:, -k:] > 0) & (fb[:, -k:] > 0)  # (B, k)
        evidence = (both.astype(np.uint32) << np.arange(k, dtype=np.uint32)).sum(axis=1).astype(np.uint32)
        scores = Scores(model.logits_from_features(fa, fb), evidence)
        return Scored(model.calibrated(scores), evidence)

    def _pairs(self, left: np.ndarray, right: np.ndarray):
        """An unlabelled PairSet of catalogue rows, in order."""
        ids = self._ids
        return PairSet(left.astype(np.int32), right.astype(np.int32), None, np.arange(len(left)), ids[left], ids[right])

    def _features_of(self, items: Sequence[ItemRef], rows: np.ndarray, side: str) -> np.ndarray:
        out = np.empty((len(items), self.features.shape[1]), dtype=np.float32)
        known = rows >= 0
        out[known] = self.features[rows[known]]
        raw = np.flatnonzero(~known)
        if len(raw):
            out[raw] = self._embedding_features([items[i] for i in raw], side, raw)
        return out

    def _embedding_features(self, items: list, side: str, positions) -> np.ndarray:
        """Item-feature rows of raw embeddings: each modality normalised as the item files are, flagged present."""
        names = {n for n, _ in self.modalities}
        out = np.zeros((len(items), self.features.shape[1]), dtype=np.float32)
        for item, pos in zip(items, positions, strict=True):
            unknown = sorted(set(item) - names)
            if unknown:
                raise DataError(f"{side} item {pos}: unknown modalities {unknown}; this model uses {sorted(names)}")
            if not any(item.get(n) is not None for n in names):
                raise DataError(f"{side} item {pos}: give at least one of the modalities {sorted(names)}")
        col = 0
        for j, (name, dim) in enumerate(self.modalities):
            at = [i for i, item in enumerate(items) if item.get(name) is not None]
            if at:
                for i in at:
                    if len(items[i][name]) != dim:
                        raise DataError(
                            f"{side} item {positions[i]}: {name} has {len(items[i][name])} values; the model expects {dim}"
                        )
                x = np.array([items[i][name] for i in at], dtype=np.float64)
                bad = ~np.isfinite(x).all(axis=1)
                if bad.any():
                    raise DataError(
                        f"{side} item {positions[at[int(np.flatnonzero(bad)[0])]]}: {name} holds NaN or inf"
                    )
                # The catalogue's rule: divide by the norm; a vector whose norm is at most NORM_EPS carries
                # no information and counts as absent (zeros, flag 0), as in the item files. Scaled by the
                # largest value first, so huge values cannot overflow.
                scale = np.abs(x).max(axis=1, keepdims=True)
                unit = x / np.maximum(scale, np.finfo(np.float64).tiny)
                unit_norm = np.linalg.norm(unit, axis=1, keepdims=True)
                with np.errstate(over="ignore"):
                    informative = (unit_norm * scale > NORM_EPS)[:, 0]
                x = np.where(informative[:, None], unit / np.maximum(unit_norm, 1e-300), 0.0)
                out[at, col : col + dim] = x
                out[at, self.width + j] = informative
            col += dim
        return out


def _prepare(model: PairModel, catalogue: Catalogue, index_dir: Path | None) -> None:
    """Compute (or load from ``index_dir``) what the model needs of every item, once, before any request."""
    if not isinstance(model, ItemStoring):
        model.prepare(catalogue)
        return
    saved = None if index_dir is None else index_dir / STORE_DIR
    if saved is not None and (saved / STORE_META).exists():
        t0 = time.perf_counter()
        try:
            store = ItemStore.load(saved, fingerprint(model, catalogue), catalogue)
        except ModelError as e:
            log.warning("%s; computing the item-feature store now instead", e)
        else:
            model.prepare(catalogue, store=store)
            log.info("item-feature store loaded from %s in %.1fs (memory-mapped)", saved, time.perf_counter() - t0)
            return
    elif index_dir is not None:
        log.info("%s holds no item-feature store (an index saved before it existed): computing it now", index_dir)
    model.prepare(catalogue)


def _use_runtime(model: PairModel, run_dir: Path, runtime: str, threads: int) -> str:
    """Switch ``model`` to ``runtime``; ``auto`` tries ONNX Runtime (the export's own checks decide) and
    falls back to torch, saying why. Returns the runtime in use."""
    if model.batch_invariant:  # gbdt over siamese networks: scored from the store, in numpy
        if runtime == "onnx":
            log.info(
                "%s scores its stacked networks from the item-feature store: --runtime onnx does not apply", model.name
            )
        model.use_runtime("torch", threads)
        return "store"
    if runtime != "auto":
        model.use_runtime(runtime, threads)
        return runtime
    networks = [Path(m.run_dir_) for m in model.sub_models()]
    if not networks and model.onnx_graph is None:
        return "torch"  # nothing a network scores: the runtime does not apply
    if not any((d / ONNX_FILE).exists() for d in networks or [run_dir]):
        log.info("%s is not exported: scoring with torch (`prodmatch export %s` for ONNX Runtime)", run_dir, run_dir)
        return "torch"
    try:
        model.use_runtime("onnx", threads)
        return "onnx"
    except (ModelError, ImportError) as e:  # a stale or partial export, or no onnxruntime
        log.warning("scoring with torch, not ONNX Runtime: %s", e)
        model.use_runtime("torch", threads)
        return "torch"


def _read_clusters(path: Path, catalogue: Catalogue) -> np.ndarray:
    if not path.exists():
        raise ConfigError(f"--clusters {path} does not exist; give the clusters.parquet of a `prodmatch match` run")
    frame = pd.read_parquet(path)
    missing = {"variantid", "cluster_id"} - set(frame.columns)
    if missing:
        raise DataError(f"{path} lacks columns {sorted(missing)}; give the clusters.parquet of a `prodmatch match` run")
    labels = frame.set_index("variantid")["cluster_id"].reindex(catalogue.ids)
    absent = int(labels.isna().sum())
    if absent:
        log.warning(
            "%s has no cluster for %d of %d catalogue items; they answer cluster_id null", path, absent, len(catalogue)
        )
    return labels.fillna(-1).to_numpy(dtype=np.int64)


def _int64(ids: list[int]) -> bool:
    """Whether every one of these ints fits int64."""
    return min(ids) >= -(2**63) and max(ids) < 2**63


def _as_int(x) -> int | None:
    """An int id, or a string holding one; None for anything else (an unknown id of an int catalogue)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x if -(2**63) <= x < 2**63 else None
    try:
        value = int(str(x).strip())
    except ValueError:
        return None
    return value if -(2**63) <= value < 2**63 else None
