"""The steps a user runs, as Python functions: train, evaluate, predict. The CLI is a thin layer over these."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodmatch.atomic import write_json, write_parquet
from prodmatch.auxiliary import AuxPairs
from prodmatch.calibration import Calibrator, choose_threshold
from prodmatch.catalogue import Catalogue
from prodmatch.config import DataConfig, TrainConfig
from prodmatch.errors import ConfigError
from prodmatch.evaluation import binary_metrics
from prodmatch.evidence import count_none, describe
from prodmatch.feedback import decided_pairs, with_labels
from prodmatch.io import TEST_FILE, TRAIN_FILE, read_catalogue, read_pairs_table
from prodmatch.mining import drop_likely_positives, mine_negatives
from prodmatch.models import DEFAULT_MODEL, MODELS, PairModel, create_model
from prodmatch.models.base import CONFIG_FILE, JobHead
from prodmatch.pairs import (
    PairSet,
    SplitReport,
    augment_transitive,
    clean_pairs,
    load_pairs,
    make_pairs,
    pair_hygiene,
    split_pairs,
)
from prodmatch.plots import plot_boosting, plot_feature_importance, plot_history, plot_pr_curves
from prodmatch.runs import model_and_catalogue
from prodmatch.training import CHECKPOINT_FILE, RESUME_DIR, TrainCallback, resumable

__all__ = ["PreparedPairs", "TrainReport", "evaluate", "predict", "prepare_pairs", "score_pairs", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    """What ``train`` did and where it put it."""

    run_dir: Path
    model: PairModel
    split: SplitReport
    metrics: dict[str, Any]
    history: list[dict]

    @property
    def plots(self) -> list[Path]:
        return sorted((self.run_dir / "plots").glob("*.png"))


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    params: dict[str, Any] | None = None,
    config: TrainConfig | None = None,
    data_config: DataConfig | None = None,
    overwrite: bool = False,
    resume: bool = False,
    callback: TrainCallback | None = None,
    catalogue: Catalogue | None = None,
) -> TrainReport:
    """Train a model on ``data_dir/train.parquet`` and write a complete run directory.

    The labelled pairs are split into train and validation by ``config.split``; the best epoch on
    validation is kept. If ``data_dir/test.parquet`` has targets, the model is evaluated on it too.

    Args:
        data_dir: an E-CUP layout directory.
        out_dir: the run directory to create.
        model: a registered model name.
        params: the model's hyperparameters (defaults otherwise).
        config: training settings.
        data_config: which modalities to read.
        overwrite: replace an existing run directory.
        resume: continue an interrupted run from its checkpoint.
        callback: progress hooks.
        catalogue: an already loaded catalogue of ``data_dir`` (skips reading it again).

    Returns:
        A :class:`TrainReport`.

    Raises:
        ConfigError: the run directory exists (and neither overwrite nor resume was asked), or resume fails.
        DataError: the data is invalid.
    """
    config = config or TrainConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    model_class = MODELS.get(model)
    if model_class is None:
        raise ConfigError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    est = create_model(model, **(params or {}))
    _prepare_run_dir(out_dir, overwrite=overwrite, resume=resume)
    try:
        return _train_into(est, model, model_class, data_dir, out_dir, config, data_config, resume, callback, catalogue)
    except BaseException:
        # A failed run leaves nothing behind but what --resume can use: no empty or half-written run.
        if not resumable(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)
            log.info("training failed; removed the unfinished run directory %s", out_dir)
        raise


def _train_into(
    est: PairModel,
    model: str,
    model_class: type[PairModel],
    data_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    data_config: DataConfig | None,
    resume: bool,
    callback: TrainCallback | None,
    catalogue: Catalogue | None,
) -> TrainReport:
    t0 = time.perf_counter()
    read_config = est.read_config(data_config)
    if config.hard_negatives > 0:  # mining blocks on shared values of names and attributes, as `match` does
        read_config = replace(read_config, load_names=True, load_attributes=True)
    cat = catalogue or read_catalogue(data_dir, read_config)
    load_seconds = time.perf_counter() - t0
    prepared = prepare_pairs(data_dir, cat, config)
    before_fit = time.perf_counter() - t0  # reading, cleaning, splitting, mining

    fit_kw: dict[str, Any] = {}
    if est.trains_on_aux:
        fit_kw = {"aux": prepared.aux, "candidates": prepared.valid_candidates}
    elif prepared.aux is not None:
        log.info(
            "%s trains on the labelled pairs only: it takes no auxiliary pairs (%s left out)",
            model,
            ", ".join(f"{n:,} {k}" for k, n in prepared.aux.counts().items()),
        )
    est.fit(
        cat,
        prepared.train,
        prepared.valid,
        config,
        checkpoint_dir=out_dir,
        resume=resume,
        callback=callback,
        **fit_kw,
    )
    metrics: dict[str, Any] = {
        "model": model,
        **est.fit_summary(),
        "load_seconds": load_seconds,
        "seconds_before_fit": before_fit,
        "split": prepared.split.to_dict(),
        "hygiene": prepared.hygiene,
    }
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    # The pairs job: calibrated, and its threshold chosen, on the labelled validation pairs only.
    valid_scores = est.score(cat, prepared.valid, config.eval_batch_size)
    choice = est.calibrate(
        valid_scores.logits, prepared.valid.target, method=config.calibration, target_precision=config.target_precision
    )
    log.info(
        "pairs job: calibration %s; threshold %.4f (%s): validation precision %.4f, recall %.4f",
        est.calibrator.method,
        choice.threshold,
        choice.rule,
        choice.precision,
        choice.recall,
    )
    metrics["calibration"] = est.calibrator.method
    metrics["threshold"] = choice.to_dict()
    if prepared.valid_calibration is not None and len(prepared.valid_calibration):
        metrics["jobs"] = {"catalogue": _calibrate_catalogue_job(est, cat, prepared, config)}
    metrics["jobs"] = {"pairs": est.describe_job(), **metrics.get("jobs", {})}
    metrics["selection"] = getattr(est, "selection_", None) or {}
    valid_prob = est.calibrated(valid_scores)
    metrics["valid"] = binary_metrics(
        prepared.valid.target, valid_prob, threshold=est.threshold, groups=prepared.valid.category
    )
    curves["validation"] = (prepared.valid.target, valid_prob)
    if prepared.test is not None:
        test_prob = est.predict_proba(cat, prepared.test, config.eval_batch_size)
        metrics["test"] = binary_metrics(
            prepared.test.target, test_prob, threshold=est.threshold, groups=prepared.test.category
        )
        curves["test"] = (prepared.test.target, test_prob)
    est.release_store()  # what fitting kept for scoring its validation pairs

    history = est.history_
    plots = out_dir / "plots"
    plot_pr_curves(curves, plots / "pr_curve.png", title=f"{model}: precision-recall")
    if history and "epoch" in history[0]:  # networks and fine-tuned encoders: one record per epoch
        plot_history(history, plots / "training.png", best_epoch=metrics["best_epoch"])
    else:
        plot_boosting(history, plots / "training.png", best_iteration=metrics.get("best_iteration"))
    if "feature_importance" in metrics:
        plot_feature_importance(metrics["feature_importance"], plots / "feature_importance.png")
    write_json(history, out_dir / "history.json")
    write_json(metrics, out_dir / "metrics.json")
    est.save(
        out_dir,
        extra={
            "train": config.to_dict(),
            "data": {"source": str(data_dir), "id_kind": cat.id_kind},
        },
    )
    (out_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete; nothing left to resume
    shutil.rmtree(out_dir / RESUME_DIR, ignore_errors=True)
    return TrainReport(run_dir=out_dir, model=est, split=prepared.split, metrics=metrics, history=history)


def _calibrate_catalogue_job(est: PairModel, cat: Catalogue, prepared: PreparedPairs, config: TrainConfig) -> dict:
    """Calibrate the catalogue job on pairs like a catalogue's candidates: the labelled validation pairs and the
    validation items' mined neighbours (less those that look like matches: calibration takes every label at its
    word, and about as many of the mined pairs are unlabelled matches as among ``match``'s candidates, which
    would pull every probability down). The share of matches there is saved with it: ``match`` moves the
    probabilities from it to the candidates' own. Its threshold (``match --calibrate none``) is chosen on the
    labelled validation pairs."""
    head = est.catalogue_head_ or JobHead(Calibrator("none"), 0.5)
    est.catalogue_head_ = head
    view = est.for_job("catalogue")
    calibration = prepared.valid.concat(prepared.valid_calibration)
    logits = view.predict_logits(cat, calibration, config.eval_batch_size)
    head.calibrator = Calibrator.fit(config.calibration, logits, calibration.target)
    head.threshold_choice = choose_threshold(
        prepared.valid.target, head.calibrator(logits[: len(prepared.valid)]), config.target_precision
    )
    head.threshold = head.threshold_choice.threshold
    log.info(
        "catalogue job: calibrated on %d labelled and %d mined validation pairs (%.1f%% matches)%s",
        len(prepared.valid),
        len(prepared.valid_calibration),
        100 * float(calibration.target.mean()),
        "" if view is not est and view._job_state("catalogue") else "; it scores with the pairs job's model",
    )
    return {
        **est.for_job("catalogue").describe_job(),
        "calibration_pairs": {"labelled": len(prepared.valid), "mined": len(prepared.valid_calibration)},
    }


@dataclass
class PreparedPairs:
    """Labelled pairs ready for fitting: cleaned and split; the auxiliary training pairs (mined, augmented);
    the test pairs when labelled; and the validation items' candidates for the catalogue job."""

    train: PairSet  # the labelled training pairs
    valid: PairSet
    test: PairSet | None
    split: SplitReport
    hygiene: dict[str, Any]
    aux: AuxPairs | None = None  # training pairs the labels did not give (see prodmatch.auxiliary)
    valid_candidates: PairSet | None = None  # negatives mined for the validation items: choosing the catalogue job
    valid_calibration: PairSet | None = None  # of them, those unlike the labelled matches: calibrating it


def _labels_to_train(
    train_pairs: PairSet, valid_pairs: PairSet, labelled: PairSet, split: SplitReport, review: dict
) -> tuple[PairSet, dict]:
    """A review's new pairs on the training side. Where the split holds items out of validation (group, items),
    a new pair with an item of validation would undo that, so it is left out, and counted."""
    keep = np.ones(len(labelled), dtype=bool)
    if split.method in ("group", "items"):
        valid_items = np.union1d(valid_pairs.left, valid_pairs.right)
        keep = ~(np.isin(labelled.left, valid_items) | np.isin(labelled.right, valid_items))
        if not keep.all():
            log.warning(
                "%d of the review's %d new pairs have an item of the validation pairs; left out of training so "
                "that no item is on both sides of the %s split",
                int((~keep).sum()), len(labelled), split.method,
            )  # fmt: skip
    review = {**review, "validation_items_left_out": int((~keep).sum()), "joined_training": int(keep.sum())}
    return train_pairs.concat(labelled.subset(keep)), review


def prepare_pairs(data_dir: str | Path, catalogue: Catalogue, config: TrainConfig) -> PreparedPairs:
    """Read train.parquet, clean it, split it, augment the training side; read test.parquet if labelled.

    Every step logs its counts; the counts are returned under ``hygiene`` for metrics.json.
    """
    data_dir = Path(data_dir)
    unknown = "drop" if config.drop_unknown else "error"
    labelled = None  # a review's new pairs: training side only, after the split (see prodmatch.feedback)
    if config.labels is None:
        pairs = load_pairs(data_dir / TRAIN_FILE, catalogue, require_target=True, unknown=unknown)
        review = None
    else:
        table = read_pairs_table(data_dir / TRAIN_FILE, require_target=True)
        test_path = data_dir / TEST_FILE
        test = read_pairs_table(test_path, require_target=False) if test_path.exists() else None
        table, new, review = with_labels(table, decided_pairs(config.labels), test)
        log.info(
            "%s: %d decided labels: %d relabel a pair of train.parquet, %d pairs of test.parquet left out so that "
            "test stays unseen, %d new pairs for the training side",
            config.labels, review["labels"], review["relabelled"], review["test_pairs_left_out"], review["new_pairs"],
        )  # fmt: skip
        pairs = make_pairs(catalogue, table, unknown=unknown, source=str(data_dir / TRAIN_FILE))
        review.update(joined_training=0, validation_items_left_out=0)
        if len(new):
            labelled = make_pairs(catalogue, new, unknown="error", source=str(config.labels))
            labelled.source_rows = labelled.source_rows + len(table)  # rows after train.parquet's, as if appended
    hygiene: dict[str, Any] = pair_hygiene(pairs)
    if review is not None:
        hygiene["review_labels"] = review
    log.info(
        "train.parquet: %d pairs, %.1f%% positive; %d reversed duplicates (%d with conflicting labels)",
        len(pairs),
        100 * pairs.positive_rate(),
        hygiene["reversed_duplicates"],
        hygiene["conflicting_labels"],
    )
    pairs, hygiene["cleaning"] = clean_pairs(pairs, config.conflicts)
    if config.valid_pairs is not None:
        train_pairs = pairs
        valid_pairs, hygiene["valid_cleaning"] = clean_pairs(
            load_pairs(config.valid_pairs, catalogue, require_target=True), config.conflicts
        )
        split = _given_split(train_pairs, valid_pairs)
    else:
        train_pairs, valid_pairs, split = split_pairs(
            pairs,
            method=config.split,
            valid_fraction=config.valid_fraction,
            seed=config.seed,
            min_valid_fraction=config.min_valid_fraction,
        )
    log.info(
        "%s split: %d train / %d validation pairs, %d / %d items, %d items on both sides%s",
        split.method,
        split.train_pairs,
        split.valid_pairs,
        split.train_items,
        split.valid_items,
        split.overlap_items,
        f", {split.pairs_lost} pairs across the sides left out" if split.pairs_lost else "",
    )
    if labelled is not None:
        train_pairs, hygiene["review_labels"] = _labels_to_train(train_pairs, valid_pairs, labelled, split, review)
    if split.overlap_items and config.split == "random":
        log.warning(
            "the random split shares %d items between train and validation: validation scores are "
            "optimistic; the default --split group avoids this",
            split.overlap_items,
        )
    augmented = None
    if config.augment == "transitive":
        grown, hygiene["augmentation"] = augment_transitive(train_pairs, len(catalogue))
        augmented = grown.subset(np.arange(len(train_pairs), len(grown)))
    test = None
    test_path = data_dir / TEST_FILE
    if test_path.exists():
        test = load_pairs(test_path, catalogue, require_target=False)
        if test.target is None:
            log.info("%s has no targets; skipping the test evaluation", test_path)
            test = None
    mined = valid_candidates = valid_calibration = None
    if config.hard_negatives:
        test_items = [test.left, test.right] if test is not None else []
        mined, hygiene["hard_negatives"] = _mine(
            catalogue,
            train_pairs,
            [valid_pairs.left, valid_pairs.right, *test_items],
            config,
            "training",
            config.drop_mined_above,
        )
        # Validation's own, among items outside training and test: the catalogue job is chosen and calibrated
        # on pairs like the ones `match` will score, not only on the labelled ones.
        valid_candidates, hygiene["hard_negatives_validation"] = _mine(
            catalogue, valid_pairs, [train_pairs.left, train_pairs.right, *test_items], config, "validation", None
        )
        valid_calibration, dropped = _without_likely_matches(catalogue, valid_pairs, valid_candidates, config)
        hygiene["hard_negatives_validation"]["dropped_as_likely_positive"] = dropped
    return PreparedPairs(
        train=train_pairs,
        valid=valid_pairs,
        test=test,
        split=split,
        hygiene=hygiene,
        aux=AuxPairs.of(mined=mined, transitive=augmented),
        valid_candidates=valid_candidates,
        valid_calibration=valid_calibration,
    )


# Mined validation pairs a quick model scores as more likely a match than a pair drawn from its own training pairs
# are left out of the catalogue job's calibration (see prodmatch.mining.likely_positives).
CALIBRATION_DROP_MINED_ABOVE = None


def _without_likely_matches(
    catalogue: Catalogue, labelled: PairSet, mined: PairSet, config: TrainConfig
) -> tuple[PairSet, int]:
    """The mined validation pairs a quick model does not score as likely matches (see ``likely_positives``)."""
    kept, dropped = drop_likely_positives(
        catalogue, labelled, mined, list(catalogue.modalities), seed=config.seed, threshold=CALIBRATION_DROP_MINED_ABOVE
    )
    log.info(
        "validation: %d mined negatives calibrate the catalogue job; %d a quick model scores as likely matches left out",
        len(kept),
        dropped,
    )
    return kept, dropped


def _mine(
    catalogue: Catalogue,
    pairs: PairSet,
    held_out: list[np.ndarray],
    config: TrainConfig,
    side: str,
    drop_above: float | None,
) -> tuple[PairSet, dict]:
    """Hard negatives for the items of ``pairs``, none with an item of ``held_out``; with ``drop_above``, those
    scored that likely or more to be matches dropped (see ``prodmatch.mining.drop_likely_positives``)."""
    mined, report = mine_negatives(
        catalogue,
        pairs,
        list(catalogue.modalities),
        per_item=config.hard_negatives,
        k=config.mine_k,
        exclude_items=np.unique(np.concatenate(held_out)) if held_out else None,
        seed=config.seed,
        max_queries=config.mine_max_items,
        far_per_item=config.far_negatives,
    )
    if drop_above is not None:
        mined, report.dropped_as_likely_positive = drop_likely_positives(
            catalogue, pairs, mined, list(catalogue.modalities), seed=config.seed, threshold=drop_above
        )
        log.info(
            "%s: kept %d mined negatives; dropped %d scored %.2f or more like the labelled positives",
            side,
            len(mined),
            report.dropped_as_likely_positive,
            drop_above,
        )
    return mined, report.to_dict()


def _given_split(train: PairSet, valid: PairSet) -> SplitReport:
    """The report of a split given by the data (``--valid-pairs``) rather than made here."""
    train_items = np.union1d(train.left, train.right)
    valid_items = np.union1d(valid.left, valid.right)
    return SplitReport(
        method="given",
        train_pairs=len(train),
        valid_pairs=len(valid),
        train_items=len(train_items),
        valid_items=len(valid_items),
        overlap_items=len(np.intersect1d(train_items, valid_items)),
    )


def evaluate(
    run_dir: str | Path,
    data_dir: str | Path,
    pairs_path: str | Path,
    *,
    out: str | Path | None = None,
    threshold: float | None = None,
    plot: str | Path | None = None,
    catalogue: Catalogue | None = None,
) -> dict[str, Any]:
    """Score a labelled pairs file with a saved model and compute every metric.

    Args:
        run_dir: a trained run directory.
        data_dir: the item data the pairs refer to.
        pairs_path: parquet with variantid1, variantid2, target (and optionally category2).
        out: write the metrics as JSON here.
        threshold: decision threshold for accuracy/precision/recall/F1; the model's saved one by default.
        plot: write a PR curve PNG here.
        catalogue: an already loaded catalogue of ``data_dir``.

    Returns:
        The metrics dict (see :func:`prodmatch.evaluation.binary_metrics`).
    """
    est, cat = model_and_catalogue(run_dir, data_dir, catalogue)
    pairs = load_pairs(pairs_path, cat, require_target=True)
    prob = est.predict_proba(cat, pairs)
    metrics = binary_metrics(
        pairs.target, prob, threshold=est.threshold if threshold is None else threshold, groups=pairs.category
    )
    if out is not None:
        write_json(metrics, out)
    if plot is not None:
        plot_pr_curves({Path(pairs_path).name: (pairs.target, prob)}, plot)
    return metrics


def score_pairs(model: PairModel, catalogue: Catalogue, pairs: PairSet, *, labels: bool = False) -> pd.DataFrame:
    """E-CUP submission frame: variantid1, variantid2, target (probability), one row per pair, in order.

    With ``labels``, a ``label`` column (1 where the probability reaches the model's saved threshold) and an
    ``evidence`` column: what the two items had to compare, ``"none"`` where nothing (such a pair scores at
    most the prior, below the threshold: never a match). Such pairs are counted in the log either way.
    """
    scores = model.score(catalogue, pairs)
    prob = model.calibrated(scores)
    none = count_none(scores.evidence)
    if none:
        log.warning(
            "%d of %d pairs have nothing to compare (no embedding on both items, no shared name word, attribute "
            "value or picture): scored at most the prior (%.3f), below the threshold, never labelled a match",
            none,
            len(pairs),
            model.calibrator.prior if model.calibrator.prior is not None else float("nan"),
        )
    order = np.argsort(pairs.source_rows, kind="stable")  # back to the caller's row order
    frame = pd.DataFrame({"variantid1": pairs.ids1[order], "variantid2": pairs.ids2[order], "target": prob[order]})
    if labels:
        frame["label"] = model.predict_labels(prob[order])
        frame["evidence"] = describe(scores.evidence[order], model.evidence_names())
    return frame


def predict(
    run_dir: str | Path,
    data_dir: str | Path,
    pairs_path: str | Path,
    out_path: str | Path | None = None,
    *,
    labels: bool = False,
    catalogue: Catalogue | None = None,
) -> pd.DataFrame:
    """Score every row of a pairs file; write the E-CUP submission parquet if ``out_path`` is given.

    Every row gets a score, in input order. Items missing a modality are scored with it absent.

    Raises:
        UnknownIdsError: listing ids that no item file has; nothing is written.
    """
    est, cat = model_and_catalogue(run_dir, data_dir, catalogue)
    pairs = load_pairs(pairs_path, cat, require_target=False, unknown="error")
    frame = score_pairs(est, cat, pairs, labels=labels)
    if out_path is not None:
        write_parquet(frame, out_path)
    return frame


def _prepare_run_dir(out_dir: Path, *, overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume contradict each other; pick one")
    if resume:
        if not resumable(out_dir):
            raise ConfigError(
                f"--resume: {out_dir} holds no checkpoint ({CHECKPOINT_FILE} or {RESUME_DIR}/); nothing to resume: "
                "start the run without --resume"
            )
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            what = (
                "an interrupted run (resume it with --resume)"
                if resumable(out_dir)
                else "a run"
                if (out_dir / CONFIG_FILE).exists()
                else "files"
            )
            raise ConfigError(f"{out_dir} already holds {what}; pass --overwrite to replace it or choose another --out")
        if not (out_dir / CONFIG_FILE).exists() and not resumable(out_dir) and not (out_dir / "metrics.json").exists():
            raise ConfigError(f"{out_dir} holds files that are not a prodmatch run; refusing to delete them")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
