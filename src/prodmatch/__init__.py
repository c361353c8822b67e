"""prodmatch: product matching for marketplaces.

The public API::

    import prodmatch as pm
    pm.synth.generate("data/demo")
    report = pm.train("data/demo", "runs/demo")                  # the default model, gbdt
    board = pm.compare("data/demo", "runs/compare", ["concat-mlp", "siamese", "gbdt"])
    metrics = pm.evaluate("runs/demo", "data/demo", "data/demo/test.parquet")
    frame = pm.predict("runs/demo", "data/demo", "data/demo/test.parquet", "submission.parquet")
    why = pm.explain("runs/demo", "data/demo", pair=(62921537, 22535083), out="why")   # see prodmatch.explain
    pm.build_report("runs/demo", "data/demo", "data/demo/test.parquet", "report.html")
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from prodmatch.version import __version__

# Each public name and the module that defines it, imported on first use: `import prodmatch` (and the command
# line's --help) stays light, and torch, LightGBM and faiss load only when something needs them.
_EXPORTS = {
    "synth": "prodmatch.synth",
    **dict.fromkeys(["TrainReport", "evaluate", "predict", "score_pairs", "train"], "prodmatch.api"),
    **dict.fromkeys(["Catalogue", "Modality", "l2_normalize"], "prodmatch.catalogue"),
    **dict.fromkeys(["Leaderboard", "compare"], "prodmatch.compare"),
    **dict.fromkeys(["DataConfig", "TrainConfig"], "prodmatch.config"),
    **dict.fromkeys(
        ["ConfigError", "DataError", "ModelError", "ProdmatchError", "UnknownIdsError"], "prodmatch.errors"
    ),
    **dict.fromkeys(["binary_metrics", "ecup_macro_pr_auc", "pr_auc"], "prodmatch.evaluation"),
    **dict.fromkeys(["Explanations", "explain", "explain_pairs"], "prodmatch.explain"),
    "read_catalogue": "prodmatch.io",
    **dict.fromkeys(["MODELS", "create_model", "load_model"], "prodmatch.models"),
    **dict.fromkeys(
        ["PairSet", "augment_transitive", "clean_pairs", "load_pairs", "make_pairs", "pair_hygiene", "split_pairs"],
        "prodmatch.pairs",
    ),
    "build_report": "prodmatch.report",
}
_MODULES = {"synth"}  # exported names that are modules themselves


class _Package(types.ModuleType):
    """The package module: ``prodmatch.explain`` and ``prodmatch.compare`` name the functions, as they did when
    imported eagerly, even after their submodules of the same name are loaded (the import system would
    otherwise set the attribute to the submodule)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and name in _EXPORTS and name not in _MODULES:
            return  # the submodule stays in sys.modules; the package's name means the function
        super().__setattr__(name, value)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prodmatch' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if name in _MODULES else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # the names, eagerly, for type checkers and editors
    from prodmatch import synth
    from prodmatch.api import TrainReport, evaluate, predict, score_pairs, train
    from prodmatch.catalogue import Catalogue, Modality, l2_normalize
    from prodmatch.compare import Leaderboard, compare
    from prodmatch.config import DataConfig, TrainConfig
    from prodmatch.errors import ConfigError, DataError, ModelError, ProdmatchError, UnknownIdsError
    from prodmatch.evaluation import binary_metrics, ecup_macro_pr_auc, pr_auc
    from prodmatch.explain import Explanations, explain, explain_pairs
    from prodmatch.io import read_catalogue
    from prodmatch.models import MODELS, create_model, load_model
    from prodmatch.pairs import (
        PairSet,
        augment_transitive,
        clean_pairs,
        load_pairs,
        make_pairs,
        pair_hygiene,
        split_pairs,
    )
    from prodmatch.report import build_report

__all__ = [
    "MODELS",
    "Catalogue",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Explanations",
    "Leaderboard",
    "Modality",
    "ModelError",
    "PairSet",
    "ProdmatchError",
    "TrainConfig",
    "TrainReport",
    "UnknownIdsError",
    "__version__",
    "augment_transitive",
    "binary_metrics",
    "build_report",
    "clean_pairs",
    "compare",
    "create_model",
    "ecup_macro_pr_auc",
    "evaluate",
    "explain",
    "explain_pairs",
    "l2_normalize",
    "load_model",
    "load_pairs",
    "make_pairs",
    "pair_hygiene",
    "pr_auc",
    "predict",
    "read_catalogue",
    "score_pairs",
    "split_pairs",
    "synth",
    "train",
]
