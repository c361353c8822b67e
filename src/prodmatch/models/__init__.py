"""Pairwise models, chosen by name from a registry.

Every model follows one protocol: ``fit(catalogue, train, valid, config)``, ``predict_proba(catalogue,
pairs)``, ``score_arrays(left, right)``, ``save(run_dir)`` and ``load(run_dir)``.
"""

from __future__ import annotations

from prodmatch.config import DEFAULT_MODEL
from prodmatch.models.base import PairModel, create_model, load_model
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


# the registered models, in the order `prodmatch models` lists them (every subclass of PairModel with a name
# registers itself in prodmatch.models.base.REGISTRY when its module is imported; this package imports them all)
MODELS: dict[str, type[PairModel]] = {
    cls.name: cls for cls in (ConcatMLPModel, ItemMLPModel, SiameseModel, GBDTModel, BiEncoderModel, CrossEncoderModel)
}
