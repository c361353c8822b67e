"""Your own table in: a catalogue in CSV, JSON Lines or parquet, with your own column names, as a prodmatch data
directory (the E-CUP layout every command reads).

You name the columns; nothing is guessed from their names:

- ``id``: the item id (integers stay integers, anything else becomes a string);
- ``text``: one or more text columns; the first is the item's name (its title), all of them together its long
  text (``title: ...; brand: ...``), as the codes, numbers and word comparisons read them;
- ``vectors``: columns that already hold an embedding (a list of numbers, or a string such as ``[0.1, 0.2]`` or
  ``0.1 0.2`` in a CSV), one modality each; without any, the names (and the long text, when there are several
  text columns) are embedded with the bundled offline encoder (``prodmatch[embed]``);
- ``category``: a category path (``Electronics > Cameras > Lenses``), its levels split on ``>``; a single level
  stands for both level 1 and level 2 (the level the per-category metrics group by);
- ``attributes``: columns compared as values (brand, colour, price...), written as the attribute mapping.

Labelled pairs come in the same way (:func:`import_pairs`): any table with two id columns and a 0/1 label.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import staged_output, write_json, write_parquet
from prodmatch.embed import embed_directory, load_encoder
from prodmatch.errors import DataError
from prodmatch.io import ATTRIBUTES_COLUMN, ATTRIBUTES_FILE, TEXT_FILE, TRAIN_FILE

__all__ = ["TABLE_FORMATS", "import_pairs", "import_table", "read_table"]

log = logging.getLogger(__name__)

IMPORT_FILE = "import.json"
TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                 ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, TSV, JSON Lines or parquet file as a DataFrame (by its suffix); ids and texts are read as written."""
    path = Path(path)
    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown table format {path.suffix!r}; give a {', '.join(sorted(TABLE_FORMATS))} file")
    if not path.exists():
        raise DataError(f"{path} not found")
    try:
        if kind in ("csv", "tsv"):
            return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                               na_values=[""])  # fmt: skip
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot be read as {kind}: {e}") from e


def _columns(frame: pd.DataFrame, path: Path, wanted: dict[str, Sequence[str]]) -> None:
    """Refuse, in one line, a column the options name that the table lacks."""
    for option, columns in wanted.items():
        for column in columns:
            if column not in frame.columns:
                raise DataError(
                    f"{path}: no column {column!r} (named by {option}); its columns are {list(frame.columns)}"
                )


def _ids(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """The ids as int64 when every one is an integer, else as strings; refuses empty ones, in one line."""
    empty = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if len(empty):
        raise DataError(f"{path}: column {column!r} has {len(empty)} empty ids, e.g. at rows {empty[:5].tolist()}")
    text = values.astype(str).str.strip()
    if text.str.fullmatch(r"-?\d{1,18}").all():
        return text.astype(np.int64).to_numpy()
    return text.to_numpy(dtype=object)


def _vector(value: object, path: Path, column: str, row: int) -> list[float] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = json.loads(text) if text.startswith("[") else [float(x) for x in text.replace(",", " ").split()]
        except ValueError as e:
            raise DataError(f"{path}: column {column!r}, row {row}: {text[:40]!r} is not a list of numbers") from e
        value = parsed
    try:
        return [float(x) for x in value]  # type: ignore[union-attr]
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: column {column!r}, row {row}: {str(value)[:40]!r} is not a list of numbers") from e


def import_table(
    table: str | Path,
    out_dir: str | Path,
    *,
    id_column: str,
    text_columns: Sequence[str],
    vector_columns: Sequence[str] = (),
    category_column: str | None = None,
    attribute_columns: Sequence[str] = (),
    pairs: str | Path | None = None,
    pair_columns: tuple[str, str, str] = ("variantid1", "variantid2", "target"),
    encoder: str = "use",
    overwrite: bool = False,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict:
    """Write ``table`` (see the module) as a data directory ``out_dir``, atomically; with ``pairs``, its labelled
    pairs as ``train.parquet`` (``pair_columns``: the left id, right id and label columns of that table).

    Returns:
        The import summary, also written to ``import.json``.

    Raises:
        DataError: a file, column, id or value the import cannot take, named in one line.
    """
    path = Path(table)
    if not text_columns and not vector_columns:
        raise DataError("give --text (the title first) or --vector: an item needs something to compare")
    frame = read_table(path)
    _columns(frame, path, {"--id": [id_column], "--text": list(text_columns), "--vector": list(vector_columns),
                           "--category": [category_column] if category_column else [],
                           "--attributes": list(attribute_columns)})  # fmt: skip
    if frame.empty:
        raise DataError(f"{path} has no rows")
    ids = _ids(frame[id_column], path, id_column)
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        raise DataError(
            f"{path}: column {id_column!r} repeats {len(pd.unique(ids[dup]))} ids, e.g. "
            f"{pd.unique(ids[dup])[:5].tolist()}; an id names one item"
        )

    def text_of(column: str) -> list[str]:
        return ["" if pd.isna(v) else str(v).strip() for v in frame[column]]

    texts = {c: text_of(c) for c in text_columns}
    items = pd.DataFrame({"variantid": ids})
    if text_columns:
        items["name"] = texts[text_columns[0]]
        items["text"] = [
            "; ".join(f"{c}: {texts[c][i]}" for c in text_columns if texts[c][i]) for i in range(len(frame))
        ]
    for column in vector_columns:
        vectors = [_vector(v, path, column, i) for i, v in enumerate(frame[column])]
        lengths = {len(v) for v in vectors if v is not None}
        if len(lengths) > 1:
            raise DataError(f"{path}: column {column!r} holds vectors of lengths {sorted(lengths)}; one length only")
        items[column] = [None if v is None else np.asarray(v, dtype=np.float32) for v in vectors]
    summary: dict = {"source": str(path), "items": len(items), "id_kind": "int" if ids.dtype != object else "str",
                     "text": list(text_columns), "vectors": list(vector_columns)}  # fmt: skip
    with staged_output(out_dir, overwrite, IMPORT_FILE) as tmp:
        write_parquet(items, tmp / TEXT_FILE)
        categories = [_category(v) for v in frame[category_column]] if category_column else ["{}"] * len(frame)
        mappings = [_mapping(frame, attribute_columns, i) for i in range(len(frame))]
        write_parquet(
            pd.DataFrame({"variantid": ids, "categories": categories, ATTRIBUTES_COLUMN: mappings}),
            tmp / ATTRIBUTES_FILE,
        )
        if pairs is not None:
            summary["pairs"] = import_pairs(pairs, tmp / TRAIN_FILE, ids, pair_columns)
        summary["embeddings"] = {}
        if not vector_columns:
            enc = load_encoder(encoder)
            for field in ("name", "text") if len(text_columns) > 1 else ("name",):
                callback = progress(f"embedding {field}", len(items)) if progress else None
                report = embed_directory(tmp, field=field, encoder=enc, progress=callback)
                summary["embeddings"][report.column] = {"items": report.items, "empty": report.empty}
        write_json(summary, tmp / IMPORT_FILE)
    return summary


def _mapping(frame: pd.DataFrame, columns: Sequence[str], row: int) -> str | None:
    """Row ``row``'s attribute mapping ``{"column": ["value"]}``, its empty values left out; None when empty."""
    kept = {c: [str(frame[c].iat[row]).strip()] for c in columns if _filled(frame[c].iat[row])}
    return json.dumps(kept, ensure_ascii=False) if kept else None


def _filled(value: object) -> bool:
    return not (value is None or (isinstance(value, float) and np.isnan(value))) and str(value).strip() != ""


def _category(value: object) -> str:
    """The E-CUP categories JSON of a category path: levels split on ``>``; one level is level 1 and 2."""
    if not _filled(value):
        return "{}"
    levels = [p.strip() for p in str(value).split(">") if p.strip()][:4]
    if len(levels) == 1:
        levels = levels * 2
    return json.dumps({str(k + 1): v for k, v in enumerate(levels)}, ensure_ascii=False)


def import_pairs(
    table: str | Path, out_path: str | Path, ids: np.ndarray, columns: tuple[str, str, str] = ("variantid1",
    "variantid2", "target"),
) -> dict:  # fmt: skip
    """Write a table of labelled pairs (any format :func:`read_table` reads; ``columns``: left id, right id, label)
    as a pairs file of the catalogue whose ids are ``ids``. Labels are 0/1 (or true/false, yes/no); ids the
    catalogue lacks are refused, listed."""
    path = Path(table)
    frame = read_table(path)
    left, right, label = columns
    _columns(frame, path, {"--left": [left], "--right": [right], "--label": [label]})
    a, b = _ids(frame[left], path, left), _ids(frame[right], path, right)
    if (a.dtype == object) != (ids.dtype == object):
        a, b = a.astype(str), b.astype(str)
        if ids.dtype != object:
            raise DataError(
                f"{path}: columns {left!r}/{right!r} hold ids that are not integers, but the catalogue's ids are"
            )
    known = pd.Index(ids)
    unknown = pd.unique(np.concatenate([a[known.get_indexer(a) < 0], b[known.get_indexer(b) < 0]]))
    if len(unknown):
        raise DataError(f"{path}: {len(unknown)} ids are not in the catalogue, e.g. {unknown[:5].tolist()}")
    words = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "1.0": 1, "0.0": 0}
    raw = frame[label].astype(str).str.strip().str.lower()
    bad = ~raw.isin(list(words))
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise DataError(
            f"{path}: column {label!r} holds {int(bad.sum())} values that are not 0/1, e.g. "
            f"{frame[label].iloc[rows[:3]].tolist()} at rows {rows[:3].tolist()}"
        )
    target = raw.map(words).astype("int8").to_numpy()
    write_parquet(pd.DataFrame({"variantid1": a, "variantid2": b, "target": target}), out_path)
    return {"source": str(path), "pairs": len(frame), "positive_rate": round(float(target.mean()), 4)}
