"""``bi-encoder``: a transformer fine-tuned contrastively on the labelled pairs; a pair's score is the cosine
of its items' vectors.

Each item's record (:mod:`prodmatch.text.records`) goes through the encoder (all-MiniLM-L6-v2, bundled, or
``encoder_path``) to one unit vector, computed once per item (``match`` searches candidates with the same
vectors). Training follows R-SupCon / SimCSE practice with a multiple-negatives ranking loss:

- every matching pair (a, b) is an example; in a batch, b must be a's nearest among every other example's
  items (in-batch negatives) and a labelled non-match of a or b (a hard negative), and the same from b's
  side (the loss is symmetric, so the model is too);
- matches are grouped transitively (connected components of the matching pairs): two examples of one
  group never share a batch, so no item is pushed away from its own product;
- the best epoch on the validation pairs' average precision is kept; early stopping, a checkpoint after
  every epoch and ``resume`` as the networks have; bf16 autocast where the CPU has AMX (``precision``).

The raw score (``predict_logits``) is the cosine; calibration maps it to a probability as for every model.
"""

from __future__ import annotations

import logging
import math
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from prodmatch.catalogue import Catalogue
from prodmatch.errors import ConfigError
from prodmatch.models.text_model import FineTunedTextModel, TextParams
from prodmatch.pairs import PairSet
from prodmatch.text.encoder import load_sentence_encoder

__all__ = ["BiEncoderModel", "BiEncoderParams"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BiEncoderParams(TextParams):
    """Hyperparameters (``batch_size``: examples per batch, each bringing 2 or 3 records)."""

    scale: float = 20.0  # the ranking loss's inverse temperature on cosines
    hard_negatives: bool = True  # one labelled non-match of each example's items joins its batch


class BiEncoderModel(FineTunedTextModel):
    name = "bi-encoder"
    params_class = BiEncoderParams
    symmetric = True

    # ------------------------------------------------------------------------------------------ fit

    def _load_encoder(self, folder: Path, fresh: bool) -> None:
        budget = None if fresh else self.records_.max_tokens
        self.encoder_ = load_sentence_encoder(folder, self.device_, budget)
        self.tokenizer_ = self.encoder_.tokenizer

    def _save_encoder(self, folder: Path) -> None:
        self.encoder_.save(str(folder))

    def _prepare(self, train: PairSet, rng: np.random.Generator) -> int:
        self.encoder_.max_seq_length = self.records_.max_tokens
        self._examples, self._negatives, self._groups = _examples(train, rng)
        if not len(self._examples):
            raise ConfigError("the bi-encoder learns from matching pairs, and the training pairs hold none")
        return len(self._examples)

    def _batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        return _group_batches(self._groups, self.params.batch_size, rng)

    def _batch_loss(
        self, batch: np.ndarray, texts: dict[int, str], rng: np.random.Generator
    ) -> tuple[torch.Tensor, int]:
        a, b = self._examples[batch, 0], self._examples[batch, 1]
        swap = rng.random(len(batch)) < 0.5  # either item may be the anchor
        a, b = np.where(swap, b, a), np.where(swap, a, b)
        hard = self._negatives[batch] if self.params.hard_negatives else np.array([], dtype=np.int64)
        hard = hard[hard >= 0]
        loss = self._loss([texts[r] for r in a], [texts[r] for r in b], [texts[r] for r in hard])
        return loss, 2 * len(batch) + len(hard)

    def _loss(self, anchors: list[str], positives: list[str], hard: list[str]) -> torch.Tensor:
        """Symmetric multiple-negatives ranking loss: each anchor's positive among every positive and hard
        negative of the batch, and each positive's anchor among every anchor and hard negative."""
        n = len(anchors)
        with self._autocast():
            emb = self._embed(anchors + positives + hard).float()
        a, p, h = emb[:n], emb[n : 2 * n], emb[2 * n :]
        labels = torch.arange(n, device=emb.device)
        forward = self.params.scale * a @ torch.cat([p, h]).T
        backward = self.params.scale * p @ torch.cat([a, h]).T
        ce = torch.nn.functional.cross_entropy
        return 0.5 * (ce(forward, labels) + ce(backward, labels))

    def _embed(self, texts: list[str]) -> torch.Tensor:
        features = self.encoder_.preprocess(texts)
        features = {k: v.to(self.device_) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return self.encoder_(features)["sentence_embedding"]

    # --------------------------------------------------------------------------------------- scoring

    def _reset_cache(self) -> None:
        self._vectors = {}

    def item_vectors(self, catalogue: Catalogue, rows: np.ndarray, texts: dict | None = None) -> np.ndarray:
        """(len(rows), d) float32 unit vectors of catalogue ``rows``, encoded once per item and kept."""
        self._check_fitted()
        ref, cache = self._vectors.get(id(catalogue), (None, None))
        if ref is None or ref() is not catalogue:  # a new catalogue (or a dead one's id reused)
            cache = {}
            self._vectors[id(catalogue)] = (weakref.ref(catalogue), cache)
        rows = np.asarray(rows, dtype=np.int64)
        todo = np.array([r for r in np.unique(rows).tolist() if r not in cache], dtype=np.int64)
        if len(todo):
            records = [texts[r] for r in todo.tolist()] if texts is not None else self.records(catalogue, todo)
            cache.update(zip(todo.tolist(), self.run_graph(records), strict=True))
        return np.stack([cache[r] for r in rows.tolist()]) if len(rows) else np.zeros((0, 1), np.float32)

    def _pair_scores(self, catalogue: Catalogue, left: np.ndarray, right: np.ndarray, texts: dict | None) -> np.ndarray:
        """Cosines of the pairs' item vectors: symmetric."""
        u = self.item_vectors(catalogue, left, texts)
        v = self.item_vectors(catalogue, right, texts)
        return np.einsum("ij,ij->i", u, v).astype(np.float32)

    def score_texts(self, first: list[str], second: list[str]) -> np.ndarray:
        vectors = self.run_graph(first + second)
        return np.einsum("ij,ij->i", vectors[: len(first)], vectors[len(first) :]).astype(np.float32)

    def tokenize(self, first: list[str], second: list[str] | None = None) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.encoder_.preprocess(first).items() if isinstance(v, torch.Tensor)}

    def graph(self) -> torch.nn.Module:
        """Token ids of records -> (B, d) unit vectors."""
        return _UnitVectors(self.encoder_)


class _UnitVectors(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            features["token_type_ids"] = token_type_ids
        return torch.nn.functional.normalize(self.encoder(features)["sentence_embedding"].float(), dim=-1)


def _examples(train: PairSet, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matching pairs (E, 2) once each, one labelled non-match of either item per example (-1 where neither
    has one), and each example's group: its connected component of matches."""
    y = train.target > 0.5
    pos = np.unique(np.sort(np.stack([train.left[y], train.right[y]], axis=1), axis=1), axis=0)
    neg_l, neg_r = train.left[~y], train.right[~y]
    partners: dict[int, list[int]] = {}
    for a, b in zip(neg_l.tolist(), neg_r.tolist(), strict=True):
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    negatives = np.full(len(pos), -1, dtype=np.int64)
    for i, (a, b) in enumerate(pos.tolist()):
        options = partners.get(a, []) + partners.get(b, [])
        if options:
            negatives[i] = options[rng.integers(len(options))]
    if not len(pos):
        return pos, negatives, np.zeros(0, dtype=np.int64)
    items, inverse = np.unique(pos, return_inverse=True)
    inverse = inverse.reshape(pos.shape)
    graph = coo_matrix((np.ones(len(pos)), (inverse[:, 0], inverse[:, 1])), shape=(len(items), len(items)))
    _, labels = connected_components(graph, directed=False)
    return pos, negatives, labels[inverse[:, 0]]


def _group_batches(groups: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of example indices, shuffled, where no two examples of one group meet: each batch takes at
    most one example from any group (a group larger than the batch count spreads over several)."""
    order = rng.permutation(len(groups))
    n_batches = max(1, math.ceil(len(groups) / size))
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    members: list[set] = [set() for _ in range(n_batches)]
    cursor = 0
    for i in order.tolist():
        g = groups[i]
        for step in range(n_batches):
            b = (cursor + step) % n_batches
            if len(batches[b]) < size and g not in members[b]:
                batches[b].append(i)
                members[b].add(g)
                break
        else:  # every batch is full or holds the group: start a new one
            batches.append([i])
            members.append({g})
            n_batches += 1
        cursor = (cursor + 1) % n_batches
    return [np.asarray(b, dtype=np.int64) for b in batches if b]
