"""Item attributes: parsing the JSON attribute mappings, and the keys that name a brand, a colour or a price in the
languages catalogues use. Pair features, blocking, records and explanations read attributes through this module."""

from __future__ import annotations

import json
import logging
import re

import numpy as np

from prodmatch.catalogue import Catalogue
from prodmatch.errors import DataError

log = logging.getLogger(__name__)


BRAND_KEYS = ("Бренд", "brand", "Brand", "manufacturer")


PRICE_KEYS = ("price", "Price", "Цена")


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


COLOUR_KEYS = ("Цвет товара", "Цвет", "color", "colour", "Color")


def parse_attributes(cat: Catalogue, rows: np.ndarray) -> list[dict | None]:
    """The attribute mappings of catalogue ``rows`` (None where an item has none); DataError naming the item
    when one is not a JSON object."""
    parsed: list[dict | None] = []
    for row, text in zip(rows, cat.attributes[rows], strict=True):  # json.loads is the only per-item work
        if not text:
            parsed.append(None)
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            raise DataError(
                f"attributes.parquet: characteristic_attributes_mapping of item {cat.ids[row]} "
                f"is not a JSON object ({e}): {str(text)[:80]!r}; fix it or drop the column"
            ) from e
        parsed.append(obj)
    return parsed
