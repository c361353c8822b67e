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

import numpy as np
import torch
from torch import nn

__all__ = ["NumpySiamese", "SiameseNet", "SiameseParams"]


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


class NumpySiamese:
    """One or more :class:`SiameseNet` of the same shape (a ``gbdt`` model's fold networks) in numpy.

    A request of one pair pays torch's per-operator overhead (about 0.4 ms per network here) for a few
    microseconds of arithmetic; numpy, with the networks stacked on a leading axis, costs a fraction. The
    towers run in float64 (rounded to float32), so an item's vector does not depend on what it is computed
    with; the head runs in float32, or float64 where a caller needs a score that does not depend on its
    batch (BLAS sums a float32 product in a different order for 1 row than for 256). Tested against torch.
    """

    def __init__(self, nets: list[SiameseNet]) -> None:
        def stack(get) -> np.ndarray:
            return np.stack([get(n).detach().double().numpy() for n in nets])

        first = nets[0]
        self.dims = first.dims
        self.projections = [
            [
                (
                    stack(lambda n, i=i, j=j: n.projections[i][j].weight).transpose(0, 2, 1).copy(),
                    stack(lambda n, i=i, j=j: n.projections[i][j].bias),
                )
                for j in (0, 2)
            ]
            for i in range(len(self.dims))
        ]
        for module in first.projections[0]:
            if not isinstance(module, nn.Linear | nn.GELU) or (
                isinstance(module, nn.GELU) and module.approximate != "none"
            ):
                raise TypeError(f"NumpySiamese cannot run {module!r}")
        norm = first.fuse[1]
        self.fuse = (stack(lambda n: n.fuse[0].weight).transpose(0, 2, 1).copy(), stack(lambda n: n.fuse[0].bias))
        self.norm = (stack(lambda n: n.fuse[1].weight), stack(lambda n: n.fuse[1].bias), norm.eps)
        layers: list[tuple] = []
        for j, module in enumerate([*first.head_layers, first.scorer]):
            if isinstance(module, nn.Linear):
                get = (lambda n, j=j: n.head_layers[j]) if j < len(first.head_layers) else (lambda n: n.scorer)
                layers.append(
                    (stack(lambda n, g=get: g(n).weight).transpose(0, 2, 1).copy(), stack(lambda n, g=get: g(n).bias))
                )
            elif isinstance(module, nn.GELU) and module.approximate == "none":
                layers.append(("gelu",))
            elif not isinstance(module, nn.Dropout):  # dropout is the identity when scoring
                raise TypeError(f"NumpySiamese cannot run {module!r}")
        self.layers = {np.dtype(np.float64): layers}
        self.layers[np.dtype(np.float32)] = [
            tuple(x.astype(np.float32) for x in layer) if len(layer) == 2 else layer for layer in layers
        ]

    def __len__(self) -> int:
        return len(self.fuse[0])

    def towers(self, features: np.ndarray) -> np.ndarray:
        """(K, N, item_dim) float32 item vectors of (N, F) item features, one per network; computed in float64."""
        x = features.astype(np.float64)
        blocks = np.split(x, np.cumsum(self.dims), axis=1)
        flags = blocks[-1]
        parts = []
        for i, ((w1, b1), (w2, b2)) in enumerate(self.projections):
            h = _gelu(np.matmul(blocks[i], w1) + b1[:, None, :])
            parts.append((np.matmul(h, w2) + b2[:, None, :]) * flags[None, :, i : i + 1])
        k = len(self)
        z = np.concatenate([*parts, np.broadcast_to(flags, (k, *flags.shape))], axis=2)
        z = np.matmul(z, self.fuse[0]) + self.fuse[1][:, None, :]
        gamma, beta, eps = self.norm
        mean = z.mean(axis=2, keepdims=True)
        var = ((z - mean) ** 2).mean(axis=2, keepdims=True)
        z = (z - mean) / np.sqrt(var + eps) * gamma[:, None, :] + beta[:, None, :]
        return z.astype(np.float32)

    def heads(
        self,
        u: np.ndarray,
        v: np.ndarray,
        cosines: np.ndarray,
        flags_a: np.ndarray,
        flags_b: np.ndarray,
        dtype: type = np.float32,
    ) -> np.ndarray:
        """(K, B) logits of every network from item vectors (K, B, d), raw modality cosines and presence flags (B, k)."""
        dtype = np.dtype(dtype)
        u, v = u.astype(dtype, copy=False), v.astype(dtype, copy=False)
        fa, fb = flags_a.astype(dtype), flags_b.astype(dtype)
        shared = np.concatenate([cosines.astype(dtype), fa * fb, fa + fb], axis=1)  # (B, 3k), the same for all
        layers = self.layers[dtype]
        (w, b), d = layers[0], u.shape[2]
        # the first layer on [u * v, |u - v|, shared] without building that (K, B, 2d + 3k) array
        x = np.matmul(u * v, w[:, :d])
        x += np.matmul(np.abs(u - v), w[:, d : 2 * d])
        x += np.matmul(shared, w[:, 2 * d :])
        x += b[:, None, :]
        for layer in layers[1:]:
            if len(layer) == 2:
                x = np.matmul(x, layer[0])
                x += layer[1][:, None, :]
            else:
                x = _gelu(x)
        return x[:, :, 0]


def _gelu(x: np.ndarray) -> np.ndarray:
    """torch's exact GELU, x * Phi(x), on a numpy array (torch's kernel: several times faster than scipy's
    erf with numpy around it)."""
    return torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
