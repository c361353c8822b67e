"""Server settings: flags of ``prodmatch serve``, or ``PRODMATCH_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServeSettings"]


class ServeSettings(BaseSettings):
    """Everything a server needs; each field can come from the environment, e.g. ``PRODMATCH_API_KEY``.

    Attributes:
        run_dir: the trained run directory to serve.
        data_dir: the catalogue (the layout the model was trained on).
        index_dir: a saved ``prodmatch index`` directory; built at start-up when left out.
        clusters: ``clusters.parquet`` of a ``prodmatch match`` run, to answer cluster ids.
        runtime: ``onnx`` (after ``prodmatch export``), ``torch``, or ``auto`` (onnx when exported).
        threads: compute threads per request.
        api_key: when set, every ``/v1`` request must carry it in the ``X-API-Key`` header.
        max_batch: the most pairs one ``/v1/score`` or ``/v1/explain`` request may hold.
        max_k: the largest ``k`` of ``/v1/similar``.
        max_body_bytes: larger request bodies are refused with 413 before they are read.
    """

    model_config = SettingsConfigDict(env_prefix="PRODMATCH_", frozen=True, extra="ignore")

    run_dir: Path
    data_dir: Path
    index_dir: Path | None = None
    clusters: Path | None = None
    runtime: Literal["auto", "onnx", "torch"] = "auto"
    threads: int = Field(1, ge=1, le=256)
    api_key: SecretStr | None = None
    max_batch: int = Field(1024, ge=1, le=1_000_000)
    max_k: int = Field(100, ge=1, le=10_000)
    max_body_bytes: int = Field(16 * 2**20, ge=1024)
