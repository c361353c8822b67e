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
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import lightgbm as lgb
import numpy as np

from prodmatch.atomic import atomic_path
from prodmatch.auxiliary import AuxPairs, Candidate, choose, describe_weights, selection_record, weight_candidates
from prodmatch.calibration import Calibrator
from prodmatch.catalogue import Catalogue
from prodmatch.config import INFERENCE_BATCH, TrainConfig
from prodmatch.errors import ConfigError, ModelError
from prodmatch.features import PairFeaturizer
from prodmatch.models.base import REGISTRY, JobHead, PairModel, Scores, load_model
from prodmatch.models.boosting import Boosting
from prodmatch.models.gbdt_features import FeatureMemo, PairFeatures
from prodmatch.models.stacking import (
    STACK_DIR,
    TEXT_STACK_DIR,
    TRANSFORMERS,
    StackedModels,
    score_in_fp32,
    text_feature,
)
from prodmatch.models.torch_model import TorchPairModel
from prodmatch.models.word_pairs import WordPairScorer
from prodmatch.pairs import PairSet
from prodmatch.store import ItemStore
from prodmatch.training import RESUME_DIR, TrainCallback

__all__ = ["GBDTModel", "GBDTParams"]

log = logging.getLogger(__name__)

BOOSTER_FILE = "model.lgb.txt"  # the pairs job's booster
CATALOGUE_BOOSTER_FILE = "model.catalogue.lgb.txt"  # the catalogue job's, when training chose another for it
IDF_FILE = "name_idf.npy"
WORD_IDF_FILE = "name_word_idf.npy"
WHITENING_FILE = "whitening.npz"
WORD_PAIRS_FILE = "word_pairs.npz"  # the learned word-pair model (stack_text="words")
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
    use: str = "discriminant,extra_pictures,categories,attributes,numbers,names,words,codes,quantities,fuzzy"  # side-data feature groups, comma-separated
    stack: str = "siamese"  # a network whose out-of-fold score becomes one more feature; "" for none
    stack_folds: int = 0  # 0: 2 when connected components make folds, else 4 (folds by item; see group_folds)
    # what scores the stacked network's feature for new pairs: "refit", one network refit on all the training pairs
    # (one network per pair served), or "folds", the mean of the fold networks (the trees learn from the folds'
    # out-of-fold scores either way)
    stack_serve: str = "refit"
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


class GBDTModel(StackedModels, PairFeatures, Boosting, PairModel):
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
        if self.params.stack_serve not in ("refit", "folds"):
            raise ConfigError(f"gbdt: stack_serve must be 'refit' or 'folds', got {self.params.stack_serve!r}")
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
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
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
            checkpoint_dir: the run directory: each finished fold network is kept in its ``resume/`` folder, and
                the running one checkpointed after every epoch, so an interrupted run continues with ``resume``.
            resume: take the finished fold networks and the running one's last epoch from ``checkpoint_dir``.
        """
        config = config or TrainConfig()
        self.resume_ = (Path(checkpoint_dir) / RESUME_DIR if checkpoint_dir is not None else None, resume)
        names = list(modalities or catalogue.modalities)
        self.modalities_ = [(n, catalogue.modalities[n].dim) for n in names]
        use = self._groups()
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
        self.featurizer_.hashed_names = None  # only the training transform reuses it; do not keep the catalogue alive
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
            feature_names = [*feature_names, text_feature(kind)]
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

    def _groups(self) -> list[str]:
        """The feature groups ``use`` names, in order."""
        return [u.strip() for u in self.params.use.split(",") if u.strip()]

    def reads(self) -> frozenset[str]:
        """The stacked transformers, and the codes' check against the other side's whole text, also read each
        item's long text (``text`` or ``description``)."""
        codes = bool({"codes", "fuzzy"} & set(self._groups()))
        return self.needs | {"texts"} if codes or set(self._stack_texts()) & set(TRANSFORMERS) else self.needs

    # ---------------------------------------------------------------------------------- scoring

    @property
    def batch_invariant(self) -> bool:
        """Whether a pair's score is the same in any batch and from any store: yes, unless a stacked network
        has no tower (concat-mlp, item-mlp), whose torch or ONNX scores move by about 1e-6 with the batch, or
        a bi-encoder is stacked (its item vectors move by about 1e-7 with the items encoded beside them)."""
        return (not self.stack_models_ or self._stack_towers()) and not getattr(self, "text_models_", None)

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
        self.stack_models_ = [score_in_fp32(load_model(run_dir / sub)) for sub in config.get("stack", [])]
        text_stack = config.get("text_stack") or {}
        if isinstance(text_stack, list):  # saved before the cross-encoder: bi-encoder folds only
            text_stack = {"bi-encoder": text_stack}
        self.text_models_ = {
            kind: [score_in_fp32(load_model(run_dir / sub)) for sub in subs] for kind, subs in text_stack.items()
        }
        self._numpy_nets = None

    def _check_catalogue(self, catalogue: Catalogue) -> None:
        super()._check_catalogue(catalogue)
        have = (
            self.featurizer_.feature_names(catalogue)
            + [f"stack_{self.params.stack}"] * bool(self.stack_models_)
            + ["stack_words"] * (self.word_scorer_ is not None and catalogue.names is not None)
            + [text_feature(kind) for kind in self.text_models_]
        )
        if have != self.feature_names_:
            missing = sorted(set(self.feature_names_) - set(have))
            raise ModelError(
                f"this gbdt model was trained with features {missing} that this data cannot provide "
                "(missing names, attributes, categories or extra photos); score data with the same files"
            )
