"""Product codes and numbers with units in an item's text, read the way a person compares two listings.

Derived from the values only, never from a column's name:

- **Codes**: words mixing letters and digits (``DMC-FZ35K``, ``KDL-40V3000``, ``MDR-EX51LP/B``) and long digit
  runs (part numbers, barcodes). Case, hyphens, slashes, dots and leading zeros are normalised away; the letter
  and digit runs are kept apart, so a code is compared whole, by its parts and by its family.
- **Quantities**: a number with a unit (``16 GB``, ``2.5"``, ``500 mAh``, ``pack of 6``), normalised to one
  unit per dimension (bytes, metres, grams, watts, ...).

Every item's codes and quantities become sparse 0/1 rows over fixed columns (hashed strings; dimension and
log-value buckets), so a pair's comparison is a few row-wise sparse products (:func:`compare_codes`,
:func:`compare_quantities`), vectorised over any number of pairs, and the same for a pair whatever other pairs
are scored with it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.utils import murmurhash3_32

from prodmatch.kernels import dims_compared
from prodmatch.sparse_text import rowwise_dot_pair

CODE_COLUMNS = 2**20  # hashed code strings; a collision between two items' codes is about 1 in a million

MIN_CODE = 4  # characters of a normalised code (shorter: "4k", "x5" say too little)
MIN_DIGITS_ONLY = 5  # digits of a code without letters (shorter: years, sizes, counts)
NEAR_MIN = 6  # characters of a code compared by edit distance (shorter codes differ by design: "a100", "a200")

_CHUNK = re.compile(r"[^\W_]+(?:[-/.][^\W_]+)*")  # a word, with its hyphens, slashes and dots inside
_RUNS = re.compile(r"[^\W\d_]+|\d+")  # letter runs and digit runs
_DIGIT = re.compile(r"\d")
_SEP = re.compile(r"[-/.]")
CONNECTORS = {"in", "to", "x", "of", "by", "and", "or", "в"}  # "2in1", "3x4": numbers joined by a word, no code

# unit -> (dimension, factor to the dimension's base unit); lower case, as written after a number
UNITS: dict[str, tuple[str, float]] = {
    **{u: ("bytes", f) for u, f in (("kb", 1e3), ("mb", 1e6), ("gb", 1e9), ("tb", 1e12), ("pb", 1e15))},
    **{u: ("bytes", f) for u, f in (("кб", 1e3), ("мб", 1e6), ("гб", 1e9), ("тб", 1e12))},
    **{u: ("metres", f) for u, f in (("mm", 1e-3), ("cm", 1e-2), ("мм", 1e-3), ("см", 1e-2), ("m", 1.0), ("м", 1.0))},
    # a lone ' after a screen or sensor size is an inch mark with its second stroke lost, far more often than feet
    **{u: ("metres", 0.0254) for u in ('"', "''", "'", "in", "inch", "inches", "дюйм", "дюймов", "дюйма")},
    **{u: ("metres", 0.3048) for u in ("ft", "feet")},
    **{u: ("grams", f) for u, f in (("mg", 1e-3), ("g", 1.0), ("kg", 1e3), ("г", 1.0), ("кг", 1e3), ("мг", 1e-3))},
    **{u: ("grams", f) for u, f in (("lb", 453.6), ("lbs", 453.6), ("oz", 28.35))},
    **{u: ("litres", f) for u, f in (("ml", 1e-3), ("l", 1.0), ("мл", 1e-3), ("л", 1.0))},
    **{u: ("watts", f) for u, f in (("w", 1.0), ("kw", 1e3), ("вт", 1.0), ("квт", 1e3))},
    **{u: ("volts", 1.0) for u in ("v", "в")},
    **{u: ("amp_hours", f) for u, f in (("mah", 1e-3), ("ah", 1.0), ("мач", 1e-3))},
    **{u: ("hertz", f) for u, f in (("hz", 1.0), ("khz", 1e3), ("mhz", 1e6), ("ghz", 1e9), ("гц", 1.0))},
    **{u: ("pixels", 1e6) for u in ("mp", "megapixel", "megapixels", "мп")},
    **{u: ("count", 1.0) for u in ("pack", "pk", "pcs", "pc", "count", "ct", "шт", "pieces")},
    **{u: ("rpm", 1.0) for u in ("rpm",)},
}
DIMENSIONS = sorted({d for d, _ in UNITS.values()} | {"zoom", "rate"})  # zoom: its own pattern; rate: bytes per second
_UNIT = "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True))
# A number and its unit, standing alone: not inside a code ("SDSDB-064G-B35" holds no weight), a rate's "/s" kept
_QUANTITY = re.compile(
    rf"(?<![\w.])(?<![^\W\d_]-)(\d+(?:[.,]\d+)?)\s*-?\s*({_UNIT})(/s(?:ec)?\b|ps\b)?(?![^\W_])(?!-[^\W_])",
    re.IGNORECASE,
)
_PACK_OF = re.compile(r"\b(?:pack|set|box|case) of (\d+)\b", re.IGNORECASE)
_ZOOM = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)?)\s*x\s*(?:optical\s+|digital\s+)?zoom\b", re.IGNORECASE)
_QUANTITY_WORD = re.compile(rf"^\d+(?:[.,]\d+)?(?:{_UNIT})$", re.IGNORECASE)  # "128gb": a quantity, not a code

TOLERANCE = 0.02  # two values of one dimension agree within 2 %: rounding ("2.5 in" against "6.35 cm")
_BUCKETS = 4096  # log-value buckets per dimension, of width log(1 + TOLERANCE)
_STEP = math.log1p(TOLERANCE)


def runs(code: str) -> list[str]:
    """The letter and digit runs of a normalised code, digit runs without leading zeros."""
    return [r.lstrip("0") or "0" if r.isdigit() else r for r in _RUNS.findall(code)]


def _quantity_chunk(pieces: list[str]) -> bool:
    """A chunk that is a quantity with letters after it ("15mb/s", "32gb/64gb"), not a code."""
    return bool(_QUANTITY_WORD.match(pieces[0])) and all(
        _QUANTITY_WORD.match(p) or _DIGIT.search(p) is None for p in pieces[1:]
    )


def is_code(chunk: str) -> bool:
    """A chunk (lower case, separators removed) that names a product: letters and digits mixed in at least
    ``MIN_CODE`` characters, or ``MIN_DIGITS_ONLY`` digits."""
    if _DIGIT.search(chunk) is None:
        return False
    if chunk.isdigit():
        return len(chunk.lstrip("0")) >= MIN_DIGITS_ONLY
    if len(chunk) < MIN_CODE or _QUANTITY_WORD.match(chunk):
        return False
    return any(not r.isdigit() and r not in CONNECTORS for r in _RUNS.findall(chunk))


@functools.lru_cache(maxsize=1 << 16)
def _code(chunk: str) -> tuple[str, tuple[str, ...]] | None:
    """(normalised code, parts) of a lower-case chunk holding a digit, or None when it is no code."""
    pieces = _SEP.split(chunk)
    if not is_code("".join(pieces)) or _quantity_chunk(pieces):
        return None
    parts = tuple(r for piece in pieces for r in runs(piece))
    return "".join(parts), parts


def codes_of(text: str | None) -> list[tuple[str, list[str]]]:
    """(normalised code, its parts) of every code in ``text``, in order, once each. A code's parts are its
    separated pieces (``DMC-FZ35K``: ``dmc``, ``fz35k``), each cut into letter and digit runs."""
    if not isinstance(text, str) or _DIGIT.search(text) is None:
        return []
    out, seen = [], set()
    for chunk in _CHUNK.findall(text.lower().replace("ё", "е")):
        if _DIGIT.search(chunk) is None or (found := _code(chunk)) is None:
            continue
        if found[0] not in seen:
            seen.add(found[0])
            out.append((found[0], list(found[1])))
    return out


def contained_forms(parts: list[str] | tuple[str, ...]) -> list[str]:
    """The forms of a code another code may hold or be held in: every run of consecutive parts with a digit
    and at least ``MIN_CODE`` characters (``dmcfz35k``: ``dmcfz35k``, ``dmcfz35``, ``fz35k``, ``fz35``)."""
    return list(_contained_forms(tuple(parts)))


@functools.lru_cache(maxsize=1 << 16)
def _contained_forms(parts: tuple[str, ...]) -> tuple[str, ...]:
    out = set()
    for i in range(len(parts)):
        for j in range(i + 1, len(parts) + 1):
            form = "".join(parts[i:j])
            if len(form) >= MIN_CODE and any(p.isdigit() for p in parts[i:j]):
                out.add(form)
    return tuple(sorted(out))


def family(parts: list[str]) -> str | None:
    """The code's family: its letter runs, each digit run as ``#``, a trailing letter run (a colour or region
    suffix) left out (``kdl40v3000``: ``kdl#v#``; ``dmcfz35k``: ``dmcfz#``); None for a code without letters (a
    part number has no family)."""
    if all(p.isdigit() for p in parts):
        return None
    if not parts[-1].isdigit() and len(parts) > 1:
        parts = parts[:-1]
    return "".join("#" if p.isdigit() else p for p in parts)


@functools.lru_cache(maxsize=1 << 16)
def deletions(code: str) -> tuple[str, ...]:
    """The code and its one-character deletions: two codes within edit distance 2 (a substitution, an
    insertion, a transposition) share one (SymSpell's deletion neighbourhood)."""
    return tuple(sorted({code, *(code[:i] + code[i + 1 :] for i in range(len(code)))}))


def quantity_spans(text: str | None) -> list[tuple[str, float, str]]:
    """(dimension, value in its base unit, the words as written) of every number with a unit in ``text``
    (``pack of 6``: count 6)."""
    if not isinstance(text, str):
        return []
    low = text.lower().replace("ё", "е")
    out = []
    for match in _QUANTITY.finditer(low):
        number, unit, per_second = match.groups()
        after = low[match.end() :]
        if unit == "in" and re.match(r"\s*-?\s*(?:\d|one|two)\b", after):
            continue  # "2-in-1", "3 in one"
        if UNITS[unit][0] == "count" and re.match(r"\s+of\b", after):
            continue  # "1 pack of 6": the count is the 6
        value = float(number.replace(",", "."))
        dimension, factor = UNITS[unit]
        if per_second:
            if dimension != "bytes":
                continue  # a speed in metres per second, a flow: not compared
            dimension = "rate"
        if value > 0:
            out.append((dimension, value * factor, text[match.start() : match.end()]))
    for pattern, dimension in ((_PACK_OF, "count"), (_ZOOM, "zoom")):
        for match in pattern.finditer(low):
            value = float(match.group(1).replace(",", "."))
            if value > 0:
                out.append((dimension, value, text[match.start() : match.end()]))
    return out


def quantities(text: str | None) -> list[tuple[str, float]]:
    """(dimension, value in its base unit) of every number with a unit in ``text``."""
    return [(d, v) for d, v, _ in quantity_spans(text)]


def _hashed(rows: list[list[str]]) -> sp.csr_matrix:
    """(items, CODE_COLUMNS) 0/1: the hashed strings of every item, canonical (sorted, unique)."""
    item = [i for i, strings in enumerate(rows) for _ in strings]
    cols = [murmurhash3_32(s, positive=True) % CODE_COLUMNS for strings in rows for s in strings]
    m = sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (np.asarray(item, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
        shape=(len(rows), CODE_COLUMNS),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


@dataclass
class ItemCodes:
    """Every item's codes as sparse 0/1 rows: the codes, the forms they hold, their families, their deletion
    neighbourhoods, and every form of every code-like word of the item's whole text (name and long text)."""

    codes: sp.csr_matrix
    forms: sp.csr_matrix
    families: sp.csr_matrix
    near: sp.csr_matrix
    text: sp.csr_matrix
    count: np.ndarray  # codes per item
    has_text: np.ndarray  # the item has a name or a text

    @classmethod
    def build(cls, names: np.ndarray, texts: np.ndarray | None = None) -> ItemCodes:
        codes, forms, families, near, whole, has = [], [], [], [], [], []
        for i, name in enumerate(names):
            found = codes_of(name)
            codes.append([c for c, _ in found])
            forms.append([f for _, parts in found for f in contained_forms(parts)])
            families.append([f for _, parts in found if (f := family(parts)) is not None])
            near.append([d for c, _ in found if len(c) >= NEAR_MIN for d in deletions(c)])
            long = texts[i] if texts is not None else None
            every = found + (codes_of(long) if isinstance(long, str) else [])
            whole.append([f for _, parts in every for f in contained_forms(parts)])
            has.append(isinstance(name, str) and bool(name.strip()))
        return cls(
            _hashed(codes),
            _hashed(forms),
            _hashed(families),
            _hashed(near),
            _hashed(whole),
            np.array([len(c) for c in codes], dtype=np.float32),
            np.array(has, dtype=bool),
        )


CODE_FEATURES = [
    "code_shared",
    "code_contained",
    "code_near",
    "code_family_conflict",
    "code_unseen_min",
    "code_unseen_max",
]


def compare_codes(items: ItemCodes, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Per pair of item rows (a[i], b[i]), in the order of ``CODE_FEATURES``:

    - the codes both hold;
    - containment: codes of one side held in a code of the other (a colour or region suffix, a missing
      prefix) beyond the shared ones;
    - near: codes of at least ``NEAR_MIN`` characters within edit distance 2 that are neither shared nor
      contained (a typo, or a model one digit away);
    - a family conflict: both sides hold a code of one family (``kdl#v#``) and not one code of it agrees, whole
      or contained: another model of the same line, strong evidence against;
    - unseen: how many of a side's codes appear nowhere in the other side's whole text, the fewer and the more
      of the two sides.

    NaN where either side has no code (the unseen counts: where neither has one, or a side has no text).
    """
    shared = rowwise_dot_pair(items.codes, items.codes, a, b)
    held = rowwise_dot_pair(items.codes, items.forms, a, b) + rowwise_dot_pair(items.forms, items.codes, a, b)
    contained = np.maximum(held - 2 * shared, 0)
    near_hits = rowwise_dot_pair(items.near, items.near, a, b)
    near = ((near_hits > 0) & (shared == 0) & (contained == 0)).astype(np.float32)
    families = rowwise_dot_pair(items.families, items.families, a, b)
    conflict = ((families > 0) & (shared == 0) & (contained == 0)).astype(np.float32)
    seen_in_b = rowwise_dot_pair(items.codes, items.text, a, b)
    seen_in_a = rowwise_dot_pair(items.text, items.codes, a, b)
    unseen_a, unseen_b = items.count[a] - seen_in_b, items.count[b] - seen_in_a
    both = (items.count[a] > 0) & (items.count[b] > 0)
    out = [shared, contained, near, conflict]
    for column in out:
        column[~both] = np.nan
    either = ((items.count[a] > 0) | (items.count[b] > 0)) & items.has_text[a] & items.has_text[b]
    low, high = np.minimum(unseen_a, unseen_b), np.maximum(unseen_a, unseen_b)
    low[~either], high[~either] = np.nan, np.nan
    return [*out, low.astype(np.float32), high.astype(np.float32)]


def _bucket(value: float) -> int:
    return int(np.clip(round(math.log(value) / _STEP), -_BUCKETS // 2 + 1, _BUCKETS // 2 - 2)) + _BUCKETS // 2


@dataclass
class ItemQuantities:
    """Every item's quantities as sparse 0/1 rows over (dimension, log-value bucket) columns: the value's own
    bucket (``exact``) and it with both neighbours (``wide``), so two values within ``TOLERANCE`` meet."""

    exact: sp.csr_matrix
    wide: sp.csr_matrix
    dims: sp.csr_matrix

    @classmethod
    def build(cls, texts: np.ndarray) -> ItemQuantities:
        index = {d: i for i, d in enumerate(DIMENSIONS)}
        item, exact, dim = [], [], []
        for i, text in enumerate(texts):
            for d, value in quantities(text):
                item.append(i)
                dim.append(index[d])
                exact.append(index[d] * _BUCKETS + _bucket(value))
        n, width = len(texts), len(DIMENSIONS) * _BUCKETS
        item_a, exact_a = np.asarray(item, dtype=np.int64), np.asarray(exact, dtype=np.int64)

        def matrix(rows, cols, shape):
            m = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=shape)
            m.sum_duplicates()
            m.data[:] = 1.0
            return m

        wide_rows = np.repeat(item_a, 3)
        wide_cols = (exact_a[:, None] + np.array([-1, 0, 1])).ravel()
        return cls(
            matrix(item_a, exact_a, (n, width)),
            matrix(wide_rows, wide_cols, (n, width)),
            matrix(item_a, np.asarray(dim, dtype=np.int64), (n, len(DIMENSIONS))),
        )


QUANTITY_FEATURES = ["quantity_dims_shared", "quantity_agree", "quantity_conflicts"]


def compare_quantities(items: ItemQuantities, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Per pair, in the order of ``QUANTITY_FEATURES``: the dimensions both sides give a value for, those where
    some value of one side is within ``TOLERANCE`` of one of the other's, and those where each side holds a value
    the other lacks (``16 GB`` against ``32 GB``, or ``32 GB, 15 MB/s`` against ``8 GB, 15 MB/s``: evidence
    against; ``18-55mm`` against ``18-55mm and 75-300mm`` is a bundle, not a conflict). NaN where the two share
    no dimension."""
    both = rowwise_dot_pair(items.dims, items.dims, a, b)
    agree, conflicts = dims_compared(items.exact, items.wide, a, b, _BUCKETS, len(DIMENSIONS))
    out, none = [both, agree, conflicts], both == 0
    for column in out:
        column[none] = np.nan
    return out


# --------------------------------------------------------------------------------------------- in words

DIMENSION_WORDS = {
    "bytes": "capacity", "metres": "size", "grams": "weight", "litres": "volume", "watts": "power",
    "volts": "voltage", "amp_hours": "battery", "hertz": "frequency", "pixels": "resolution", "zoom": "zoom",
    "count": "count", "rpm": "speed", "rate": "transfer rate",
}  # fmt: skip


def _spellings(text: str | None) -> dict[str, str]:
    """Normalised code -> the code as ``text`` writes it."""
    if not isinstance(text, str):
        return {}
    out = {}
    for match in _CHUNK.finditer(text):
        chunk = match.group().lower().replace("ё", "е")
        if _DIGIT.search(chunk) is not None and (found := _code(chunk)) is not None:
            out.setdefault(found[0], match.group())
    return out


def describe_codes(a: str | None, b: str | None, text_b: str | None = None, text_a: str | None = None) -> str:
    """The two names' codes compared, in words, the strongest finding first ("codes 'DMC-FZ35' vs 'DMC-FZ35K':
    one contains the other"); the same words, but for the order of the two, whichever side comes first.
    ``text_a`` / ``text_b``: the items' long texts, where a code may also appear."""
    ca, cb = dict(codes_of(a)), dict(codes_of(b))
    sa, sb = _spellings(a), _spellings(b)
    if not ca and not cb:
        return "no product code on either side"
    if not ca or not cb:
        return "a product code on one side only"
    shared = sorted(k for k in ca if k in cb)
    if shared:
        return f"shared code '{min(sa[shared[0]], sb[shared[0]])}'"
    pairs = sorted((min(x, y), max(x, y), x, y) for x in ca for y in cb)
    for _, _, x, y in pairs:
        if x in contained_forms(cb[y]) or y in contained_forms(ca[x]):
            return f"codes '{sa[x]}' vs '{sb[y]}': one contains the other"
    for _, _, x, y in pairs:
        if family(ca[x]) is not None and family(ca[x]) == family(cb[y]):
            near = len(x) >= NEAR_MIN and len(y) >= NEAR_MIN and set(deletions(x)) & set(deletions(y))
            how = "one character apart, or a model of the same line" if near else "same family, another model"
            return f"codes '{sa[x]}' vs '{sb[y]}': {how}"

    def unseen(codes, spelling, other, other_text):
        seen = {f for _, parts in codes_of(f"{other} {other_text or ''}") for f in contained_forms(parts)}
        return [spelling[k] for k in codes if k not in seen]

    missing = sorted(unseen(ca, sa, b, text_b) + unseen(cb, sb, a, text_a))
    if missing:
        return f"code '{missing[0]}' appears nowhere in the other listing"
    return f"codes '{sa[min(ca)]}' vs '{sb[min(cb)]}' differ"


def describe_quantities(a: str | None, b: str | None) -> str:
    """The two names' numbers with units compared per dimension, conflicts first ("capacity '16 GB' vs '32 GB'");
    the same words, but for the order of the two, whichever side comes first."""
    qa, qb = quantity_spans(a), quantity_spans(b)
    parts_conflict, parts_agree = [], []
    for dimension in sorted({d for d, _, _ in qa} & {d for d, _, _ in qb}):
        va = [(v, w) for d, v, w in qa if d == dimension]
        vb = [(v, w) for d, v, w in qb if d == dimension]
        near = [[abs(math.log(x / y)) <= 1.5 * _STEP for y, _ in vb] for x, _ in va]
        only_a = [wa for (_, wa), row in zip(va, near, strict=True) if not any(row)]
        only_b = [wb for j, (_, wb) in enumerate(vb) if not any(row[j] for row in near)]
        agree = [
            min(wa, wb)
            for (_, wa), row in zip(va, near, strict=True)
            for (_, wb), hit in zip(vb, row, strict=True)
            if hit
        ]
        word = DIMENSION_WORDS[dimension]
        if only_a and only_b:
            parts_conflict.append(f"{word} '{min(only_a)}' vs '{min(only_b)}'")
        elif agree:
            parts_agree.append(f"{word} '{min(agree)}' on both")
    parts = parts_conflict + parts_agree
    return "; ".join(parts) if parts else "no number with a unit to compare"
