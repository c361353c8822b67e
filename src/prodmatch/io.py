"""Reading and validating the Ozon E-CUP layout (writing is :mod:`prodmatch.atomic`'s).

This is the only module that knows file names. A data directory holds:

- ``text_and_bert.parquet``: ``variantid`` and flat embedding columns such as ``name_bert_64``;
  optional ``name``, and ``text`` (a whole serialised record) or ``description``, read by the text models.
- ``resnet.parquet`` or ``images_embed.parquet`` (optional): ``main_pic_embeddings_resnet_v1``, a list
  holding one vector (a flat vector is accepted too); ``pic_embeddings_resnet_v1`` (extra pictures) is
  side data, not a modality.
- ``attributes.parquet`` (optional): ``categories`` (JSON with keys "1".."4") and
  ``characteristic_attributes_mapping`` (JSON).
- ``train.parquet``: ``variantid1``, ``variantid2``, ``target``; ``test.parquet`` optional.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prodmatch.catalogue import NORM_EPS, Catalogue, Modality, l2_normalize
from prodmatch.config import DataConfig
from prodmatch.errors import DataError

__all__ = [
    "ATTRIBUTES_FILE",
    "PICTURE_FILES",
    "TEST_FILE",
    "TEXT_FILE",
    "TRAIN_FILE",
    "read_catalogue",
    "read_pairs_table",
]

log = logging.getLogger(__name__)

TEXT_FILE = "text_and_bert.parquet"
PICTURE_FILES = ("resnet.parquet", "images_embed.parquet")
ATTRIBUTES_FILE = "attributes.parquet"
TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"
# Written by the synthetic generator (prodmatch.synth), read wherever quality is measured against a known truth.
TRUTH_FILE = "truth.parquet"  # variantid -> product_id, family_id, categories, noise
ORACLE_FILE = "oracle.parquet"  # split, variantid1, variantid2, target, score: the Bayes-optimal log-odds
ORACLE_ITEMS_FILE = "oracle_items.npz"  # what the Bayes oracle needs of each item (prodmatch.oracle)
# Nested columns that hold one main vector per item; other nested columns (extra pictures) are side data.
MAIN_PICTURE_COLUMNS = ("main_pic_embeddings_resnet_v1",)
EXTRA_PICTURES_COLUMN = "pic_embeddings_resnet_v1"
ATTRIBUTES_COLUMN = "characteristic_attributes_mapping"
PAIR_COLUMNS = ("variantid1", "variantid2")
CATEGORY_LEVELS = ("1", "2", "3", "4")
# catalogue matching's outputs
MATCHES_FILE = "matches.parquet"
CLUSTERS_FILE = "clusters.parquet"
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------------------------- reading


def read_catalogue(data_dir: str | Path, config: DataConfig | None = None) -> Catalogue:
    """Read and validate every item file of a data directory into a :class:`Catalogue`.

    Items are the union of the ids of all item files; an item missing from one file lacks that
    modality (zeros, presence flag False) and is kept.

    Args:
        data_dir: a directory in the E-CUP layout (see the module docstring).
        config: which modalities and side data to read; defaults to everything found.

    Returns:
        The catalogue, embeddings L2-normalised the notebook's way.

    Raises:
        DataError: naming the file, column, dimension, value or ids at fault.
    """
    config = config or DataConfig()
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise DataError(
            f"{data_dir} is a file, but a data directory is expected: pass the folder that holds it "
            f"({data_dir.parent}), with {TEXT_FILE} and the other item files"
        )
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; create it with `prodmatch synth {data_dir}`")
    return _read_catalogue(_Files(data_dir), config)


def catalogue_from_arrow(tables: dict[str, pa.Table], config: DataConfig | None = None) -> Catalogue:
    """:func:`read_catalogue` of item files already in memory, by file name (``text_and_bert.parquet``...): a
    Spark executor's batch of item rows, parsed and validated by the same code without touching a disk."""
    return _read_catalogue(_Tables(tables), config or DataConfig())


def _read_catalogue(source: _Files, config: DataConfig) -> Catalogue:
    item_files = _item_files(source)
    wanted = set(config.modalities) if config.modalities is not None else None

    # Which columns of which file are modalities.
    plan: list[tuple[Path, list[str]]] = []
    found: dict[str, Path] = {}
    for path in item_files:
        schema = source.schema(path)
        if config.id_column not in schema.names:
            raise DataError(f"{path}: no id column {config.id_column!r}; columns are {schema.names}")
        cols = [
            f.name
            for f in schema
            if f.name != config.id_column
            and embedding_kind(f.type, f.name) is not None
            and (wanted is None or f.name in wanted)
        ]
        for c in cols:
            if c in found:
                raise DataError(f"embedding column {c!r} is in both {found[c]} and {path}; keep one")
            found[c] = path
        plan.append((path, cols))
    if wanted is not None:
        absent = [m for m in config.modalities or () if m not in found]
        if absent:
            raise DataError(
                f"modalities {absent} not found in {[str(p) for p in item_files]}; "
                f"embedding columns there are {sorted(_all_embedding_columns(source, item_files, config.id_column))}"
            )
    if not found and config.modalities != ():  # () is a model that reads no embedding (a text model)
        raise DataError(
            f"no embedding columns (lists of numbers) in {[str(p) for p in item_files]}; "
            f"expected e.g. name_bert_64 in {TEXT_FILE}"
        )

    # Read ids of every file, form the union in a stable order: first file's order, then new ids.
    tables: list[tuple[Path, pa.Table, np.ndarray]] = []
    for path, cols in plan:
        table = source.read(path, [config.id_column, *cols])
        ids = _read_ids(table, path, config.id_column)
        tables.append((path, table, ids))
    kinds = {_id_kind(ids) for _, _, ids in tables}
    if len(kinds) > 1:
        detail = ", ".join(f"{p.name}: {_id_kind(i)}" for p, _, i in tables)
        raise DataError(f"item files disagree on the type of {config.id_column} ({detail}); use one type")
    index = pd.Index(tables[0][2])
    for _, _, ids in tables[1:]:
        new = ids[index.get_indexer(ids) < 0]
        if len(new):
            index = index.append(pd.Index(new))
    n = len(index)

    modalities: dict[str, Modality] = {}
    for path, table, ids in tables:
        rows = index.get_indexer(ids)
        for col in table.column_names[1:]:
            modalities[col] = _read_modality(table[col], path, col, ids, rows, n, config)
    order = list(config.modalities) if config.modalities is not None else list(modalities)
    modalities = {name: modalities[name] for name in order}

    categories = None
    attr_path = source.path(ATTRIBUTES_FILE)
    if config.load_categories and source.exists(attr_path):
        categories = _read_categories(source, attr_path, index, config.id_column)
    names = None
    if config.load_names:
        names = _read_names(source, source.path(TEXT_FILE), index, config.id_column)
    texts = None
    if config.load_texts:
        texts = _read_texts(source, source.path(TEXT_FILE), index, config.id_column)
    attributes = None
    if config.load_attributes and source.exists(attr_path):
        attributes = _read_attributes(source, attr_path, index, config.id_column)
    extra = None
    pictures = [p for p in item_files if p.name in PICTURE_FILES]
    if config.load_extra_pictures and pictures:
        extra = _read_extra_pictures(source, pictures[0], index, config)

    cat = Catalogue(
        ids=index,
        modalities=modalities,
        categories=categories,
        names=names,
        attributes=attributes,
        texts=texts,
        extra_pictures=extra,
    )
    for name, m in cat.modalities.items():
        log.info(
            "modality %s: %d-d from %s, %d items present, %d missing",
            name,
            m.dim,
            Path(m.source).name,
            m.present.sum(),
            (~m.present).sum(),
        )
    return cat


def read_pairs_table(path: str | Path, *, require_target: bool) -> pd.DataFrame:
    """Read and validate a pairs file (``variantid1``, ``variantid2``, optional ``target`` and ``category2``).

    Args:
        path: a parquet file.
        require_target: raise when ``target`` is absent or has nulls.

    Returns:
        A DataFrame with the pair columns, ``target`` as float32 when present, ``category2`` when present.

    Raises:
        DataError: the file or a column is missing, the file is empty, ids are null, or targets are not 0/1.
    """
    path = Path(path)
    schema = _read_schema(path)
    missing = [c for c in PAIR_COLUMNS if c not in schema.names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {schema.names}")
    cols = [*PAIR_COLUMNS] + [c for c in ("target", "category2") if c in schema.names]
    if require_target and "target" not in cols:
        raise DataError(f"{path}: no 'target' column, but labelled pairs are needed here")
    df = pq.read_table(path, columns=cols).to_pandas()
    if df.empty:
        raise DataError(f"{path} has no rows")
    for c in PAIR_COLUMNS:
        nulls = np.flatnonzero(df[c].isna().to_numpy())
        if len(nulls):
            raise DataError(f"{path}: column {c} has {len(nulls)} null ids, e.g. at rows {nulls[:5].tolist()}")
        if pd.api.types.is_float_dtype(df[c].dtype):
            raise DataError(f"{path}: column {c} holds floats; ids must be integers or strings")
    if "target" in df:
        t = df["target"]
        if t.isna().all() and not require_target:
            df = df.drop(columns="target")
        else:
            nulls = np.flatnonzero(t.isna().to_numpy())
            if len(nulls):
                raise DataError(
                    f"{path}: target has {len(nulls)} nulls, e.g. at rows {nulls[:5].tolist()}; "
                    "label them or drop the rows"
                )
            values = t.to_numpy(dtype=np.float64)
            bad = np.flatnonzero((values != 0) & (values != 1))
            if len(bad):
                raise DataError(
                    f"{path}: target must be 0 or 1, found {values[bad[:5]].tolist()} at rows {bad[:5].tolist()}"
                )
            df["target"] = values.astype(np.float32)
    return df


# --------------------------------------------------------------------------------------------- helpers


class _Files:
    """The item files of a data directory on disk."""

    def __init__(self, data_dir: Path) -> None:
        self.where = data_dir

    def path(self, name: str) -> Path:
        return self.where / name

    def exists(self, path: Path) -> bool:
        return path.exists()

    def names(self) -> list[str]:
        return sorted(p.name for p in self.where.iterdir())

    def schema(self, path: Path) -> pa.Schema:
        return _read_schema(path)

    def read(self, path: Path, columns: list[str]) -> pa.Table:
        return pq.read_table(path, columns=columns)


class _Tables(_Files):
    """Item files held in memory, by file name: read as a data directory is, with the same validation."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        super().__init__(Path("."))
        self.tables = tables

    def exists(self, path: Path) -> bool:
        return path.name in self.tables

    def names(self) -> list[str]:
        return sorted(self.tables)

    def schema(self, path: Path) -> pa.Schema:
        if path.name not in self.tables:
            raise DataError(f"{path} not found")
        return self.tables[path.name].schema

    def read(self, path: Path, columns: list[str]) -> pa.Table:
        return self.tables[path.name].select(columns)


def _item_files(source: _Files) -> list[Path]:
    text = source.path(TEXT_FILE)
    if not source.exists(text):
        raise DataError(
            f"{text} not found: a data directory needs {TEXT_FILE} (variantid and embedding columns); "
            f"files there are {source.names()}"
        )
    pictures = [source.path(f) for f in PICTURE_FILES if source.exists(source.path(f))]
    if len(pictures) > 1:
        raise DataError(f"both {PICTURE_FILES[0]} and {PICTURE_FILES[1]} are in {source.where}; keep one")
    if not pictures:
        log.warning("no picture file (%s) in %s: only text modalities", " or ".join(PICTURE_FILES), source.where)
    return [text, *pictures]


def _read_schema(path: Path) -> pa.Schema:
    if not path.exists():
        raise DataError(f"{path} not found")
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path} is not a readable parquet file: {e}") from e


def embedding_kind(t: pa.DataType, name: str) -> str | None:
    """'flat' for a list of numbers, 'nested' for a main-picture list of lists, else None."""
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return None
    v = t.value_type
    if pa.types.is_floating(v) or pa.types.is_integer(v):
        return "flat"
    nested = pa.types.is_list(v) or pa.types.is_large_list(v) or pa.types.is_fixed_size_list(v)
    if nested and name in MAIN_PICTURE_COLUMNS and (pa.types.is_floating(v.value_type)):
        return "nested"
    return None


def _all_embedding_columns(source: _Files, files: list[Path], id_column: str) -> set[str]:
    return {f.name for p in files for f in source.schema(p) if f.name != id_column and embedding_kind(f.type, f.name)}


def _id_kind(ids: np.ndarray) -> str:
    return "int" if np.issubdtype(ids.dtype, np.integer) else "str"


def _read_ids(table: pa.Table, path: Path, column: str) -> np.ndarray:
    if table.num_rows == 0:
        raise DataError(f"{path} has no rows")
    col = table[column]
    if col.null_count:
        where = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[:5].tolist()
        raise DataError(f"{path}: {column} has {col.null_count} nulls, e.g. at rows {where}")
    if pa.types.is_integer(col.type):
        ids = col.to_numpy().astype(np.int64, copy=False)
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        ids = col.to_numpy(zero_copy_only=False).astype(object)
    else:
        raise DataError(f"{path}: {column} has type {col.type}; ids must be integers or strings")
    index = pd.Index(ids)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()
        raise DataError(f"{path}: {len(dup)} duplicate {column} values, e.g. {dup[:5].tolist()}; keep one row per item")
    return ids


def _read_modality(
    col: pa.ChunkedArray,
    path: Path,
    name: str,
    ids: np.ndarray,
    rows: np.ndarray,
    n: int,
    config: DataConfig,
) -> Modality:
    arr = col.combine_chunks()  # one Array: row groups arrive as chunks
    expected = dict(zip(config.modalities, config.dims, strict=True)).get(name) if config.dims else None
    if embedding_kind(arr.type, name) == "nested":
        present_file, block = _nested_first_vectors(arr, path, name, ids, expected)
    else:
        present_file, block = _flat_vectors(arr, path, name, ids, expected)
    n_empty = len(present_file) - int(present_file.sum())
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        bad_ids = ids[present_file][bad]
        msg = f"{path}: column {name} has NaN or inf in {bad.sum()} vectors, e.g. ids {bad_ids[:5].tolist()}"
        if config.invalid_vectors == "error":
            raise DataError(msg + "; fix them, or pass --invalid-vectors missing to treat them as absent")
        log.warning("%s; treated as missing (--invalid-vectors missing)", msg)
        keep = present_file.copy()
        keep[np.flatnonzero(present_file)[bad]] = False
        present_file = keep
        block = block[~bad]
    # A vector whose norm is at most NORM_EPS (all zeros, typically) says nothing about the item: the
    # notebook kept it as a "present" vector, so two unrelated items with zero vectors looked identical.
    # It counts as missing (presence flag 0) everywhere: training, scoring, matching and serving.
    blank = np.sqrt(np.einsum("ij,ij->i", block, block)) <= NORM_EPS  # as l2_normalize computes it
    if blank.any():
        blank_ids = ids[present_file][blank]
        log.warning(
            "%s: %d %s vectors have norm <= %g (e.g. ids %s); they carry no information and count as missing",
            path.name,
            int(blank.sum()),
            name,
            NORM_EPS,
            blank_ids[:5].tolist(),
        )
        keep = present_file.copy()
        keep[np.flatnonzero(present_file)[blank]] = False
        present_file = keep
        block = block[~blank]
    present = np.zeros(n, dtype=bool)
    target_rows = rows[present_file]
    present[target_rows] = True
    if len(block) == n and np.array_equal(target_rows, np.arange(n)):
        # The file holds every item in catalogue order: normalise straight into a fresh matrix.
        matrix = l2_normalize(block, out=np.empty(block.shape, dtype=np.float32))
    else:
        matrix = np.zeros((n, block.shape[1]), dtype=np.float32)
        matrix[target_rows] = block  # ``block`` may be read-only Arrow memory: normalise our own copy
        l2_normalize(matrix)
    if n_empty:
        log.info("%s: %d items have no %s (empty or null); they are kept without it", path.name, n_empty, name)
    return Modality(name=name, matrix=matrix, present=present, source=str(path))


def _flat_vectors(
    arr: pa.Array, path: Path, name: str, ids: np.ndarray, expected: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(present (n,), block (n_present, D) float32) of a list<number> column; empty and null lists are absent."""
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)  # (n,)
    present = lengths > 0
    dim = _single_dim(lengths[present], ids[present], path, name, expected)
    values = arr.flatten().to_numpy(zero_copy_only=False)  # values of non-null lists only, in row order
    return present, values.reshape(-1, dim).astype(np.float32, copy=False)


def _nested_first_vectors(
    arr: pa.Array, path: Path, name: str, ids: np.ndarray, expected: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_flat_vectors` for list<list<number>>, taking each row's first inner vector (the notebook's x[0])."""
    outer = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)  # (n,) vectors per row
    multi = int((outer > 1).sum())
    if multi:
        log.info("%s: %s holds more than one vector for %d items; using the first", path.name, name, multi)
    inner = arr.flatten()  # every inner list of every non-null row, in order
    first = np.concatenate([[0], np.cumsum(outer)[:-1]])  # (n,) index in ``inner`` of each row's first vector
    inner_len = pc.list_value_length(inner).fill_null(0).to_numpy(zero_copy_only=False)
    present = outer > 0
    present[present] = inner_len[first[present]] > 0
    dim = _single_dim(inner_len[first[present]], ids[present], path, name, expected)
    if (inner_len == dim).all():  # the usual case: reshape, no copying per row
        values = inner.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        if len(values) == int(present.sum()):  # exactly one vector per present row: already in order
            return present, values.astype(np.float32, copy=False)
        return present, values[first[present]].astype(np.float32, copy=False)
    firsts = inner.take(pa.array(first[present]))
    return present, firsts.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def _single_dim(lengths: np.ndarray, ids: np.ndarray, path: Path, name: str, expected: int | None = None) -> int:
    """The one vector length of a column, or a DataError naming every length found with example ids. A column
    with no vector at all has the ``expected`` length, when there is one."""
    dims, counts = np.unique(lengths, return_counts=True)
    if len(dims) == 0 and expected is not None:
        return int(expected)
    if len(dims) == 0:
        raise DataError(f"{path}: column {name} has no vectors at all")
    if len(dims) > 1:
        parts = []
        for k in np.argsort(-counts, kind="stable"):  # the most common dimension first
            example = ids[np.flatnonzero(lengths == dims[k])[:3]].tolist()
            parts.append(f"{counts[k]} of dimension {dims[k]} (e.g. ids {example})")
        raise DataError(
            f"{path}: column {name} has vectors of {len(dims)} different dimensions: {'; '.join(parts)}. "
            "Every vector of a column must have the same length"
        )
    return int(dims[0])


def _read_categories(source: _Files, path: Path, index: pd.Index, id_column: str) -> pd.DataFrame | None:
    schema = source.schema(path)
    for c in (id_column, "categories"):
        if c not in schema.names:
            raise DataError(f"{path}: missing column {c!r}; columns are {schema.names}")
    table = source.read(path, [id_column, "categories"])
    ids = _read_ids(table, path, id_column)
    # JSON strings repeat: parse each distinct one once, then broadcast by dictionary code.
    encoded = table["categories"].combine_chunks().dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = np.where(pd.isna(codes), -1, codes).astype(np.int64)
    parsed: list[list[str | None]] = []
    for i, raw in enumerate(encoded.dictionary.to_pylist()):
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            example = ids[np.flatnonzero(codes == i)[0]]
            raise DataError(
                f"{path}: column categories holds invalid JSON for {id_column} {example}: {raw[:80]!r} ({e}); "
                'expected an object with keys "1".."4"'
            ) from e
        parsed.append([None if obj.get(k) is None else str(obj.get(k)) for k in CATEGORY_LEVELS])
    rows = index.get_indexer(ids)
    known = rows >= 0
    if (~known).any():
        log.info("%s: %d items have attributes but no embeddings; ignored", path.name, (~known).sum())
    out = {}
    for level, key in enumerate(CATEGORY_LEVELS):
        # Factorise the few distinct values, then broadcast codes to items: no per-item Python objects.
        level_codes, level_values = pd.factorize(pd.Series([p[level] for p in parsed], dtype=object))
        item_codes = np.full(len(index), -1, dtype=np.int64)
        item_codes[rows[known]] = np.where(codes[known] >= 0, level_codes[np.maximum(codes[known], 0)], -1)
        out[f"category{key}"] = pd.Categorical.from_codes(item_codes, categories=pd.Index(level_values, dtype=object))
    return pd.DataFrame(out)


def _read_names(source: _Files, path: Path, index: pd.Index, id_column: str) -> np.ndarray | None:
    if "name" not in source.schema(path).names:
        return None
    table = source.read(path, [id_column, "name"])
    rows = index.get_indexer(_read_ids(table, path, id_column))
    names = np.full(len(index), None, dtype=object)
    names[rows] = table["name"].to_numpy(zero_copy_only=False)
    return names


TEXT_COLUMNS = ("text", "description")  # the long text column, the first found


def _read_texts(source: _Files, path: Path, index: pd.Index, id_column: str) -> np.ndarray | None:
    """(N,) the long text of each item (None where missing): ``text`` if the file has it, else ``description``."""
    found = [c for c in TEXT_COLUMNS if c in source.schema(path).names]
    if not found:
        return None
    table = source.read(path, [id_column, found[0]])
    rows = index.get_indexer(_read_ids(table, path, id_column))
    known = rows >= 0
    out = np.full(len(index), None, dtype=object)
    out[rows[known]] = table[found[0]].to_numpy(zero_copy_only=False)[known]
    return out


def _read_attributes(source: _Files, path: Path, index: pd.Index, id_column: str) -> np.ndarray | None:
    """(N,) raw attribute JSON strings (None where missing); parsing is left to the features that use them."""
    if ATTRIBUTES_COLUMN not in source.schema(path).names:
        log.info("%s has no %s column; attribute features are off", path.name, ATTRIBUTES_COLUMN)
        return None
    table = source.read(path, [id_column, ATTRIBUTES_COLUMN])
    rows = index.get_indexer(_read_ids(table, path, id_column))
    known = rows >= 0
    out = np.full(len(index), None, dtype=object)
    out[rows[known]] = table[ATTRIBUTES_COLUMN].to_numpy(zero_copy_only=False)[known]
    return out


def _read_extra_pictures(
    source: _Files, path: Path, index: pd.Index, config: DataConfig
) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets (N+1,), vectors (K, D) normalised) of the extra photos; invalid vectors follow the config."""
    if EXTRA_PICTURES_COLUMN not in source.schema(path).names:
        return None
    table = source.read(path, [config.id_column, EXTRA_PICTURES_COLUMN])
    ids = _read_ids(table, path, config.id_column)
    arr = table[EXTRA_PICTURES_COLUMN].combine_chunks()
    counts = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)  # per row
    inner = arr.flatten()
    inner_len = pc.list_value_length(inner).fill_null(0).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(len(ids)), counts)  # file row of every extra vector
    keep = inner_len > 0
    if keep.any():
        dim = _single_dim(inner_len[keep], ids[owner[keep]], path, EXTRA_PICTURES_COLUMN)
    else:
        return np.zeros(len(index) + 1, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    vectors = inner.filter(pa.array(keep)).flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    vectors = vectors.astype(np.float32)
    owner = owner[keep]
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        if config.invalid_vectors == "error":
            raise DataError(
                f"{path}: column {EXTRA_PICTURES_COLUMN} holds NaN or inf in {bad.sum()} vectors, e.g. for "
                f"{config.id_column} {ids[owner[bad]][:5].tolist()}; fix them or pass --invalid-vectors missing"
            )
        log.warning("%s: ignored %d extra photos holding NaN or inf", path.name, bad.sum())
        vectors, owner = vectors[~bad], owner[~bad]
    l2_normalize(vectors)
    rows = index.get_indexer(ids)[owner]  # catalogue row of every vector
    known = rows >= 0
    vectors, rows = vectors[known], rows[known]
    order = np.argsort(rows, kind="stable")
    per_item = np.bincount(rows, minlength=len(index))
    offsets = np.concatenate([[0], np.cumsum(per_item)]).astype(np.int64)
    log.info("%s: %d extra photos of %d items", path.name, len(vectors), int((per_item > 0).sum()))
    return offsets, np.ascontiguousarray(vectors[order])
