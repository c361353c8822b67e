"""``concat-mlp``: the notebook's PairwiseBinaryClassifier.

Both items' features side by side, then ``nlayers`` x [Linear, BatchNorm1d, PReLU], then Linear(hidden, 1).
Order-sensitive: f(a, b) need not equal f(b, a).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ConcatMLP", "ConcatMLPParams"]


@dataclass(frozen=True)
class ConcatMLPParams:
    """Hyperparameters; the defaults are the notebook's."""

    hidden: int = 512  # width of every hidden layer
    nlayers: int = 5  # number of [Linear, BatchNorm1d, PReLU] blocks
    lr: float = 0.01  # Adam learning rate


class ConcatMLP(nn.Module):
    def __init__(self, modalities: list[tuple[str, int]] | int, params: ConcatMLPParams) -> None:
        super().__init__()
        # Item features: the modalities' vectors, then one presence flag each (or a plain width).
        item_dim = modalities if isinstance(modalities, int) else sum(d for _, d in modalities) + len(modalities)
        layers: list[nn.Module] = []
        for i in range(params.nlayers):
            layers += [
                nn.Linear(2 * item_dim if i == 0 else params.hidden, params.hidden),
                nn.BatchNorm1d(params.hidden),
                nn.PReLU(),
            ]
        self.layers = nn.Sequential(*layers)
        self.scorer = nn.Linear(params.hidden, 1)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, F), (B, F) item features -> (B,) logits."""
        x = torch.cat((a, b), dim=-1)  # (B, 2F)
        return self.scorer(self.layers(x)).squeeze(-1)
