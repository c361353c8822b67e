"""Stage 2, scoring: the candidates' probabilities re-calibrated for the candidates, and the cascade that
re-scores the uncertain ones with a second model."""

from __future__ import annotations

import logging
import time

import numpy as np

from prodmatch.calibration import Calibrator, PriorEstimate, estimate_prior, shift_prior
from prodmatch.catalogue import Catalogue
from prodmatch.config import CALIBRATION_K
from prodmatch.errors import ConfigError
from prodmatch.pairs import PairSet
from prodmatch.runs import model_and_catalogue

log = logging.getLogger(__name__)


def calibrate_candidates(
    model, prob: np.ndarray, sample: tuple[np.ndarray, np.ndarray] | None = None, fit: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """The candidates' probabilities re-calibrated for the candidates, and how.

    The model's probabilities are calibrated on its labelled validation pairs, where matches are often half
    of all pairs; among a catalogue's candidates they are usually a few percent. Without a sample, the share
    of matches among the candidates is estimated by the EM of Saerens et al. (the prior under which the
    shifted probabilities average to it) and the probabilities are moved to it by Bayes' rule: exact if the
    model's evidence means the same for labelled and candidate pairs, an over-estimate where candidates'
    negatives look more like matches than the labelled ones did. With ``sample`` (the model's probabilities
    of a labelled random sample of candidate pairs, and the labels), Platt scaling on the sample calibrates
    on candidates directly and the prior is the calibrated probabilities' mean.

    ``fit`` (bool, one per candidate): the candidates the share is estimated on (each item's nearest few, see
    :data:`prodmatch.config.CALIBRATION_K`); every candidate is then moved by the same Bayes factor.
    None: all of them.

    Returns:
        (probabilities, facts for summary.json).
    """
    from scipy.special import expit, logit

    training_prior = model.calibrator.prior
    if sample is not None:
        sample_prob, target = sample
        if len(np.unique(target)) < 2:
            raise ConfigError("--labelled-sample needs both matches (1) and non-matches (0) among its pairs")
        fitted = Calibrator.fit("platt", logit(np.clip(sample_prob, 1e-12, 1 - 1e-12)), target)
        if fitted.method != "platt":
            raise ConfigError("--labelled-sample: the model's scores do not rank its matches above its non-matches")
        out = expit(fitted.a * logit(np.clip(prob, 1e-12, 1 - 1e-12)) + fitted.b)
        estimate = PriorEstimate(float(out.mean()), "labelled-sample", training_prior, sample_pairs=len(target))
        return out, estimate.to_dict() | {"platt": {"a": fitted.a, "b": fitted.b}}
    if training_prior is None:
        log.warning(
            "the model's run directory does not record the share of matches it was calibrated for (trained "
            "before prodmatch 0.12); its probabilities are used as they are: retrain to calibrate for candidates"
        )
        return prob, PriorEstimate(float("nan"), "none", None).to_dict()
    estimate = estimate_prior(prob if fit is None else prob[fit], training_prior)
    if estimate.prior < 1e-4:
        # The likelihood is highest with no matches at all: the candidates look less like matches than the
        # labelled negatives did, so the model's evidence does not mean the same on both and the shift
        # would be arbitrary.
        log.warning(
            "the share of matches among the candidates cannot be estimated from the model's probabilities "
            "(the estimate falls to %.2g): they are used as they are; give --labelled-sample to calibrate",
            estimate.prior,
        )
        return prob, estimate.to_dict() | {"method": "none", "reason": "the EM estimate fell to zero"}
    log.info(
        "matches among the candidates: %.2f%% estimated (EM over the model's probabilities%s; %.1f%% among the "
        "pairs it was calibrated on)",
        100 * estimate.prior,
        "" if fit is None else f" of the {int(fit.sum()):,} pairs within either item's top {CALIBRATION_K}",
        100 * training_prior,
    )
    facts = estimate.to_dict()
    if fit is not None:
        facts["fitted_on"] = {"pairs": int(fit.sum()), "within_top": CALIBRATION_K}
    return shift_prior(prob, training_prior, estimate.prior), facts


def apply_calibration(model, prob: np.ndarray, calibration: dict) -> np.ndarray:
    """The transform :func:`calibrate_candidates` recorded in ``calibration`` (a full match's summary.json),
    applied to new probabilities: the prior shift of its EM estimate, or the Platt scaling of its labelled
    sample; unchanged where it applied none."""
    from scipy.special import expit, logit

    method = calibration.get("method", "none")
    if method == "labelled-sample":
        platt = calibration["platt"]
        return expit(platt["a"] * logit(np.clip(prob, 1e-12, 1 - 1e-12)) + platt["b"])
    if method == "em":
        return shift_prior(prob, calibration["training_prior"], calibration["prior"])
    return prob


RESCORE_CHUNK = 4096  # pairs per re-scoring call (the progress bar's step)


def rescore_uncertain(
    run_dir,
    data_dir,
    cat: Catalogue,
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    threshold: float,
    band: float,
    progress=None,
) -> tuple[np.ndarray, dict]:
    """The cascade's second stage: the candidates scored within ``band`` of ``threshold`` are updated with the
    evidence of the model in ``run_dir``.

    Bayes' rule, with the two models' evidence taken as independent given the label: a pair's odds become
    the first model's odds times the second model's likelihood ratio, its probability's odds over the odds
    of the share of matches it was calibrated for (both calibrated on labelled pairs). Not a replacement:
    the pairs in the band were chosen because the first model put them near the threshold, so the second
    model's probability alone, moved to the candidates' share of matches, would throw that away (on the
    demo it was below the threshold for every pair of the band, where half are matches); and not a mean,
    which would ignore how far each model is from its prior. Where both models read the same evidence (the
    names) the update over-counts it; the threshold stays the first model's.

    Returns:
        (the candidates' probabilities, facts for summary.json's ``cascade``).
    """
    from pathlib import Path

    from scipy.special import expit, logit

    t0 = time.perf_counter()
    model, other = model_and_catalogue(run_dir, data_dir, None)
    prior = model.calibrator.prior
    if prior is None:
        raise ConfigError(
            f"--rescore {run_dir}: the run does not record the share of matches it was calibrated for (trained "
            "before prodmatch 0.12), so its evidence cannot be weighed; train it again"
        )
    rows = other.ids.get_indexer(cat.ids)
    touch = np.flatnonzero(np.abs(score - threshold) <= band)
    used = np.unique(np.concatenate([left[touch], right[touch]]))
    if (rows[used] < 0).any():
        missing = cat.ids[used[rows[used] < 0]][:5].tolist()
        raise ConfigError(f"--rescore {run_dir}: {data_dir} read for that model lacks candidate items, e.g. {missing}")
    ids = other.ids.to_numpy()
    advance = progress("re-scoring", len(touch)) if progress else None
    second = np.empty(len(touch), dtype=np.float64)
    for s in range(0, len(touch), RESCORE_CHUNK):
        part = touch[s : s + RESCORE_CHUNK]
        a, b = rows[left[part]], rows[right[part]]
        pairs = PairSet(a.astype(np.int32), b.astype(np.int32), None, np.arange(len(part)), ids[a], ids[b])
        second[s : s + len(part)] = model.predict_proba(other, pairs)
        if advance:
            advance(len(part))
    eps = 1e-12
    old = score[touch]
    evidence = logit(np.clip(second, eps, 1 - eps)) - logit(prior)
    fresh = expit(logit(np.clip(old, eps, 1 - eps)) + evidence)
    out = score.copy()
    out[touch] = fresh
    changed = int(((old >= threshold) != (fresh >= threshold)).sum())
    seconds = time.perf_counter() - t0
    log.info(
        "cascade: %s re-scored %d of %d candidate pairs (%.2f%%, within %.2f of the threshold %.3f) in %.1fs; "
        "%d decisions changed",
        model.name,
        len(touch),
        len(score),
        100 * len(touch) / max(len(score), 1),
        band,
        threshold,
        seconds,
        changed,
    )
    return out, {
        "run_dir": str(Path(run_dir)),
        "model": model.name,
        "band": band,
        "rescored": len(touch),
        "share_rescored": float(len(touch) / max(len(score), 1)),
        "decisions_changed": changed,
        "now_matches": int(((fresh >= threshold) & (old < threshold)).sum()),
        "no_longer_matches": int(((fresh < threshold) & (old >= threshold)).sum()),
        "combination": "odds of the first model times the second model's likelihood ratio",
        "second_model_prior": float(prior),
        "pairs_per_second": float(len(touch) / seconds) if seconds > 0 else None,
        "seconds": round(seconds, 3),
    }
