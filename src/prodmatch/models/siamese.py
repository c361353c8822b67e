"""``siamese``: one shared item tower, and a pair head on symmetric interactions.

The tower projects each modality on its own (Linear, GELU, Linear; zero when the item lacks it), fuses
the projections and the presence flags into one item vector with a Linear and a LayerNorm. Both items go
through the same weights. The head reads only functions that do not change when the items swap:

- ``u * v`` and ``|u - v|`` of the two item vectors;
- the cosine of each raw (normalised) modality;
- per modality, whether both items have it and whether either has it.

So f(a, b) == f(b, a) exactly, and item vectors can be computed once per item: scoring a pair then costs
only the head (:meth:`SiameseNet.tower` and :meth:`SiameseNet.head`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SiameseNet", "SiameseParams"]


@dataclass(frozen=True)
class SiameseParams:
    """Hyperparameters."""

    projection: int = 256  # width of each modality's projection
    item_dim: int = 256  # the fused item vector
    hidden: int = 256  # width of the pair head
    head_layers: int = 2
    dropout: float = 0.1
    lr: float = 0.002  # Adam learning rate
    modality_dropout: float = 0.1  # training only: hide an item's modality (never all), so it matches without it


class SiameseNet(nn.Module):
    def __init__(self, modalities: list[tuple[str, int]], params: SiameseParams) -> None:
        super().__init__()
        self.dims = [d for _, d in modalities]
        k = len(self.dims)
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(d, params.projection), nn.GELU(), nn.Linear(params.projection, params.projection))
            for d in self.dims
        )
        self.fuse = nn.Sequential(nn.Linear(k * params.projection + k, params.item_dim), nn.LayerNorm(params.item_dim))
        layers: list[nn.Module] = []
        width = 2 * params.item_dim + 3 * k
        for _ in range(params.head_layers):
            layers += [nn.Linear(width, params.hidden), nn.GELU(), nn.Dropout(params.dropout)]
            width = params.hidden
        self.head_layers = nn.Sequential(*layers)
        self.scorer = nn.Linear(width, 1)

    def _split(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, F) item features -> per-modality (B, D) blocks, and (B, k) presence flags."""
        blocks = list(torch.split(x, [*self.dims, len(self.dims)], dim=-1))
        return blocks[:-1], blocks[-1]

    def tower(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) item features -> (B, item_dim) item vectors."""
        blocks, flags = self._split(x)
        parts = [
            proj(b) * flags[:, i : i + 1] for i, (proj, b) in enumerate(zip(self.projections, blocks, strict=True))
        ]
        return self.fuse(torch.cat([*parts, flags], dim=-1))

    def head(self, u: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits from item vectors ``u``, ``v`` and the items' raw features ``a``, ``b``. Symmetric."""
        blocks_a, flags_a = self._split(a)
        blocks_b, flags_b = self._split(b)
        cosines = torch.stack([(x * y).sum(-1) for x, y in zip(blocks_a, blocks_b, strict=True)], dim=-1)  # (B, k)
        x = torch.cat([u * v, (u - v).abs(), cosines, flags_a * flags_b, flags_a + flags_b], dim=-1)
        return self.scorer(self.head_layers(x)).squeeze(-1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, F), (B, F) item features -> (B,) logits."""
        return self.head(self.tower(a), self.tower(b), a, b)
