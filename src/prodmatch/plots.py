"""PNG plots of a run: precision-recall curves and training curves. Written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers or in CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import precision_recall_curve

from prodmatch.atomic import atomic_path
from prodmatch.evaluation import pr_auc

__all__ = ["plot_boosting", "plot_feature_importance", "plot_history", "plot_pr_curves", "plot_waterfall"]


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """One precision-recall curve per label.

    Args:
        curves: label -> (y_true, y_score).
        path: the PNG to write.
        title: figure title.
    """
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    for label, (y, s) in curves.items():
        if not (np.asarray(y) == 1).any():
            continue
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, lw=1.6, label=f"{label} (PR-AUC {pr_auc(y, s):.4f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title(title or "Precision-recall")
    return _save(fig, path)


def plot_history(history: list[dict], path: str | Path, best_epoch: int | None = None) -> Path:
    """Training and validation loss per epoch (left axis) and validation PR-AUC (right axis)."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.plot(epochs, [h["valid_loss"] for h in history], "s-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("BCE loss")
    _pr_auc_axis(ax, epochs, history, best_epoch, "best epoch", "^--")
    ax.set_title("Training curves")
    return _save(fig, path)


def plot_boosting(history: list[dict], path: str | Path, best_iteration: int | None = None) -> Path:
    """Validation loss and PR-AUC per boosting round."""
    rounds = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(rounds, [h["valid_loss"] for h in history], label="validation loss")
    ax.set_xlabel("boosting round")
    ax.set_ylabel("log loss")
    _pr_auc_axis(ax, rounds, history, best_iteration, "best round", "--")
    ax.set_title("Boosting curves")
    return _save(fig, path)


def _pr_auc_axis(ax: plt.Axes, x: list[int], history: list[dict], best: int | None, what: str, style: str) -> None:
    """Validation PR-AUC on a right-hand axis, the best step marked, one legend for both axes."""
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(x, [h["valid_pr_auc"] for h in history], style, color="tab:green", label="validation PR-AUC")
    ax2.set_ylabel("PR-AUC")
    if best is not None:
        ax.axvline(best, color="grey", ls=":", label=f"{what} ({best})")
    lines, lines2 = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right")


def plot_feature_importance(importance: dict[str, float], path: str | Path, top: int = 25) -> Path:
    """Horizontal bars of each feature's share of the total gain, largest on top."""
    items = list(importance.items())[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1.2), dpi=110)
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlabel("share of total gain")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title("GBDT feature importance")
    return _save(fig, path)


def plot_waterfall(explanation: dict, path: str | Path | None = None, *, max_groups: int = 12) -> Path | plt.Figure:
    """One pair's explanation as a waterfall (see :mod:`prodmatch.explain`): from the base value, one bar per
    group of evidence (green raises the score, red lowers it, largest first, each with its reason), to the raw
    score; the threshold drawn as a dashed line. Returns the figure when ``path`` is None."""
    import textwrap

    contributions = explanation["contributions"]
    if len(contributions) > max_groups:  # the smallest go into one bar
        rest = contributions[max_groups - 1 :]
        contributions = [
            *contributions[: max_groups - 1],
            {"group": f"{len(rest)} more", "contribution": sum(c["contribution"] for c in rest), "why": ""},
        ]
    base, raw = explanation["base_value"], explanation["raw_score"]
    labels = ["base value"] + [
        c["group"] + ("\n" + textwrap.shorten(c["why"], 70) if c["why"] else "") for c in contributions
    ]
    labels.append("raw score")
    n = len(labels)
    height = 0.55 * n + 1.4
    fig, ax = plt.subplots(figsize=(9, height), dpi=90)
    # fixed margins (tight_layout measures every label: 5x slower, and a report draws many of these)
    fig.subplots_adjust(left=0.45, right=0.97, top=1 - 0.85 / height, bottom=0.6 / height)
    y = np.arange(n)[::-1]
    ax.barh(y[0], base, color="0.6", height=0.6)
    at = base
    for i, c in enumerate(contributions, start=1):
        v = c["contribution"]
        ax.barh(y[i], v, left=at, color="tab:green" if v >= 0 else "tab:red", height=0.6)
        ax.text(at + v, y[i], f" {v:+.2f} ", va="center", ha="left" if v >= 0 else "right", fontsize=8)
        if i < n - 1:
            ax.plot([at + v, at + v], [y[i] - 0.3, y[i + 1] + 0.3], color="0.5", lw=0.6)
        at += v
    ax.barh(y[-1], raw, color="tab:blue" if explanation["label"] else "tab:orange", height=0.6)
    ax.text(raw, y[-1], f" {raw:+.2f} ", va="center", ha="left" if raw >= 0 else "right", fontsize=8)
    ax.text(base, y[0], f" {base:+.2f} ", va="center", ha="left" if base >= 0 else "right", fontsize=8)
    ax.axvline(0, color="0.3", lw=0.8)
    t = explanation.get("threshold_raw_score")
    if t is not None and np.isfinite(t):
        ax.axvline(t, color="black", ls="--", lw=1)
        ax.text(t, y[0] + 0.55, f"threshold p={explanation['threshold']:.3f}", ha="center", fontsize=8)
    ends = np.cumsum([base] + [c["contribution"] for c in contributions])
    lo, hi = min(0.0, *ends, raw), max(0.0, *ends, raw)
    if t is not None and np.isfinite(t):
        lo, hi = min(lo, t), max(hi, t)
    pad = 0.18 * (hi - lo) + 1e-6
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(y[-1] - 0.6, y[0] + 0.9)
    ax.set_xlabel("contribution to the raw score (log-odds)")
    ax.grid(alpha=0.3, axis="x")
    verdict = "match" if explanation["label"] else "no match"
    truth = ""
    if explanation.get("target") is not None:
        truth = f", labelled {'a match' if explanation['target'] >= 0.5 else 'not a match'}"
    ax.set_title(
        f"{explanation['variantid1']} vs {explanation['variantid2']}: p={explanation['score']:.3f}, "
        f"{verdict}{truth}\n{explanation['model']} ({explanation['method']})",
        fontsize=10,
    )
    return fig if path is None else _save(fig, path, tight=False)


def _save(fig: plt.Figure, path: str | Path, *, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
