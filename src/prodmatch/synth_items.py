"""The side data of synthetic items: names, categories and attributes as E-CUP writes them, and extra photos."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from prodmatch.synth_config import CATEGORIES_1, COLOURS, SYLLABLES, Embedded, SynthConfig

log = logging.getLogger(__name__)


def item_names(
    rng: np.random.Generator,
    product: np.ndarray,
    fam: np.ndarray,
    cat4: np.ndarray,
    n_products: int,
    n_families: int,
    n_cat4: int,
) -> dict[str, np.ndarray]:
    syl = np.array(SYLLABLES, dtype=object)
    brands = syl[rng.integers(0, len(syl), 300)] + syl[rng.integers(0, len(syl), 300)]
    brands = np.char.capitalize(brands.astype(str)).astype(object)
    brand_of_family = brands[rng.integers(0, len(brands), n_families)]
    cat_word = np.array(
        [f"{CATEGORIES_1[(c // 6) % len(CATEGORIES_1)].split()[0].lower()}-{c:03d}" for c in range(n_cat4)],
        dtype=object,
    )
    model_of_family = pd.Series(rng.integers(100, 9999, n_families)).astype(str).to_numpy(dtype=object)
    colours = np.array(COLOURS, dtype=object)
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


def category_json(n_cat4: int, cat3_of_4: np.ndarray, cat2_of_4: np.ndarray, cat1_of_2: np.ndarray) -> np.ndarray:
    out = []
    for c4 in range(n_cat4):
        c3, c2 = int(cat3_of_4[c4]), int(cat2_of_4[c4])
        c1 = CATEGORIES_1[int(cat1_of_2[c2])]
        out.append(
            json.dumps(
                {"1": c1, "2": f"{c1} / {c2:02d}", "3": f"{c1} / {c2:02d} / {c3:03d}", "4": f"{c1} / {c4:03d}"},
                ensure_ascii=False,
            )
        )
    return np.array(out, dtype=object)


def attribute_json(
    rng: np.random.Generator, brand: np.ndarray, colour: np.ndarray, model: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) attribute JSON strings, and whether each names the colour (sellers often leave it out)."""
    b, c, m = pd.Series(brand), pd.Series(colour), pd.Series(model)
    full = '{"Бренд": ["' + b + '"], "Цвет товара": ["' + c + '"], "Модель": ["' + m + '"]}'
    short = '{"Бренд": ["' + b + '"], "Модель": ["' + m + '"]}'
    with_colour = rng.random(len(b)) < 0.85
    return full.where(with_colour, short).to_numpy(dtype=object), with_colour


def list_array(matrix: np.ndarray) -> pa.ListArray:
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def nested_one(matrix: np.ndarray) -> pa.ListArray:
    """Each row as a list holding one vector, the E-CUP main-picture format."""
    inner = list_array(matrix)
    return pa.ListArray.from_arrays(pa.array(np.arange(len(matrix) + 1, dtype=np.int32)), inner)


def extra_picture_lists(
    rng: np.random.Generator, pic: Embedded, rows: np.ndarray, quality: np.ndarray, cfg: SynthConfig
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
    inner = list_array(noise)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner), obs_sum, np.bincount(owner, minlength=n)
