"""A review: a matched catalogue, its model, the queues of pairs worth a person's look, and their labels.

The pool is ``match``'s output (the pairs it kept, at or above its threshold) and, below the threshold, each
of a sample of items' nearest neighbours scored by the same model, re-calibrated to the candidates' prior as
``match`` does (its ``summary.json``), so both sides of the threshold are in it. Three queues draw from it:

- ``uncertain`` (the default): the pairs closest to the threshold in log-odds, where a label changes the
  most decisions (uncertainty sampling);
- ``diverse``: the same order, taking one pair per cluster in turn, so a few large clusters cannot fill it;
- ``audit``: a random sample of the kept pairs, in a fixed seeded order; its labels estimate the precision of
  the matches without bias (Wilson interval), written to ``review.json`` beside the labels.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import plain, write_json
from prodmatch.attributes import parse_attributes
from prodmatch.calibration import shift_prior
from prodmatch.catalogue import Catalogue
from prodmatch.config import DataConfig
from prodmatch.errors import DataError
from prodmatch.io import read_catalogue
from prodmatch.review.labels import LabelBook
from prodmatch.serving import MatchService

__all__ = ["QUEUES", "Review", "uncertainty"]

log = logging.getLogger(__name__)

QUEUES = ("uncertain", "diverse", "audit")
POOL_ITEMS = 5_000  # items whose neighbours below the threshold join the pool
POOL_K = 10


class Review:
    """Everything the review page reads and writes (plain Python; the web app is a thin layer over it)."""

    def __init__(
        self,
        service: MatchService,
        display: Catalogue,
        matches: pd.DataFrame,
        clusters: pd.Series,
        threshold: float,
        pool: pd.DataFrame,
        labels: LabelBook,
        reviewer: str,
        seed: int = 0,
    ) -> None:
        self.service, self.display, self.matches, self.clusters = service, display, matches, clusters
        self.threshold, self.pool, self.labels, self.reviewer = threshold, pool, labels, reviewer
        self.rng_seed = seed
        self.skipped: set[tuple] = set()  # skipped in this session only: a skip is not a label
        self.queues = {name: _order(pool, name, clusters, seed, threshold) for name in QUEUES}

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        data_dir: str | Path,
        matches_dir: str | Path,
        labels: str | Path,
        *,
        reviewer: str = "reviewer",
        pool_items: int = POOL_ITEMS,
        seed: int = 0,
    ) -> Review:
        """Load the run, the catalogue and ``match``'s outputs; check the labels file (see :meth:`LabelBook.open`)
        before anything slow, so a bad path fails at once."""
        matches_dir = Path(matches_dir)
        for name in ("matches.parquet", "clusters.parquet", "summary.json"):
            if not (matches_dir / name).exists():
                raise DataError(
                    f"{matches_dir / name} not found: --matches takes the output folder of `prodmatch match`"
                )
        display = read_catalogue(data_dir, DataConfig(load_names=True, load_attributes=True))
        book = LabelBook.open(labels, pd.Index(display.ids))
        summary = json.loads((matches_dir / "summary.json").read_text())
        threshold = float(summary["parameters"]["threshold"])
        matches = pd.read_parquet(matches_dir / "matches.parquet")
        frame = pd.read_parquet(matches_dir / "clusters.parquet")
        clusters = frame.set_index("variantid")["cluster_id"]
        service = MatchService.load(run_dir, data_dir)
        pool = _pool(service, matches, threshold, summary.get("calibration") or {}, pool_items, seed)
        log.info("review: %d pairs in the pool (%d kept by match), threshold %.3f", len(pool), len(matches), threshold)
        return cls(service, display, matches, clusters, threshold, pool, book, reviewer, seed)

    # ------------------------------------------------------------------------------------------- the queue

    def next_pair(self, queue: str = "uncertain") -> dict | None:
        """The first pair of ``queue`` nobody has labelled, with everything the page shows; None at the end."""
        if queue not in QUEUES:
            raise DataError(f"unknown queue {queue!r}; use one of {list(QUEUES)}")
        seen = self.labels.seen() | self.skipped
        order = self.queues[queue]
        for i in order:
            a, b = self.pool.variantid1.iat[i], self.pool.variantid2.iat[i]
            if (a, b) not in seen:
                return self.pair(a, b, queue)
        return None

    def pair(self, a, b, queue: str = "uncertain") -> dict:
        """Both items (name, categories, attributes, with the values they differ on marked), the probability, the
        explanation and each item's cluster."""
        [explanation] = self.service.explain([a], [b])
        left, right = self.item(a), self.item(b)
        keys = sorted(set(left["attributes"]) | set(right["attributes"]))
        differs = [k for k in keys if left["attributes"].get(k) != right["attributes"].get(k)]
        left["differs"], right["differs"] = differs, differs
        in_pool = self.pool[(self.pool.variantid1 == a) & (self.pool.variantid2 == b)]
        score = float(in_pool.score.iat[0]) if len(in_pool) else float(explanation["score"])
        return {
            "queue": queue,
            "variantid1": plain(a),
            "variantid2": plain(b),
            "score": score,
            "threshold": self.threshold,
            "matched": score >= self.threshold,
            "explanation": explanation,
            "left": left,
            "right": right,
            "progress": self.progress(),
        }

    def item(self, variantid) -> dict:
        """One item as the page shows it."""
        row = int(self.display.rows([variantid])[0])
        names = self.display.names
        attrs = self.display.attributes
        categories = self.display.categories
        parsed = {} if attrs is None else _values(parse_attributes(self.display, np.array([row]))[0])
        return {
            "variantid": plain(variantid),
            "name": None if names is None else _text(names[row]),
            "categories": []
            if categories is None
            else [str(categories[c].iat[row]) for c in categories.columns if pd.notna(categories[c].iat[row])],
            "attributes": parsed,
            "differs": [],
            "cluster": plain(self.clusters.get(variantid)) if variantid in self.clusters.index else None,
        }

    # ------------------------------------------------------------------------------------------- labels

    def label(self, a, b, label: str, queue: str) -> dict:
        """Record a person's label of the pair (a, b); returns the progress."""
        self.labels.add([(a, b)], label, queue, self.reviewer)
        if queue == "audit":
            self._write_audit()
        return self.progress()

    def skip(self, a, b) -> None:
        """Pass over a pair for the rest of this session without labelling it."""
        self.skipped.add((a, b))

    def undo(self) -> dict | None:
        """Take back the last decision."""
        taken = self.labels.undo()
        self._write_audit()
        return taken

    def cluster(self, cluster_id: int) -> dict:
        """A cluster's members and the weakest kept pair inside it (the link most likely to have joined two
        products)."""
        members = self.clusters.index[self.clusters.to_numpy() == cluster_id].tolist()
        if not members:
            raise DataError(f"no cluster {cluster_id} in the match's clusters.parquet")
        inside = self.matches[self.matches.variantid1.isin(members) & self.matches.variantid2.isin(members)]
        weakest = None
        if len(inside):
            w = inside.loc[inside.score.idxmin()]
            weakest = {"variantid1": plain(w.variantid1), "variantid2": plain(w.variantid2), "score": float(w.score)}
        return {"cluster": int(cluster_id), "members": [self.item(m) for m in members], "weakest": weakest}

    def split(self, cluster_id: int, variantid) -> dict:
        """Split ``variantid`` out of its cluster: a negative label against every other member (one decision)."""
        members = self.clusters.index[self.clusters.to_numpy() == cluster_id].tolist()
        if variantid not in members:
            raise DataError(f"{variantid} is not a member of cluster {cluster_id}")
        others = [m for m in members if m != variantid]
        if others:
            self.labels.add([(variantid, m) for m in others], "no", "split", self.reviewer)
        return {"labelled": len(others), "progress": self.progress()}

    def audit(self) -> dict:
        """The precision of the kept pairs estimated from the audit queue's decided labels: the share labelled
        a match, with a 95 % Wilson interval (None before the first decided audit label)."""
        f = self.labels.frame
        decided = f[(f.queue == "audit") & f.target.notna()]
        n, k = len(decided), int((decided.target == 1).sum()) if len(decided) else 0
        if not n:
            return {"labelled": 0, "precision": None, "low": None, "high": None}
        low, high = _wilson(k, n)
        return {"labelled": n, "precision": k / n, "low": low, "high": high}

    def progress(self) -> dict:
        f = self.labels.frame
        return {
            "labels": len(f),
            "matches": int((f.target == 1).sum()),
            "non_matches": int((f.target == 0).sum()),
            "unsure": int(f.target.isna().sum()),
            "pool": len(self.pool),
            "audit": self.audit(),
        }

    def _write_audit(self) -> None:
        write_json(
            {"labels": str(self.labels.path), "threshold": self.threshold, "audit": self.audit()},
            self.labels.path.with_name("review.json"),
        )


def _pool(
    service: MatchService, matches: pd.DataFrame, threshold: float, calibration: dict, items: int, seed: int
) -> pd.DataFrame:
    """The kept pairs, and the sampled items' neighbours below the threshold, scored as ``match`` scores them."""
    rng = np.random.default_rng(seed)
    n = len(service.catalogue)
    rows = np.sort(rng.choice(n, min(items, n), replace=False))
    rows = rows[service.searchable[rows]]
    k = min(POOL_K + 1, n)
    _, nbrs = service.index.search(np.ascontiguousarray(service.vectors[rows], dtype=np.float32), k)
    left = np.repeat(rows, k)
    right = nbrs.ravel()
    ok = (right >= 0) & (right != left)
    left, right = np.minimum(left[ok], right[ok]), np.maximum(left[ok], right[ok])
    pairs = np.unique(np.stack([left, right], axis=1), axis=0)
    ids = service.catalogue.ids.to_numpy()
    prob = service.score(ids[pairs[:, 0]].tolist(), ids[pairs[:, 1]].tolist(), job="catalogue")
    if calibration.get("method", "none") != "none" and calibration.get("prior") and calibration.get("training_prior"):
        prob = shift_prior(prob, calibration["training_prior"], calibration["prior"])
    below = pd.DataFrame({"variantid1": ids[pairs[:, 0]], "variantid2": ids[pairs[:, 1]], "score": prob})
    below = below[below.score < threshold]
    kept = matches[["variantid1", "variantid2", "score"]].assign(kept=True)
    return pd.concat([kept, below.assign(kept=False)], ignore_index=True)


def uncertainty(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Each probability's distance from the threshold in log-odds: the uncertain queue offers the smallest
    first (``bench/bench_active.py`` ranks its pool with it too)."""
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-9, 1 - 1e-9)
    t = min(max(threshold, 1e-9), 1 - 1e-9)
    return np.abs(np.log(p / (1 - p)) - math.log(t / (1 - t)))


def _order(pool: pd.DataFrame, queue: str, clusters: pd.Series, seed: int, threshold: float) -> np.ndarray:
    """The pool's positions in the order ``queue`` offers them."""
    if queue == "audit":
        kept = np.flatnonzero(pool.kept.to_numpy())
        return np.random.default_rng(seed).permutation(kept)
    order = np.argsort(uncertainty(pool.score.to_numpy(), threshold), kind="stable")
    if queue == "uncertain":
        return order
    cluster = pool.variantid1.map(clusters).fillna(-1).to_numpy()[order]
    rank = pd.Series(cluster).groupby(cluster).cumcount().to_numpy()  # the pair's turn within its cluster
    return order[np.lexsort((np.arange(len(order)), rank))]


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _values(mapping: dict | None) -> dict:
    """An item's attribute mapping as the page shows it: each key's values joined by commas."""
    if not mapping:
        return {}
    return {str(k): ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in mapping.items()}


def _text(x) -> str | None:
    return x if isinstance(x, str) else None
