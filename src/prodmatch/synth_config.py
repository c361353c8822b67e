"""What the synthetic generator makes (:class:`SynthConfig`), its scenario presets, and the word lists its names
and attributes are drawn from."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from prodmatch.errors import ConfigError

log = logging.getLogger(__name__)


CATEGORIES_1 = ["Электроника", "Одежда", "Дом и сад", "Красота", "Детские товары", "Спорт", "Авто", "Книги"]


COLOURS = ["черный", "белый", "красный", "синий", "зеленый", "серый", "розовый", "бежевый", "желтый", "голубой"]


SYLLABLES = ["ка", "ро", "ми", "та", "ле", "но", "зу", "вик", "стар", "тех", "про", "мар", "сон", "лайт"]


@dataclass(frozen=True)
class SynthConfig:
    """Size and difficulty of a synthetic dataset.

    Attributes:
        items: number of items (listings).
        pairs: number of labelled training pairs (before reversed duplicates are added).
        test_pairs: labelled test pairs, over products disjoint from the training ones; None: pairs // 4.
        seed: everything is drawn from this seed.
        text_dim, pic_dim: embedding dimensions.
        text_rank, pic_rank: dimension of the latent subspace that carries the product signal.
        s_cat, s_fam, s_sib: spread of categories, families within a category, siblings within a family.
        s_item_text, s_item_pic: listing noise of each modality (times a lognormal quality factor).
        quality_sigma: log-std of the per-listing quality factor.
        no_picture: share of items absent from the picture file.
        zero_vectors: share of items whose text or picture embedding is all zeros.
        hard_negatives, category_negatives: shares of negatives drawn from sibling products and from the
            same level-2 category; the rest are random.
        positive_rate: target share of positive pairs.
        reversed_duplicates: share of pairs repeated in reverse order; ``conflicting`` of those flip the label.
        label_noise: share of labels flipped at random.
        extra_pictures: mean number of extra picture embeddings per item (``pic_embeddings_resnet_v1``);
            0 writes no such column.
        listings_per_product: mean listings (sellers) per product, at least 1.
        pairs_per_item: how many labelled pairs an item takes part in, on average; None reuses items as
            little as possible (about one pair per item, as in E-CUP). Above 1 the pair graph becomes
            one giant connected component.
        negatives: how negatives are drawn: ``mixed`` (``hard_negatives`` siblings, ``category_negatives``
            same category, the rest random), ``random``, ``category`` (same level-2 category),
            ``siblings`` (same family) or ``neighbours`` (each item's nearest other product in embedding
            space, within its category: the hardest, and what candidate search produces).
        names: write ``name`` and ``description`` (brand, category word, model number, often the colour).
        attributes: write ``characteristic_attributes_mapping`` (brand, model, often the colour).
        noise: multiplies the listing noise of both modalities (1: the default difficulty).
    """

    items: int = 150_000
    pairs: int = 50_000
    test_pairs: int | None = None
    seed: int = 0
    text_dim: int = 64
    pic_dim: int = 128
    text_rank: int = 12
    pic_rank: int = 16
    s_cat: float = 1.0
    s_fam: float = 0.6
    s_sib: float = 0.35
    s_item_text: float = 0.15
    s_item_pic: float = 0.18
    quality_sigma: float = 0.45
    no_picture: float = 0.03
    zero_vectors: float = 0.003
    hard_negatives: float = 0.55
    category_negatives: float = 0.3
    positive_rate: float = 0.48
    reversed_duplicates: float = 0.015
    conflicting: float = 0.2
    label_noise: float = 0.01
    extra_pictures: float = 1.0
    listings_per_product: float = 2.3
    pairs_per_item: float | None = None
    negatives: str = "mixed"
    names: bool = True
    attributes: bool = True
    noise: float = 1.0

    def __post_init__(self) -> None:
        if self.items < 100:
            raise ConfigError(f"--items must be at least 100, got {self.items}")
        if self.pairs < 10:
            raise ConfigError(f"--pairs must be at least 10, got {self.pairs}")
        reuse = self.pairs_per_item or 1.0
        if (self.pairs + (self.test_pairs or self.pairs // 4)) * 2 / reuse > 4 * self.items:
            raise ConfigError(
                f"{self.pairs} pairs over {self.items} items at {reuse:g} pairs per item need more items; "
                "use at most items/2 pairs per labelled item, or raise --pairs-per-item"
            )
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"--negatives must be one of {list(NEGATIVES)}, got {self.negatives!r}")
        if self.pairs_per_item is not None and not 0.25 <= self.pairs_per_item <= 20:
            raise ConfigError(f"--pairs-per-item must be in [0.25, 20], got {self.pairs_per_item}")
        if self.listings_per_product < 1:
            raise ConfigError(f"--listings-per-product must be at least 1, got {self.listings_per_product}")
        if not 0.0 < self.positive_rate < 1.0:
            raise ConfigError(f"--positive-rate must be in (0, 1), got {self.positive_rate}")
        if not self.noise > 0:
            raise ConfigError(f"--noise must be > 0, got {self.noise}")
        for name in ("no_picture", "zero_vectors"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")


NEGATIVES = ("mixed", "random", "category", "siblings", "neighbours")


# The scenario matrix: data of the same layout with a different structure, for checking that defaults hold
# (bench/bench_scenarios.py). Each is a set of SynthConfig overrides; `prodmatch synth --scenario NAME`.
SCENARIOS: dict[str, dict] = {
    "default": {},
    "giant-component": {"pairs_per_item": 3.0, "names": False},
    "small": {"items": 12_000, "pairs": 5_000},
    "random-negatives": {"negatives": "random"},
    "sibling-negatives": {"negatives": "siblings"},
    "neighbour-negatives": {"negatives": "neighbours"},
    "rare-positives": {"positive_rate": 0.1},
    "embeddings-only": {"names": False, "attributes": False, "extra_pictures": 0.0},
    "noisy": {"noise": 1.8},
    "missing-vectors": {"no_picture": 0.3, "zero_vectors": 0.05},
    "many-listings": {"listings_per_product": 4.0, "pairs_per_item": 2.0, "positive_rate": 0.6},
    # Labelled non-matches easier than a catalogue's nearest neighbours (random or within a category, while the
    # neighbours are siblings), items reused (one giant component): a model trained on mined neighbours learns
    # to push down the high-similarity region where the labelled matches lie too.
    "easy-negatives": {"hard_negatives": 0.0, "category_negatives": 0.5, "pairs_per_item": 3.0},
    # The same, with noisy listings and embeddings alone: the oracle's test PR-AUC is about 0.97.
    "noisy-listings": {
        "hard_negatives": 0.0,
        "category_negatives": 0.5,
        "pairs_per_item": 3.0,
        "noise": 4.0,
        "names": False,
        "attributes": False,
    },
    # Sparse labels: about one labelled pair per item, as in E-CUP, and five listings per product, most of them
    # in no labelled pair.
    "sparse-labels": {"items": 60_000, "pairs": 6_000, "listings_per_product": 5.0},
}


# Catalogue scenarios (bench/bench_catalogue.py): `match` over a whole catalogue whose labelled pairs are drawn
# unlike its candidates, with 1 to 5 listings per product and identifiable to ambiguous listings.
CATALOGUE_SCENARIOS: dict[str, dict] = {
    "catalogue-category": {"negatives": "category", "listings_per_product": 2.2},
    "catalogue-siblings": {"negatives": "siblings", "listings_per_product": 2.2},
    "catalogue-neighbours": {"negatives": "neighbours", "listings_per_product": 2.2},
    "catalogue-single": {"negatives": "category", "listings_per_product": 1.3},
    "catalogue-five": {"negatives": "category", "listings_per_product": 5.0},
    "catalogue-identifiable": {"negatives": "category", "listings_per_product": 2.2, "noise": 0.5},
    "catalogue-ambiguous": {"negatives": "category", "listings_per_product": 2.2, "noise": 2.0, "names": False},
}


@dataclass
class Embedded:
    x: np.ndarray  # (N, dim) the raw embedding written to the file
    clean: np.ndarray | None  # (N, dim) before listing noise and norm scaling (extra pictures come from it)
    observed: np.ndarray  # (N, rank) latent plus the listing noise projected onto the signal subspace
    basis: np.ndarray  # (rank, dim)
    offset: np.ndarray  # (dim,) the shared direction
    category_centres: np.ndarray  # (n_cat2, rank)
