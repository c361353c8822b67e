"""The stacker of ``gbdt``: models cross-fitted on shared folds, whose out-of-fold scores are features of the trees.

A stacked model (a ``siamese`` network, the word-pair model, a fine-tuned transformer) is trained on all folds but
one and scores that one, so every training pair gets a score from a model that never saw it; new pairs get the
mean of the fold models' scores. :class:`StackedModels` holds the fold models of a :class:`GBDTModel` and fits them.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path

import numpy as np

from prodmatch.catalogue import Catalogue
from prodmatch.config import TrainConfig
from prodmatch.errors import ConfigError
from prodmatch.models.base import PairModel, create_model, load_model
from prodmatch.models.siamese import NumpySiamese, SiameseNet
from prodmatch.models.word_pairs import WordPairScorer
from prodmatch.pairs import Folds, PairSet, group_folds
from prodmatch.store import ItemStore
from prodmatch.training import CHECKPOINT_FILE, TrainCallback

log = logging.getLogger(__name__)

STACK_DIR = "stack"  # the cross-fitted networks, one run directory per fold
TEXT_STACK_DIR = "text_stack"  # the cross-fitted transformers: text_stack/<model>/fold<k>, one run directory each
STACK_TEXTS = ("words", "bi-encoder", "cross-encoder")
TRANSFORMERS = ("bi-encoder", "cross-encoder")  # the stacked text models that fine-tune an encoder


def stack_epochs(epochs: int, cap: int, budget: int, fold_pairs: int) -> int:
    """The epochs of one stacked fold network: ``epochs`` (``--epochs``), at most ``cap`` (0: no cap), and at
    most ``budget`` pairs seen over a fold of ``fold_pairs`` training pairs (0: no budget), at least one."""
    if cap:
        epochs = min(epochs, cap)
    if budget and fold_pairs:
        epochs = min(epochs, max(1, budget // fold_pairs))
    return max(1, epochs)


def text_feature(kind: str) -> str:
    """The stacked transformer's feature name: stack_bi_encoder, stack_cross_encoder."""
    return "stack_" + kind.replace("-", "_")


def score_in_fp32(net: PairModel) -> PairModel:
    """Make a stacked network or text model score in float32 (it may have trained in bf16).

    Its score is a feature that trees split on: bf16 rounds it to about three digits, differently on
    CPUs with and without AMX, and differently from ONNX Runtime (fp32), so a pair's probability would
    depend on the machine and the runtime. In float32 every path agrees to about 1e-6.
    """
    net.precision_ = "fp32"
    return net


class StackedModels:
    """The stacked models of a gbdt model, and how they are cross-fitted (mixed into :class:`GBDTModel`)."""

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
        make = lambda: create_model(self.params.stack)  # noqa: E731
        oof, self.stack_models_ = self._cross_fit(
            catalogue, train, valid, config, folds, self.params.stack, make, callback, finish=score_in_fp32,
            modalities=modalities,
        )  # fmt: skip
        if self.params.stack_serve == "refit":
            # The trees learn from the fold networks' out-of-fold scores; one network refit on every training pair
            # stands in for them when scoring (scikit-learn's StackingClassifier does the same): a quarter or half
            # the work per pair of the folds' mean, and it has seen all the labels.
            log.info("gbdt: the stacked %s network that serves, refit on all %d training pairs", self.params.stack,
                     len(train))  # fmt: skip
            refit = self._fit_fold(catalogue, train, valid, config, self.params.stack, "all", len(folds.train_masks),
                                   make, callback, modalities=modalities)  # fmt: skip
            self.stack_models_ = [score_in_fp32(refit)]
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
            model = self._fit_fold(catalogue, train.subset(inside), valid, config, label, k, n_folds, make, callback,
                                   **fit_kw)  # fmt: skip
            model = finish(model)
            weight = (folds.scorers[scores] == k).sum(axis=1) / 2.0  # 1 within a fold, 1/2 across two
            oof[scores] += weight * model.predict_logits(catalogue, train.subset(scores))
            models.append(model)
        return oof.astype(np.float32), models

    def _fit_fold(
        self,
        catalogue: Catalogue,
        pairs: PairSet,
        valid: PairSet,
        config: TrainConfig,
        label: str,
        fold: int | str,
        n_folds: int,
        make: Callable[[], PairModel],
        callback: TrainCallback | None,
        **fit_kw: object,
    ) -> PairModel:
        """Fit one stacked model (fold ``fold``, or "all" for the refit) on ``pairs``. In a run directory it is kept
        once finished, and a network checkpoints each epoch, so an interrupted run takes it up (``resume_``)."""
        resume_root, resume = getattr(self, "resume_", (None, False))
        fresh = make()
        params = asdict(fresh.params) if is_dataclass(getattr(fresh, "params", None)) else {}
        fingerprint = json.loads(json.dumps(
            {"model": label, "fold": fold, "folds": n_folds, "pairs": len(pairs), "seed": config.seed,
             "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr, "params": params},
            default=str,
        ))  # fmt: skip
        done = resume_root / label / f"fold{fold}" if resume_root is not None else None
        model = _finished_fold(done, fingerprint) if resume and done is not None else None
        if model is None:
            model = fresh
            kw: dict = dict(fit_kw)
            if done is not None and model.resumable:  # each epoch checkpointed, continued with --resume
                epochs = done.with_name(f"fold{fold}.epochs")
                kw.update(checkpoint_dir=epochs, resume=resume and (epochs / CHECKPOINT_FILE).exists())
            model.fit(catalogue, pairs, valid, config, callback=callback, **kw)
            if done is not None:
                _keep_fold(model, done, fingerprint)
        return model

    def _stack_texts(self) -> list[str]:
        texts = [t.strip() for t in self.params.stack_text.split(",") if t.strip()]
        unknown = sorted(set(texts) - set(STACK_TEXTS))
        if unknown:
            raise ConfigError(
                f"stack_text: unknown text model(s) {unknown}; use any of {list(STACK_TEXTS)}, comma-separated"
            )
        return texts

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
            finish=score_in_fp32,
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

    def sub_models(self) -> list[PairModel]:
        """The stacked networks, then the stacked text models, each loaded from its run directory."""
        stacked = getattr(self, "stack_models_", [])  # unfitted: none
        return [*stacked, *(m for models in getattr(self, "text_models_", {}).values() for m in models)]

    def _stack_towers(self) -> bool:
        """Whether the stacked networks are siamese ones, scored from stored item vectors."""
        return bool(self.stack_models_) and all(isinstance(m.network_, SiameseNet) for m in self.stack_models_)

    def _numpy_stack(self) -> NumpySiamese:
        """The stacked siamese networks in numpy (built once)."""
        if getattr(self, "_numpy_nets", None) is None:
            self._numpy_nets = NumpySiamese([m.network_ for m in self.stack_models_])
        return self._numpy_nets

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


FOLD_FILE = "fold.json"  # a finished fold's fingerprint, written last


def _keep_fold(model: PairModel, done: Path, fingerprint: dict) -> None:
    """Save a finished fold model where a resumed run finds it: staged beside ``done`` and renamed, so a fold
    is either whole or absent; its epoch checkpoints are then removed."""
    staging = done.with_name(done.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging)
    (staging / FOLD_FILE).write_text(json.dumps(fingerprint))
    shutil.rmtree(done, ignore_errors=True)
    staging.rename(done)
    shutil.rmtree(done.with_name(done.name + ".epochs"), ignore_errors=True)


def _finished_fold(done: Path, fingerprint: dict) -> PairModel | None:
    """The fold model an interrupted run finished, or None where it did not; refuses one from another run."""
    if not (done / FOLD_FILE).exists():
        return None
    saved = json.loads((done / FOLD_FILE).read_text())
    if saved != fingerprint:
        diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
        raise ConfigError(
            f"--resume: the finished fold in {done} is from a different run: {diff} (then, now); resume with the "
            "same data and settings, or start afresh"
        )
    which = f"fold {saved['fold'] + 1} of {saved['folds']}" if isinstance(saved["fold"], int) else "refit"
    log.info("gbdt: %s %s taken from the interrupted run (%s)", saved["model"], which, done)
    return load_model(done)
