"""Import an entity-matching benchmark folder (Magellan/DeepMatcher, as Ditto serialises them) into a
prodmatch data directory.

The source folder holds ``records.parquet`` (id, title, text, attrs_json) and ``train``, ``valid`` and
``test.parquet`` (left_id, right_id, ..., label). The result is an ordinary prodmatch data directory:

- ``text_and_bert.parquet``: variantid (the record ids, strings), ``name`` (the title, led by the first
  word of short text attributes the title lacks, such as a brand), ``text`` (the whole record) and their
  embeddings (``name_use_512``...), computed by :mod:`prodmatch.embed`;
- ``attributes.parquet``: every short text and numeric attribute, whatever its name, as
  ``characteristic_attributes_mapping`` (see :func:`attribute_kinds`); no categories (``{}``);
- ``train``, ``valid`` and ``test.parquet`` in prodmatch's pair format, the given splits unchanged:
  train with ``--valid-pairs DATA/valid.parquet`` to choose the threshold on valid and report on test.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from prodmatch.atomic import staged_output, write_json, write_parquet
from prodmatch.embed import embed_directory, load_encoder
from prodmatch.errors import DataError
from prodmatch.io import ATTRIBUTES_COLUMN, ATTRIBUTES_FILE, TEXT_FILE

__all__ = ["EM_SPLITS", "attribute_kinds", "import_em"]

log = logging.getLogger(__name__)

EM_SPLITS = ("train", "valid", "test")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
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
    with staged_output(out_dir, overwrite, IMPORT_FILE) as tmp:
        ids = records["id"].astype(str)
        parsed = [_parse(a) for a in records["attrs_json"]]  # once, for names and attributes
        kinds = attribute_kinds(records["title"], parsed)
        summary["attributes"] = kinds
        log.info("%s: attributes %s", src.name, ", ".join(f"{k} ({v})" for k, v in kinds.items()) or "none")
        lead = [k for k, v in kinds.items() if v == "short text"]
        names = [_name(t, obj, lead) for t, obj in zip(records["title"], parsed, strict=True)]
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
                    ATTRIBUTES_COLUMN: [_attributes(obj, kinds) for obj in parsed],
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


def attribute_kinds(titles: pd.Series, parsed: list) -> dict[str, str]:
    """What each attribute of a benchmark's records is, from its values alone (never from its name).

    - ``title``: equal to the record's title in most records (already the name);
    - ``long text``: a median of more than 6 words (descriptions): embedded with the whole record, not
      compared as a value;
    - ``number``: a single number in most filled records (prices, sizes): compared by ratio;
    - ``short text``: anything else (brand, manufacturer, model number, category): compared as a value,
      and its first word leads the name when the title lacks it.
    Attributes no record fills are left out.
    """
    values: dict[str, list[str]] = {}
    same_as_title: dict[str, int] = {}
    for title, obj in zip(titles, parsed, strict=True):
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            text = "" if value is None else str(value).strip()
            if text in ("", "nan"):
                continue
            values.setdefault(str(key), []).append(text)
            same_as_title[str(key)] = same_as_title.get(str(key), 0) + (text == str(title or "").strip())
    kinds = {}
    for key, texts in values.items():
        words = np.median([len(t.split()) for t in texts])
        numeric = np.mean([len(_NUMBER.findall(t)) == 1 and len(t.split()) <= 2 for t in texts])
        if same_as_title[key] > 0.5 * len(texts):
            kinds[key] = "title"
        elif words > 6:
            kinds[key] = "long text"
        elif numeric >= 0.8:
            kinds[key] = "number"
        else:
            kinds[key] = "short text"
    return kinds


def _name(title: str | None, obj, lead: list[str]) -> str:
    """The title, led by the first word of each short text attribute (brand, manufacturer, model number)
    that the title does not mention, as a marketplace shows brand and title together (one source of a
    benchmark often leaves the brand out of the title and puts it in its own field)."""
    title = (title or "").strip()
    if not isinstance(obj, dict):
        return title
    words = title.lower().split()
    front = []
    for key in lead:
        value = str(obj.get(key) or "").strip()
        first = value.split()[0] if value and value != "nan" else ""
        if first and first.lower() not in words:
            front.append(first)
            words.append(first.lower())
    return " ".join([*front, title]).strip()


def _attributes(obj, kinds: dict[str, str]) -> str | None:
    """The E-CUP mapping {"attr": ["value"]} of a record's short text and numeric attributes; None when none."""
    if not isinstance(obj, dict):
        return None
    kept = {
        str(k): [str(v).strip()]
        for k, v in obj.items()
        if kinds.get(str(k)) in ("short text", "number") and v is not None and str(v).strip() not in ("", "nan")
    }
    return json.dumps(kept, ensure_ascii=False) if kept else None
