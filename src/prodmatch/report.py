"""A model report people can look at: one self-contained HTML file (images inline, no script, no network).

What is in it, top to bottom: the metrics table at the model's threshold; PR and ROC curves; a reliability
diagram (does a score of 0.8 mean 80 % matches?) with the score histogram of each label; a threshold table;
the E-CUP per-category PR-AUC, worst first; and the top false positives and false negatives at the model's
threshold with the items' names and categories and each pair's explanation (:mod:`prodmatch.explain`).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import atomic_path
from prodmatch.catalogue import Catalogue
from prodmatch.errors import DataError
from prodmatch.evaluation import (
    METRIC_LABELS,
    binary_metrics,
    calibration_error,
    per_category_table,
    pr_auc,
    reliability_bins,
)
from prodmatch.explain import explain_pairs
from prodmatch.io import read_catalogue
from prodmatch.models import load_model
from prodmatch.models.base import PairModel
from prodmatch.pairs import PairSet, load_pairs
from prodmatch.plots import plot_waterfall
from prodmatch.version import __version__

__all__ = ["build_report", "report_html"]

log = logging.getLogger(__name__)

THRESHOLDS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


def build_report(
    run_dir: str | Path,
    data_dir: str | Path,
    pairs_path: str | Path,
    out: str | Path = "report.html",
    *,
    top: int = 10,
    catalogue: Catalogue | None = None,
) -> Path:
    """Score labelled pairs with a saved model and write the HTML report to ``out`` (atomically).

    Raises:
        DataError: when the pairs have no labels, or only one label (no curve can be drawn).
    """
    from dataclasses import replace

    t0 = time.perf_counter()
    model = load_model(run_dir)
    # names and categories for the error tables, whatever the model itself reads
    config = replace(model.data_config(), load_names=True, load_categories=True)
    cat = catalogue or read_catalogue(data_dir, config)
    pairs = load_pairs(pairs_path, cat, require_target=True)
    if len(np.unique(pairs.target)) < 2:
        raise DataError(f"{pairs_path}: every pair has the same label; a report needs matches and non-matches")
    page = report_html(
        model, cat, pairs, top=top, title=f"{model.name}: {Path(run_dir).name} on {Path(pairs_path).name}"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report of %d pairs in %.1fs -> %s", len(pairs), time.perf_counter() - t0, out)
    return out


def report_html(model: PairModel, catalogue: Catalogue, pairs: PairSet, *, top: int = 10, title: str = "") -> str:
    """The report of ``model`` on the labelled ``pairs`` as one HTML string."""
    y = (pairs.target >= 0.5).astype(np.int8)
    prob = model.predict_proba(catalogue, pairs)
    threshold = float(model.threshold)
    metrics = binary_metrics(y, prob, threshold=threshold, groups=pairs.category)
    pred = prob >= threshold
    fp = np.flatnonzero(pred & (y == 0))
    fn = np.flatnonzero(~pred & (y == 1))
    fp = fp[np.argsort(-prob[fp], kind="stable")][:top]
    fn = fn[np.argsort(prob[fn], kind="stable")][:top]
    errors = np.concatenate([fp, fn])
    explained = explain_pairs(model, catalogue, pairs.subset(errors)) if len(errors) else None
    sections = [
        _header(model, pairs, title),
        _section("Metrics", _metrics_table(metrics) + _calibration_note(model)),
        _section(
            "Curves",
            _figures(
                [
                    _pr_curve(y, prob, threshold),
                    _roc_curve(y, prob, threshold),
                    _reliability(y, prob),
                    _histogram(y, prob, threshold),
                ]
            ),
        ),
        _section("Thresholds", _threshold_table(y, prob, threshold)),
        _section("Per category (E-CUP level 2), worst first", _category_table(y, prob, pairs.category)),
        _section(
            f"Top false positives at the threshold {threshold:.3f} ({int((pred & (y == 0)).sum()):,} in all)",
            _errors_table(catalogue, pairs, prob, fp, explained, 0),
        ),
        _section(
            f"Top false negatives at the threshold {threshold:.3f} ({int((~pred & (y == 1)).sum()):,} in all)",
            _errors_table(catalogue, pairs, prob, fn, explained, len(fp)),
        ),
    ]
    return _PAGE.format(title=html.escape(title or model.name), body="\n".join(sections))


# ------------------------------------------------------------------------------------------ sections


def _header(model: PairModel, pairs: PairSet, title: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<h1>{html.escape(title or model.name)}</h1>"
        f"<p class=meta>{len(pairs):,} labelled pairs, {100 * float(np.mean(pairs.target >= 0.5)):.1f}% matches · "
        f"model <b>{html.escape(model.name)}</b> ({html.escape(_job_words(model))}) · "
        f"threshold {model.threshold:.3f} · "
        f"prodmatch {__version__} · {stamp}</p>"
    )


def _job_words(model: PairModel) -> str:
    """Which model scored, in words: the job, and the auxiliary pairs its training kept."""
    job = model.describe_job()
    weights = job.get("aux_weights")
    kept = (
        "trained on the labelled pairs only"
        if not weights
        else "trained with " + ", ".join(f"{k} pairs x{v:g}" for k, v in weights.items())
    )
    return f"the {job['job']} job's model, {kept}"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _metrics_table(metrics: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td class=num>{'—' if metrics.get(k) is None else fmt.format(metrics[k])}</td></tr>"
        for k, label, fmt in METRIC_LABELS
    )
    return f"<table class=metrics><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def _calibration_note(model: PairModel) -> str:
    cal = model.calibrator
    prior = "" if cal.prior is None else f" (on pairs of which {100 * cal.prior:.1f}% were matches)"
    return (
        f"<p class=note>Scores are calibrated with <b>{html.escape(cal.method)}</b> on the validation pairs{prior}. "
        "A probability holds for pairs drawn like those; a catalogue's nearest neighbours have another share of "
        "matches (<code>prodmatch match</code> re-calibrates for them).</p>"
    )


def _threshold_table(y: np.ndarray, prob: np.ndarray, threshold: float) -> str:
    ts = sorted({*THRESHOLDS, round(threshold, 4)})
    rows = []
    for t in ts:
        pred = prob >= t
        tp = int((pred & (y == 1)).sum())
        precision = tp / max(int(pred.sum()), 1)
        recall = tp / max(int((y == 1).sum()), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        cls = " class=model" if t == round(threshold, 4) else ""
        rows.append(
            f"<tr{cls}><td class=num>{t:.3f}</td><td class=num>{precision:.4f}</td><td class=num>{recall:.4f}</td>"
            f"<td class=num>{f1:.4f}</td><td class=num>{100 * pred.mean():.1f}%</td></tr>"
        )
    return (
        "<table><tr><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>labelled a match</th></tr>"
        + "".join(rows)
        + "</table><p class=note>The highlighted row is the model's own threshold.</p>"
    )


def _category_table(y: np.ndarray, prob: np.ndarray, groups: np.ndarray | None) -> str:
    if groups is None or pd.isna(pd.Series(groups, dtype=object)).all():
        return "<p class=note>These pairs carry no level-2 category (no category2 column, no categories file).</p>"
    table = per_category_table(y, prob, groups).sort_values(["pr_auc", "pairs"], ascending=[True, False])
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td class=num>{a:.4f}</td><td class=num>{n:,}</td><td class=num>{m:,}</td></tr>"
        for c, a, n, m in zip(table["category"], table["pr_auc"], table["pairs"], table["matches"], strict=True)
    )
    return (
        f"<p class=note>Macro PR-AUC {table['pr_auc'].mean():.4f} over {len(table)} categories "
        "(a category with no match scores 0, the E-CUP rule).</p>"
        "<div class=scroll><table><tr><th>category</th><th>PR-AUC</th><th>pairs</th><th>matches</th></tr>"
        + rows
        + "</table></div>"
    )


def _errors_table(catalogue, pairs: PairSet, prob: np.ndarray, idx: np.ndarray, explained, offset: int) -> str:
    if not len(idx):
        return "<p class=note>None.</p>"
    rows = []
    for j, i in enumerate(idx):
        e = explained.pair(offset + j)
        reasons = "".join(
            f"<li><span class={'pos' if c['contribution'] >= 0 else 'neg'}>{c['contribution']:+.2f}</span> "
            f"<b>{html.escape(c['group'])}</b>: {html.escape(c['why'])}</li>"
            for c in e["contributions"][:4]
        )
        figure = plot_waterfall(e)
        picture = _png(figure)
        rows.append(
            f"<tr><td class=num>{prob[i]:.3f}</td><td>{_item(catalogue, pairs.left[i])}</td>"
            f"<td>{_item(catalogue, pairs.right[i])}</td><td><ul>{reasons}</ul>"
            f"<details><summary>waterfall</summary><img src='{picture}' alt='waterfall'></details></td></tr>"
        )
    return (
        "<table class=errors><tr><th>score</th><th>first item</th><th>second item</th><th>why (largest first)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _item(catalogue: Catalogue, row: int) -> str:
    parts = [f"<code>{html.escape(str(catalogue.ids[row]))}</code>"]
    if catalogue.names is not None and catalogue.names[row]:
        parts.append(html.escape(str(catalogue.names[row])))
    if catalogue.categories is not None:
        levels = [str(v) for v in catalogue.categories.iloc[row].tolist() if pd.notna(v) and str(v)]
        if levels:
            parts.append(f"<span class=cat>{html.escape(' › '.join(levels))}</span>")
    return "<br>".join(parts)


# ------------------------------------------------------------------------------------------- figures


def _figures(images: list[str]) -> str:
    return "<div class=grid>" + "".join(f"<img src='{src}' alt='figure'>" for src in images) + "</div>"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _axes(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=90)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def _pr_curve(y: np.ndarray, prob: np.ndarray, threshold: float) -> str:
    from sklearn.metrics import precision_recall_curve

    precision, recall, ts = precision_recall_curve(y, prob)
    fig, ax = _axes(f"Precision-recall (PR-AUC {pr_auc(y, prob):.4f})")
    ax.plot(recall, precision, lw=1.6)
    k = min(np.searchsorted(ts, threshold), len(ts) - 1)
    ax.plot(recall[k], precision[k], "o", color="black", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return _png(fig)


def _roc_curve(y: np.ndarray, prob: np.ndarray, threshold: float) -> str:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, ts = roc_curve(y, prob)
    fig, ax = _axes(f"ROC (AUC {roc_auc_score(y, prob):.4f})")
    ax.plot(fpr, tpr, lw=1.6)
    ax.plot([0, 1], [0, 1], ls=":", color="0.5")
    k = int(np.argmin(np.abs(ts - threshold)))
    ax.plot(fpr[k], tpr[k], "o", color="black", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _reliability(y: np.ndarray, prob: np.ndarray) -> str:
    """Mean label against mean score in bins of equal count, with the ideal diagonal."""
    sizes, mean_p, mean_y = reliability_bins(y, prob)
    ece = calibration_error(y, prob)
    fig, ax = _axes(f"Reliability (expected calibration error {ece:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="0.5", label="perfect calibration")
    ax.plot(mean_p, mean_y, "o-", label=f"{len(sizes)} bins of equal count")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("share of matches")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _png(fig)


def _histogram(y: np.ndarray, prob: np.ndarray, threshold: float) -> str:
    fig, ax = _axes("Scores by label")
    edges = np.linspace(0, 1, 41)
    ax.hist(prob[y == 0], bins=edges, alpha=0.6, label="not a match", color="tab:red")
    ax.hist(prob[y == 1], bins=edges, alpha=0.6, label="match", color="tab:green")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("calibrated probability")
    ax.set_ylabel("pairs (log scale)")
    ax.legend(loc="upper center")
    fig.tight_layout()
    return _png(fig)


_PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       color: #222; padding: 0 16px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }}
.meta, .note {{ color: #555; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }}
th {{ background: #f4f4f4; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.model td {{ background: #fff4cc; font-weight: 600; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 8px; }}
.grid img {{ width: 100%; border: 1px solid #eee; }}
.scroll {{ max-height: 420px; overflow-y: auto; display: inline-block; }}
.errors ul {{ margin: 0; padding-left: 16px; }} .errors img {{ max-width: 760px; }}
.pos {{ color: #1a7f37; font-weight: 600; }} .neg {{ color: #c62828; font-weight: 600; }}
.cat {{ color: #666; font-size: 12px; }} code {{ font-size: 12px; }}
</style></head>
<body>
{body}
</body></html>
"""
