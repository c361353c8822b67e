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

import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from prodmatch.atomic import write_json, write_parquet
from prodmatch.evaluation import pr_auc
from prodmatch.io import ATTRIBUTES_FILE, ORACLE_FILE, PICTURE_FILES, TEST_FILE, TEXT_FILE, TRAIN_FILE, TRUTH_FILE
from prodmatch.oracle import KINDS, ORACLE_ITEMS_FILE, Oracle, catalogue_kind_shares
from prodmatch.synth_config import (
    CATALOGUE_SCENARIOS,
    CATEGORIES_1,
    COLOURS,
    NEGATIVES,
    SCENARIOS,
    Embedded,
    SynthConfig,
)
from prodmatch.synth_items import attribute_json, category_json, extra_picture_lists, item_names, list_array, nested_one
from prodmatch.synth_pairs import draw_pairs, unique_ids

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
    cat1_of_2 = np.arange(n_cat2) % len(CATEGORIES_1)

    fam = family_of_product[product_of_item]  # (N,)
    cat4 = cat4_of_family[fam]
    cat2 = cat2_of_4[cat4]
    quality = np.exp(rng.normal(0.0, cfg.quality_sigma, size=n)).astype(np.float32)  # (N,) noise factor

    # Embeddings -------------------------------------------------------------------------------------
    def embed(dim: int, rank: int, s_item: float, keep_clean: bool = False) -> Embedded:
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

    ids = unique_ids(rng, n)

    # Pairs over disjoint product sets: train on 80 % of families, test on the rest ---------------------
    test_family = rng.random(n_families) < 0.2
    n_test = cfg.test_pairs if cfg.test_pairs is not None else cfg.pairs // 4
    item_is_test = test_family[fam]
    search_space = _unit_rows(np.concatenate([text, pic * has_pic[:, None]], axis=1))  # what "nearest" means
    train_pairs = draw_pairs(
        rng, np.flatnonzero(~item_is_test), cfg.pairs, product_of_item, fam, cat2, cfg, search_space
    )
    test_pairs = draw_pairs(rng, np.flatnonzero(item_is_test), n_test, product_of_item, fam, cat2, cfg, search_space)
    del search_space

    # Text -------------------------------------------------------------------------------------------
    names = item_names(rng, product_of_item, fam, cat4, n_products, n_families, n_cat4)
    cat_json = category_json(n_cat4, cat3_of_4, cat2_of_4, cat1_of_2)
    attrs_json, colour_in_attrs = attribute_json(rng, names["brand"], names["colour"], names["model"])

    # Write, item files in random row order (the latent model sorted them by product) ---------------
    rows = rng.permutation(n)
    text_columns = {"variantid": ids[rows]}
    if cfg.names:
        text_columns |= {"name": names["name"][rows], "description": names["description"][rows]}
    write_parquet(pa.table({**text_columns, f"name_bert_{cfg.text_dim}": list_array(text[rows])}), out / TEXT_FILE)
    pic_rows = rows[has_pic[rows]]
    extra, extra_sum, extra_count = extra_picture_lists(rng, pic_e, pic_rows, quality, cfg)
    pic_e.clean = None  # over a gigabyte at E-CUP size, and nothing needs it any more
    pic_columns = {"variantid": ids[pic_rows], "main_pic_embeddings_resnet_v1": nested_one(pic[pic_rows])}
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
) -> Embedded:
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
    return Embedded(
        x=x, clean=clean if keep_clean else None, observed=observed, basis=basis, offset=offset, category_centres=cat_c
    )


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
        p_same_colour=1.0 / len(COLOURS),  # product colours are uniform
        prior_labelled=kind_prior,
        prior_catalogue=catalogue_kind_shares(product, fam, cat2),
    )


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
