"""``gbdt``: LightGBM over pairwise similarity features (see :mod:`prodmatch.features`), stacked on a network.

The approach of the top E-CUP 2024 solutions: similarities of embeddings, photos, categories,
attributes and names, fed to gradient boosting. Every feature is symmetric, so the model is too.
Boosting stops early on the validation pairs, as the networks' epochs do.

Fixed similarities cannot find the few directions of an embedding that carry the product, which a
network learns. So by default one more feature is the score of a ``siamese`` network, *cross-fitted*:
the training pairs are cut into folds along connected components, a network is trained on all folds but
one and scores that one, so every training pair gets a score from a network that never saw it. New pairs
get the mean score of the fold networks. ``-p stack=`` turns this off.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import lightgbm as lgb
import numpy as np

from prodmatch.auxiliary import AuxPairs, Candidate, choose, describe_weights, selection_record, weight_candidates
from prodmatch.calibration import Calibrator
from prodmatch.catalogue import Catalogue
from prodmatch.config import INFERENCE_BATCH, TrainConfig
from prodmatch.errors import ConfigError, ModelError
from prodmatch.evaluation import pr_auc
from prodmatch.evidence import side_bit
from prodmatch.features import PairFeaturizer, WordPairScorer, monotone_direction
from prodmatch.io import atomic_path
from prodmatch.models.base import REGISTRY, JobHead, PairModel, Scores, create_model, load_model
from prodmatch.models.siamese import NumpySiamese, SiameseNet
from prodmatch.models.torch_model import TorchPairModel
from prodmatch.pairs import Folds, PairSet, group_folds
from prodmatch.store import ItemStore, StackedTowers, near_split
from prodmatch.training import TrainCallback, default_threads

__all__ = ["GBDTModel", "GBDTParams"]

log = logging.getLogger(__name__)

BOOSTER_FILE = "model.lgb.txt"  # the pairs job's booster
CATALOGUE_BOOSTER_FILE = "model.catalogue.lgb.txt"  # the catalogue job's, when training chose another for it
IDF_FILE = "name_idf.npy"
WORD_IDF_FILE = "name_word_idf.npy"
WHITENING_FILE = "whitening.npz"
WORD_PAIRS_FILE = "word_pairs.npz"  # the learned word-pair model (stack_text="words")
STACK_DIR = "stack"  # the cross-fitted networks, one run directory per fold
TEXT_STACK_DIR = "text_stack"  # the cross-fitted transformers: text_stack/<model>/fold<k>, one run directory each
STACK_TEXTS = ("words", "bi-encoder", "cross-encoder")
TRANSFORMERS = ("bi-encoder", "cross-encoder")  # the stacked text models that fine-tune an encoder
# Fitting parses every touched item's side data once and keeps one store of them, up to this many items (about
# 4 KB each); beyond, stores are built per chunk of pairs and memory stays bounded.
SHARED_STORE_MAX_ITEMS = 500_000
# GBDTParams.monotone: the jobs whose boosters are held to monotone constraints, per setting
MONOTONE_JOBS = {"catalogue": ("catalogue",), "both": ("pairs", "catalogue"), "none": ()}


@dataclass(frozen=True)
class GBDTParams:
    """LightGBM hyperparameters and which side data the features use."""

    num_leaves: int = 63
    learning_rate: float = 0.05
    n_estimators: int = 2000  # upper bound; early stopping on validation picks the number
    early_stopping: int = 100  # rounds without validation improvement
    min_child_samples: int = 20
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.9
    lambda_l2: float = 1.0
    use: str = "discriminant,extra_pictures,categories,attributes,numbers,names,words"  # side-data feature groups, comma-separated
    stack: str = "siamese"  # a network whose out-of-fold score becomes one more feature; "" for none
    stack_folds: int = 0  # 0: 2 when connected components make folds, else 4 (folds by item; see group_folds)
    # at most this many epochs per fold network (fewer if --epochs is lower), stopped early on validation; 0: --epochs
    stack_epochs: int = 0
    # and at most this many pairs seen per fold network (epochs times its training pairs, at least one epoch): a
    # time budget that only large data reaches. At E-CUP size (about 460,000 pairs per fold) it allows 5 epochs;
    # a fold of up to 250,000 pairs trains all of --epochs. A fixed cap of 5 epochs everywhere, as before, cost
    # the real benchmarks 0.4-1.3 points of F1 (docs/benchmarks.md, bench (h)). 0: no budget.
    stack_budget: int = 2_500_000
    # learned text models, cross-fitted the same way, comma-separated: "words" (a word-pair model,
    # WordPairScorer), "bi-encoder", "cross-encoder" (fine-tuned transformers); "" for none
    stack_text: str = "words"
    # which jobs' boosters are held to monotone constraints (each similarity may only raise the probability of a
    # match, each distance or conflict count only lower it: prodmatch.features.monotone_direction): "catalogue"
    # (the catalogue job's only: see docs/models.md), "both" or "none"
    monotone: str = "catalogue"
    encoder_path: str = ""  # the stacked transformers' local Hugging Face folder; "" is the bundled all-MiniLM-L6-v2
    device: str = "auto"  # where the stacked transformers fine-tune: auto, cpu or cuda


def stack_epochs(epochs: int, cap: int, budget: int, fold_pairs: int) -> int:
    """The epochs of one stacked fold network: ``epochs`` (``--epochs``), at most ``cap`` (0: no cap), and at
    most ``budget`` pairs seen over a fold of ``fold_pairs`` training pairs (0: no budget), at least one."""
    if cap:
        epochs = min(epochs, cap)
    if budget and fold_pairs:
        epochs = min(epochs, max(1, budget // fold_pairs))
    return max(1, epochs)


class GBDTModel(PairModel):
    """Gradient-boosted trees on pair features. Symmetric by construction."""

    name = "gbdt"
    params_class = GBDTParams
    symmetric = True
    trains_on_aux = True
    needs = frozenset({"categories", "names", "attributes", "extra_pictures"})
    explanation = "treeshap"
    predict_threads_: int | None = None  # LightGBM's prediction threads; None: its default (all cores)

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        stack = self.params.stack
        if stack and not (stack in REGISTRY and issubclass(REGISTRY[stack], TorchPairModel)):
            networks = sorted(n for n, c in REGISTRY.items() if issubclass(c, TorchPairModel))
            raise ConfigError(f"gbdt: stack={stack!r} is not a network; use one of {networks}, or stack= for none")
        if self.params.monotone not in MONOTONE_JOBS:
            raise ConfigError(f"gbdt: monotone={self.params.monotone!r}; use one of {list(MONOTONE_JOBS)}")
        if self.params.stack_folds == 1 or self.params.stack_folds < 0:
            raise ConfigError(f"gbdt: stack_folds must be 0 (automatic) or at least 2, got {self.params.stack_folds}")

    def fit(
        self,
        catalogue: Catalogue,
        train: PairSet,
        valid: PairSet,
        config: TrainConfig | None = None,
        *,
        aux: AuxPairs | None = None,
        candidates: PairSet | None = None,
        modalities: list[str] | None = None,
        callback: TrainCallback | None = None,
        **_: object,
    ) -> GBDTModel:
        """Compute features, cross-fit the stacked models on the labelled pairs, and boost once per weighting of
        the auxiliary pairs; each job keeps the booster and round best on its own validation pairs.

        Args:
            catalogue: the items.
            train, valid: the labelled training and validation pairs.
            config: training settings (``aux_weights``: the grid of auxiliary weights).
            aux: auxiliary training pairs (mined negatives, transitive positives), or None.
            candidates: the validation items' mined candidates (unlabelled, read as non-matches): with the
                labelled validation pairs, what the catalogue job is chosen on. None: one job.
            modalities: the embeddings to use; all by default.
            callback: progress hooks.
        """
        config = config or TrainConfig()
        names = list(modalities or catalogue.modalities)
        self.modalities_ = [(n, catalogue.modalities[n].dim) for n in names]
        use = [u.strip() for u in self.params.use.split(",") if u.strip()]
        aux = aux if aux is not None and len(aux) else None
        t0 = time.perf_counter()
        matched = train.target > 0.5
        items = [train.left, train.right] + ([aux.pairs.left, aux.pairs.right] if aux is not None else [])
        self.featurizer_ = PairFeaturizer(names, use).fit(
            catalogue, np.concatenate(items), (train.left[matched], train.right[matched])
        )
        self.store_ = None
        # Every item fitting touches, its side data parsed once (names, attributes), for the training pairs' features
        # and, with the stacked models' item vectors added, the store every other pair is scored from.
        touched = np.unique(
            np.concatenate(
                [*items, valid.left, valid.right, *([candidates.left, candidates.right] if candidates else [])]
            )
        )
        side = self.featurizer_.side_data(catalogue, touched) if len(touched) <= SHARED_STORE_MAX_ITEMS else None
        x_train, feature_names = self.featurizer_.transform(catalogue, train.left, train.right, side=side)
        self.featurizer_._hashed = None  # only the training transform reuses it; do not keep the catalogue alive
        self.stack_models_: list[PairModel] = []
        self._numpy_nets = None  # rebuilt from the networks fitted now
        self.word_scorer_: WordPairScorer | None = None
        self.text_models_: dict[str, list[PairModel]] = {}
        texts = self._stack_texts()
        use_words = "words" in texts and catalogue.names is not None
        encoders = [t for t in texts if t in TRANSFORMERS]
        # The stacked models learn from the labelled pairs only: their scores are features of both jobs' boosters,
        # and the auxiliary pairs reach a booster only at the weight its job chose (prodmatch.auxiliary).
        folds = self._folds(train, config) if self.params.stack or use_words or encoders else None
        if self.params.stack:
            oof = self._fit_stack(catalogue, train, valid, config, names, callback, folds)
            x_train = np.column_stack([x_train, oof])
            feature_names = [*feature_names, f"stack_{self.params.stack}"]
        if use_words:
            oof = self._fit_word_stack(catalogue, train, folds)
            x_train = np.column_stack([x_train, oof])
            feature_names = [*feature_names, "stack_words"]
        for kind in encoders:
            oof = self._fit_text_stack(kind, catalogue, train, valid, config, callback, folds)
            x_train = np.column_stack([x_train, oof])
            feature_names = [*feature_names, _text_feature(kind)]
        self.feature_names_ = feature_names
        self.booster_ = self.catalogue_booster_ = None
        if side is not None:  # kept until the caller has calibrated and evaluated (release_store)
            self.store_ = self.item_store(catalogue, touched, side=side)
        # Every pair the labels did not put in training goes through the scoring path itself, the item-feature
        # store: validation, the auxiliary pairs (scored by the mean of the fold models, as a catalogue's
        # candidates are) and the validation candidates.
        x_valid = self._pair_features(catalogue, valid.left, valid.right)
        x_aux = None if aux is None else self._pair_features(catalogue, aux.pairs.left, aux.pairs.right)
        x_cand = None
        if candidates is not None and len(candidates):
            x_cand = np.concatenate([x_valid, self._pair_features(catalogue, candidates.left, candidates.right)])
            y_cand = np.concatenate([valid.target, np.zeros(len(candidates), dtype=np.float32)])
        # The caller calibrates both jobs on these very pairs next: their features are kept (release_store).
        memo_pairs = [valid] + ([candidates] if x_cand is not None else [])
        self._memo = FeatureMemo.of(
            catalogue,
            np.concatenate([p.left for p in memo_pairs]),
            np.concatenate([p.right for p in memo_pairs]),
            x_valid if x_cand is None else x_cand,
        )
        log.info(
            "gbdt: %d features of %d labelled + %d auxiliary training pairs, %d validation pairs%s in %.1fs",
            len(feature_names),
            len(train),
            0 if aux is None else len(aux),
            len(valid),
            "" if x_cand is None else f" and {len(x_cand) - len(valid)} validation candidates",
            time.perf_counter() - t0,
        )

        jobs = ["pairs"] + (["catalogue"] if x_cand is not None else [])
        metric = "average_precision" if config.monitor == "pr_auc" else "binary_logloss"

        def fit_one(weights: dict[str, float], monotone: bool = False) -> Candidate:
            if weights and aux is not None:
                keep, w = aux.subset(weights, config.seed)
                x = np.concatenate([x_train, x_aux[keep]])
                y = np.concatenate([train.target, aux.pairs.target[keep]])
                sample_weight = np.concatenate([np.ones(len(train), dtype=np.float32), w])
            else:
                x, y, sample_weight = x_train, train.target, None
            return self._boost(
                x,
                y,
                sample_weight,
                x_valid,
                valid.target,
                None if x_cand is None else (x_cand, y_cand),
                config,
                weights,
                callback,
                t0,
                monotone,
            )

        grid = config.aux_weights if config.aux_weights is not None else self.default_aux_weights
        labels = {"pairs": valid.target} | ({"catalogue": y_cand} if x_cand is not None else {})
        # One pool of boosters (one per weighting of the auxiliary pairs) per kind of constraint the jobs want;
        # each job chooses within its own. Both jobs are evaluated every round in either pool.
        held = MONOTONE_JOBS[self.params.monotone]
        pools: dict[bool, list[str]] = {}
        for job in jobs:
            pools.setdefault(job in held, []).append(job)
        chosen, tried = {}, {}
        for monotone, pool_jobs in pools.items():
            fit = functools.partial(fit_one, monotone=monotone)
            pool = [fit(w) for w in weight_candidates(aux, grid)]
            chosen |= choose(pool, pool_jobs, metric, fit, labels, config.seed)
            tried |= dict.fromkeys(pool_jobs, pool)
        pairs_pick = chosen["pairs"]
        self.booster_, self.best_iteration_ = pairs_pick.fitted, pairs_pick.detail["pairs"]["best_iteration"]
        self.history_ = pairs_pick.detail["pairs"]["history"]
        self.selection_ = {job: selection_record(job, metric, tried[job], c) for job, c in chosen.items()}
        for job, record in self.selection_.items():
            record["monotone"] = job in held
        self.catalogue_head_ = None
        if "catalogue" in chosen:
            pick = chosen["catalogue"]
            iteration = pick.detail["catalogue"]["best_iteration"]
            if pick.fitted is not pairs_pick.fitted or iteration != self.best_iteration_:
                self.catalogue_booster_, self.catalogue_iteration_ = pick.fitted, iteration
            # calibrated for the candidates by the caller (prodmatch.api), once the model can score
            self.catalogue_head_ = JobHead(Calibrator("none"), 0.5, None, self.selection_["catalogue"])
        if self.store_ is not None:
            self.use_store(self.store_)  # now the boosters exist: their split thresholds guard the stacked scores
        self.monitor_ = config.monitor
        self.fit_seconds_ = time.perf_counter() - t0
        log.info(
            "gbdt: the pairs job keeps %d trees (%s), the catalogue job %s; %.1fs in all",
            self.best_iteration_,
            describe_weights(pairs_pick.weights),
            "the same booster"
            if "catalogue" not in chosen
            else f"{chosen['catalogue'].detail['catalogue']['best_iteration']} trees "
            f"({describe_weights(chosen['catalogue'].weights)})",
            self.fit_seconds_,
        )
        return self

    default_aux_weights: ClassVar[tuple[float, ...]] = (0.25, 1.0)  # boosters are cheap: two weightings beside 0

    def _pair_features(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, chunk: int = 1 << 18):
        """(M, F) features of pairs through the item-feature store: fitting's own when it covers them, else one
        per chunk of pairs (memory bounded by the chunk's items, not the catalogue's)."""
        out = np.empty((len(left), len(self.feature_names_)), dtype=np.float32)
        for s in range(0, len(left), chunk):
            sl = slice(s, s + chunk)
            store = self._store_for(catalogue, left[sl], right[sl])
            out[sl] = self._features(catalogue, store, left[sl], right[sl])
        return out

    def release_store(self) -> None:
        """Drop the item-feature store fitting kept (or ``prepare`` built), and the features of the validation
        pairs it kept, freeing their memory."""
        self.store_ = None
        self._memo = None

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

        stopper = _JobStopping(self.params.early_stopping, names, config.monitor)
        evals: dict = {}
        clock = _Clock(t0)
        callbacks = [stopper, lgb.record_evaluation(evals), clock]
        if callback is not None:
            callbacks.append(_ProgressCallback(callback, self.params.n_estimators))
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

    def _fit_stack(
        self,
        catalogue: Catalogue,
        train: PairSet,
        valid: PairSet,
        config: TrainConfig,
        modalities: list[str],
        callback: TrainCallback | None,
        folds: Folds,
    ) -> np.ndarray:
        """Cross-fit the stacked network; return its out-of-fold logits for the training pairs."""
        epochs = stack_epochs(
            config.epochs,
            self.params.stack_epochs,
            self.params.stack_budget,
            max(int(m.sum()) for m in folds.train_masks),
        )
        if epochs < config.epochs:
            log.info(
                "gbdt: stacked %s networks train at most %d epochs (-p stack_epochs=%d, -p stack_budget=%d pairs seen)",
                self.params.stack,
                epochs,
                self.params.stack_epochs,
                self.params.stack_budget,
            )
            config = replace(config, epochs=epochs)
        oof, self.stack_models_ = self._cross_fit(
            catalogue,
            train,
            valid,
            config,
            folds,
            self.params.stack,
            lambda: create_model(self.params.stack),
            callback,
            finish=_score_in_fp32,
            modalities=modalities,
        )
        return oof

    def _cross_fit(
        self,
        catalogue: Catalogue,
        train: PairSet,
        valid: PairSet,
        config: TrainConfig,
        folds: Folds,
        label: str,
        make: Callable[[], PairModel],
        callback: TrainCallback | None,
        finish: Callable[[PairModel], PairModel] = lambda m: m,
        **fit_kw: object,
    ) -> tuple[np.ndarray, list[PairModel]]:
        """Cross-fit a pair model on the shared folds: fold k's model (``make()``, then ``finish`` once fitted)
        trains on the pairs the fold may see and scores those it holds out. Returns the training pairs'
        out-of-fold logits and the fold models (the mean of their scores serves new pairs)."""
        n_folds = len(folds.train_masks)
        oof = np.zeros(len(train), dtype=np.float64)
        models: list[PairModel] = []
        for k in range(n_folds):
            inside = np.flatnonzero(folds.train_masks[k])
            scores = np.flatnonzero((folds.scorers == k).any(axis=1))
            log.info(
                "gbdt: stacked %s, fold %d/%d: trained on %d pairs, scores %d",
                label,
                k + 1,
                n_folds,
                len(inside),
                len(scores),
            )
            model = make()
            model.fit(catalogue, train.subset(inside), valid, config, callback=callback, **fit_kw)
            model = finish(model)
            weight = (folds.scorers[scores] == k).sum(axis=1) / 2.0  # 1 within a fold, 1/2 across two
            oof[scores] += weight * model.predict_logits(catalogue, train.subset(scores))
            models.append(model)
        return oof.astype(np.float32), models

    def _stack_texts(self) -> list[str]:
        texts = [t.strip() for t in self.params.stack_text.split(",") if t.strip()]
        unknown = sorted(set(texts) - set(STACK_TEXTS))
        if unknown:
            raise ConfigError(
                f"stack_text: unknown text model(s) {unknown}; use any of {list(STACK_TEXTS)}, comma-separated"
            )
        return texts

    def reads(self) -> frozenset[str]:
        """The stacked transformers also read each item's long text (``text`` or ``description``)."""
        return self.needs | {"texts"} if set(self._stack_texts()) & set(TRANSFORMERS) else self.needs

    def _fit_text_stack(
        self,
        kind: str,
        catalogue: Catalogue,
        train: PairSet,
        valid: PairSet,
        config: TrainConfig,
        callback: TrainCallback | None,
        folds: Folds,
    ) -> np.ndarray:
        """Cross-fit a transformer (``bi-encoder`` or ``cross-encoder``) on the shared folds; return the
        training pairs' out-of-fold scores."""
        t0 = time.perf_counter()
        oof, self.text_models_[kind] = self._cross_fit(
            catalogue,
            train,
            valid,
            config,
            folds,
            kind,
            lambda: create_model(kind, encoder_path=self.params.encoder_path, device=self.params.device),
            callback,
            finish=_score_in_fp32,
        )
        log.info("gbdt: %s cross-fitted in %.1fs", kind, time.perf_counter() - t0)
        return oof

    def _folds(self, train: PairSet, config: TrainConfig) -> Folds:
        """The cross-fitting folds every stacked model shares (see ``group_folds``)."""
        folds = group_folds(train, self.params.stack_folds or 2, seed=config.seed)
        if folds.method == "items" and not self.params.stack_folds:
            # By item, a network trains on ((K-1)/K)^2 of the pairs: a quarter with 2 folds, 56 % with 4.
            folds = group_folds(train, 4, seed=config.seed)
        self.stack_folds_ = folds.report()
        return folds

    def _fit_word_stack(self, catalogue: Catalogue, train: PairSet, folds: Folds) -> np.ndarray:
        """Cross-fit the word-pair model; keep the mean of the fold models (linear, so one model) for new
        pairs; return the out-of-fold logits of the training pairs."""
        t0 = time.perf_counter()
        oof = np.zeros(len(train), dtype=np.float64)
        coefs, intercepts = [], []
        hashed = WordPairScorer().prepare(catalogue)._cache  # every name tokenised once, for all the folds
        for k in range(len(folds.train_masks)):
            inside = np.flatnonzero(folds.train_masks[k])
            scores = np.flatnonzero((folds.scorers == k).any(axis=1))
            scorer = WordPairScorer(_cache=hashed)
            scorer.fit(catalogue, train.left[inside], train.right[inside], train.target[inside])
            weight = (folds.scorers[scores] == k).sum(axis=1) / 2.0
            oof[scores] += weight * scorer.logits(catalogue, train.left[scores], train.right[scores])
            coefs.append(scorer.coef)
            intercepts.append(scorer.intercept)
        self.word_scorer_ = WordPairScorer(coef=np.mean(coefs, axis=0), intercept=float(np.mean(intercepts)))
        log.info("gbdt: word-pair model cross-fitted in %.1fs", time.perf_counter() - t0)
        return oof.astype(np.float32)

    # ---------------------------------------------------------------------------------- scoring

    def item_store(self, catalogue: Catalogue, items: np.ndarray | None = None, side: object = None) -> ItemStore:
        """Everything scoring needs that depends on one item only, for the sorted catalogue rows ``items``
        (all by default): see :mod:`prodmatch.store`. ``side``: their pair-feature side data, if already built."""
        t0 = time.perf_counter()
        items = np.arange(len(catalogue)) if items is None else np.asarray(items)
        side = self.featurizer_.side_data(catalogue, items) if side is None else side
        words = None
        if self.word_scorer_ is not None and catalogue.names is not None:
            words = self.word_scorer_.item_data(catalogue, items)
        towers = None
        if self._stack_towers():
            features = catalogue.item_features([n for n, _ in self.modalities_])
            nets = self._numpy_stack()
            vectors = np.empty((len(nets), len(items), self.stack_models_[0].params.item_dim), dtype=np.float32)
            for s in range(0, len(items), 8192):
                vectors[:, s : s + 8192] = nets.towers(features[items[s : s + 8192]])
            towers = StackedTowers(items, vectors)
        store = self.use_store(ItemStore(items, side, words, towers, catalogue=catalogue))
        log.info(
            "gbdt: item-feature store of %d items (%.0f MB) in %.1fs",
            len(items),
            store.nbytes() / 2**20,
            time.perf_counter() - t0,
        )
        return store

    def use_store(self, store: ItemStore) -> ItemStore:
        """Attach what a store does not save (the networks' heads, the booster's thresholds) and return it."""
        if store.towers is not None:
            store.towers.nets = self._numpy_stack()
            store.towers.thresholds = self._split_thresholds(f"stack_{self.params.stack}")
        return store

    def sub_models(self) -> list[PairModel]:
        """The stacked networks, then the stacked text models, each loaded from its run directory."""
        stacked = getattr(self, "stack_models_", [])  # unfitted: none
        return [*stacked, *(m for models in getattr(self, "text_models_", {}).values() for m in models)]

    @property
    def batch_invariant(self) -> bool:
        """Whether a pair's score is the same in any batch and from any store: yes, unless a stacked network
        has no tower (concat-mlp, item-mlp), whose torch or ONNX scores move by about 1e-6 with the batch, or
        a bi-encoder is stacked (its item vectors move by about 1e-7 with the items encoded beside them)."""
        return (not self.stack_models_ or self._stack_towers()) and not getattr(self, "text_models_", None)

    def _stack_towers(self) -> bool:
        """Whether the stacked networks are siamese ones, scored from stored item vectors."""
        return bool(self.stack_models_) and all(isinstance(m.network_, SiameseNet) for m in self.stack_models_)

    def _numpy_stack(self) -> NumpySiamese:
        """The stacked siamese networks in numpy (built once)."""
        if getattr(self, "_numpy_nets", None) is None:
            self._numpy_nets = NumpySiamese([m.network_ for m in self.stack_models_])
        return self._numpy_nets

    def _split_thresholds(self, feature: str) -> np.ndarray | None:
        """Sorted thresholds of every split, on ``feature``, of the used trees of both jobs' boosters; None
        before boosting."""
        if getattr(self, "booster_", None) is None or feature not in self.feature_names_:
            return None
        j = self.feature_names_.index(feature)
        found: list[float] = []

        def walk(node: dict) -> None:
            if "split_feature" in node:
                if node["split_feature"] == j:
                    found.append(float(node["threshold"]))
                walk(node["left_child"])
                walk(node["right_child"])

        boosters = [(self.booster_, self.best_iteration_)]
        if getattr(self, "catalogue_booster_", None) is not None:
            boosters.append((self.catalogue_booster_, self.catalogue_iteration_))
        for booster, iteration in boosters:
            for tree in booster.dump_model(num_iteration=iteration)["tree_info"]:
                walk(tree["tree_structure"])
        return np.unique(np.asarray(found, dtype=np.float64))

    def _store_for(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> ItemStore:
        """The prepared store when it covers these pairs, else one for just their items."""
        store = getattr(self, "store_", None)
        rows = np.union1d(left, right)
        if store is not None and store.covers(catalogue, rows):
            return store
        return self.item_store(catalogue, rows)

    def _features(self, catalogue: Catalogue, store: ItemStore, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(B, F) float32: the pair features, then the stacked scores, from the item-feature store."""
        x, names = self.featurizer_.transform(catalogue, left, right, side=store.side)
        cols = [x]
        if self.stack_models_:
            if store.towers is not None:
                cols.append(self._stack_column(catalogue, store, left, right, x, names))
            else:  # networks without a tower: scored whole, by their own runtime
                pairs = PairSet(left, right, None, np.arange(len(left)), None, None)
                cols.append(np.mean([m.predict_logits(catalogue, pairs) for m in self.stack_models_], axis=0))
        if self.word_scorer_ is not None:
            cols.append(self.word_scorer_.logits(catalogue, left, right, items=store.words))
        if self.text_models_:
            pairs = PairSet(left, right, None, np.arange(len(left)), None, None)
            for models in self.text_models_.values():
                cols.append(np.mean([m.predict_logits(catalogue, pairs) for m in models], axis=0))
        return np.column_stack(cols) if len(cols) > 1 else x

    def _stack_column(
        self, catalogue: Catalogue, store: ItemStore, left: np.ndarray, right: np.ndarray, x: np.ndarray, names: list
    ) -> np.ndarray:
        """(B,) the stacked networks' mean logit from stored item vectors. Their heads read each modality's raw
        cosine: the pair features' ``<modality>.cos``, which is NaN where an item lacks the modality and whose
        raw value is then exactly 0 (a missing vector is zeros)."""
        mods = [catalogue.modalities[n] for n, _ in self.modalities_]
        cosines = np.nan_to_num(x[:, [names.index(f"{n}.cos") for n, _ in self.modalities_]], nan=0.0)
        fa = np.stack([m.present[left] for m in mods], axis=1).astype(np.float32)
        fb = np.stack([m.present[right] for m in mods], axis=1).astype(np.float32)
        return store.towers.logits(left, right, cosines, fa, fb)

    def predict_logits(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """(M,) float32 raw margins (log-odds before calibration), through the item-feature store: the prepared
        one (``prepare``: a server's, a match's) or one built for these pairs' items. Every batch size takes
        this one path, and a pair's margin does not depend on its batch or its store."""
        return self.score(catalogue, pairs, batch_size).logits

    def score(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH) -> Scores:
        """Raw margins and evidence in one pass: the evidence is read off the pair features themselves."""
        logits = np.empty(len(pairs), dtype=np.float32)
        evidence = np.empty(len(pairs), dtype=np.uint32)
        for sl, x in self.feature_batches(catalogue, pairs, batch_size):
            logits[sl] = self.boost(x, raw_score=True)
            evidence[sl] = self.evidence_of_features(x)
        return Scores(logits, evidence)

    def evidence(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        pairs = PairSet(np.asarray(left), np.asarray(right), None, np.arange(len(left)), None, None)
        return self.score(catalogue, pairs).evidence

    def evidence_of_features(self, x: np.ndarray) -> np.ndarray:
        """(B,) uint32 evidence masks of feature rows ``x``: an embedding both items have (its cosine is defined),
        a picture on both (the photos' cosines are), a name word both hold, an attribute value both hold."""
        index = {n: i for i, n in enumerate(self.feature_names_)}
        mods = [n for n, _ in self.modalities_]
        mask = np.zeros(len(x), dtype=np.uint32)

        def bit(cond: np.ndarray, position: np.uint32) -> None:
            nonlocal mask
            mask |= cond.astype(np.uint32) * position

        with np.errstate(invalid="ignore"):
            for j, name in enumerate(mods):
                if f"{name}.cos" in index:
                    bit(~np.isnan(x[:, index[f"{name}.cos"]]), np.uint32(1 << j))
            if "pics_max" in index:
                bit(~np.isnan(x[:, index["pics_max"]]), side_bit(mods, "pictures"))
            for column in ("name_token_jaccard", "name_word_tfidf_cos"):
                if column in index:
                    bit(x[:, index[column]] > 0, side_bit(mods, "name"))
            for column in ("attr_kv_jaccard", "brand_equal", "colour_equal"):
                if column in index:
                    bit(x[:, index[column]] > 0, side_bit(mods, "attributes"))
        return mask

    def feature_batches(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH):
        """Yields (slice of ``pairs``, that batch's (B, F) float32 features in the order of ``feature_names_``),
        through the item-feature store (see :meth:`predict_logits`)."""
        self._check_fitted()
        self._check_catalogue(catalogue)
        memo = getattr(self, "_memo", None)
        rows = None if memo is None else memo.find(catalogue, pairs.left, pairs.right)
        if rows is not None:  # fitting featurized these pairs already
            x = self._from_memo(catalogue, memo.x[rows], pairs.left, pairs.right)  # one store for the few near a split
            for start in range(0, len(pairs), batch_size):
                sl = slice(start, start + batch_size)
                yield sl, x[sl]
            return
        store = self._store_for(catalogue, pairs.left, pairs.right)
        for start in range(0, len(pairs), batch_size):
            sl = slice(start, start + batch_size)
            yield sl, self._features(catalogue, store, pairs.left[sl], pairs.right[sl])

    def _from_memo(self, catalogue: Catalogue, x: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Kept feature rows, with the stacked score recomputed where it lies near one of the boosters' split
        thresholds (fitting computed it before the boosters existed): the rows the scoring path itself gives."""
        if not self.stack_models_:
            return x
        feature = f"stack_{self.params.stack}"
        thresholds = self._split_thresholds(feature)  # once per call: the rows come in whole, not per batch
        if thresholds is None or not len(thresholds):
            return x
        near = near_split(x[:, self.feature_names_.index(feature)], thresholds)
        if near.any():
            store = self._store_for(catalogue, left[near], right[near])
            x[near] = self._features(catalogue, store, left[near], right[near])
        return x

    def boost(self, x: np.ndarray, **kw: object) -> np.ndarray:
        """The booster's prediction of feature rows ``x`` at the best iteration, with this model's prediction
        threads; ``kw`` as LightGBM's ``predict`` (``raw_score=True``, ``pred_contrib=True``)."""
        threads = {"num_threads": self.predict_threads_} if self.predict_threads_ else {}
        return self.booster_.predict(x, num_iteration=self.best_iteration_, **threads, **kw)

    def prepare(self, catalogue: Catalogue, store: ItemStore | None = None) -> GBDTModel:
        """Build (or adopt a loaded) item-feature store of every item of ``catalogue`` (a server's, a match's),
        so that a request computes only pair features."""
        super().prepare(catalogue)
        self.store_ = self.use_store(store) if store is not None else self.item_store(catalogue)
        return self

    def use_runtime(self, runtime: str, threads: int = 1) -> GBDTModel:
        """The booster is always LightGBM's own; ``runtime`` applies to the stacked networks and text models."""
        self.predict_threads_ = threads
        for net in [*self.stack_models_, *(m for models in self.text_models_.values() for m in models)]:
            net.use_runtime(runtime, threads)
        return self

    def _job_state(self, job: str) -> dict:
        """The catalogue job's own booster and round, where training chose one for it."""
        if job == "catalogue" and getattr(self, "catalogue_booster_", None) is not None:
            return {"booster_": self.catalogue_booster_, "best_iteration_": self.catalogue_iteration_}
        return {}

    def fit_summary(self) -> dict:
        return {
            "best_iteration": self.best_iteration_,
            "catalogue_best_iteration": getattr(self, "catalogue_iteration_", None),
            "monitor": self.monitor_,
            "stack_folds": getattr(self, "stack_folds_", None),
            "trees_grown": len(self.history_),
            "stopped_early": self.best_iteration_ < self.params.n_estimators,
            "train_seconds": self.fit_seconds_,
            "feature_importance": self.feature_importance(),
        }

    def feature_importance(self) -> dict[str, float]:
        """Total gain of each feature, as a share of all gain, largest first."""
        self._check_fitted()
        gain = self.booster_.feature_importance("gain", iteration=self.best_iteration_)
        share = gain / max(gain.sum(), 1e-12)
        order = np.argsort(-share)
        return {self.feature_names_[i]: float(share[i]) for i in order}

    # ------------------------------------------------------------------------------ persistence

    def _save_weights(self, run_dir: Path) -> dict:
        with atomic_path(run_dir / BOOSTER_FILE) as tmp:
            self.booster_.save_model(str(tmp), num_iteration=self.best_iteration_)
        files = {"booster": BOOSTER_FILE}
        if getattr(self, "catalogue_booster_", None) is not None:
            with atomic_path(run_dir / CATALOGUE_BOOSTER_FILE) as tmp:
                self.catalogue_booster_.save_model(str(tmp), num_iteration=self.catalogue_iteration_)
            files["catalogue_booster"] = CATALOGUE_BOOSTER_FILE
        if self.featurizer_.name_idf is not None:
            with atomic_path(run_dir / IDF_FILE) as tmp, open(tmp, "wb") as f:
                np.save(f, self.featurizer_.name_idf)
            files["name_idf"] = IDF_FILE
        if self.featurizer_.word_idf is not None:
            with atomic_path(run_dir / WORD_IDF_FILE) as tmp, open(tmp, "wb") as f:
                np.save(f, self.featurizer_.word_idf)
            files["word_idf"] = WORD_IDF_FILE
        arrays = {}
        for name, (mean, w) in self.featurizer_.whitening.items():
            arrays[f"{name}.mean"], arrays[f"{name}.w"] = mean, w
        for name, projection in self.featurizer_.discriminant.items():
            arrays[f"{name}.discriminant"] = projection
        with atomic_path(run_dir / WHITENING_FILE) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        files["whitening"] = WHITENING_FILE
        if self.word_scorer_ is not None:
            with atomic_path(run_dir / WORD_PAIRS_FILE) as tmp, open(tmp, "wb") as f:
                np.savez(f, coef=self.word_scorer_.coef, intercept=np.float64(self.word_scorer_.intercept))
            files["word_pairs"] = WORD_PAIRS_FILE
        stack = []
        for k, net in enumerate(self.stack_models_):
            sub = Path(STACK_DIR) / f"fold{k}"
            net.save(run_dir / sub)
            stack.append(str(sub))
        text_stack: dict[str, list[str]] = {}
        for kind, models in self.text_models_.items():
            for k, model in enumerate(models):
                sub = Path(TEXT_STACK_DIR) / kind / f"fold{k}"
                model.save(run_dir / sub)
                text_stack.setdefault(kind, []).append(str(sub))
        return {
            "weights": files,
            "features": {**self.featurizer_.to_dict(), "names": self.feature_names_},
            "best_iteration": self.best_iteration_,
            "catalogue_best_iteration": getattr(self, "catalogue_iteration_", None),
            "stack": stack,
            "text_stack": text_stack,
        }

    def _load_weights(self, run_dir: Path, config: dict) -> None:
        files = config["weights"]
        for f in files.values():
            if not (run_dir / f).exists():
                raise ModelError(f"{run_dir / f} is missing: the run directory {run_dir} is incomplete; train it again")
        self.booster_ = lgb.Booster(model_file=str(run_dir / files["booster"]))
        self.best_iteration_ = int(config.get("best_iteration", self.booster_.current_iteration()))
        self.catalogue_booster_ = None
        if "catalogue_booster" in files:
            self.catalogue_booster_ = lgb.Booster(model_file=str(run_dir / files["catalogue_booster"]))
            self.catalogue_iteration_ = int(config["catalogue_best_iteration"])
        feats = config["features"]
        self.featurizer_ = PairFeaturizer(list(feats["modalities"]), list(feats["use"]))
        if "name_idf" in files:
            self.featurizer_.name_idf = np.load(run_dir / files["name_idf"])
        if "word_idf" in files:
            self.featurizer_.word_idf = np.load(run_dir / files["word_idf"])
        with np.load(run_dir / files["whitening"]) as z:
            for name in self.featurizer_.modalities:
                if f"{name}.mean" in z:
                    self.featurizer_.whitening[name] = (z[f"{name}.mean"], z[f"{name}.w"])
                if f"{name}.discriminant" in z:
                    self.featurizer_.discriminant[name] = z[f"{name}.discriminant"]
        self.feature_names_ = list(feats["names"])
        self.word_scorer_ = None
        if "word_pairs" in files:
            with np.load(run_dir / files["word_pairs"]) as z:
                self.word_scorer_ = WordPairScorer(coef=z["coef"], intercept=float(z["intercept"]))
        self.stack_models_ = [_score_in_fp32(load_model(run_dir / sub)) for sub in config.get("stack", [])]
        text_stack = config.get("text_stack") or {}
        if isinstance(text_stack, list):  # saved before the cross-encoder: bi-encoder folds only
            text_stack = {"bi-encoder": text_stack}
        self.text_models_ = {
            kind: [_score_in_fp32(load_model(run_dir / sub)) for sub in subs] for kind, subs in text_stack.items()
        }
        self._numpy_nets = None

    def _check_catalogue(self, catalogue: Catalogue) -> None:
        super()._check_catalogue(catalogue)
        have = (
            self.featurizer_.feature_names(catalogue)
            + [f"stack_{self.params.stack}"] * bool(self.stack_models_)
            + ["stack_words"] * (self.word_scorer_ is not None and catalogue.names is not None)
            + [_text_feature(kind) for kind in self.text_models_]
        )
        if have != self.feature_names_:
            missing = sorted(set(self.feature_names_) - set(have))
            raise ModelError(
                f"this gbdt model was trained with features {missing} that this data cannot provide "
                "(missing names, attributes, categories or extra photos); score data with the same files"
            )


def _text_feature(kind: str) -> str:
    """The stacked transformer's feature name: stack_bi_encoder, stack_cross_encoder."""
    return "stack_" + kind.replace("-", "_")


def _score_in_fp32(net: PairModel) -> PairModel:
    """Make a stacked network or text model score in float32 (it may have trained in bf16).

    Its score is a feature that trees split on: bf16 rounds it to about three digits, differently on
    CPUs with and without AMX, and differently from ONNX Runtime (fp32), so a pair's probability would
    depend on the machine and the runtime. In float32 every path agrees to about 1e-6.
    """
    net.precision_ = "fp32"
    return net


class _JobStopping:
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


class _Clock:
    """Records the seconds since ``t0`` at the end of every boosting round."""

    order = 21  # after LightGBM records the evaluation, before early stopping may end the round

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.elapsed: list[float] = []

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        self.elapsed.append(time.perf_counter() - self.t0)


class _ProgressCallback:
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


@dataclass
class FeatureMemo:
    """Feature rows of pairs fitting computed, found again by the ordered pair of rows of the same catalogue."""

    catalogue: Catalogue
    keys: np.ndarray  # sorted left * n + right
    order: np.ndarray  # row of x for each key
    x: np.ndarray

    @classmethod
    def of(cls, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, x: np.ndarray) -> FeatureMemo:
        n = len(catalogue)
        keys = left.astype(np.int64) * n + right.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        return cls(catalogue, keys[order], order, x)

    def find(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> np.ndarray | None:
        """Rows of ``x`` for every pair, or None unless all of them are kept (for this very catalogue)."""
        if catalogue is not self.catalogue or not len(self.keys) or not len(left):
            return None
        n = len(catalogue)
        keys = np.asarray(left).astype(np.int64) * n + np.asarray(right).astype(np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        if not (self.keys[pos] == keys).all():
            return None
        return self.order[pos]
