"""What a pair has to compare: the evidence behind a score, and the rule that no evidence is never a match.

A model's score means something only where the two items share something it reads: an embedding both
items have, a picture on both, a name word or an attribute value both hold. Where they share nothing (one
item has only a name vector, the other only a picture; or nothing at all), a model still returns a number,
from whatever leaf or region its training put "nothing comparable" in, and that number can be high: a
booster trained on pairs that always had something to compare has never seen such a pair. So such a pair
gets the prior of the pairs it is scored among, or less (:func:`gate`), and it is never labelled a match.

Evidence is a bit mask per pair (``uint32``): one bit per embedding modality the model reads, in its order,
then the side data (:data:`SIDE_BITS`). :func:`describe` turns masks into the words the outputs carry
(``"name_bert_64+name"``, ``"none"``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["NONE", "SIDE_BITS", "bit_names", "count_none", "describe", "gate", "mask_words", "modality_evidence"]

# Side data after the modalities: a picture on both (extra photos, main included), a name word both hold,
# an attribute value both hold (brand, colour, any key=value), a text both have (the text models' records).
SIDE_BITS = ("pictures", "name", "attributes", "text")
NONE = "none"


def bit_names(modalities: list[str]) -> list[str]:
    """The name of each bit of a mask: the modalities in order, then :data:`SIDE_BITS`."""
    return [*modalities, *SIDE_BITS]


def side_bit(modalities: list[str], what: str) -> np.uint32:
    """The bit of side data ``what`` (one of :data:`SIDE_BITS`) for a model reading ``modalities``."""
    return np.uint32(1 << (len(modalities) + SIDE_BITS.index(what)))


def modality_evidence(present: list[np.ndarray], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(M,) uint32: bit j set where both items of a pair have modality j (``present[j]``, (N,) bool)."""
    mask = np.zeros(len(left), dtype=np.uint32)
    for j, p in enumerate(present):
        mask |= (p[left] & p[right]).astype(np.uint32) << np.uint32(j)
    return mask


def describe(mask: np.ndarray, names: list[str]) -> pd.Categorical:
    """The evidence of each pair in words: the bits' names joined by ``+``, or ``"none"``. A categorical, so a
    catalogue's millions of pairs hold a few distinct strings."""
    mask = np.asarray(mask, dtype=np.uint32)
    codes, uniques = pd.factorize(mask, sort=True)
    words = [mask_words(int(u), names) for u in np.asarray(uniques, dtype=np.int64)]
    # the same word may come from two masks only if names repeat; keep the categories unique anyway
    categories = list(dict.fromkeys(words))
    remap = np.array([categories.index(w) for w in words], dtype=np.int64)
    return pd.Categorical.from_codes(remap[codes] if len(codes) else codes, categories=categories or [NONE])


def mask_words(mask: int, names: list[str]) -> str:
    """One mask in words (see :func:`describe`)."""
    return "+".join(n for j, n in enumerate(names) if mask >> j & 1) or NONE


def gate(prob: np.ndarray, mask: np.ndarray, prior: float | None, threshold: float | None) -> np.ndarray:
    """Probabilities with the rule applied: a pair without evidence (mask 0) scores at most ``prior`` (the share
    of matches among the pairs it is scored among), and below ``threshold``, so it is never labelled a match.
    A model's lower score is kept: evidence against a match (an attribute both fill differently) still counts.
    """
    return capped(prob, mask, cap(prior, threshold))


def capped(prob: np.ndarray, mask: np.ndarray, limit: float) -> np.ndarray:
    """Probabilities where a pair without evidence (mask 0) scores at most ``limit`` (see :func:`gate`)."""
    none = np.asarray(mask) == 0
    if not none.any():
        return prob
    out = np.array(prob, dtype=np.float64, copy=True)
    out[none] = np.minimum(out[none], limit)
    return out


def cap(prior: float | None, threshold: float | None) -> float:
    """The most a pair without evidence may score: ``prior`` (ignored when unknown), and just below ``threshold``."""
    value = 1.0 if prior is None or not np.isfinite(prior) else float(prior)
    if threshold is not None:
        value = min(value, float(np.nextafter(threshold, -np.inf)))
    return max(value, 0.0)


def count_none(mask: np.ndarray) -> int:
    """How many pairs have no evidence."""
    return int((np.asarray(mask) == 0).sum())
