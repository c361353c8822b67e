"""Learned text models' plumbing: the bundled encoder, item records as text, and cost control.

- :mod:`prodmatch.text.encoder`: find and check a local Hugging Face folder (the bundled
  all-MiniLM-L6-v2 by default), pick the device and the precision;
- :mod:`prodmatch.text.records`: each item as one text (Ditto's ``COL attr VAL value``), summarised to a
  token budget by keeping its highest-TF-IDF words, and the budget itself from the data.

Everything here needs the ``text`` extra (``pip install 'prodmatch[text]'``).
"""

from prodmatch.text.encoder import BUNDLED_PACKAGE, bundled_encoder_path, check_encoder_path, resolve_device
from prodmatch.text.records import RecordTexts, item_records

__all__ = [
    "BUNDLED_PACKAGE",
    "RecordTexts",
    "bundled_encoder_path",
    "check_encoder_path",
    "item_records",
    "resolve_device",
]
