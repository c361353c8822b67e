"""``compare``: train several models on one split and rank them on the same held-out pairs.

Every model gets a complete run directory under ``OUT/models/<name>``; the leaderboard adds the scoring
throughput of each and, for synthetic data, the Bayes-optimal oracle as the ceiling.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodmatch.api import prepare_pairs, train
from prodmatch.atomic import write_json
from prodmatch.catalogue import Catalogue
from prodmatch.config import DataConfig, TrainConfig
from prodmatch.errors import ConfigError, DataError
from prodmatch.evaluation import best_f1_threshold, ecup_macro_pr_auc, pr_auc
from prodmatch.io import ORACLE_FILE, read_catalogue
from prodmatch.models import MODELS
from prodmatch.pairs import PairSet
from prodmatch.plots import plot_pr_curves
from prodmatch.training import TrainCallback

__all__ = ["LEADERBOARD_FILE", "Leaderboard", "compare"]

log = logging.getLogger(__name__)

LEADERBOARD_FILE = "leaderboard.json"
THROUGHPUT_PAIRS = 200_000  # scoring speed is measured on at least this many pairs


@dataclass
class Leaderboard:
    """The rows of a comparison, best PR-AUC first; ``oracle`` is the ceiling row when one exists."""

    out_dir: Path
    evaluated_on: str
    rows: list[dict[str, Any]]
    oracle: dict[str, Any] | None

    def to_dict(self) -> dict:
        return {"evaluated_on": self.evaluated_on, "models": self.rows, "oracle": self.oracle}


def compare(
    data_dir: str | Path,
    out_dir: str | Path,
    models: list[str],
    *,
    config: TrainConfig | None = None,
    data_config: DataConfig | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    overwrite: bool = False,
    callback: TrainCallback | None = None,
) -> Leaderboard:
    """Train every model in ``models`` on the same split of ``data_dir`` and rank them.

    Models are ranked on ``test.parquet`` when it has targets, else on the validation pairs. Writes
    ``leaderboard.json``, ``pr_curves.png`` and one run directory per model under ``out_dir/models``.

    Args:
        data_dir: an E-CUP layout directory.
        out_dir: where the comparison goes.
        models: registered model names; the first is the baseline for "time to reach".
        config: training settings shared by every model.
        data_config: which modalities to read.
        params: model name -> hyperparameters.
        overwrite: replace an existing comparison.
        callback: progress hooks, passed to every training.

    Returns:
        The :class:`Leaderboard`.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ConfigError(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
    if len(set(models)) != len(models):
        raise ConfigError(f"--models lists a model twice: {models}")
    config = config or TrainConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out_dir} is not empty; pass --overwrite to replace it or choose another --out")
        if not (out_dir / LEADERBOARD_FILE).exists() and not (out_dir / "models").exists():
            raise ConfigError(f"{out_dir} holds files that are not a prodmatch comparison; refusing to delete them")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    base = data_config or DataConfig()
    for name in models:  # what each model reads with its parameters (gbdt stacking a bi-encoder reads texts)
        base = MODELS[name](**(params or {}).get(name, {})).read_config(base)
    cat = read_catalogue(data_dir, base)
    prepared = prepare_pairs(data_dir, cat, config)
    held_out, evaluated_on = (prepared.test, "test") if prepared.test is not None else (prepared.valid, "validation")

    _warm_up_torch()
    rows: list[dict[str, Any]] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in models:
        log.info("compare: training %s", name)
        run_dir = out_dir / "models" / name
        report = train(
            data_dir,
            run_dir,
            model=name,
            params=(params or {}).get(name),
            config=config,
            catalogue=cat,
            overwrite=True,
            callback=callback,
        )
        est = report.model
        prob = est.predict_proba(cat, held_out)
        curves[name] = (held_out.target, prob)
        rows.append(
            {
                "model": name,
                **_ranking_metrics(held_out, prob),
                "accuracy_at_0.5": float(((prob >= 0.5) == (held_out.target > 0.5)).mean()),
                "train_seconds": report.metrics["train_seconds"],
                "valid_pr_auc": report.metrics["valid"]["pr_auc"],
                "scoring_pairs_per_second": _throughput(est, cat, held_out),
                "history": report.history,
                "run_dir": str(run_dir),
            }
        )
        log.info("compare: %s PR-AUC %.4f", name, rows[-1]["pr_auc"])
    _time_to_baseline(rows)

    oracle = _oracle_row(data_dir, held_out) if evaluated_on == "test" else None
    if oracle is not None:
        curves["oracle (Bayes-optimal)"] = (held_out.target, oracle.pop("_score"))
    rows.sort(key=lambda r: -(r["pr_auc"] or 0.0))
    board = Leaderboard(out_dir=out_dir, evaluated_on=evaluated_on, rows=rows, oracle=oracle)
    plot_pr_curves(curves, out_dir / "pr_curves.png", title=f"precision-recall on {evaluated_on} pairs")
    write_json(
        {
            "data": str(data_dir),
            "split": prepared.split.to_dict(),
            "hygiene": prepared.hygiene,
            "config": config.to_dict(),
            **board.to_dict(),
            "models": [{k: v for k, v in r.items() if k != "history"} for r in rows],
        },
        out_dir / LEADERBOARD_FILE,
    )
    return board


def _warm_up_torch() -> None:
    """Pay torch's one-time optimizer import (seconds) before any model's clock starts, so that no
    model's training time depends on its place in the list."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _ranking_metrics(pairs: PairSet, score: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import roc_auc_score

    y = pairs.target
    _, best_f1 = best_f1_threshold(y, score)
    return {
        "pr_auc": pr_auc(y, score),
        "ecup_macro_pr_auc": ecup_macro_pr_auc(y, score, pairs.category),
        "roc_auc": float(roc_auc_score(y, score)),
        "best_f1": float(best_f1),
    }


def _throughput(est, cat: Catalogue, pairs: PairSet) -> float:
    """Pairs per second of ``predict_proba`` on at least THROUGHPUT_PAIRS pairs (the held-out ones, repeated)."""
    reps = int(np.ceil(THROUGHPUT_PAIRS / max(len(pairs), 1)))
    rows = np.tile(np.arange(len(pairs)), reps)
    many = pairs.subset(rows)
    est.predict_proba(cat, pairs.subset(np.arange(min(len(pairs), 1024))))  # warm-up
    t0 = time.perf_counter()
    est.predict_proba(cat, many)
    return len(many) / (time.perf_counter() - t0)


def _time_to_baseline(rows: list[dict[str, Any]]) -> None:
    """Training seconds each model took to reach the first model's best validation PR-AUC.

    From each history: the end of the first epoch (or boosting round) that reached it. A boosting
    history's first round includes computing the features and cross-fitting the stacked network.
    """
    base = rows[0]
    target = max(h["valid_pr_auc"] for h in base["history"])
    for r in rows:
        elapsed = np.cumsum([h["seconds"] for h in r["history"]])
        hit = [i for i, h in enumerate(r["history"]) if h["valid_pr_auc"] >= target]
        r["baseline"] = base["model"]
        r["seconds_to_baseline"] = float(elapsed[hit[0]]) if hit else None


def _oracle_row(data_dir: Path, pairs: PairSet) -> dict[str, Any] | None:
    path = data_dir / ORACLE_FILE
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    frame = frame[frame["split"] == "test"].reset_index(drop=True)
    rows = pairs.source_rows
    if len(frame) <= rows.max() or not (
        np.array_equal(frame["variantid1"].to_numpy()[rows], pairs.ids1)
        and np.array_equal(frame["variantid2"].to_numpy()[rows], pairs.ids2)
    ):
        raise DataError(f"{path} does not match test.parquet row for row; regenerate the data with `prodmatch synth`")
    score = frame["score"].to_numpy()[rows]
    return {
        "model": "oracle (Bayes-optimal)",
        **_ranking_metrics(pairs, score),
        "accuracy_at_0.5": float(((score >= 0) == (pairs.target > 0.5)).mean()),
        "_score": score,
    }
