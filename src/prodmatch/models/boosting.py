"""LightGBM boosting for ``gbdt``: one booster per weighting of the auxiliary pairs, each job stopped early on its own
validation metric, with progress reported to the training callback."""

from __future__ import annotations

import logging
import time

import lightgbm as lgb
import numpy as np

from prodmatch.auxiliary import Candidate, describe_weights
from prodmatch.config import TrainConfig
from prodmatch.evaluation import pr_auc
from prodmatch.features import monotone_direction
from prodmatch.training import TrainCallback, default_threads

log = logging.getLogger(__name__)


class JobStopping:
    """Early stopping for several jobs at once: each validation set's best round (by average precision, or by
    log loss with ``--monitor loss``) is tracked, and boosting stops once none has improved for ``patience``
    rounds. The pairs job's average precision, not the notebook's PR-AUC: trees give tied scores (a few
    thousand distinct values), and ``auc(recall, precision)`` interpolates each tied block linearly, which
    rewards a coarse early model (measured: 17 trees, PR-AUC 0.9844 but average precision 0.9781, below the
    oracle's 0.9789)."""

    order = 25  # after LightGBM records the evaluation

    def __init__(self, patience: int, jobs: list[str], monitor: str) -> None:
        self.patience = patience
        self.metric = "average_precision" if monitor == "pr_auc" else "binary_logloss"
        self.higher = monitor == "pr_auc"
        self.best: dict[str, tuple[int, float]] = {job: (0, -np.inf if self.higher else np.inf) for job in jobs}

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        round_ = env.iteration - env.begin_iteration + 1
        for data, metric, value, _ in env.evaluation_result_list:
            if metric != self.metric or data not in self.best:
                continue
            _, best = self.best[data]
            if (value > best) if self.higher else (value < best):
                self.best[data] = (round_, float(value))
        last = max(r for r, _ in self.best.values())
        if round_ - last >= self.patience:
            raise lgb.callback.EarlyStopException(last - 1, env.evaluation_result_list)


class Clock:
    """Records the seconds since ``t0`` at the end of every boosting round."""

    order = 21  # after LightGBM records the evaluation, before early stopping may end the round

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.elapsed: list[float] = []

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        self.elapsed.append(time.perf_counter() - self.t0)


class ProgressCallback:
    """Forwards boosting rounds to the training progress hooks."""

    def __init__(self, callback: TrainCallback, rounds: int) -> None:
        self.callback = callback
        self.rounds = rounds
        self.started = False

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if not self.started:
            self.callback.on_epoch_start(1, 1, self.rounds)
            self.started = True
        loss = next((r[2] for r in env.evaluation_result_list if r[1] == "binary_logloss"), float("nan"))
        self.callback.on_batch_end(float(loss))


class Boosting:
    """Growing one booster for a weighting of the auxiliary pairs, stopped early per job (mixed into
    :class:`GBDTModel`)."""

    def _boost(
        self,
        x: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
        cand: tuple[np.ndarray, np.ndarray] | None,
        config: TrainConfig,
        weights: dict[str, float],
        callback: TrainCallback | None,
        t0: float,
        monotone: bool = False,
    ) -> Candidate:
        """One booster on (x, y, sample_weight); every round evaluated on the labelled validation pairs (the
        pairs job) and the validation candidates (the catalogue job); it stops once neither job has improved
        for ``early_stopping`` rounds, and each job's best round is recorded. ``monotone``: each feature held to
        its direction (:func:`prodmatch.features.monotone_direction`)."""
        params = {
            "objective": "binary",
            "num_leaves": self.params.num_leaves,
            "learning_rate": self.params.learning_rate,
            "min_child_samples": self.params.min_child_samples,
            "feature_fraction": self.params.feature_fraction,
            "bagging_fraction": self.params.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.params.lambda_l2,
            "num_threads": config.threads or default_threads(),
            "seed": config.seed,
            "deterministic": True,
            "verbosity": -1,
            # LightGBM's own average precision (the same as scikit-learn's) and log loss, on every validation set
            "metric": ["average_precision", "binary_logloss"],
        }
        if monotone:
            params["monotone_constraints"] = [monotone_direction(f) for f in self.feature_names_]
            params["monotone_constraints_method"] = "intermediate"
        dtrain = lgb.Dataset(x, y, weight=sample_weight, feature_name=self.feature_names_, free_raw_data=True)
        valid_sets, names = [lgb.Dataset(x_valid, y_valid, reference=dtrain)], ["pairs"]
        if cand is not None:
            valid_sets.append(lgb.Dataset(cand[0], cand[1], reference=dtrain))
            names.append("catalogue")
        dlabelled = valid_sets[0]

        def notebook_pr_auc(preds: np.ndarray, data: lgb.Dataset) -> tuple[str, float, bool]:
            # The notebook's PR-AUC, for the history only (on the labelled validation pairs): ties inflate it,
            # so nothing stops or chooses on it.
            return "pr_auc", pr_auc(data.get_label(), preds) if data is dlabelled else float("nan"), True

        stopper = JobStopping(self.params.early_stopping, names, config.monitor)
        evals: dict = {}
        clock = Clock(t0)
        callbacks = [stopper, lgb.record_evaluation(evals), clock]
        if callback is not None:
            callbacks.append(ProgressCallback(callback, self.params.n_estimators))
        t1 = time.perf_counter()
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=self.params.n_estimators,
            valid_sets=valid_sets,
            valid_names=names,
            feval=notebook_pr_auc,
            callbacks=callbacks,
        )
        grown = len(evals["pairs"]["average_precision"])
        seconds = np.diff(np.concatenate([[0.0], clock.elapsed]))
        history = [
            {
                "iteration": i + 1,
                "valid_loss": evals["pairs"]["binary_logloss"][i],
                "valid_pr_auc": evals["pairs"]["pr_auc"][i],
                "valid_average_precision": evals["pairs"]["average_precision"][i],
                **({"candidates_average_precision": evals["catalogue"]["average_precision"][i]} if cand else {}),
                "seconds": float(seconds[i]),
            }
            for i in range(grown)
        ]
        scores, detail, predictions = {}, {}, {}
        for job, x_job in zip(names, [x_valid, *([cand[0]] if cand is not None else [])], strict=True):
            best, value = stopper.best[job]
            ap = evals[job]["average_precision"][best - 1]
            scores[job] = value if config.monitor == "pr_auc" else -value  # higher is better
            detail[job] = {"best_iteration": best, "average_precision": ap, "history": history}
            predictions[job] = booster.predict(x_job, num_iteration=best)
        log.info(
            "gbdt (%s): %d trees grown in %.1fs; best validation average precision %s",
            describe_weights(weights),
            grown,
            time.perf_counter() - t1,
            ", ".join(
                f"{job} {detail[job]['average_precision']:.4f} at {detail[job]['best_iteration']}" for job in names
            ),
        )
        return Candidate(weights=weights, scores=scores, fitted=booster, detail=detail, predictions=predictions)
