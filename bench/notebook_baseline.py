"""The notebook's data path, kept verbatim where it matters, as the baseline the benchmarks compare against."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from prodmatch import Catalogue


class VariantPairDataset(Dataset):  # the notebook's class
    def __init__(
        self,
        variant_pairs: Iterable[tuple[int, int]],
        text_embeddings: dict[int, np.ndarray],
        img_embeddings: dict[int, np.ndarray],
        targets: np.ndarray,
    ) -> None:
        self.variant_pairs = variant_pairs
        self.text_embeddings = text_embeddings
        self.img_embeddings = img_embeddings
        self.targets = targets

    def __len__(self) -> int:
        return len(self.variant_pairs)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        variantid1, variantid2 = self.variant_pairs[idx]
        return {
            "text_emb1": torch.tensor(self.text_embeddings[variantid1], dtype=torch.float32),
            "img_emb1": torch.tensor(self.img_embeddings[variantid1], dtype=torch.float32),
            "text_emb2": torch.tensor(self.text_embeddings[variantid2], dtype=torch.float32),
            "img_emb2": torch.tensor(self.img_embeddings[variantid2], dtype=torch.float32),
            "target": torch.tensor(self.targets[idx], dtype=torch.float32),
        }


def notebook_loader(
    cat: Catalogue,
    ids1: np.ndarray,
    ids2: np.ndarray,
    target: np.ndarray,
    batch_size: int = 4096,
    shuffle: bool = False,
) -> DataLoader:
    """The notebook's per-item dicts (float64 arrays, as its pandas path made them) and a default-collate loader."""
    text = cat.modalities["name_bert_64"].matrix.astype(np.float64)
    img = cat.modalities["main_pic_embeddings_resnet_v1"].matrix.astype(np.float64)
    ids = cat.ids.to_numpy()
    text_dict = dict(zip(ids.tolist(), text, strict=True))
    img_dict = dict(zip(ids.tolist(), img, strict=True))
    pairs = np.stack([ids1, ids2], axis=1)
    return DataLoader(VariantPairDataset(pairs, text_dict, img_dict, target), batch_size=batch_size, shuffle=shuffle)


def features_of(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two items' inputs as the notebook's model concatenates them (text, picture)."""
    return (
        torch.cat((batch["text_emb1"], batch["img_emb1"]), dim=-1),
        torch.cat((batch["text_emb2"], batch["img_emb2"]), dim=-1),
    )
