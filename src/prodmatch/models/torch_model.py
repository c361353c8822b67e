"""An estimator around a pairwise torch network: fit, predict_proba, score_arrays, save and load.

Every network here maps two (B, F) item-feature tensors to (B,) logits, where an item's features are its
modalities side by side followed by one presence flag per modality (see ``Catalogue.item_features``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prodmatch.catalogue import NORM_EPS, Catalogue, l2_normalize
from prodmatch.config import TrainConfig
from prodmatch.errors import ConfigError, DataError, ModelError
from prodmatch.io import atomic_path, write_json
from prodmatch.pairs import PairSet
from prodmatch.training import TrainCallback, TrainResult, score_logits, sigmoid, train_network

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "TorchPairModel"]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


class TorchPairModel:
    """A pairwise network as a scikit-learn-style estimator.

    ``__init__`` stores hyperparameters only; ``fit`` learns ``network_``, ``modalities_`` (name, dim) and
    ``history_``. Subclasses set ``name``, ``params_class`` and ``network_class``.
    """

    name: ClassVar[str]
    params_class: ClassVar[type]
    network_class: ClassVar[type[nn.Module]]

    def __init__(self, **params: Any) -> None:
        known = {f.name for f in fields(self.params_class)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"model {self.name!r} has no parameter(s) {unknown}; it takes {sorted(known)}")
        self.params = self.params_class(**params)
        self.threshold: float = 0.5

    # ------------------------------------------------------------------------------------------ fit

    def fit(
        self,
        catalogue: Catalogue,
        train: PairSet,
        valid: PairSet,
        config: TrainConfig | None = None,
        *,
        modalities: list[str] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        callback: TrainCallback | None = None,
    ) -> TorchPairModel:
        """Train on ``train``, pick the best epoch on ``valid``.

        Args:
            catalogue: the items the pairs index into.
            train, valid: labelled pairs.
            config: training settings (epochs, batch size, seed...).
            modalities: which of the catalogue's modalities to use; all by default.
            checkpoint_dir: where to keep a resumable checkpoint after every epoch.
            resume: continue from that checkpoint.
            callback: progress hooks.

        Returns:
            self, fitted.
        """
        config = config or TrainConfig()
        names = list(modalities or catalogue.modalities)
        self.modalities_ = [(n, catalogue.modalities[n].dim) for n in names]
        torch.manual_seed(config.seed)
        self.network_ = self._build()
        features = torch.from_numpy(catalogue.item_features(names))
        lr = config.lr if config.lr is not None else self.params.lr
        self.train_config_ = config
        self.result_: TrainResult = train_network(
            self.network_,
            features,
            train,
            valid,
            config,
            lr,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            callback=callback,
            fingerprint={"model": self.name, "params": asdict(self.params), "modalities": self.modalities_},
        )
        self.network_.eval()
        return self

    # --------------------------------------------------------------------------------------- scoring

    def predict_proba(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = 65536) -> np.ndarray:
        """Probability that each pair is the same product, in the order of ``pairs``.

        Returns:
            (M,) float32 in [0, 1].
        """
        return sigmoid(self.predict_logits(catalogue, pairs, batch_size))

    def predict_logits(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = 65536) -> np.ndarray:
        """(M,) float32 logits; see :meth:`predict_proba`."""
        self._check_fitted()
        self._check_catalogue(catalogue)
        features = torch.from_numpy(catalogue.item_features([n for n, _ in self.modalities_]))
        return score_logits(self.network_, features, pairs.left, pairs.right, batch_size)

    def score_arrays(self, left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities from raw (unnormalised) embeddings, with no catalogue. Serving and Spark call this.

        Args:
            left, right: modality name -> (B, D) array for the first and second item of each pair. A
                modality left out counts as absent for every pair (zeros, presence flag 0).

        Returns:
            (B,) float32 probabilities.

        Raises:
            DataError: on a wrong shape, NaN or inf, or sides of different lengths.
        """
        self._check_fitted()
        a, b = self._features_from_arrays(left, "left"), self._features_from_arrays(right, "right")
        if len(a) != len(b):
            raise DataError(f"left has {len(a)} rows but right has {len(b)}")
        feats = torch.from_numpy(np.concatenate([a, b]))
        n = len(a)
        return sigmoid(score_logits(self.network_, feats, np.arange(n), np.arange(n, 2 * n)))

    # ---------------------------------------------------------------------------------- persistence

    def save(self, run_dir: str | Path, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` then ``config.json`` (last: a run with a config is complete)."""
        self._check_fitted()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.network_.state_dict().items()}
        with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        config = {
            "format_version": FORMAT_VERSION,
            "model": {"name": self.name, "params": asdict(self.params)},
            "modalities": [{"name": n, "dim": d} for n, d in self.modalities_],
            "item_features": "modalities in order, then one presence flag per modality",
            "normalisation": {"method": "l2", "eps": NORM_EPS},
            "threshold": self.threshold,
            "weights": WEIGHTS_FILE,
            **(extra or {}),
        }
        write_json(config, run_dir / CONFIG_FILE)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path) -> TorchPairModel:
        """Rebuild a saved model from ``config.json`` and its safetensors weights (no pickle)."""
        run_dir = Path(run_dir)
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        model = cls(**config["model"]["params"])
        model.modalities_ = [(m["name"], int(m["dim"])) for m in config["modalities"]]
        model.threshold = float(config.get("threshold", 0.5))
        model.network_ = model._build()
        weights = run_dir / config.get("weights", WEIGHTS_FILE)
        if not weights.exists():
            raise ModelError(f"{weights} is missing: the run directory {run_dir} is incomplete; train it again")
        model.network_.load_state_dict(load_file(str(weights)))
        model.network_.eval()
        return model

    # -------------------------------------------------------------------------------------- helpers

    @property
    def item_dim(self) -> int:
        return sum(d for _, d in self.modalities_) + len(self.modalities_)

    def _build(self) -> nn.Module:
        return self.network_class(self.item_dim, self.params)

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise ModelError(f"this {self.name} model is not fitted; call fit() or load a run directory")

    def _check_catalogue(self, catalogue: Catalogue) -> None:
        for name, dim in self.modalities_:
            m = catalogue.modalities.get(name)
            if m is None:
                raise DataError(
                    f"the model was trained on modality {name!r}, which this data lacks "
                    f"(it has {sorted(catalogue.modalities)}); point --data at the same layout"
                )
            if m.dim != dim:
                raise DataError(f"modality {name!r} is {m.dim}-d in {m.source}, but the model expects {dim}-d")

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
            blocks.append(l2_normalize(x))
            flags.append(np.ones((n, 1), dtype=np.float32))
        return np.ascontiguousarray(np.concatenate(blocks + flags, axis=1))
