"""``item-mlp``: the notebook's PairwiseItemOrientBinaryClassifier.

One Linear embedder per side of the pair (to hidden/2 each), concatenated, then ``nlayers`` x
[Linear, BatchNorm1d, PReLU, Dropout], then Linear(hidden, 1). Order-sensitive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ItemMLP", "ItemMLPParams"]


@dataclass(frozen=True)
class ItemMLPParams:
    """Hyperparameters; the defaults are the notebook's."""

    hidden: int = 1024  # width after concatenating the two item embeddings
    nlayers: int = 5  # number of [Linear, BatchNorm1d, PReLU, Dropout] blocks
    dropout: float = 0.3
    lr: float = 0.001  # Adam learning rate


class ItemMLP(nn.Module):
    def __init__(self, modalities: list[tuple[str, int]] | int, params: ItemMLPParams) -> None:
        super().__init__()
        # Item features: the modalities' vectors, then one presence flag each (or a plain width).
        item_dim = modalities if isinstance(modalities, int) else sum(d for _, d in modalities) + len(modalities)
        half = params.hidden // 2
        self.v1_embedder = nn.Linear(item_dim, half)
        self.v2_embedder = nn.Linear(item_dim, params.hidden - half)
        layers: list[nn.Module] = []
        for _ in range(params.nlayers):
            layers += [
                nn.Linear(params.hidden, params.hidden),
                nn.BatchNorm1d(params.hidden),
                nn.PReLU(),
                nn.Dropout(params.dropout),
            ]
        self.layers = nn.Sequential(*layers)
        self.scorer = nn.Linear(params.hidden, 1)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, F), (B, F) item features -> (B,) logits."""
        x = torch.cat((self.v1_embedder(a), self.v2_embedder(b)), dim=-1)  # (B, hidden)
        return self.scorer(self.layers(x)).squeeze(-1)
