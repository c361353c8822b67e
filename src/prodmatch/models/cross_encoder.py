"""``cross-encoder``: a transformer that reads both items' records at once and says whether they match.

Ditto's design (Li et al., VLDB 2021) on the bundled all-MiniLM-L6-v2 or ``encoder_path``: the pair is one
sequence, ``[CLS] record(a) [SEP] record(b) [SEP]``, each record serialised and summarised to the item budget
by :mod:`prodmatch.text.records`, and a linear layer on the pooled output gives the logit. Every word of one
title attends to every word of the other, which is what a bi-encoder's single vector per item cannot do;
the price is that nothing is computed once per item: every pair is a full forward pass (so ``match`` uses it
only on the pairs a cheaper model is unsure of, see ``--rescore``).

- Training: binary cross-entropy on the labelled pairs, each pair once (a reversed duplicate is the same
  pair; conflicting labels become a soft target, their mean), in a random order each epoch; optionally
  Ditto's span deletion (``augment``: the share of examples that lose a random span of up to 4 words on
  one side).
- Use: symmetric exactly. A pair is scored in both orders and the logits averaged, with the two orders
  canonical (by catalogue row), so f(a, b) and f(b, a) are the same computation.
- Inference sorts the sequences by length and pads each batch to its own longest (dynamic padding).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prodmatch.catalogue import Catalogue
from prodmatch.errors import ConfigError
from prodmatch.models.text_model import FineTunedTextModel, TextParams
from prodmatch.pairs import PairSet
from prodmatch.text.encoder import load_pair_classifier
from prodmatch.text.records import MARKERS

__all__ = ["CrossEncoderModel", "CrossEncoderParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossEncoderParams(TextParams):
    """Hyperparameters (``max_tokens`` is per item: a pair's sequence is at most twice that)."""

    batch_size: int = 16  # pairs per batch
    lr: float = 3e-5
    max_tokens: int = 48
    augment: float = 0.0  # share of training examples that lose a random span of 1-4 words on one side (Ditto)


class CrossEncoderModel(FineTunedTextModel):
    name = "cross-encoder"
    params_class = CrossEncoderParams
    symmetric = True
    joint = True

    # ------------------------------------------------------------------------------------------ fit

    def _load_encoder(self, folder: Path, fresh: bool) -> None:
        self.encoder_, self.tokenizer_ = load_pair_classifier(folder, self.device_, fresh=fresh)

    def _save_encoder(self, folder: Path) -> None:
        self.encoder_.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer_.save_pretrained(str(folder))

    def _prepare(self, train: PairSet, rng: np.random.Generator) -> int:
        if not 0.0 <= self.params.augment <= 1.0:
            raise ConfigError(f"augment must be a share in [0, 1], got {self.params.augment}")
        lo, hi = np.minimum(train.left, train.right), np.maximum(train.left, train.right)
        keep = lo != hi
        if not keep.all():
            log.warning("cross-encoder: %d training pairs pair an item with itself; left out", int((~keep).sum()))
        pairs, inverse = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0, return_inverse=True)
        target = np.bincount(inverse.ravel(), weights=train.target[keep], minlength=len(pairs))
        target /= np.bincount(inverse.ravel(), minlength=len(pairs))
        conflicting = int(((target > 0) & (target < 1)).sum())
        if conflicting:
            log.warning(
                "cross-encoder: %d training pairs are labelled both ways; their target is the mean", conflicting
            )
        if len(np.unique(target > 0.5)) < 2:
            raise ConfigError("the cross-encoder learns from matches and non-matches; the training pairs lack one")
        self._pairs, self._target = pairs, target.astype(np.float32)
        return len(pairs)

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(len(self._pairs))
        return [order[s : s + self.params.batch_size] for s in range(0, len(order), self.params.batch_size)]

    def _batch_loss(
        self, batch: np.ndarray, texts: dict[int, str], rng: np.random.Generator
    ) -> tuple[torch.Tensor, int]:
        a, b = self._pairs[batch, 0], self._pairs[batch, 1]
        swap = rng.random(len(batch)) < 0.5  # either order; in use both are averaged
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        first, second = [texts[r] for r in a.tolist()], [texts[r] for r in b.tolist()]
        if self.params.augment > 0:
            for i in np.flatnonzero(rng.random(len(batch)) < self.params.augment).tolist():
                if rng.random() < 0.5:
                    first[i] = _drop_span(first[i], rng)
                else:
                    second[i] = _drop_span(second[i], rng)
        with self._autocast():
            logits = self._forward(first, second).float()
        target = torch.from_numpy(self._target[batch]).to(logits.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target), len(batch)

    def _forward(self, first: list[str], second: list[str]) -> torch.Tensor:
        inputs = self.tokenize(first, second)
        return self.graph()(**{k: v.to(self.device_) for k, v in inputs.items()})

    def tokenize(self, first: list[str], second: list[str] | None = None) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer_(
                first,
                second,
                truncation="longest_first",
                max_length=2 * self.records_.max_tokens
                - 1,  # each record within its item budget: [CLS] a [SEP] b [SEP]
                padding=True,
                return_tensors="pt",
            )
        )

    def graph(self) -> torch.nn.Module:
        """Token ids of (record a, record b) sequences -> (B,) logits."""
        return _PairLogit(self.encoder_)

    # --------------------------------------------------------------------------------------- scoring

    def _pair_scores(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, texts: dict | None) -> np.ndarray:
        """The mean logit over both orders of each distinct pair (canonical by row, so exactly symmetric)."""
        left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
        if not len(left):
            return np.zeros(0, dtype=np.float32)
        lo, hi = np.minimum(left, right), np.maximum(left, right)
        pairs, inverse = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True)
        rows = np.unique(pairs)
        if texts is None:
            texts = dict(zip(rows.tolist(), self.records(catalogue, rows), strict=True))
        t0 = time.perf_counter()
        scores = self.score_texts([texts[r] for r in pairs[:, 0].tolist()], [texts[r] for r in pairs[:, 1].tolist()])
        log.debug("cross-encoder: %d pairs in %.1fs", len(pairs), time.perf_counter() - t0)
        return scores[inverse.ravel()]

    def score_texts(self, first: list[str], second: list[str]) -> np.ndarray:
        """The mean of both orders' logits."""
        both = self.run_graph(first + second, second + first)
        n = len(first)
        return (0.5 * (both[:n] + both[n:])).astype(np.float32)


class _PairLogit(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits[:, 0]


def _drop_span(record: str, rng: np.random.Generator) -> str:
    """``record`` without a random span of 1 to 4 consecutive words (never a COL/VAL marker)."""
    words = record.split()
    spots = [i for i, w in enumerate(words) if w not in MARKERS]
    if len(spots) < 2:
        return record
    start = spots[rng.integers(len(spots))]
    length = int(rng.integers(1, 5))
    drop = {i for i in range(start, min(start + length, len(words))) if words[i] not in MARKERS}
    return " ".join(w for i, w in enumerate(words) if i not in drop)
