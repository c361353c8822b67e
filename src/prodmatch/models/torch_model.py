"""An estimator around a pairwise torch network: fit, predict_logits, score_arrays, save and load.

Every network here maps two (B, F) item-feature tensors to (B,) logits, where an item's features are its
modalities side by side followed by one presence flag per modality (see ``Catalogue.item_features``).
Networks that read the pair in a fixed order (``symmetric = False``) train on both orders and score the
average of both, so their output does not depend on which item comes first.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prodmatch.atomic import atomic_path
from prodmatch.auxiliary import AuxPairs, Candidate, choose, describe_weights, selection_record, weight_candidates
from prodmatch.calibration import Calibrator
from prodmatch.catalogue import NORM_EPS, Catalogue, l2_normalize
from prodmatch.config import INFERENCE_BATCH, TrainConfig
from prodmatch.errors import ConfigError, DataError, ModelError
from prodmatch.models.base import CONFIG_FILE, RUNTIMES, WEIGHTS_FILE, JobHead, PairModel
from prodmatch.models.onnx_runtime import load_onnx_scorer
from prodmatch.models.siamese import SiameseNet
from prodmatch.pairs import PairSet, both_orders
from prodmatch.training import (
    TrainCallback,
    bf16_pays,
    inference,
    resolve_precision,
    score_logits,
    sigmoid,
    train_network,
)

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "TorchPairModel"]

log = logging.getLogger(__name__)

CATALOGUE_WEIGHTS_FILE = "model.catalogue.safetensors"  # the catalogue job's, when training chose another for it


class TorchPairModel(PairModel):
    """A pairwise network as a scikit-learn-style estimator.

    ``fit`` learns ``network_``, ``modalities_`` (name, dim) and ``result_``. Subclasses set ``name``,
    ``params_class``, ``network_class`` and ``symmetric``.
    """

    resumable = True

    network_class: ClassVar[type[nn.Module]]
    trains_on_aux = True
    precision_: str = "fp32"
    catalogue_network_: nn.Module | None = None
    onnx_ = None  # an OnnxPairScorer once use_runtime("onnx") is called
    onnx_graph = "network"
    explanation = "shapley"

    # ------------------------------------------------------------------------------------------ fit

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
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callback: TrainCallback | None = None,
    ) -> TorchPairModel:
        """Train on ``train``, pick the best epoch on ``valid``; with auxiliary pairs, once per weighting of them,
        each job keeping the network (and epoch) best on its own validation pairs.

        Args:
            catalogue: the items the pairs index into.
            train, valid: labelled pairs.
            config: training settings (epochs, batch size, seed, precision, ``aux_weights``...).
            aux: auxiliary training pairs (mined negatives, transitive positives), or None.
            candidates: the validation items' mined candidates (read as non-matches): with ``valid``, what the
                catalogue job is chosen on. None: one job.
            modalities: which of the catalogue's modalities to use; all by default.
            checkpoint_dir: where to keep a resumable checkpoint after every epoch (of the first network, on
                the labelled pairs alone).
            resume: continue from that checkpoint.
            callback: progress hooks.

        Returns:
            self, fitted.
        """
        config = config or TrainConfig()
        names = list(modalities or catalogue.modalities)
        self.modalities_ = [(n, catalogue.modalities[n].dim) for n in names]
        self.precision_ = resolve_precision(config.precision)
        features = torch.from_numpy(catalogue.item_features(names))
        lr = config.lr if config.lr is not None else self.params.lr
        aux = aux if aux is not None and len(aux) else None
        cand = None
        if candidates is not None and len(candidates):
            cand = valid.concat(candidates)  # the mined candidates are read as non-matches (target 0)
        self.train_config_ = config
        metric = "average_precision" if config.monitor == "pr_auc" else "binary_logloss"

        def fit_one(weights: dict[str, float], first: bool = False) -> Candidate:
            pairs, weight = train, None
            if weights and aux is not None:
                keep, w = aux.subset(weights, config.seed)
                pairs = train.concat(aux.pairs.subset(keep))
                weight = np.concatenate([np.ones(len(train), dtype=np.float32), w])
            if not self.symmetric:
                pairs = both_orders(pairs)
                weight = None if weight is None else np.concatenate([weight, weight])
            log.info(
                "%s (%s): %d training pairs%s",
                self.name,
                describe_weights(weights),
                len(pairs),
                " (both orders: the network reads pairs in order)" if not self.symmetric else "",
            )
            torch.manual_seed(config.seed)
            net = self._build()
            result = train_network(
                net,
                features,
                pairs,
                valid,
                config,
                lr,
                checkpoint_dir=checkpoint_dir if first else None,
                resume=resume and first,
                callback=callback,
                fingerprint={"model": self.name, "params": asdict(self.params), "modalities": self.modalities_},
                scorer=self._score,
                modality_dropout=getattr(self.params, "modality_dropout", 0.0),
                dims=[d for _, d in self.modalities_],
                weight=weight,
                candidates=cand,
            )
            net.eval()
            # probabilities (the plain sigmoid), as the booster's: what choose() resamples
            predictions = {
                "pairs": sigmoid(self._score(net, features, valid.left, valid.right, config.eval_batch_size))
            }
            # Each job's score in the one measure every model is chosen by (the epoch was picked by --monitor).
            scores = {"pairs": _job_metric(metric, valid.target, predictions["pairs"])}
            detail = {"pairs": {"best_epoch": result.best_epoch}}
            state = {"pairs": copy.deepcopy(net.state_dict())}
            if cand is not None and result.candidates_state is not None:
                detail["catalogue"] = {"best_epoch": result.candidates_best_epoch}
                probe = self._build()
                probe.load_state_dict(result.candidates_state)
                probe.eval()
                predictions["catalogue"] = sigmoid(
                    self._score(probe, features, cand.left, cand.right, config.eval_batch_size)
                )
                scores["catalogue"] = _job_metric(metric, cand.target, predictions["catalogue"])
                state["catalogue"] = result.candidates_state
            return Candidate(weights, scores, (state, result), detail, predictions)

        grid = config.aux_weights if config.aux_weights is not None else self.default_aux_weights
        fitted = [fit_one(w, first=(i == 0)) for i, w in enumerate(weight_candidates(aux, grid))]
        jobs = ["pairs"] + (["catalogue"] if cand is not None else [])
        labels = {"pairs": valid.target} | ({"catalogue": cand.target} if cand is not None else {})
        chosen = choose(fitted, jobs, metric, fit_one, labels, config.seed)
        (states, self.result_) = chosen["pairs"].fitted
        self.network_ = self._build()
        self.network_.load_state_dict(states["pairs"])
        self.network_.eval()
        self.history_ = [asdict(h) for h in self.result_.history]
        self.selection_ = {job: selection_record(job, metric, fitted, c) for job, c in chosen.items()}
        self.catalogue_network_ = None
        self.catalogue_head_ = None
        if "catalogue" in chosen:
            pick = chosen["catalogue"]
            cat_states, cat_result = pick.fitted
            if pick is not chosen["pairs"] or cat_result.candidates_best_epoch != self.result_.best_epoch:
                self.catalogue_network_ = self._build()
                self.catalogue_network_.load_state_dict(cat_states["catalogue"])
                self.catalogue_network_.eval()
            self.catalogue_head_ = JobHead(Calibrator("none"), 0.5, None, self.selection_["catalogue"])
        return self

    default_aux_weights: ClassVar[tuple[float, ...]] = (1.0,)  # a network per weighting: one beside 0

    def _job_state(self, job: str) -> dict:
        """The catalogue job's own network, where training chose one for it (scored with torch: an ONNX export
        holds the pairs job's network)."""
        if job == "catalogue" and getattr(self, "catalogue_network_", None) is not None:
            return {"network_": self.catalogue_network_, "onnx_": None}
        return {}

    def fit_summary(self) -> dict:
        return {**self.result_.summary(), "precision": self.precision_}

    # --------------------------------------------------------------------------------------- scoring

    def predict_logits(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """(M,) float32 logits, the same for (a, b) and (b, a)."""
        self._check_fitted()
        self._check_catalogue(catalogue)
        features = catalogue.item_features([n for n, _ in self.modalities_])
        if self.onnx_ is not None:
            return self.onnx_.score_rows(features, pairs.left, pairs.right, batch_size)
        return self._score(self.network_, torch.from_numpy(features), pairs.left, pairs.right, batch_size)

    def logits_from_features(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(B,) float32 logits of pairs of item-feature rows (see ``Catalogue.item_features``), with no catalogue."""
        self._check_fitted()
        if self.onnx_ is not None:
            return self.onnx_(left, right)
        n = len(left)
        feats = torch.from_numpy(np.ascontiguousarray(np.concatenate([left, right]), dtype=np.float32))
        return self._score(self.network_, feats, np.arange(n), np.arange(n, 2 * n))

    def use_runtime(self, runtime: str, threads: int = 1) -> TorchPairModel:
        """Score with torch, or with ONNX Runtime over the run's exported ``model.onnx`` (``prodmatch export``)."""
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
        self.onnx_ = None
        if runtime == "onnx":
            if getattr(self, "run_dir_", None) is None:
                raise ModelError("ONNX scoring needs a model loaded from an exported run directory")
            self.onnx_ = load_onnx_scorer(self.run_dir_, threads)
        return self

    def search_tower(self):
        """A siamese network's tower (unit vectors are its search space); None for any other network."""
        network = self.network_
        if not isinstance(network, SiameseNet):
            return None

        def vectors(features: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
            return tower_vectors(network, torch.from_numpy(features), np.arange(len(features)), batch_size).numpy()

        return vectors

    def prepare(self, catalogue: Catalogue) -> TorchPairModel:
        super().prepare(catalogue)
        catalogue.item_features([n for n, _ in self.modalities_])  # built once and cached
        return self

    def score_arrays(self, left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities from raw (unnormalised) embeddings, with no catalogue. Serving and Spark call this.

        Args:
            left, right: modality name -> (B, D) array for the first and second item of each pair. A
                modality left out counts as absent for every pair (zeros, presence flag 0).

        Returns:
            (B,) float64 calibrated probabilities.

        Raises:
            DataError: on a wrong shape, NaN or inf, or sides of different lengths.
        """
        self._check_fitted()
        a, b = self._features_from_arrays(left, "left"), self._features_from_arrays(right, "right")
        if len(a) != len(b):
            raise DataError(f"left has {len(a)} rows but right has {len(b)}")
        return self.calibrator(self.logits_from_features(a, b))

    def _score(
        self,
        net: nn.Module,
        features: torch.Tensor,
        left: np.ndarray,
        right: np.ndarray,
        batch_size: int = INFERENCE_BATCH,
    ) -> np.ndarray:
        """Logits in this model's precision; order-sensitive networks average both orders."""
        bf16 = self.precision_ == "bf16" and bf16_pays()  # weights stay fp32: any CPU can score in fp32
        if hasattr(net, "tower") and hasattr(net, "head"):
            return _score_by_items(net, features, left, right, batch_size, bf16)
        out = score_logits(net, features, left, right, batch_size, bf16=bf16)
        if not self.symmetric:
            out = 0.5 * (out + score_logits(net, features, right, left, batch_size, bf16=bf16))
        return out

    # ---------------------------------------------------------------------------------- persistence

    def _save_weights(self, run_dir: Path) -> dict:
        state = {k: v.detach().contiguous() for k, v in self.network_.state_dict().items()}
        with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        extra = {}
        if self.catalogue_network_ is not None:
            cat_state = {k: v.detach().contiguous() for k, v in self.catalogue_network_.state_dict().items()}
            with atomic_path(run_dir / CATALOGUE_WEIGHTS_FILE) as tmp:
                save_file(cat_state, str(tmp))
            extra["catalogue_weights"] = CATALOGUE_WEIGHTS_FILE
        return {
            **extra,
            "weights": WEIGHTS_FILE,
            "item_features": "modalities in order, then one presence flag per modality",
            "precision": self.precision_,
        }

    def _load_weights(self, run_dir: Path, config: dict) -> None:
        self.precision_ = config.get("precision", "fp32")
        self.network_ = self._build()
        weights = run_dir / config.get("weights", WEIGHTS_FILE)
        if not weights.exists():
            raise ModelError(f"{weights} is missing: the run directory {run_dir} is incomplete; train it again")
        self.network_.load_state_dict(load_file(str(weights)))
        self.network_.eval()
        self.catalogue_network_ = None
        if config.get("catalogue_weights"):
            path = run_dir / config["catalogue_weights"]
            if not path.exists():
                raise ModelError(f"{path} is missing: the run directory {run_dir} is incomplete; train it again")
            self.catalogue_network_ = self._build()
            self.catalogue_network_.load_state_dict(load_file(str(path)))
            self.catalogue_network_.eval()

    # -------------------------------------------------------------------------------------- helpers

    def _build(self) -> nn.Module:
        return self.network_class(self.modalities_, self.params)

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise ModelError(f"this {self.name} model is not fitted; call fit() or load a run directory")

    def _features_from_arrays(self, arrays: dict[str, np.ndarray], side: str) -> np.ndarray:
        unknown = sorted(set(arrays) - {n for n, _ in self.modalities_})
        if unknown:
            raise DataError(f"{side}: unknown modalities {unknown}; the model uses {[n for n, _ in self.modalities_]}")
        sizes = {len(np.asarray(v)) for v in arrays.values()}
        if len(sizes) != 1:
            raise DataError(f"{side}: modalities have different numbers of rows: {sorted(sizes)}")
        n = sizes.pop()
        blocks, flags = [], []
        for name, dim in self.modalities_:
            if name not in arrays:
                blocks.append(np.zeros((n, dim), dtype=np.float32))
                flags.append(np.zeros((n, 1), dtype=np.float32))
                continue
            x = np.array(arrays[name], dtype=np.float32, copy=True)
            if x.ndim != 2 or x.shape[1] != dim:
                raise DataError(f"{side}.{name}: expected shape (n, {dim}), got {x.shape}")
            bad = ~np.isfinite(x).all(axis=1)
            if bad.any():
                raise DataError(
                    f"{side}.{name}: {bad.sum()} rows hold NaN or inf, e.g. rows {np.flatnonzero(bad)[:5].tolist()}"
                )
            # A vector with norm <= NORM_EPS carries no information: absent, as in the item files.
            informative = np.sqrt(np.einsum("ij,ij->i", x, x)) > NORM_EPS
            blocks.append(l2_normalize(x) * informative[:, None])
            flags.append(informative[:, None].astype(np.float32))
        return np.ascontiguousarray(np.concatenate(blocks + flags, axis=1))


def _job_metric(metric: str, y: np.ndarray, prob: np.ndarray) -> float:
    """A job's validation metric of probabilities, higher is better: average precision, or minus the log loss."""
    from sklearn.metrics import average_precision_score

    if metric == "average_precision":
        return float(average_precision_score(y, prob))
    p = np.clip(prob.astype(np.float64), 1e-15, 1 - 1e-15)
    return float(np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _score_by_items(
    net: nn.Module, features: torch.Tensor, left: np.ndarray, right: np.ndarray, batch_size: int, bf16: bool
) -> np.ndarray:
    """Logits of a tower-and-head network: each item's vector once, then only the head per pair."""
    rows = np.unique(np.concatenate([left, right]))
    vectors = tower_vectors(net, features, rows, batch_size, bf16=bf16)
    item_rows = torch.from_numpy(rows.astype(np.int64)).to(features.device)
    with inference(net, bf16):
        la = torch.from_numpy(np.searchsorted(rows, left).astype(np.int64)).to(features.device)
        lb = torch.from_numpy(np.searchsorted(rows, right).astype(np.int64)).to(features.device)
        out = np.empty(len(left), dtype=np.float32)
        for s in range(0, len(left), batch_size):
            a, b = la[s : s + batch_size], lb[s : s + batch_size]
            fa = features.index_select(0, item_rows.index_select(0, a))
            fb = features.index_select(0, item_rows.index_select(0, b))
            out[s : s + batch_size] = (
                net.head(vectors.index_select(0, a), vectors.index_select(0, b), fa, fb).float().cpu().numpy()
            )
    return out


def tower_vectors(
    net: nn.Module, features: torch.Tensor, rows: np.ndarray, batch_size: int = INFERENCE_BATCH, *, bf16: bool = False
) -> torch.Tensor:
    """(len(rows), d) float32 item vectors of a tower-and-head network for catalogue ``rows``, in batches."""
    item_rows = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(features.device)
    with inference(net, bf16):
        return torch.cat(
            [
                net.tower(features.index_select(0, item_rows[s : s + batch_size])).float()
                for s in range(0, len(item_rows), batch_size)
            ]
        )
