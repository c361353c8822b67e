"""Metrics over (y_true, y_score, groups): pure functions, no IO.

``pr_auc`` is computed the notebook's way (``precision_recall_curve`` then ``auc``), and
``ecup_macro_pr_auc`` is the E-CUP 2024 official metric: the same PR-AUC per level-2 category, 0 for a
category without a positive pair, averaged over categories.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    auc,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = [
    "METRIC_KEYS",
    "METRIC_LABELS",
    "best_f1_threshold",
    "binary_metrics",
    "calibration_error",
    "ecup_macro_pr_auc",
    "log_loss",
    "per_category_pr_auc",
    "per_category_table",
    "pr_auc",
    "reliability_bins",
]

# The keys every metrics dict has; values are None where a metric is undefined (e.g. one class only).
METRIC_KEYS = (
    "n_pairs",
    "positive_rate",
    "loss",
    "threshold",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "pr_auc",
    "average_precision",
    "roc_auc",
    "best_threshold",
    "best_f1",
    "ecup_macro_pr_auc",
    "calibration_error",
)


# Every metric of binary_metrics as (key, label, format), in the order tables show them.
METRIC_LABELS = [
    ("n_pairs", "pairs", "{:,}"),
    ("positive_rate", "positive rate", "{:.3f}"),
    ("loss", "loss", "{:.4f}"),
    ("threshold", "threshold", "{:.3f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("f1", "F1", "{:.4f}"),
    ("pr_auc", "PR-AUC", "{:.4f}"),
    ("average_precision", "average precision", "{:.4f}"),
    ("roc_auc", "ROC-AUC", "{:.4f}"),
    ("best_threshold", "best-F1 threshold", "{:.3f}"),
    ("best_f1", "best F1", "{:.4f}"),
    ("ecup_macro_pr_auc", "E-CUP macro PR-AUC", "{:.4f}"),
    ("calibration_error", "calibration error", "{:.4f}"),
]

RELIABILITY_BINS = 10  # bins of equal count for the calibration error and the report's reliability plot


def pr_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the precision-recall curve, the notebook's way; NaN when there is no positive."""
    y_true = np.asarray(y_true)
    if not (y_true == 1).any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    return float(auc(recall, precision))


def per_category_pr_auc(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """PR-AUC of each group; a group without a positive pair scores 0 (the E-CUP rule)."""
    table = per_category_table(y_true, y_score, groups)
    return dict(zip(table["category"], table["pr_auc"], strict=True))


def per_category_table(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """One row per group, in order of first appearance: category (as a string), pr_auc (0 without a positive
    pair, the E-CUP rule), pairs and matches."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    codes, uniques = pd.factorize(pd.Series(groups, dtype=object), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    rows = []
    for k, name in enumerate(uniques):
        idx = order[bounds[k] : bounds[k + 1]]
        value = pr_auc(y_true[idx], y_score[idx])
        rows.append((str(name), 0.0 if math.isnan(value) else value, len(idx), int((y_true[idx] == 1).sum())))
    return pd.DataFrame(rows, columns=["category", "pr_auc", "pairs", "matches"])


def ecup_macro_pr_auc(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray | None) -> float | None:
    """Mean over level-2 categories of per-category PR-AUC; None when there are no categories."""
    if groups is None:
        return None
    per = per_category_pr_auc(y_true, y_score, groups)
    return float(np.mean(list(per.values())))


def best_f1_threshold(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, float]:
    """The score threshold that maximises F1, and that F1. (nan, 0.0) without positives."""
    y_true = np.asarray(y_true)
    if not (y_true == 1).any():
        return float("nan"), 0.0
    precision, recall, thresholds = precision_recall_curve(y_true, y_score)
    p, r = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    k = int(np.argmax(f1))
    return float(thresholds[k]), float(f1[k])


def reliability_bins(y_true: np.ndarray, y_prob: np.ndarray, bins: int = RELIABILITY_BINS):
    """The pairs sorted by probability and cut into ``bins`` of equal count (fewer for fewer pairs): each bin's
    size, mean probability and share of matches, as three (bins,) arrays."""
    prob = np.asarray(y_prob, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64)
    parts = [b for b in np.array_split(np.argsort(prob, kind="stable"), bins) if len(b)]
    sizes = np.array([len(b) for b in parts], dtype=np.int64)
    return sizes, np.array([prob[b].mean() for b in parts]), np.array([y[b].mean() for b in parts])


def calibration_error(y_true: np.ndarray, y_prob: np.ndarray, bins: int = RELIABILITY_BINS) -> float | None:
    """Expected calibration error: over bins of equal count, the mean |mean probability - share of matches|,
    weighted by the bins' sizes (0 for a perfectly calibrated score); None for no pair."""
    if not len(y_true):
        return None
    sizes, mean_p, mean_y = reliability_bins(y_true, y_prob, bins)
    return float((sizes * np.abs(mean_p - mean_y)).sum() / sizes.sum())


def log_loss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1-eps])."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def binary_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    *,
    threshold: float = 0.5,
    groups: np.ndarray | None = None,
    loss: float | None = None,
) -> dict[str, float | int | None]:
    """Every metric prodmatch reports for labelled pairs.

    Args:
        y_true: (M,) 0/1 labels.
        y_prob: (M,) predicted probabilities.
        threshold: labels are ``y_prob >= threshold`` for accuracy, precision, recall and F1.
        groups: (M,) level-2 category per pair for the E-CUP macro PR-AUC, or None.
        loss: the loss if the caller computed it from logits (more exact); else from probabilities.

    Returns:
        A dict with :data:`METRIC_KEYS`; undefined values are None.
    """
    y_true = np.asarray(y_true).astype(np.int8)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    pred = (y_prob >= threshold).astype(np.int8)
    two_classes = len(np.unique(y_true)) == 2
    best_t, best_f = best_f1_threshold(y_true, y_prob)
    out: dict[str, float | int | None] = {
        "n_pairs": len(y_true),
        "positive_rate": float(y_true.mean()),
        "loss": float(loss) if loss is not None else log_loss(y_true, y_prob),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y_true, pred)),
        "precision": float(precision_score(y_true, pred, zero_division=0)),
        "recall": float(recall_score(y_true, pred, zero_division=0)),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "pr_auc": _none_if_nan(pr_auc(y_true, y_prob)),
        "average_precision": float(average_precision_score(y_true, y_prob)) if two_classes else None,
        "roc_auc": float(roc_auc_score(y_true, y_prob)) if two_classes else None,
        "best_threshold": _none_if_nan(best_t),
        "best_f1": float(best_f),
        "ecup_macro_pr_auc": ecup_macro_pr_auc(y_true, y_prob, groups),
        "calibration_error": calibration_error(y_true, y_prob),
    }
    return out


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)
