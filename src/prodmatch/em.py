"""Import an entity-matching benchmark folder (Magellan/DeepMatcher, as Ditto serialises them) into a
prodmatch data directory.

The source folder holds ``records.parquet`` (id, title, text, attrs_json) and ``train``, ``valid`` and
``test.parquet`` (left_id, right_id, ..., label). The result is an ordinary prodmatch data directory:

- ``text_and_bert.parquet``: variantid (the record ids, strings), ``name`` (the title, led by the
  manufacturer's first word when the title lacks it), ``text`` (the whole record) and their embeddings
  (``name_use_512``...), computed by :mod:`prodmatch.embed`;
- ``attributes.parquet``: every short attribute (brand or manufacturer, price...) as
  ``characteristic_attributes_mapping``; no categories (``{}``);
- ``train``, ``valid`` and ``test.parquet`` in prodmatch's pair format, the given splits unchanged:
  train with ``--valid-pairs DATA/valid.parquet`` to choose the threshold on valid and report on test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from prodmatch.embed import embed_directory, load_encoder
from prodmatch.errors import DataError
from prodmatch.io import ATTRIBUTES_COLUMN, ATTRIBUTES_FILE, TEXT_FILE, write_json, write_parquet

__all__ = ["EM_SPLITS", "import_em"]

log = logging.getLogger(__name__)

EM_SPLITS = ("train", "valid", "test")
LONG_TEXT_KEYS = ("name", "title", "description")  # embedded as text, not compared as attribute values
IMPORT_FILE = "import.json"


def import_em(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    encoder: str = "use",
    fields: tuple[str, ...] = ("name", "text"),
    overwrite: bool = False,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict:
    """Turn an EM benchmark folder into a prodmatch data directory (written atomically).

    Args:
        src_dir: the benchmark folder.
        out_dir: the data directory to create.
        encoder: ``use`` or ``e5`` (see :mod:`prodmatch.embed`).
        fields: which texts to embed: ``name`` (the title) and/or ``text`` (the whole record).
        overwrite: replace an existing import.
        progress: ``progress(label, total)`` returns a callback advanced by each embedded batch.

    Returns:
        The import summary (also written to ``import.json``).
    """
    from prodmatch.matching import _staged_output

    src = Path(src_dir)
    records = _read(src / "records.parquet", ["id", "title", "text", "attrs_json"])
    if records["id"].duplicated().any():
        dup = records.loc[records["id"].duplicated(), "id"].head(5).tolist()
        raise DataError(f"{src / 'records.parquet'}: ids are not unique, e.g. {dup}")
    unknown_fields = sorted(set(fields) - {"name", "text"})
    if unknown_fields:
        raise DataError(f"unknown fields {unknown_fields}: embed 'name' (the title) and/or 'text' (the record)")
    enc = load_encoder(encoder)
    summary: dict = {"source": str(src), "records": len(records), "encoder": encoder, "splits": {}}
    with _staged_output(out_dir, overwrite, IMPORT_FILE) as tmp:
        ids = records["id"].astype(str)
        parsed = [_parse(a) for a in records["attrs_json"]]  # once, for names and attributes
        names = [_name(t, obj) for t, obj in zip(records["title"], parsed, strict=True)]
        write_parquet(
            pd.DataFrame({"variantid": ids, "name": names, "text": records["text"].fillna("")}),
            tmp / TEXT_FILE,
        )
        unreadable = [rid for rid, obj in zip(ids, parsed, strict=True) if obj is _UNREADABLE]
        if unreadable:
            log.warning(
                "%s: attrs_json of %d records is not a JSON object (e.g. %s); they get no attributes",
                src / "records.parquet",
                len(unreadable),
                unreadable[:5],
            )
        summary["unreadable_attributes"] = len(unreadable)
        write_parquet(
            pd.DataFrame(
                {
                    "variantid": ids,
                    "categories": "{}",
                    ATTRIBUTES_COLUMN: [_attributes(obj) for obj in parsed],
                }
            ),
            tmp / ATTRIBUTES_FILE,
        )
        known = set(ids)
        for split in EM_SPLITS:
            pairs = _read(src / f"{split}.parquet", ["left_id", "right_id", "label"])
            missing = sorted((set(pairs["left_id"]) | set(pairs["right_id"])) - known)
            if missing:
                raise DataError(
                    f"{src / f'{split}.parquet'}: {len(missing)} ids are not in records.parquet, e.g. {missing[:5]}"
                )
            frame = pd.DataFrame(
                {
                    "variantid1": pairs["left_id"].astype(str),
                    "variantid2": pairs["right_id"].astype(str),
                    "target": pairs["label"].astype("int8"),
                }
            )
            write_parquet(frame, tmp / f"{split}.parquet")
            summary["splits"][split] = {"pairs": len(frame), "positive_rate": round(float(frame["target"].mean()), 4)}
        summary["embeddings"] = {}
        for field in fields:
            callback = progress(f"embedding {field}", len(records)) if progress else None
            report = embed_directory(tmp, field=field, encoder=enc, progress=callback)
            summary["embeddings"][report.column] = {
                "items": report.items,
                "empty": report.empty,
                "seconds": round(report.seconds, 2),
                "items_per_second": round(report.items_per_second, 1),
            }
        write_json(summary, tmp / IMPORT_FILE)
    return summary


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path} not found: an EM folder holds records.parquet and train/valid/test.parquet")
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks columns {missing}; it has {list(frame.columns)}")
    return frame


_UNREADABLE = object()  # attrs_json that is not a JSON object: counted and reported by import_em


def _parse(raw: str | None):
    """attrs_json as a dict; None when empty; _UNREADABLE when it is not a JSON object."""
    if not raw:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return _UNREADABLE
    return obj if isinstance(obj, dict) else _UNREADABLE


def _name(title: str | None, obj) -> str:
    """The title, led by the manufacturer when the record names one that the title does not mention, as
    a marketplace shows brand and title together (one source of a benchmark often leaves the brand out
    of the title and puts it in its own field)."""
    title = (title or "").strip()
    maker = str(obj.get("manufacturer") or "").strip() if isinstance(obj, dict) else ""
    first = maker.split()[0] if maker else ""
    if first and first.lower() not in title.lower().split():
        return f"{first} {title}".strip()
    return title


def _attributes(obj) -> str | None:
    """The E-CUP mapping {"attr": ["value"]} of a record's short, non-empty attributes; None when none."""
    if not isinstance(obj, dict):
        return None
    kept = {
        str(k): [str(v).strip()]
        for k, v in obj.items()
        if k not in LONG_TEXT_KEYS and v is not None and str(v).strip() not in ("", "nan")
    }
    return json.dumps(kept, ensure_ascii=False) if kept else None
