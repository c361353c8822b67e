"""What every pairwise model shares: hyperparameters, calibration, the decision threshold, and the run config.

A model is a scikit-learn-style estimator. ``__init__`` stores hyperparameters only; ``fit`` learns.
Subclasses implement ``fit``, ``predict_logits`` (a raw score that ranks pairs), ``_save_weights`` and
``_load_weights``; this class turns scores into calibrated probabilities and labels, and writes
``config.json`` last, so a run directory with a config is complete.

A model serves two jobs (:data:`JOBS`), which score different pairs: ``pairs``, pairs drawn the way the
labelled pairs were (``predict``, ``evaluate``, ``/v1/score``), and ``catalogue``, a catalogue's nearest
neighbours (``match``, ``/v1/similar``), with far fewer matches and harder non-matches. A fitted model is the
``pairs`` one; :meth:`PairModel.for_job` gives the ``catalogue`` one: its own calibration (for candidates)
and threshold, and, where training chose other weights of the auxiliary pairs for it, its own fitted state
(a second booster, a second network). What each job tried and kept is in ``selection_``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from prodmatch.atomic import write_json
from prodmatch.calibration import Calibrator, ThresholdChoice, choose_threshold
from prodmatch.catalogue import NORM_EPS, Catalogue
from prodmatch.config import INFERENCE_BATCH, DataConfig, TrainConfig
from prodmatch.errors import ConfigError, DataError, ModelError
from prodmatch.evidence import bit_names, gate, modality_evidence
from prodmatch.pairs import PairSet

__all__ = [
    "CONFIG_FILE",
    "ENCODER_DIR",
    "FORMAT_VERSION",
    "JOBS",
    "ONNX_FILE",
    "ONNX_META_FILE",
    "RUNTIMES",
    "WEIGHTS_FILE",
    "FeatureScorer",
    "ItemEncoder",
    "ItemStoring",
    "JobHead",
    "PairModel",
    "Scores",
    "create_model",
    "load_model",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# the weights files of a run, read by the models and hashed by the ONNX export
WEIGHTS_FILE = "model.safetensors"  # a network's (the pairs job's)
ENCODER_DIR = "encoder"  # a text model's Hugging Face folder
ONNX_FILE = "model.onnx"  # written by `prodmatch export`
ONNX_META_FILE = "onnx.json"  # its parity check and the hash of the weights it was made from
RUNTIMES = ("torch", "onnx")
FORMAT_VERSION = 2
JOBS = ("pairs", "catalogue")  # labelled-like pairs; a catalogue's candidates (see the module docstring)


@dataclass
class Scores:
    """Raw scores of pairs and what each pair had to compare."""

    logits: np.ndarray  # (M,) float32 raw scores (log-odds before calibration)
    evidence: np.ndarray  # (M,) uint32 bit masks (see prodmatch.evidence); 0: nothing comparable


@dataclass
class JobHead:
    """How one job turns raw scores into decisions, and what training chose for it."""

    calibrator: Calibrator
    threshold: float
    threshold_choice: ThresholdChoice | None = None
    selection: dict = field(default_factory=dict)  # the auxiliary weights tried and kept, with their metric

    def to_dict(self) -> dict:
        return {
            "calibration": self.calibrator.to_dict(),
            "threshold": self.threshold,
            "threshold_choice": None if self.threshold_choice is None else self.threshold_choice.to_dict(),
            "selection": self.selection,
        }

    @classmethod
    def from_dict(cls, d: dict) -> JobHead:
        choice = d.get("threshold_choice")
        return cls(
            Calibrator.from_dict(d.get("calibration")),
            float(d.get("threshold", 0.5)),
            ThresholdChoice(**choice) if choice else None,
            dict(d.get("selection") or {}),
        )


# ------------------------------------------------------------------------------------------ capabilities
# What a model can do beyond scoring pairs, declared, so that the code using models (candidate search, export,
# explanations, serving) asks a model what it is instead of probing its attributes. Each is a Protocol checked
# with isinstance, or a class attribute of PairModel with a default every model has.


@runtime_checkable
class FeatureScorer(Protocol):
    """Scores pairs of item-feature rows (``Catalogue.item_features`` layout: each modality side by side, then one
    presence flag per modality): a network over embeddings alone. Explanations mask a row's modalities; a server
    scores any item with it, known or new."""

    def logits_from_features(self, left: np.ndarray, right: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ItemEncoder(Protocol):
    """Scores a pair from one vector per item (a bi-encoder): its unit item vectors are the space its score is the
    cosine in, so candidate search uses them."""

    def item_vectors(self, catalogue: Catalogue, rows: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ItemStoring(Protocol):
    """Keeps what scoring needs of every item in an item-feature store (``gbdt``): ``prodmatch index`` saves it,
    ``prodmatch serve`` memory-maps it, and ``prepare(catalogue, store=...)`` uses a saved one."""

    def item_store(self, catalogue: Catalogue) -> Any: ...

    def prepare(self, catalogue: Catalogue, store: Any = None) -> PairModel: ...


class PairModel:
    """Base of every pairwise model.

    Class attributes set by subclasses:
        name: the registry name.
        params_class: a frozen dataclass of hyperparameters.
        symmetric: whether f(a, b) == f(b, a) by construction.
        trains_on_aux: whether ``fit`` takes auxiliary pairs and validation candidates, and chooses their
            weight for each job (see :mod:`prodmatch.auxiliary`).
        needs: side data the model reads beyond embeddings: any of "categories", "names", "attributes",
            "extra_pictures", "texts".

    Fitted attributes: ``modalities_`` [(name, dim)], ``threshold``, ``calibrator``, ``threshold_choice`` (of
    the job this object scores for, ``job``); ``catalogue_head_`` (the catalogue job's, or None) and
    ``selection_`` (what each job tried and kept); ``run_dir_`` once loaded from a run directory.
    """

    resumable = False  # whether fit(checkpoint_dir=..., resume=True) continues an interrupted training

    name: ClassVar[str]
    params_class: ClassVar[type]
    symmetric: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()
    trains_on_aux: ClassVar[bool] = False  # fit takes auxiliary pairs (``aux``) and the validation candidates
    # Capabilities (see also FeatureScorer, ItemEncoder and ItemStoring above):
    text_only: ClassVar[bool] = False  # reads the items' text alone, no embedding column (the text models)
    onnx_graph: ClassVar[str | None] = None  # what `prodmatch export` writes: "network", "text", or None
    explanation: ClassVar[str | None] = None  # how `prodmatch explain` attributes a score: "treeshap", "shapley"
    batch_invariant: bool = False  # a pair's score is the same in any batch and from any store
    job: str = "pairs"  # the job this object scores for; for_job("catalogue") gives the other
    catalogue_head_: JobHead | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a concrete, registered model
            REGISTRY[cls.name] = cls

    def __init__(self, **params: Any) -> None:
        known = {f.name for f in fields(self.params_class)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"model {self.name!r} has no parameter(s) {unknown}; it takes {sorted(known)}")
        self.params = self.params_class(**params)
        self.threshold: float = 0.5
        self.calibrator = Calibrator("none")
        self.threshold_choice: ThresholdChoice | None = None

    # ------------------------------------------------------------------------------- to implement

    def fit(self, catalogue: Catalogue, train: PairSet, valid: PairSet, config: TrainConfig | None = None, **kw):
        raise NotImplementedError

    def predict_logits(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """(M,) float32 raw scores: higher means more likely the same product."""
        raise NotImplementedError

    def fit_summary(self) -> dict:
        """What fitting did (best epoch or iteration, seconds...), for metrics.json; ``history_`` holds the curve."""
        raise NotImplementedError

    def _save_weights(self, run_dir: Path) -> dict:
        """Write the learned state; return config entries that point at it."""
        raise NotImplementedError

    def _load_weights(self, run_dir: Path, config: dict) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- scoring

    def predict_proba(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """Calibrated probability that each pair is the same product, in the order of ``pairs``. A pair with
        nothing to compare scores at most the prior, below the threshold (see :mod:`prodmatch.evidence`).

        Returns:
            (M,) float64 in [0, 1].
        """
        return self.calibrated(self.score(catalogue, pairs, batch_size))

    def score(self, catalogue: Catalogue, pairs: PairSet, batch_size: int = INFERENCE_BATCH) -> Scores:
        """Raw scores and evidence of the pairs (a model computing both in one pass overrides this)."""
        return Scores(
            self.predict_logits(catalogue, pairs, batch_size), self.evidence(catalogue, pairs.left, pairs.right)
        )

    def calibrated(self, scores: Scores) -> np.ndarray:
        """(M,) float64 probabilities of raw scores: calibrated, then no evidence capped at the prior, below the
        threshold (:func:`prodmatch.evidence.gate`)."""
        return gate(self.calibrator(scores.logits), scores.evidence, self.calibrator.prior, self.threshold)

    def evidence(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(M,) uint32: what each pair has to compare that this model reads; by default, the embedding
        modalities both items have (models reading side data add theirs)."""
        self._check_fitted()
        present = [catalogue.modalities[n].present for n, _ in self.modalities_]
        return modality_evidence(present, np.asarray(left), np.asarray(right))

    def evidence_names(self) -> list[str]:
        """The name of each bit of :meth:`evidence`'s masks."""
        return bit_names([n for n, _ in self.modalities_])

    # ------------------------------------------------------------------------------------------ jobs

    def for_job(self, job: str) -> PairModel:
        """The model that scores for ``job`` (:data:`JOBS`): this one for ``pairs``; for ``catalogue``, a view
        sharing everything fitted but its calibration, threshold and, where training chose differently for
        candidates, its own fitted state. A run trained before the jobs were told apart has one model: it is
        returned for both (its calibration already mixed labelled and mined pairs)."""
        if job not in JOBS:
            raise ConfigError(f"unknown job {job!r}; use one of {list(JOBS)}")
        if job == self.job:
            return self
        if self.job != "pairs":
            raise ModelError(f"a {self.job} view cannot give another job's model; ask the pairs model")
        head = self.catalogue_head_
        if head is None:
            return self
        view = copy.copy(self)
        view.job = job
        view.calibrator, view.threshold, view.threshold_choice = head.calibrator, head.threshold, head.threshold_choice
        view.__dict__.update(self._job_state(job))
        return view

    def _job_state(self, job: str) -> dict[str, Any]:
        """The attributes a ``job`` view overrides (a second booster, network...): none by default."""
        return {}

    def describe_job(self) -> dict:
        """Which model scores for this object's job, for metrics.json, summaries, explanations and the report."""
        head = self.catalogue_head_ if self.job == "catalogue" else None
        selection = (
            head.selection if head is not None else (getattr(self, "selection_", {}) or {}).get(self.job)
        ) or {}
        return {
            "job": self.job,
            "model": self.name,
            "calibration": self.calibrator.method,
            "prior": self.calibrator.prior,
            "threshold": self.threshold,
            "aux_weights": selection.get("weights"),
            "separate": bool(self.catalogue_head_ is not None and self._job_state("catalogue")),
        }

    def sub_models(self) -> list[PairModel]:
        """The fitted models this one stacks (networks, text models), each with its own run directory: none by
        default. Export writes their graphs, a server switches their runtime."""
        return []

    def search_tower(self) -> Any:
        """The tower whose unit vectors candidate search compares items in: a callable (item-feature rows,
        batch size) -> (n, d) float32 vectors, or None. A siamese network has one; a stacked model lends its first
        sub-model's."""
        return next((t for t in (m.search_tower() for m in self.sub_models()) if t is not None), None)

    def check_ready(self, catalogue: Catalogue) -> None:
        """Raise unless this model is fitted and ``catalogue`` has the modalities, with the dimensions, it reads."""
        self._check_fitted()
        self._check_catalogue(catalogue)

    def prepare(self, catalogue: Catalogue) -> PairModel:
        """Precompute per-item inputs once, before many small scoring calls on ``catalogue`` (a server's)."""
        self._check_fitted()
        self._check_catalogue(catalogue)
        return self

    def release_store(self) -> None:
        """Drop what fitting or :meth:`prepare` kept to score many pairs fast (a model with nothing kept: no-op)."""

    def use_runtime(self, runtime: str, threads: int = 1) -> PairModel:
        """Score with ``"torch"`` (the default) or ``"onnx"`` (ONNX Runtime over an exported ``model.onnx``)."""
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
        if runtime == "onnx":
            raise ModelError(f"{self.name} has no ONNX form: it scores with its own runtime")
        return self

    def score_arrays(self, left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities from raw embeddings alone; only models that need nothing but embeddings have it."""
        raise ModelError(
            f"{self.name} cannot score raw embeddings alone: its features need the items' side data "
            f"({', '.join(sorted(self.needs))}); score catalogue items with predict_proba instead"
        )

    def predict_labels(self, probabilities: np.ndarray) -> np.ndarray:
        """(M,) int8: 1 where the probability reaches the saved threshold."""
        return (np.asarray(probabilities) >= self.threshold).astype(np.int8)

    def calibrate(
        self,
        scores: np.ndarray,
        y: np.ndarray,
        *,
        method: str = "platt",
        target_precision: float | None = None,
    ) -> ThresholdChoice:
        """Fit the calibration and choose the threshold on validation scores (never on training pairs).

        Args:
            scores: (M,) raw validation scores from :meth:`predict_logits`.
            y: (M,) validation labels.
            method: ``platt``, ``isotonic`` or ``none``.
            target_precision: pick the lowest threshold reaching this precision; max F1 when None.

        Returns:
            The threshold choice (also kept on the model and saved with it).
        """
        self.calibrator = Calibrator.fit(method, scores, y)
        self.threshold_choice = choose_threshold(y, self.calibrator(scores), target_precision)
        self.threshold = self.threshold_choice.threshold
        return self.threshold_choice

    def data_config(self) -> DataConfig:
        """How to read a data directory for this fitted model: its modalities and the side data it needs."""
        self._check_fitted()
        return self.read_config(
            DataConfig(modalities=tuple(n for n, _ in self.modalities_), dims=tuple(d for _, d in self.modalities_))
        )

    def reads(self) -> frozenset[str]:
        """The side data this model reads with its parameters: the class's ``needs`` (a model may add to them)."""
        return self.needs

    def read_config(self, base: DataConfig | None) -> DataConfig:
        """``base`` with the side data this model, with its parameters, reads switched on."""
        return _with_side_data(base, self.reads())

    @classmethod
    def data_config_for(cls, base: DataConfig | None) -> DataConfig:
        """``base`` with the side data this model class needs switched on."""
        return _with_side_data(base, cls.needs)

    # ------------------------------------------------------------------------------ persistence

    def save(self, run_dir: str | Path, extra: dict | None = None) -> Path:
        """Write the model's state, then ``config.json`` (last: a run with a config is complete)."""
        self._check_fitted()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        weights = self._save_weights(run_dir)
        if self.job != "pairs":
            raise ModelError("save the pairs model (a catalogue view is saved with it)")
        config = {
            "format_version": FORMAT_VERSION,
            "model": {"name": self.name, "params": asdict(self.params), "symmetric": self.symmetric},
            "modalities": [{"name": n, "dim": d} for n, d in self.modalities_],
            "normalisation": {"method": "l2", "eps": NORM_EPS},
            "threshold": self.threshold,
            "threshold_choice": None if self.threshold_choice is None else self.threshold_choice.to_dict(),
            "calibration": self.calibrator.to_dict(),
            "jobs": {
                "pairs": {"selection": (getattr(self, "selection_", None) or {}).get("pairs") or {}},
                **({"catalogue": self.catalogue_head_.to_dict()} if self.catalogue_head_ is not None else {}),
            },
            **weights,
            **(extra or {}),
        }
        write_json(config, run_dir / CONFIG_FILE)
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path) -> PairModel:
        """Rebuild a saved model from ``config.json`` and its weights (no pickle)."""
        run_dir = Path(run_dir)
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        model = cls(**config["model"]["params"])
        model.modalities_ = [(m["name"], int(m["dim"])) for m in config["modalities"]]
        model.threshold = float(config.get("threshold", 0.5))
        model.calibrator = Calibrator.from_dict(config.get("calibration"))
        choice = config.get("threshold_choice")
        model.threshold_choice = ThresholdChoice(**choice) if choice else None
        jobs = config.get("jobs") or {}
        model.catalogue_head_ = JobHead.from_dict(jobs["catalogue"]) if "catalogue" in jobs else None
        model.selection_ = {job: jobs[job].get("selection") or {} for job in JOBS if job in jobs}
        model._load_weights(run_dir, config)
        model.run_dir_ = run_dir
        return model

    # --------------------------------------------------------------------------------- helpers

    def _check_fitted(self) -> None:
        if not hasattr(self, "modalities_"):
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


def _with_side_data(base: DataConfig | None, needs: frozenset[str]) -> DataConfig:
    base = base or DataConfig()
    return replace(
        base,
        load_names=base.load_names or "names" in needs,
        load_attributes=base.load_attributes or "attributes" in needs,
        load_extra_pictures=base.load_extra_pictures or "extra_pictures" in needs,
        load_texts=base.load_texts or "texts" in needs,
    )


# --------------------------------------------------------------------------------------------- registry

REGISTRY: dict[str, type[PairModel]] = {}  # name -> class, filled as each model's module is imported


def create_model(name: str, **params: Any) -> PairModel:
    """A new, unfitted model of the registered architecture ``name``."""
    if name not in REGISTRY:
        raise ModelError(f"unknown model {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name](**params)


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
    if name not in REGISTRY:
        raise ModelError(f"{path}: unknown model {name!r}; this prodmatch knows {sorted(REGISTRY)}")
    return REGISTRY[name].load(run_dir)
