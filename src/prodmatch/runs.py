"""The run layer: what a trained run directory gives the steps that use it.

A run directory holds a fitted model (``config.json`` last, so a run with a config is complete). Loading one
gives the model for a job, its saved config, and the catalogue reader that model needs: every step that scores
with a run (predict, evaluate, match on either engine, explain, report, index, serve) loads it here, the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from prodmatch.catalogue import Catalogue
from prodmatch.config import DataConfig
from prodmatch.io import read_catalogue
from prodmatch.models import load_model
from prodmatch.models.base import CONFIG_FILE, PairModel

__all__ = ["Run", "load_run", "model_and_catalogue"]


@dataclass
class Run:
    """A loaded run: its directory, the pairs job's model and the saved config."""

    run_dir: Path
    model: PairModel
    config: dict

    def for_job(self, job: str = "pairs") -> PairModel:
        """The model that scores for ``job`` (``pairs`` or ``catalogue``)."""
        return self.model.for_job(job)

    def data_config(self, job: str = "pairs", *, text: bool = False) -> DataConfig:
        """How to read a data directory for ``job``'s model: just the modalities and side data it uses, plus the
        names and attributes with ``text`` (for blocking on shared values)."""
        config = self.for_job(job).data_config()
        return replace(config, load_names=True, load_attributes=True) if text else config

    def read_catalogue(self, data_dir: str | Path, job: str = "pairs", *, text: bool = False) -> Catalogue:
        """The catalogue of ``data_dir``, read the way :meth:`data_config` says."""
        return read_catalogue(data_dir, self.data_config(job, text=text))


def load_run(run_dir: str | Path) -> Run:
    """Load a trained run directory (its ``config.json`` and weights); an incomplete one is a ModelError."""
    model = load_model(run_dir)
    return Run(Path(run_dir), model, json.loads((Path(run_dir) / CONFIG_FILE).read_text()))


def model_and_catalogue(
    run_dir: str | Path,
    data_dir: str | Path | None,
    catalogue: Catalogue | None = None,
    *,
    text: bool = False,
    job: str = "pairs",
) -> tuple[PairModel, Catalogue]:
    """A saved run's model for ``job`` and the catalogue it scores: ``catalogue`` when given, else ``data_dir``
    read with just what that model uses (and the names and attributes too with ``text``)."""
    run = load_run(run_dir)
    return run.for_job(job), catalogue or run.read_catalogue(data_dir, job, text=text)
