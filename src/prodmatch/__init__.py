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
from prodmatch.version import __version__

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
