"""Pairwise models, chosen by name from a registry.

Every model follows one protocol: ``fit(catalogue, train, valid, config)``, ``predict_proba(catalogue,
pairs)``, ``score_arrays(left, right)``, ``save(run_dir)`` and ``load(run_dir)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prodmatch.config import DEFAULT_MODEL
from prodmatch.errors import ModelError
from prodmatch.models.base import CONFIG_FILE, PairModel
from prodmatch.models.bi_encoder import BiEncoderModel
from prodmatch.models.concat_mlp import ConcatMLP, ConcatMLPParams
from prodmatch.models.cross_encoder import CrossEncoderModel
from prodmatch.models.gbdt import GBDTModel
from prodmatch.models.item_mlp import ItemMLP, ItemMLPParams
from prodmatch.models.siamese import SiameseNet, SiameseParams
from prodmatch.models.torch_model import TorchPairModel

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "BiEncoderModel",
    "ConcatMLPModel",
    "CrossEncoderModel",
    "GBDTModel",
    "ItemMLPModel",
    "PairModel",
    "SiameseModel",
    "create_model",
    "load_model",
]


class ConcatMLPModel(TorchPairModel):
    name = "concat-mlp"
    params_class = ConcatMLPParams
    network_class = ConcatMLP


class ItemMLPModel(TorchPairModel):
    name = "item-mlp"
    params_class = ItemMLPParams
    network_class = ItemMLP


class SiameseModel(TorchPairModel):
    name = "siamese"
    params_class = SiameseParams
    network_class = SiameseNet
    symmetric = True


MODELS: dict[str, type[PairModel]] = {
    cls.name: cls for cls in (ConcatMLPModel, ItemMLPModel, SiameseModel, GBDTModel, BiEncoderModel, CrossEncoderModel)
}


def create_model(name: str, **params: Any) -> PairModel:
    """A new, unfitted model of the registered architecture ``name``."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**params)


def load_model(run_dir: str | Path) -> PairModel:
    """Load the fitted model saved in a run directory."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.exists():
        hint = (
            " (a checkpoint is there: finish it with `prodmatch train ... --resume`)"
            if (run_dir / "checkpoint.pt").exists()
            else ""
        )
        raise ModelError(f"{path} not found: {run_dir} is not a complete run directory{hint}")
    try:
        name = json.loads(path.read_text())["model"]["name"]
    except (ValueError, KeyError) as e:
        raise ModelError(f"{path} is not a prodmatch run config: {e}") from e
    if name not in MODELS:
        raise ModelError(f"{path}: unknown model {name!r}; this prodmatch knows {sorted(MODELS)}")
    return MODELS[name].load(run_dir)
