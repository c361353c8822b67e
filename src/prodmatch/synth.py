"""Synthetic marketplace data in the Ozon E-CUP layout, drawn from a latent product model.

The model, per embedding modality (text 64-d, picture 128-d by default):

- a category tree (levels 1..4); each level-2 category has a centroid in an ``r``-dimensional latent space;
- products come in *families* (the same model in other colours or sizes): family = category centroid +
  N(0, s_fam^2), product = family + N(0, s_sib^2). Sibling products are the hard negatives;
- each product has several listings (sellers): listing = product + N(0, (s_item * h)^2), where ``h`` is a
  per-listing quality factor (lognormal), so some listings are much noisier than others;
- the latent is embedded into ``D`` dimensions by a fixed random projection, isotropic noise of the same
  scale is added in all ``D`` dimensions, then a shared offset and a random per-item norm.

So the match signal lives in a low-dimensional subspace that a model has to find, and positives (two
listings of one product) overlap with sibling negatives. Pairs are positives, sibling negatives, same
category negatives and random negatives; a few reversed duplicates (some with conflicting labels) and a
little label noise are added, as in the real data. Some items have no picture, a few have zero vectors.
Extra photos are the product's picture with fresh listing noise, so they add evidence. Names and
attributes carry the brand and model number (per family) and, often, the colour (per product).

The ground-truth product of every item is written to ``truth.parquet`` for scoring later stages, and the
Bayes-optimal score of every labelled pair to ``oracle.parquet``: the generator knows its own latent
model, so it can compute the posterior log-odds of "same product" from everything a model can observe
(see :class:`prodmatch.oracle.Oracle`, saved per item in ``oracle_items.npz``). Its PR-AUC is the ceiling the leaderboard compares models with.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from prodmatch.errors import ConfigError
from prodmatch.evaluation import pr_auc
from prodmatch.io import (
    ATTRIBUTES_FILE,
    ORACLE_FILE,
    PICTURE_FILES,
    TEST_FILE,
    TEXT_FILE,
    TRAIN_FILE,
    TRUTH_FILE,
    write_json,
    write_parquet,
)
from prodmatch.oracle import KINDS, ORACLE_ITEMS_FILE, Oracle, catalogue_kind_shares

__all__ = [
    "CATALOGUE_SCENARIOS",
    "NEGATIVES",
    "ORACLE_FILE",
    "SCENARIOS",
    "TRUTH_FILE",
    "SynthConfig",
    "generate",
    "split_sources",
]

log = logging.getLogger(__name__)

_CAT1 = ["Электроника", "Одежда", "Дом и сад", "Красота", "Детские товары", "Спорт", "Авто", "Книги"]
_COLOURS = ["черный", "белый", "красный", "синий", "зеленый", "серый", "розовый", "бежевый", "желтый", "голубой"]
_SYLLABLES = ["ка", "ро", "ми", "та", "ле", "но", "зу", "вик", "стар", "тех", "про", "мар", "сон", "лайт"]


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
SCENARIOS |= CATALOGUE_SCENARIOS


def generate(out_dir: str | Path, config: SynthConfig | None = None) -> dict:
    """Write a synthetic dataset in the E-CUP layout to ``out_dir``.

    Files: text_and_bert.parquet, images_embed.parquet, attributes.parquet, train.parquet, test.parquet,
    truth.parquet (variantid -> product_id, family_id, categories, noise) and synth.json (the config and counts).

    Returns:
        A summary dict of counts (also in synth.json).
    """
    asked = config or SynthConfig()
    # The noise knob scales the listing noise; everything below (and the oracle) sees the scaled values.
    cfg = replace(asked, s_item_text=asked.s_item_text * asked.noise, s_item_pic=asked.s_item_pic * asked.noise)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    n = cfg.items

    # Products, families and categories ------------------------------------------------------------
    listings = 1 + rng.poisson(cfg.listings_per_product - 1.0, size=n)  # per product; trimmed below
    product_of_item = np.repeat(np.arange(n), listings)[:n]  # (N,) sorted by product
    n_products = int(product_of_item[-1]) + 1
    fam_sizes = 1 + rng.poisson(1.2, size=n_products)
    family_of_product = np.repeat(np.arange(n_products), fam_sizes)[:n_products]
    n_families = int(family_of_product[-1]) + 1
    n_cat2, cat3_per_2, cat4_per_3 = 32, 3, 2
    n_cat4 = n_cat2 * cat3_per_2 * cat4_per_3
    popularity = 1.0 / np.arange(1, n_cat4 + 1) ** 0.7
    cat4_of_family = rng.permutation(n_cat4)[rng.choice(n_cat4, size=n_families, p=popularity / popularity.sum())]
    cat3_of_4 = np.arange(n_cat4) // cat4_per_3
    cat2_of_4 = cat3_of_4 // cat3_per_2
    cat1_of_2 = np.arange(n_cat2) % len(_CAT1)

    fam = family_of_product[product_of_item]  # (N,)
    cat4 = cat4_of_family[fam]
    cat2 = cat2_of_4[cat4]
    quality = np.exp(rng.normal(0.0, cfg.quality_sigma, size=n)).astype(np.float32)  # (N,) noise factor

    # Embeddings -------------------------------------------------------------------------------------
    def embed(dim: int, rank: int, s_item: float, keep_clean: bool = False) -> _Embedded:
        return _embed(
            rng, dim, rank, s_item, cfg, cat2, fam, product_of_item, quality, n_cat2, n_families, n_products, keep_clean
        )

    text_e = embed(cfg.text_dim, cfg.text_rank, cfg.s_item_text)
    pic_e = embed(cfg.pic_dim, cfg.pic_rank, cfg.s_item_pic, keep_clean=True)
    text, pic = text_e.x, pic_e.x
    zero_text = rng.random(n) < cfg.zero_vectors / 2
    zero_pic = rng.random(n) < cfg.zero_vectors / 2
    text[zero_text] = 0.0
    pic[zero_pic] = 0.0
    has_pic = rng.random(n) >= cfg.no_picture

    ids = _unique_ids(rng, n)

    # Pairs over disjoint product sets: train on 80 % of families, test on the rest ---------------------
    test_family = rng.random(n_families) < 0.2
    n_test = cfg.test_pairs if cfg.test_pairs is not None else cfg.pairs // 4
    item_is_test = test_family[fam]
    search_space = _unit_rows(np.concatenate([text, pic * has_pic[:, None]], axis=1))  # what "nearest" means
    train_pairs = _draw_pairs(
        rng, np.flatnonzero(~item_is_test), cfg.pairs, product_of_item, fam, cat2, cfg, search_space
    )
    test_pairs = _draw_pairs(rng, np.flatnonzero(item_is_test), n_test, product_of_item, fam, cat2, cfg, search_space)
    del search_space

    # Text -------------------------------------------------------------------------------------------
    names = _names(rng, product_of_item, fam, cat4, n_products, n_families, n_cat4)
    cat_json = _category_json(n_cat4, cat3_of_4, cat2_of_4, cat1_of_2)
    attrs_json, colour_in_attrs = _attribute_json(rng, names["brand"], names["colour"], names["model"])

    # Write, item files in random row order (the latent model sorted them by product) ---------------
    rows = rng.permutation(n)
    text_columns = {"variantid": ids[rows]}
    if cfg.names:
        text_columns |= {"name": names["name"][rows], "description": names["description"][rows]}
    write_parquet(pa.table({**text_columns, f"name_bert_{cfg.text_dim}": _list_array(text[rows])}), out / TEXT_FILE)
    pic_rows = rows[has_pic[rows]]
    extra, extra_sum, extra_count = _extra_pictures(rng, pic_e, pic_rows, quality, cfg)
    pic_e.clean = None  # over a gigabyte at E-CUP size, and nothing needs it any more
    pic_columns = {"variantid": ids[pic_rows], "main_pic_embeddings_resnet_v1": _nested_one(pic[pic_rows])}
    if cfg.extra_pictures > 0:
        pic_columns["pic_embeddings_resnet_v1"] = extra
    write_parquet(pa.table(pic_columns), out / PICTURE_FILES[1])
    attr_columns = {"variantid": ids[rows], "categories": cat_json[cat4[rows]]}
    if cfg.attributes:
        attr_columns["characteristic_attributes_mapping"] = attrs_json[rows]
    write_parquet(pa.table(attr_columns), out / ATTRIBUTES_FILE)
    for pairs, fname in ((train_pairs, TRAIN_FILE), (test_pairs, TEST_FILE)):
        write_parquet(
            pd.DataFrame({"variantid1": ids[pairs[0]], "variantid2": ids[pairs[1]], "target": pairs[2]}),
            out / fname,
        )
    write_parquet(
        pd.DataFrame(
            {
                "variantid": ids,
                "product_id": product_of_item.astype(np.int64),
                "family_id": fam.astype(np.int64),
                "category2": cat2.astype(np.int32),
                "category4": cat4.astype(np.int32),
                "noise_scale": quality,
                "has_picture": has_pic,
                "split": np.where(item_is_test, "test", "train"),
            }
        ),
        out / TRUTH_FILE,
    )
    # The Bayes-optimal score of any pair, from the latent model; saved per item for scoring any pair later.
    oracle = _oracle(
        cfg,
        ids,
        cat2,
        fam,
        product_of_item,
        quality,
        modalities=(
            (text_e, ~zero_text, np.zeros_like(text_e.observed), np.zeros(n)),
            (pic_e, has_pic & ~zero_pic, extra_sum, extra_count),
        ),
        names=names,
        colour_in_attrs=colour_in_attrs,
        kind_prior=_kind_shares(train_pairs[0], train_pairs[1], product_of_item, fam, cat2),
    )
    oracle.save(out / ORACLE_ITEMS_FILE)
    oracle_frames, oracle_pr = [], {}
    for pairs, split in ((train_pairs, "train"), (test_pairs, "test")):
        score = oracle.log_odds(pairs[0], pairs[1], prior="labelled")
        oracle_pr[split] = pr_auc(pairs[2], score)
        oracle_frames.append(
            pd.DataFrame(
                {"split": split, "variantid1": ids[pairs[0]], "variantid2": ids[pairs[1]], "target": pairs[2]}
            ).assign(score=score)
        )
    write_parquet(pd.concat(oracle_frames, ignore_index=True), out / ORACLE_FILE)

    graph = _component_sizes(train_pairs[0], train_pairs[1])
    summary = {
        "config": asdict(asked),
        "items": n,
        "products": n_products,
        "families": n_families,
        "categories_level2": n_cat2,
        "items_without_picture": int((~has_pic).sum()),
        "zero_text_vectors": int(zero_text.sum()),
        "zero_picture_vectors": int((zero_pic & has_pic).sum()),
        "train_pairs": len(train_pairs[2]),
        "train_positive_rate": float(train_pairs[2].mean()),
        "test_pairs": len(test_pairs[2]),
        "test_positive_rate": float(test_pairs[2].mean()),
        "train_items_in_pairs": len(np.union1d(train_pairs[0], train_pairs[1])),
        "train_largest_component_share": graph,
        "negative_kinds": {k: round(float(v), 4) for k, v in zip(KINDS, oracle.prior_labelled, strict=True)},
        "catalogue_pair_kinds": {k: float(v) for k, v in zip(KINDS, oracle.prior_catalogue, strict=True)},
        "reversed_duplicates": int(train_pairs[3]),
        "conflicting_duplicates": int(train_pairs[4]),
        "oracle_pr_auc": oracle_pr,
    }
    write_json(summary, out / "synth.json")
    return summary


# ------------------------------------------------------------------------------------------- helpers


def _embed(
    rng: np.random.Generator,
    dim: int,
    rank: int,
    s_item: float,
    cfg: SynthConfig,
    cat2: np.ndarray,
    fam: np.ndarray,
    product: np.ndarray,
    quality: np.ndarray,
    n_cat2: int,
    n_families: int,
    n_products: int,
    keep_clean: bool = False,
) -> _Embedded:
    """(N, dim) float32 raw embeddings of one modality, plus what the oracle and the extra pictures need."""
    cat_c = rng.normal(0.0, cfg.s_cat, size=(n_cat2, rank)).astype(np.float32)
    fam_c = rng.normal(0.0, cfg.s_fam, size=(n_families, rank)).astype(np.float32)
    prod_c = rng.normal(0.0, cfg.s_sib, size=(n_products, rank)).astype(np.float32)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T.astype(np.float32)  # (rank, dim) orthonormal rows
    latent = cat_c[cat2] + fam_c[fam] + prod_c[product]  # (N, rank)
    offset = (rng.normal(0.0, 1.0, size=dim) * (0.8 / np.sqrt(dim))).astype(np.float32)  # shared, as real encoders
    clean = latent @ basis + offset  # (N, dim)
    # In place from here on: at E-CUP size each (N, dim) array is over a gigabyte.
    noise = rng.standard_normal(size=clean.shape, dtype=np.float32)
    noise *= (s_item * quality)[:, None]
    scale = np.exp(rng.normal(0.0, 0.2, size=(len(clean), 1))).astype(np.float32)  # raw norms vary
    observed = latent + noise @ basis.T  # (N, rank): what the listing reveals about its product's latent
    x = noise
    x += clean
    x *= scale
    return _Embedded(
        x=x, clean=clean if keep_clean else None, observed=observed, basis=basis, offset=offset, category_centres=cat_c
    )


@dataclass
class _Embedded:
    x: np.ndarray  # (N, dim) the raw embedding written to the file
    clean: np.ndarray | None  # (N, dim) before listing noise and norm scaling (extra pictures come from it)
    observed: np.ndarray  # (N, rank) latent plus the listing noise projected onto the signal subspace
    basis: np.ndarray  # (rank, dim)
    offset: np.ndarray  # (dim,) the shared direction
    category_centres: np.ndarray  # (n_cat2, rank)


def _kind_shares(left: np.ndarray, right: np.ndarray, product, fam, cat2) -> np.ndarray:
    """(4,) the share of each of KINDS among the drawn pairs (by truth, before label noise)."""
    same_product = product[left] == product[right]
    sibling = ~same_product & (fam[left] == fam[right])
    same_cat = ~same_product & ~sibling & (cat2[left] == cat2[right])
    counts = np.array([same_product.sum(), sibling.sum(), same_cat.sum(), (~(same_product | sibling | same_cat)).sum()])
    return np.maximum(counts, 1) / max(counts.sum(), 1)  # every kind possible, however rare


def _component_sizes(left: np.ndarray, right: np.ndarray) -> float:
    """The share of pairs in the largest connected component of the pair graph."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = int(max(left.max(), right.max())) + 1
    graph = sp.coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    return round(float(np.bincount(label[left]).max() / len(left)), 4)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _oracle(
    cfg: SynthConfig,
    ids: np.ndarray,
    cat2: np.ndarray,
    fam: np.ndarray,
    product: np.ndarray,
    quality: np.ndarray,
    modalities: tuple,
    names: dict,
    colour_in_attrs: np.ndarray,
    kind_prior: np.ndarray,
) -> Oracle:
    """The per-item evidence of :class:`prodmatch.oracle.Oracle`: everything a model can observe, with the
    generator's own parameters. Per modality ``(embedded, main present, extra photos' latent sum, count)``."""
    d, var, ok = [], [], []
    for (emb, main_ok, extra_sum, extra_count), s_item in zip(
        modalities, (cfg.s_item_text, cfg.s_item_pic), strict=True
    ):
        k = main_ok.astype(np.float64) + extra_count  # observations per listing
        ybar = (emb.observed * main_ok[:, None] + extra_sum) / np.maximum(k, 1.0)[:, None]
        d.append((ybar - emb.category_centres[cat2]).astype(np.float32))
        var.append((s_item * quality.astype(np.float64)) ** 2 / np.maximum(k, 1.0))
        ok.append(k > 0)
    # What the files show: the brand and model number are in every name and every attribute mapping; the
    # colour in some of each.
    brand_seen = cfg.names or cfg.attributes
    family_first = pd.DataFrame({"fam": fam, "brand": names["brand"], "model": names["model"]}).drop_duplicates("fam")
    codes, p_equal = {}, {}
    for key in ("brand", "model"):
        codes[key] = pd.factorize(names[key])[0].astype(np.int32) if brand_seen else np.full(len(ids), -1, np.int32)
        p_equal[key] = float((family_first[key].value_counts(normalize=True) ** 2).sum())  # two families agree
    return Oracle(
        variantid=ids,
        cat2=cat2.astype(np.int32),
        d=tuple(d),
        var=tuple(var),
        ok=tuple(ok),
        f2=cfg.s_fam**2,
        s2=cfg.s_sib**2,
        brand=codes["brand"],
        model=codes["model"],
        p_equal_brand=p_equal["brand"],
        p_equal_model=p_equal["model"],
        colour=pd.factorize(names["colour"])[0].astype(np.int32),
        colour_seen=(names["colour_in_name"] & cfg.names) | (colour_in_attrs & cfg.attributes),
        p_same_colour=1.0 / len(_COLOURS),  # product colours are uniform
        prior_labelled=kind_prior,
        prior_catalogue=catalogue_kind_shares(product, fam, cat2),
    )


def _unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct int64 ids in a realistic range, in random order."""
    ids = 10_000_000 + np.cumsum(rng.integers(1, 800, size=n, dtype=np.int64))
    return rng.permutation(ids)


def _draw_pairs(
    rng: np.random.Generator,
    pool: np.ndarray,
    m: int,
    product: np.ndarray,
    fam: np.ndarray,
    cat2: np.ndarray,
    cfg: SynthConfig,
    space: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(left, right, target, n_reversed, n_conflicting) over the items in ``pool``."""
    n_pos = round(m * cfg.positive_rate)
    n_neg = m - n_pos
    pool = np.sort(pool)
    if cfg.pairs_per_item is None:
        pos_l, pos_r, neg_pool = _positives_once(rng, pool, n_pos, product, n_neg)
    else:
        pool, pos_l, pos_r = _positives_reused(rng, pool, m, n_pos, product, cfg.pairs_per_item)
        neg_pool = pool
    shares = {  # siblings, same category, nearest neighbours, random
        "mixed": (cfg.hard_negatives, cfg.category_negatives, 0.0),
        "random": (0.0, 0.0, 0.0),
        "category": (0.0, 1.0, 0.0),
        "siblings": (1.0, 0.0, 0.0),
        "neighbours": (0.0, 0.0, 1.0),
    }[cfg.negatives]
    n_hard, n_cat, n_nn = (round(n_neg * x) for x in shares)
    n_rand = max(n_neg - n_hard - n_cat - n_nn, 0)
    hard_l, hard_r = _negatives_within(rng, neg_pool, fam, product, n_hard)
    cat_l, cat_r = _negatives_within(rng, neg_pool, cat2, fam, n_cat)
    nn_l, nn_r = _nearest_negatives(rng, neg_pool, product, cat2, space, n_nn)
    rand = rng.permutation(neg_pool)[: 2 * n_rand] if 2 * n_rand <= len(neg_pool) else rng.choice(neg_pool, 2 * n_rand)
    rand_l, rand_r = rand[:n_rand], rand[n_rand:]
    ok = product[rand_l] != product[rand_r]
    rand_l, rand_r = rand_l[ok], rand_r[ok]

    left = np.concatenate([pos_l, hard_l, cat_l, nn_l, rand_l])
    right = np.concatenate([pos_r, hard_r, cat_r, nn_r, rand_r])
    target = np.concatenate([np.ones(len(pos_l)), np.zeros(len(left) - len(pos_l))]).astype(np.int8)
    flip = rng.random(len(left)) < cfg.label_noise
    target[flip] = 1 - target[flip]
    swap = rng.random(len(left)) < 0.5
    left, right = np.where(swap, right, left), np.where(swap, left, right)
    # Reversed duplicates, some with the opposite label.
    dup = np.flatnonzero(rng.random(len(left)) < cfg.reversed_duplicates)
    dup_target = target[dup].copy()
    conflict = rng.random(len(dup)) < cfg.conflicting
    dup_target[conflict] = 1 - dup_target[conflict]
    left, right = np.concatenate([left, right[dup]]), np.concatenate([right, left[dup]])
    target = np.concatenate([target, dup_target])
    order = rng.permutation(len(left))
    return left[order], right[order], target[order], len(dup), int(conflict.sum())


def _positives_once(
    rng: np.random.Generator, pool: np.ndarray, n_pos: int, product: np.ndarray, n_neg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positives reusing items as little as possible, and the items left for negatives."""
    # Consecutive listings of one product (items are sorted by product), so reuse stays low.
    same = product[pool[:-1]] == product[pool[1:]]
    cand = np.flatnonzero(same)
    cand = cand[rng.permutation(len(cand))]
    # Prefer non-overlapping pairs (even offsets within a product), then fill with the rest.
    starts = np.searchsorted(product[pool], product[pool[cand]])
    cand = np.concatenate([cand[(cand - starts) % 2 == 0], cand[(cand - starts) % 2 == 1]])
    if len(cand) == 0:
        raise ConfigError("no product has two listings; raise --items")
    pos_idx = cand[np.arange(n_pos) % len(cand)]
    pos_l, pos_r = pool[pos_idx], pool[pos_idx + 1]
    # Negatives from items no positive uses, drawn without replacement where the pool allows: real E-CUP
    # data has about one pair per item, so an item rarely appears in two pairs.
    free = np.setdiff1d(pool, np.concatenate([pos_l, pos_r]))
    return pos_l, pos_r, free if len(free) >= 2 * n_neg else pool


def _positives_reused(
    rng: np.random.Generator, pool: np.ndarray, m: int, n_pos: int, product: np.ndarray, per_item: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled items, positives) when items take part in ``per_item`` pairs on average: whole products
    are labelled (about 2m / per_item items), and positives are distinct pairs of their listings."""
    _, first, counts = np.unique(product[pool], return_index=True, return_counts=True)
    multi = np.flatnonzero(counts >= 2)  # products that can give a positive
    order = multi[rng.permutation(len(multi))]
    want_items = min(round(2 * m / per_item), len(pool))
    take = order[: int(np.searchsorted(np.cumsum(counts[order]), want_items)) + 1]
    rows = np.concatenate([pool[first[t] : first[t] + counts[t]] for t in take]) if len(take) else pool[:0]
    # Every distinct pair of listings within each labelled product, then a random n_pos of them.
    sizes = counts[take]
    pairs_per = sizes * (sizes - 1) // 2
    prod_of_pair = np.repeat(np.arange(len(take)), pairs_per)
    k = np.arange(len(prod_of_pair)) - np.repeat(np.cumsum(pairs_per) - pairs_per, pairs_per)
    # the k-th pair (i < j) of a product of size L
    size = sizes[prod_of_pair]
    i = (2 * size - 1 - np.sqrt((2 * size - 1) ** 2 - 8 * k)) // 2
    i = i.astype(np.int64)
    j = (k - i * (2 * size - i - 1) // 2 + i + 1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    a, b = rows[offsets[prod_of_pair] + i], rows[offsets[prod_of_pair] + j]
    pick = rng.permutation(len(a))[:n_pos]
    if len(pick) < n_pos:
        log.warning(
            "only %d distinct positive pairs among %d labelled items (asked for %d): raise --listings-per-product "
            "or lower --pairs-per-item",
            len(pick),
            len(rows),
            n_pos,
        )
    return np.sort(rows), a[pick], b[pick]


def _nearest_negatives(
    rng: np.random.Generator, pool: np.ndarray, product: np.ndarray, cat2: np.ndarray, space: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` pairs of a random pool item and its nearest pool item of another product, within its category
    (cosine in ``space``): the negatives a candidate search meets."""
    if m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    queries = rng.permutation(pool)[:m] if m <= len(pool) else rng.choice(pool, m)
    lefts, rights = [], []
    for c in np.unique(cat2[queries]):
        q = queries[cat2[queries] == c]
        cands = pool[cat2[pool] == c]
        if len(cands) < 2:
            continue
        for s in range(0, len(q), 2048):
            qs = q[s : s + 2048]
            sims = space[qs] @ space[cands].T  # (B, C)
            sims[product[qs][:, None] == product[cands][None, :]] = -np.inf  # another product only
            best = sims.argmax(axis=1)
            ok = np.isfinite(sims[np.arange(len(qs)), best])
            lefts.append(qs[ok])
            rights.append(cands[best[ok]])
    if not lefts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(lefts), np.concatenate(rights)


def _negatives_within(
    rng: np.random.Generator, pool: np.ndarray, group: np.ndarray, exclude: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` pairs of pool items in the same ``group`` but different ``exclude`` (e.g. family, not product)."""
    if m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = pool[np.argsort(group[pool], kind="stable")]
    g = group[order]
    starts = np.searchsorted(g, g, side="left")
    ends = np.searchsorted(g, g, side="right")
    lefts, rights = [], []
    need = m
    for _ in range(8):  # rejection rounds; each keeps the valid draws
        if need <= 0:
            break
        i = rng.permutation(len(order))[: need * 2] if need * 2 <= len(order) else rng.integers(0, len(order), need * 2)
        j = starts[i] + (rng.random(len(i)) * (ends[i] - starts[i])).astype(np.int64)
        ok = exclude[order[i]] != exclude[order[j]]
        lefts.append(order[i[ok]][:need])
        rights.append(order[j[ok]][:need])
        need -= len(lefts[-1])
    if need > 0:  # groups too small: fill with random pairs of different ``exclude``
        i, j = rng.choice(pool, size=need * 4), rng.choice(pool, size=need * 4)
        ok = exclude[i] != exclude[j]
        lefts.append(i[ok][:need])
        rights.append(j[ok][:need])
    return np.concatenate(lefts), np.concatenate(rights)


def _names(
    rng: np.random.Generator,
    product: np.ndarray,
    fam: np.ndarray,
    cat4: np.ndarray,
    n_products: int,
    n_families: int,
    n_cat4: int,
) -> dict[str, np.ndarray]:
    syl = np.array(_SYLLABLES, dtype=object)
    brands = syl[rng.integers(0, len(syl), 300)] + syl[rng.integers(0, len(syl), 300)]
    brands = np.char.capitalize(brands.astype(str)).astype(object)
    brand_of_family = brands[rng.integers(0, len(brands), n_families)]
    cat_word = np.array(
        [f"{_CAT1[(c // 6) % len(_CAT1)].split()[0].lower()}-{c:03d}" for c in range(n_cat4)], dtype=object
    )
    model_of_family = pd.Series(rng.integers(100, 9999, n_families)).astype(str).to_numpy(dtype=object)
    colours = np.array(_COLOURS, dtype=object)
    colour_of_product = colours[rng.integers(0, len(colours), n_products)]
    brand = brand_of_family[fam]
    model = "X" + model_of_family[fam]
    colour = colour_of_product[product]
    name = pd.Series(brand) + " " + pd.Series(cat_word[cat4]) + " " + pd.Series(model)
    with_colour = rng.random(len(product)) < 0.8  # sellers often leave the colour out of the name
    name = name.where(~with_colour, name + ", " + pd.Series(colour))
    lower = rng.random(len(product)) < 0.15
    name = name.where(~lower, name.str.lower())
    description = "Товар " + name + ". Цвет: " + pd.Series(colour) + "."
    return {
        "name": name.to_numpy(dtype=object),
        "description": description.to_numpy(dtype=object),
        "brand": brand,
        "colour": colour,
        "model": model,
        "colour_in_name": with_colour,
    }


def _category_json(n_cat4: int, cat3_of_4: np.ndarray, cat2_of_4: np.ndarray, cat1_of_2: np.ndarray) -> np.ndarray:
    out = []
    for c4 in range(n_cat4):
        c3, c2 = int(cat3_of_4[c4]), int(cat2_of_4[c4])
        c1 = _CAT1[int(cat1_of_2[c2])]
        out.append(
            json.dumps(
                {"1": c1, "2": f"{c1} / {c2:02d}", "3": f"{c1} / {c2:02d} / {c3:03d}", "4": f"{c1} / {c4:03d}"},
                ensure_ascii=False,
            )
        )
    return np.array(out, dtype=object)


def _attribute_json(
    rng: np.random.Generator, brand: np.ndarray, colour: np.ndarray, model: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) attribute JSON strings, and whether each names the colour (sellers often leave it out)."""
    b, c, m = pd.Series(brand), pd.Series(colour), pd.Series(model)
    full = '{"Бренд": ["' + b + '"], "Цвет товара": ["' + c + '"], "Модель": ["' + m + '"]}'
    short = '{"Бренд": ["' + b + '"], "Модель": ["' + m + '"]}'
    with_colour = rng.random(len(b)) < 0.85
    return full.where(with_colour, short).to_numpy(dtype=object), with_colour


def _list_array(matrix: np.ndarray) -> pa.ListArray:
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def _nested_one(matrix: np.ndarray) -> pa.ListArray:
    """Each row as a list holding one vector, the E-CUP main-picture format."""
    inner = _list_array(matrix)
    return pa.ListArray.from_arrays(pa.array(np.arange(len(matrix) + 1, dtype=np.int32)), inner)


def _extra_pictures(
    rng: np.random.Generator, pic: _Embedded, rows: np.ndarray, quality: np.ndarray, cfg: SynthConfig
) -> tuple[pa.ListArray, np.ndarray, np.ndarray]:
    """Extra photos of the listings in ``rows``: the product's clean picture plus fresh noise of the listing.

    Returns:
        The list column (one list of vectors per row of ``rows``), and per item of the whole catalogue the
        sum and count of the extra photos' latent observations (for the oracle).
    """
    counts = rng.poisson(cfg.extra_pictures, size=len(rows))
    owner = np.repeat(rows, counts)  # catalogue row of each extra photo
    assert pic.clean is not None
    noise = rng.standard_normal(size=(len(owner), pic.clean.shape[1]), dtype=np.float32)
    noise *= (cfg.s_item_pic * quality[owner])[:, None]
    scale = np.exp(rng.normal(0.0, 0.2, size=(len(owner), 1))).astype(np.float32)
    n = len(quality)
    obs_sum = np.zeros((n, pic.basis.shape[0]), dtype=np.float64)
    for start in range(0, len(owner), 262_144):  # in chunks, turning ``noise`` into the photos in place
        sl = slice(start, start + 262_144)
        clean = pic.clean[owner[sl]]
        np.add.at(obs_sum, owner[sl], (clean - pic.offset + noise[sl]) @ pic.basis.T)  # latent + projected noise
        clean += noise[sl]
        clean *= scale[sl]
        noise[sl] = clean
    inner = _list_array(noise)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner), obs_sum, np.bincount(owner, minlength=n)


def split_sources(
    data_dir: str | Path, left_dir: str | Path, right_dir: str | Path, *, one_per_product: bool = False, seed: int = 0
) -> dict:
    """Two sources drawn from one synthetic catalogue, to link (``match --link``): every item file and
    ``truth.parquet`` of ``data_dir`` split by item into ``left_dir`` and ``right_dir`` (labelled pairs are
    not copied), and the whole oracle beside each.

    Each listing goes to a source at random; with ``one_per_product``, each product's first listing (in
    random order) goes left, its second right, and the others are left out, so each source lists every
    product at most once (deduplicated catalogues, the case for ``--one-to-one``).

    Returns:
        Counts: items per source, and the products listed in both.
    """
    import shutil

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    truth = pd.read_parquet(data_dir / TRUTH_FILE, columns=["variantid", "product_id"])
    rng = np.random.default_rng(seed)
    if one_per_product:
        order = truth.iloc[rng.permutation(len(truth))]
        place = order.groupby("product_id").cumcount().to_numpy()  # 0, 1, 2, ... within each product
        side = pd.Series(np.where(place < 2, place, -1), index=order["variantid"]).reindex(truth["variantid"])
        side = side.to_numpy()
    else:
        side = rng.integers(0, 2, len(truth))
    ids = truth["variantid"].to_numpy()
    for out, s in ((Path(left_dir), 0), (Path(right_dir), 1)):
        out.mkdir(parents=True, exist_ok=True)
        keep = pa.array(ids[side == s])
        for name in (TEXT_FILE, *PICTURE_FILES, ATTRIBUTES_FILE, TRUTH_FILE):
            if (data_dir / name).exists():
                table = pq.read_table(data_dir / name)
                write_parquet(table.filter(pc.is_in(table["variantid"], keep)), out / name)
        shutil.copyfile(data_dir / ORACLE_ITEMS_FILE, out / ORACLE_ITEMS_FILE)
    left_products = set(truth["product_id"][side == 0])
    return {
        "left_items": int((side == 0).sum()),
        "right_items": int((side == 1).sum()),
        "left_out": int((side < 0).sum()),
        "products_in_both": len(left_products & set(truth["product_id"][side == 1])),
    }
