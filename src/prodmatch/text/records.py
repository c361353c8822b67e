"""Items as text for the text models, and how long that text may be.

An item's record is, in Ditto's serialisation (Li et al., VLDB 2021), ``COL name VAL <name>`` followed by
``COL <attribute> VAL <values>`` for every attribute of its ``characteristic_attributes_mapping``, then
its long text (``text`` or ``description``) as ``COL text VAL ...``. A name or an attribute value that
the long text already contains is not repeated (a record imported by ``prodmatch import-em`` holds them
all), and a long text with nothing before it stands alone. No column name is special beyond these.

A record longer than the token budget is summarised as Ditto does: its words are ranked by TF-IDF (the
IDF from the training items' records) and the best are kept, in their original order, until the budget is
spent; the ``COL``/``VAL`` markers always stay. The budget is a percentile of the records' token counts,
capped, so short titles do not pay for the padding of long descriptions.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from prodmatch.attributes import parse_attributes
from prodmatch.catalogue import Catalogue
from prodmatch.errors import DataError

__all__ = ["RecordTexts", "item_records"]

log = logging.getLogger(__name__)

MARKERS = frozenset({"COL", "VAL"})


def item_records(catalogue: Catalogue, rows: np.ndarray) -> list[str]:
    """The serialised record of each of catalogue ``rows``.

    Raises:
        DataError: when the catalogue has no text at all (no name, attributes, text or description).
    """
    names, texts, attrs = catalogue.names, catalogue.texts, catalogue.attributes
    if names is None and texts is None and attrs is None:
        raise DataError(
            "the text models read each item's text, and this data has none: text_and_bert.parquet has no "
            "name, text or description column and there is no attributes.parquet mapping; add a name column "
            "or train a model without text (gbdt, siamese)"
        )
    rows = np.asarray(rows)
    parsed = parse_attributes(catalogue, rows) if attrs is not None else [None] * len(rows)
    out: list[str] = []
    empty = 0
    for i, row in enumerate(rows):
        long = " ".join(str(texts[row]).split()) if texts is not None and texts[row] else ""
        inside = long.lower()  # what the long text already says is not repeated (an imported record holds all)
        parts = []
        name = " ".join(str(names[row]).split()) if names is not None and names[row] else ""
        if name and name.lower() not in inside:
            parts.append(f"COL name VAL {name}")
        for key, values in (parsed[i] or {}).items():
            value = ", ".join(str(v) for v in (values if isinstance(values, list) else [values]))
            if value and value.lower() not in inside:
                parts.append(f"COL {key} VAL {value}")
        if long:
            parts.append(long if not parts else f"COL text VAL {long}")
        record = " ".join(" ".join(parts).split())
        empty += not record
        out.append(record)
    if empty:
        log.warning(
            "text models: %d of %d items have no text at all; they are read as an empty record", empty, len(rows)
        )
    return out


@dataclass
class RecordTexts:
    """The token budget and the IDF that summarises records to it.

    Attributes:
        max_tokens: the sequence budget in the encoder's tokens (special tokens included).
        idf: word -> inverse document frequency over the fitting records (lower-cased words).
    """

    max_tokens: int
    idf: dict[str, float]
    _pieces: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def fit(
        cls, records: list[str], tokenizer, *, percentile: float = 95.0, cap: int = 128, floor: int = 16
    ) -> RecordTexts:
        """The budget is the ``percentile`` of the records' token counts, within [floor, cap]."""
        docs = Counter()
        for r in records:
            docs.update({w.lower() for w in r.split()})
        n = max(len(records), 1)
        idf = {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in docs.items()}
        sample = (
            records if len(records) <= 5000 else list(np.random.default_rng(0).choice(records, 5000, replace=False))
        )
        counts = [len(ids) for ids in tokenizer(sample, add_special_tokens=True)["input_ids"]] or [floor]
        budget = int(min(cap, max(floor, math.ceil(np.percentile(counts, percentile)))))
        log.info(
            "text models: sequence budget %d tokens (%.0fth percentile of %d records' %d..%d tokens, cap %d)",
            budget,
            percentile,
            len(counts),
            min(counts),
            max(counts),
            cap,
        )
        return cls(max_tokens=budget, idf=idf)

    def summarise(self, records: list[str], tokenizer) -> list[str]:
        """Each record cut to the budget by keeping its highest-TF-IDF words in their order (Ditto's summariser)."""
        words = {w for r in records for w in r.split() if w not in self._pieces}
        if words:
            new = sorted(words)
            for w, ids in zip(new, tokenizer(new, add_special_tokens=False)["input_ids"], strict=True):
                self._pieces[w] = max(len(ids), 1)
        budget = self.max_tokens - 2  # [CLS] and [SEP]
        default = max(self.idf.values(), default=1.0)  # a word no fitting record had: as rare as the rarest
        out = []
        for r in records:
            tokens = r.split()
            if sum(self._pieces[w] for w in tokens) <= budget:
                out.append(r)
                continue
            tf = Counter(w.lower() for w in tokens)
            seen: set[str] = set()
            score = []  # a distinct word's TF-IDF for its first occurrence; a repeat only after every first one
            for w in tokens:
                low = w.lower()
                weight = tf[low] * self.idf.get(low, default)
                score.append(math.inf if w in MARKERS else (weight if low not in seen else -1.0 / weight))
                seen.add(low)
            keep, spent = np.zeros(len(tokens), dtype=bool), 0
            for j in sorted(range(len(tokens)), key=lambda j: (-score[j], j)):
                cost = self._pieces[tokens[j]]
                if spent + cost <= budget:
                    keep[j] = True
                    spent += cost
            out.append(" ".join(t for t, k in zip(tokens, keep, strict=True) if k))
        return out

    def to_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "idf": self.idf}

    @classmethod
    def from_dict(cls, d: dict) -> RecordTexts:
        return cls(max_tokens=int(d["max_tokens"]), idf={str(k): float(v) for k, v in d["idf"].items()})
