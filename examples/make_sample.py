"""Write examples/products.csv and examples/labels.csv: a small catalogue table with its own column names, as a
shop would export it, and labelled pairs, for the README's tour (`prodmatch import` from a CSV).

The listings come from prodmatch's synthetic generator (E-CUP style: Russian titles, brands, colours, model
codes, several sellers' listings of each product), so the sample is free to ship and the same on every run:

    python examples/make_sample.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd

from prodmatch.synth import SynthConfig, generate

HERE = Path(__file__).resolve().parent


def main(items: int = 800, pairs: int = 600, seed: int = 11) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, SynthConfig(items=items, pairs=pairs, test_pairs=100, seed=seed, names=True, attributes=True))
        text = pd.read_parquet(Path(tmp) / "text_and_bert.parquet", columns=["variantid", "name", "description"])
        attrs = pd.read_parquet(Path(tmp) / "attributes.parquet")
        labels = pd.read_parquet(Path(tmp) / "train.parquet")
    frame = text.merge(attrs, on="variantid")
    mapping = [json.loads(m) if isinstance(m, str) else {} for m in frame["characteristic_attributes_mapping"]]
    categories = [json.loads(c) for c in frame["categories"]]
    out = pd.DataFrame(
        {
            "sku": "SKU-" + frame["variantid"].astype(str),
            "title": frame["name"],
            "description": frame["description"],
            "brand": [m.get("Бренд", [""])[0] for m in mapping],
            "colour": [m.get("Цвет товара", [""])[0] for m in mapping],
            "category": [" > ".join(c[k] for k in ("1", "2") if k in c) for c in categories],
        }
    )
    out.to_csv(HERE / "products.csv", index=False)
    pd.DataFrame(
        {
            "sku_a": "SKU-" + labels["variantid1"].astype(str),
            "sku_b": "SKU-" + labels["variantid2"].astype(str),
            "same": labels["target"].map({1.0: "yes", 0.0: "no"}),
        }
    ).to_csv(HERE / "labels.csv", index=False)
    print(f"{len(out)} products, {len(labels)} labelled pairs -> {HERE}")


if __name__ == "__main__":
    main()
