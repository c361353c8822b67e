"""(a) Data preparation: E-CUP parquet files -> normalised float32 matrices with an id -> row index.

Baseline: the notebook's path (pandas ``apply`` of a per-row normalise, ``merge``, ``set_index().to_dict()``),
run on the same files in the same process.

    python bench/bench_data_prep.py --items 300000
    python bench/bench_data_prep.py --items 2250000 --no-baseline   # E-CUP size, prodmatch alone
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from common import best_of, dataset, table
from prodmatch import read_catalogue


def normalize_vector(vector):  # the notebook's function, verbatim
    norm = np.sqrt(np.sum(np.square(vector)))
    if norm > 0.001:
        return vector / norm
    else:
        return vector


def notebook_prep(data) -> dict:
    images = pd.read_parquet(data / "images_embed.parquet")
    images["main_pic_embeddings_resnet_v1"] = images["main_pic_embeddings_resnet_v1"].apply(
        lambda x: normalize_vector(x[0])
    )
    texts = pd.read_parquet(data / "text_and_bert.parquet")[["variantid", "name_bert_64"]]
    texts["name_bert_64"] = texts["name_bert_64"].apply(normalize_vector)
    embeddings = texts.merge(images[["variantid", "main_pic_embeddings_resnet_v1"]], on="variantid")
    return embeddings.set_index("variantid").to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-baseline", action="store_true", help="time prodmatch only (for very large catalogues)")
    args = ap.parse_args()
    data = dataset(args.items, args.items // 2)

    cat = read_catalogue(data)
    ours = best_of(lambda: read_catalogue(data), args.repeat)
    rows = [["prodmatch read_catalogue", f"{ours:.2f}", f"{args.items / ours:,.0f}", ""]]
    if not args.no_baseline:
        base_dict = notebook_prep(data)
        # Same numbers: the notebook's float64 vectors against ours (float32), on a sample of ids.
        some = list(base_dict["name_bert_64"])[:1000]
        got = cat.modalities["name_bert_64"].matrix[cat.rows(np.array(some))]
        want = np.stack([base_dict["name_bert_64"][i] for i in some])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        base = best_of(lambda: notebook_prep(data), max(1, args.repeat - 2))
        rows[0][3] = f"{base / ours:.1f}x"
        rows.append(["notebook: pandas apply + to_dict", f"{base:.2f}", f"{args.items / base:,.0f}", "1.0x (baseline)"])
    table(
        f"(a) data prep, {args.items:,} items (text 64-d + picture 128-d)",
        ["path", "seconds", "items/s", "speed-up"],
        rows,
    )


if __name__ == "__main__":
    main()
