"""Probability calibration and decision thresholds, both chosen on validation pairs and saved with a model.

A model's raw score (a logit, or a GBDT margin) ranks pairs; calibration maps it to a probability that
means what it says, and the threshold turns probabilities into labels. Both are fitted on validation
data, never on the pairs the model trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve

from prodmatch.errors import ConfigError

__all__ = [
    "CALIBRATION_METHODS",
    "Calibrator",
    "PriorEstimate",
    "ThresholdChoice",
    "choose_threshold",
    "estimate_prior",
    "expected_quality",
    "shift_prior",
]

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("platt", "isotonic", "none")


@dataclass
class Calibrator:
    """A monotone map from raw scores to probabilities.

    ``platt`` fits ``sigmoid(a * score + b)`` (strictly increasing, so rankings are unchanged);
    ``isotonic`` fits a non-decreasing step function, interpolated linearly between its knots (it can tie
    scores that the model ranked apart); ``none`` is the plain sigmoid.
    """

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    knots_x: np.ndarray | None = None
    knots_y: np.ndarray | None = None
    prior: float | None = None  # the share of positives among the pairs it was fitted on

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration {self.method!r}; use one of {list(CALIBRATION_METHODS)}")

    @classmethod
    def fit(cls, method: str, scores: np.ndarray, y: np.ndarray) -> Calibrator:
        """Fit ``method`` on raw validation scores and their labels."""
        scores = np.asarray(scores, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        prior = float(y.mean()) if len(y) else None
        if method == "none":
            return cls("none", prior=prior)
        if method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration {method!r}; use one of {list(CALIBRATION_METHODS)}")
        if len(np.unique(y)) < 2:
            log.warning("calibration needs both labels in the validation pairs; keeping the plain sigmoid")
            return cls("none", prior=prior)
        if method == "platt":
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(scores[:, None], y)
            a = float(lr.coef_[0, 0])
            if a <= 0:
                log.warning("Platt scaling found a non-positive slope (%.3g); keeping the plain sigmoid", a)
                return cls("none", prior=prior)
            return cls("platt", a=a, b=float(lr.intercept_[0]), prior=prior)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, y)
        return cls("isotonic", knots_x=iso.X_thresholds_.astype(np.float64), knots_y=iso.y_thresholds_, prior=prior)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """(M,) float64 probabilities, non-decreasing in ``scores`` (float64, so that confident scores do not
        round to a tie at 1.0)."""
        z = np.asarray(scores, dtype=np.float64)
        if self.method == "isotonic":
            assert self.knots_x is not None and self.knots_y is not None
            return np.interp(z, self.knots_x, self.knots_y)
        z = self.a * z + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))

    def to_dict(self) -> dict:
        out: dict = {"method": self.method, "prior": self.prior}
        if self.method == "platt":
            out |= {"a": self.a, "b": self.b}
        if self.method == "isotonic":
            assert self.knots_x is not None and self.knots_y is not None
            out |= {"knots_x": self.knots_x.tolist(), "knots_y": self.knots_y.tolist()}
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> Calibrator:
        if not d:
            return cls("none")
        return cls(
            method=d["method"],
            a=float(d.get("a", 1.0)),
            b=float(d.get("b", 0.0)),
            knots_x=None if "knots_x" not in d else np.asarray(d["knots_x"], dtype=np.float64),
            knots_y=None if "knots_y" not in d else np.asarray(d["knots_y"], dtype=np.float64),
            prior=d.get("prior"),
        )


@dataclass
class ThresholdChoice:
    """The chosen threshold and what it gave on the validation pairs."""

    threshold: float
    rule: str  # "max_f1" or "precision>=0.9"
    precision: float
    recall: float
    f1: float
    reached: bool = True  # False when no threshold reaches the target precision

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def choose_threshold(y: np.ndarray, prob: np.ndarray, target_precision: float | None = None) -> ThresholdChoice:
    """Pick a decision threshold on validation probabilities.

    With ``target_precision`` None: the threshold of maximum F1. Otherwise the lowest threshold whose
    precision reaches the target (the most recall at that precision); if none does, the threshold of the
    highest precision, with ``reached=False`` and a warning.

    A pair is labelled positive when its probability is ``>=`` the threshold.
    """
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ConfigError(f"--target-precision must be in (0, 1], got {target_precision}")
    precision, recall, thresholds = precision_recall_curve(y, prob)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    if target_precision is None:
        i = int(np.argmax(f1))
        rule, reached = "max_f1", True
    else:
        rule = f"precision>={target_precision:g}"
        ok = np.flatnonzero(precision >= target_precision)
        reached = len(ok) > 0
        if reached:
            i = int(ok[0])  # thresholds ascend, so the first is the lowest
        else:
            i = int(np.argmax(precision))
            log.warning(
                "no threshold reaches precision %.3f on validation (best %.3f); using the most precise one",
                target_precision,
                precision[i],
            )
    return ThresholdChoice(
        threshold=float(thresholds[i]),
        rule=rule,
        precision=float(precision[i]),
        recall=float(recall[i]),
        f1=float(f1[i]),
        reached=reached,
    )


# ------------------------------------------------------------------------------ catalogue calibration
#
# A probability is calibrated for the pairs it was fitted on. Labelled pairs are often about half
# matches; a catalogue's candidate pairs (every item's nearest neighbours) are mostly not. If the model's
# evidence for a pair means the same in both (the class-conditional score distributions hold), Bayes' rule
# moves the probabilities from the labelled prior to the candidates' prior exactly (``shift_prior``); the
# candidates' prior is unknown, but the EM of Saerens, Latinne & Decaestecker (2002) finds the prior under
# which the shifted probabilities average to it (``estimate_prior``). A small labelled sample of candidate
# pairs, where there is one, replaces both assumptions: it calibrates on the candidates directly.


def shift_prior(prob: np.ndarray, old: float, new: float) -> np.ndarray:
    """Probabilities calibrated where positives had share ``old``, moved to share ``new`` by Bayes' rule."""
    prob = np.clip(np.asarray(prob, dtype=np.float64), 1e-12, 1 - 1e-12)
    odds = prob / (1 - prob) * (new / (1 - new)) / (old / (1 - old))
    return odds / (1 + odds)


@dataclass
class PriorEstimate:
    """The share of true matches among the candidates, and how it was found."""

    prior: float
    method: str  # "em" (mixture of the model's probabilities), "labelled-sample", or "none"
    training_prior: float | None
    iterations: int = 0
    sample_pairs: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def estimate_prior(prob: np.ndarray, training_prior: float, max_iter: int = 200, tol: float = 1e-7) -> PriorEstimate:
    """The share of positives among pairs scored ``prob`` (calibrated under ``training_prior``): the fixed point
    of the EM of Saerens et al. (2002), mean(shift_prior(prob, training_prior, pi)) = pi."""
    prob = np.asarray(prob, dtype=np.float64)
    return em_prior(
        lambda pi: float(shift_prior(prob, training_prior, pi).mean()),
        float(prob.mean()) if len(prob) else None,
        training_prior,
        max_iter,
        tol,
    )


def em_prior(
    mean_shifted: Callable[[float], float],
    mean: float | None,
    training_prior: float,
    max_iter: int = 200,
    tol: float = 1e-7,
) -> PriorEstimate:
    """The EM of :func:`estimate_prior` over summary statistics, for pairs that are not in one array (a Spark
    column): ``mean`` is the mean probability (None: no pairs), ``mean_shifted(pi)`` the mean of the
    probabilities moved to prior ``pi`` (:func:`shift_prior`). Both engines run this one loop."""
    pi = float(np.clip(mean, 1e-6, 1 - 1e-6)) if mean is not None else training_prior
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        new = float(np.clip(mean_shifted(pi), 1e-6, 1 - 1e-6))
        done = abs(new - pi) < tol
        pi = new
        if done:
            break
    return PriorEstimate(prior=pi, method="em", training_prior=training_prior, iterations=it)


def expected_quality(prob: np.ndarray, threshold: float) -> tuple[float, float]:
    """(precision, recall) the probabilities themselves expect of keeping the pairs at or above
    ``threshold``: recall among the scored pairs (true pairs never scored are not counted)."""
    prob = np.asarray(prob, dtype=np.float64)
    kept = prob >= threshold
    return expected_quality_of_sums(float(prob.sum()), float(prob[kept].sum()), int(kept.sum()))


def expected_quality_of_sums(total: float, kept_sum: float, kept: int) -> tuple[float, float]:
    """:func:`expected_quality` of aggregates: the sum of every probability, the sum of those kept and how
    many were kept (what an engine that cannot hold the probabilities in one place computes)."""
    precision = float(kept_sum / kept) if kept else 1.0
    recall = float(kept_sum / total) if total > 0 else 0.0
    return precision, recall


def expected_f1_threshold(prob: np.ndarray) -> float:
    """The threshold that maximises the F1 the probabilities expect (see :func:`expected_quality`)."""
    prob = np.sort(np.asarray(prob, dtype=np.float64))[::-1]
    if not len(prob) or prob.sum() <= 0:
        return 0.5
    tp = np.cumsum(prob)
    kept = np.arange(1, len(prob) + 1)
    f1 = 2 * tp / (kept + prob.sum())
    return float(prob[int(np.argmax(f1))])


def expected_f1_threshold_binned(
    bins: np.ndarray, counts: np.ndarray, sums: np.ndarray, values_in: Callable[[list[int]], np.ndarray], n_bins: int
) -> float:
    """:func:`expected_f1_threshold` exactly, from per-bin summaries of probabilities that are not in one array
    (a Spark column): ``bins`` the non-empty bins (``floor(p * n_bins)``, capped at ``n_bins - 1``), ``counts``
    and ``sums`` their pairs and summed probabilities. The counts and sums bound the best F1 inside each bin;
    only the bins that could hold the best threshold are fetched (``values_in(bins)``: their probabilities) and
    searched score by score."""
    order = np.argsort(-np.asarray(bins), kind="stable")
    bins, counts, sums = np.asarray(bins)[order], np.asarray(counts)[order], np.asarray(sums, dtype=np.float64)[order]
    total = float(sums.sum())
    if not len(bins) or total <= 0:
        return 0.5
    n_above = np.concatenate([[0], np.cumsum(counts)[:-1]])  # in bins above this one
    s_above = np.concatenate([[0.0], np.cumsum(sums)[:-1]])
    whole = 2 * (s_above + sums) / (n_above + counts + total)  # all of the bin
    bound = 2 * (s_above + sums) / (n_above + 1 + total)  # best conceivable inside it
    open_bins = bins[bound >= whole.max() - 1e-12]
    values = np.sort(np.asarray(values_in([int(b) for b in open_bins]), dtype=np.float64))[::-1]
    where = {int(b): i for i, b in enumerate(bins)}
    best, best_value = -1.0, 0.5
    b_of = np.minimum(np.floor(values * n_bins), n_bins - 1).astype(int)
    for b in sorted(set(b_of.tolist()), reverse=True):
        v = values[b_of == b]  # descending
        i = where[b]
        f1 = 2 * (s_above[i] + np.cumsum(v)) / (n_above[i] + np.arange(1, len(v) + 1) + total)
        j = int(np.argmax(f1))
        if f1[j] > best:
            best, best_value = float(f1[j]), float(v[j])
    return best_value
