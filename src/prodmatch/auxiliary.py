"""Auxiliary training pairs, and the weights that let them earn their place job by job.

The labelled pairs are the only pairs whose labels someone gave. Training may add others: negatives mined
from the catalogue (:mod:`prodmatch.mining`), positives implied by chains of labelled ones
(``--augment transitive``). They are drawn unlike the labelled pairs, and what helps one job can hurt the
other: mined nearest neighbours teach the catalogue job its hard non-matches, and on data whose labelled
non-matches are easy they push down the whole high-similarity region where the labelled matches lie too.

So auxiliary pairs never enter a model by default at a fixed weight. A model is fitted once per candidate
weighting (:func:`weight_candidates`: the labelled pairs alone first, then each source at each weight of the
grid), and each job keeps the candidate that scores best on its own validation pairs
(:func:`choose`): the ``pairs`` job on the labelled validation pairs, the ``catalogue`` job on the
validation items' candidates (the labelled validation pairs and the negatives mined for the validation
items). Weight 0 is a valid answer. What was tried and what was kept is logged and returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from prodmatch.pairs import PairSet

__all__ = [
    "AUX_SOURCES",
    "MEASURED_ON",
    "ONE_SE_JOBS",
    "AuxPairs",
    "Candidate",
    "choose",
    "describe_weights",
    "selection_record",
    "weight_candidates",
]

log = logging.getLogger(__name__)

AUX_SOURCES = ("mined", "transitive")
# What each job's weighting is chosen on.
MEASURED_ON = {
    "pairs": "the labelled validation pairs",
    "catalogue": "the validation candidates: labelled validation pairs and the validation items' mined neighbours",
}


@dataclass
class AuxPairs:
    """Training pairs the labels did not give, each tagged with its source (one of :data:`AUX_SOURCES`)."""

    pairs: PairSet
    source: np.ndarray  # (M,) int8: index into AUX_SOURCES

    def __len__(self) -> int:
        return len(self.pairs)

    @classmethod
    def of(cls, **by_source: PairSet | None) -> AuxPairs | None:
        """The auxiliary pairs of each named source (None or empty ones left out); None when there are none."""
        parts = [(AUX_SOURCES.index(k), p) for k, p in by_source.items() if p is not None and len(p)]
        if not parts:
            return None
        pairs = parts[0][1]
        for _, p in parts[1:]:
            pairs = pairs.concat(p)
        source = np.concatenate([np.full(len(p), i, dtype=np.int8) for i, p in parts])
        return cls(pairs, source)

    @property
    def sources(self) -> list[str]:
        """The sources present, in :data:`AUX_SOURCES` order."""
        return [AUX_SOURCES[i] for i in np.unique(self.source)]

    def counts(self) -> dict[str, int]:
        return {AUX_SOURCES[i]: int((self.source == i).sum()) for i in np.unique(self.source)}

    def sample_weight(self, weights: dict[str, float]) -> np.ndarray:
        """(M,) float32: each pair's weight under ``weights`` (source -> weight; a source left out weighs 0)."""
        table = np.array([float(weights.get(s, 0.0)) for s in AUX_SOURCES], dtype=np.float32)
        return table[self.source]

    def subset(self, weights: dict[str, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the pairs a model trains on under ``weights``, and their weights. A weight below 1 is
        taken as that share of the source's pairs, drawn at random, at weight 1: the same expected loss, on
        fewer rows (a booster's or a network's time grows with its rows)."""
        w = self.sample_weight(weights)
        draw = np.random.default_rng(seed).random(len(w))
        thin = (w > 0) & (w < 1)
        keep = np.flatnonzero((w >= 1) | (thin & (draw < w)))
        return keep, np.where(thin[keep], 1.0, w[keep]).astype(np.float32)


def weight_candidates(aux: AuxPairs | None, grid: Sequence[float]) -> list[dict[str, float]]:
    """The weightings to fit: the labelled pairs alone (every source at 0), then each source alone at each
    non-zero weight of ``grid``. Sources are tried one at a time (a grid over their product grows too fast);
    :func:`choose` fits the combination of each job's best weights when it involves several sources."""
    out: list[dict[str, float]] = [{}]
    if aux is None:
        return out
    for source in aux.sources:
        out += [{source: float(w)} for w in sorted(set(grid)) if w > 0]
    return out


@dataclass
class Candidate:
    """One fitted weighting and how each job scored it (higher is better)."""

    weights: dict[str, float]
    scores: dict[str, float]  # job -> validation metric, higher is better
    fitted: object = field(default=None, repr=False)  # the model's own state (a booster, network weights)
    detail: dict[str, dict] = field(default_factory=dict)  # job -> extra facts (best iteration or epoch)
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # job -> validation scores


# Resamples of the validation pairs that measure a job's metric's noise (the one-standard-error rule).
BOOTSTRAP_ROUNDS = 100

# The jobs that keep an auxiliary source only when it beats the labelled pairs alone by more than the noise
# of the measurement (the one-standard-error rule). The pairs job scores pairs drawn like the labelled ones,
# and auxiliary pairs are drawn otherwise: the rule guards it against their shift. The catalogue job's
# validation candidates are drawn as the mined neighbours are, so there is no shift to guard against, and no
# weighting is a safer fallback than another: it keeps its best-scoring one. Measured (docs/benchmarks.md, bench (i), (j)):
# falling back to the labelled pairs alone cost catalogue-five 0.06 of cluster F1; falling back to the most
# mined pairs cost sparse-labels 0.036.
ONE_SE_JOBS = frozenset({"pairs"})


def choose(
    candidates: list[Candidate],
    jobs: Sequence[str],
    metric: str,
    fit: Callable[[dict[str, float]], Candidate] | None = None,
    labels: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, Candidate]:
    """The candidate each job keeps, and, when a job's best weights per source (taken from the single-source
    candidates) combine several sources, that combination too (fitted with ``fit``).

    For the jobs of :data:`ONE_SE_JOBS` (the pairs job), the one-standard-error rule (Breiman et al., 1984)
    on paired differences: the job keeps the lightest candidate (the earliest in ``candidates``: the labelled
    pairs alone first) whose score falls short of the best by no more than the standard error of that
    difference, measured by resampling the job's validation pairs (``labels[job]``, each candidate's
    ``predictions[job]``). An auxiliary source must beat the labelled pairs alone by more than the noise of the
    measurement to be kept. The other jobs, and any job without predictions, keep the best score. Logs what
    was tried and kept, with each shortfall's standard error where it was measured."""
    chosen: dict[str, Candidate] = {}
    for job in jobs:
        pool = [c for c in candidates if job in c.scores]
        if not pool:
            continue
        per_source: dict[str, float] = {}
        for source in sorted({s for c in pool for s in c.weights}):
            best_alone = max((c for c in pool if set(c.weights) <= {source}), key=lambda c: c.scores[job], default=None)
            if best_alone is not None and best_alone.weights.get(source, 0.0) > 0:
                per_source[source] = best_alone.weights[source]
        if len(per_source) > 1 and fit is not None and not any(c.weights == per_source for c in candidates):
            combined = fit(per_source)
            candidates.append(combined)
            pool.append(combined)
        best = max(pool, key=lambda c: c.scores[job])
        kept, errors = best, {}
        for c in pool:  # the lightest first
            if c is best:
                break
            if labels is None or job not in labels or job not in c.predictions or job not in best.predictions:
                continue
            errors[id(c)] = _paired_error(labels[job], best.predictions[job], c.predictions[job], metric, seed)
            c.detail.setdefault(job, {})["error_of_difference"] = errors[id(c)]
            if job in ONE_SE_JOBS and best.scores[job] - c.scores[job] <= errors[id(c)]:
                kept = c
                break
        chosen[job] = kept
        tried = "; ".join(
            f"{describe_weights(c.weights)} {c.scores[job]:.4f}"
            + (
                f" (short of the best by {best.scores[job] - c.scores[job]:.4f} ± {errors[id(c)]:.4f})"
                if id(c) in errors
                else ""
            )
            for c in pool
        )
        (log.info if len(pool) > 1 else log.debug)(
            "%s job: validation %s by weighting of the auxiliary pairs: %s; kept %s (%s)",
            job,
            metric,
            tried,
            describe_weights(kept.weights),
            "the lightest whose shortfall is within one standard error of the difference"
            if job in ONE_SE_JOBS
            else "the best: its validation pairs are drawn like the auxiliary pairs",
        )
    return chosen


def _paired_error(y: np.ndarray, best: np.ndarray, other: np.ndarray, metric: str, seed: int) -> float:
    """The standard deviation, over bootstrap resamples of the validation pairs, of ``metric`` of the ``best``
    scores minus that of the ``other`` scores on the same resample: the noise of their difference, which is far
    smaller than either metric's own when the two models rank most pairs alike.

    A resample is drawn as indices and applied as each pair's count in it, so average precision needs one
    sort per model, not one per resample (:func:`_counted_ap`, equal to sklearn's on the resampled pairs):
    100 resamples of 420,000 validation pairs took 30 s by resorting, and take about 2 s so."""
    y = np.asarray(y) > 0.5
    scores = (np.asarray(best, dtype=np.float64), np.asarray(other, dtype=np.float64))
    ranked = [_ranking(y, s) for s in scores] if metric == "average_precision" else None
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP_ROUNDS):
        count = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(np.float64)
        if ranked is not None:
            positives = count[y].sum()
            if positives == 0 or positives == count.sum():
                continue
            a, b = (_counted_ap(order, last, y, count) for order, last in ranked)
        else:  # log loss of probabilities, negated: higher is better
            a, b = (-_log_loss(y, s, count) for s in scores)
        diffs.append(a - b)
    return float(np.std(diffs)) if len(diffs) > 1 else 0.0


def _ranking(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs by descending score, and where each run of tied scores ends in that order."""
    order = np.argsort(-score, kind="mergesort")
    ranked = score[order]
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    return order, last


def _counted_ap(order: np.ndarray, last: np.ndarray, y: np.ndarray, count: np.ndarray) -> float:
    """Average precision of pairs counted ``count`` times each (sklearn's ``average_precision_score`` with
    ``sample_weight=count``): steps at each distinct score, tied scores taken together."""
    w = count[order]
    tp = np.cumsum(w * y[order])[last]
    seen = np.cumsum(w)[last]
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    recall_step = np.diff(tp, prepend=0.0) / tp[-1]
    return float(np.sum(recall_step * precision))


def _log_loss(y: np.ndarray, p: np.ndarray, count: np.ndarray | None = None) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.average(y * np.log(p) + (1 - y) * np.log1p(-p), weights=count))


def selection_record(job: str, metric: str, candidates: list[Candidate], kept: Candidate) -> dict:
    """What a job tried and kept, for metrics.json and config.json (without per-round histories)."""

    def facts(c: Candidate) -> dict:
        return {k: v for k, v in c.detail.get(job, {}).items() if k != "history"}

    return {
        "metric": metric,
        "measured_on": MEASURED_ON[job],
        "weights": dict(kept.weights),
        "value": kept.scores[job],
        **facts(kept),
        "tried": [
            {"weights": dict(c.weights), "value": c.scores[job], **facts(c)} for c in candidates if job in c.scores
        ],
    }


def describe_weights(weights: dict[str, float]) -> str:
    """A weighting in words: ``mined x0.25``, or ``labelled pairs only``."""
    return ", ".join(f"{k} x{v:g}" for k, v in weights.items()) if weights else "labelled pairs only"
