"""(p) A peer on the same splits: Splink 5 (DuckDB), set up as its documentation advises, against prodmatch's default.

For each real set of ``../shared/data/em`` (the splits ``bench_em.py`` reads), Splink's Fellegi-Sunter model gets:

- comparisons: the title by Jaro-Winkler (0.95, 0.88, 0.7), the title's words by Jaccard (0.7, 0.5, 0.3), and
  the product codes (words mixing letters and digits, at least 4 characters, hyphens removed):
  a shared code, one code containing the other, the closest codes within Levenshtein 2;
- ``m`` from the training matches (``estimate_m_from_pairwise_labels``, which reads every row as a match), ``u`` by random sampling (the prior
  moves every match weight alike, so the threshold chosen on valid absorbs it);
- the threshold (a match weight) chosen on the validation pairs for the best F1, and F1 on test at it, from
  Splink's own truth tables (``accuracy_analysis_from_labels_table``): every labelled pair is scored, none
  is lost to blocking.

It needs the ``peers`` extra (``pip install -e '.[peers]'``), which the package never imports.

    python bench/bench_peers.py
    python bench/bench_peers.py --datasets Abt-Buy
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import pandas as pd

from bench_em import EM_ROOT, PUBLISHED
from common import console, table

CODE = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[a-z])[a-z0-9][\w-]{2,}[a-z0-9]\b")


def records(name: str) -> pd.DataFrame:
    frame = pd.read_parquet(EM_ROOT / name / "records.parquet", columns=["id", "title"])
    title = frame["title"].fillna("").str.lower()
    codes = title.map(lambda t: sorted({c.replace("-", "") for c in CODE.findall(t)} - {""}))
    codes = codes.map(lambda cs: [c for c in cs if len(c) >= 4])
    return pd.DataFrame(
        {
            "unique_id": frame["id"],
            "title": title.where(title != "", None),
            "title_words": title.str.findall(r"\w+").map(lambda w: sorted(set(w)) or None),
            "codes": codes.map(lambda cs: cs or None),
        }
    )


def list_comparison(column: str, missing: str, levels: list[tuple[str, str]]):
    """A Splink comparison of a list column: a null level where either side has none, then ``levels``
    ((SQL condition, label), first match wins), then all other pairs."""
    import splink.comparison_library as cl

    return cl.CustomComparison(
        output_column_name=column,
        comparison_levels=[
            {
                "sql_condition": f"{column}_l IS NULL OR {column}_r IS NULL",
                "label_for_charts": missing,
                "is_null_level": True,
            },
            *({"sql_condition": sql, "label_for_charts": label} for sql, label in levels),
            {"sql_condition": "ELSE", "label_for_charts": "all other"},
        ],
    )


def settings():
    import splink.comparison_library as cl
    from splink import SettingsCreator

    codes = list_comparison(
        "codes",
        "no code",
        [
            ("len(list_intersect(codes_l, codes_r)) > 0", "a shared code"),
            (
                "len(list_filter(codes_l, lambda x: len(list_filter(codes_r, lambda y: contains(x, y) OR contains(y, x))) > 0)) > 0",
                "one code contains the other",
            ),
            (
                "list_min(list_transform(codes_l, lambda x: list_min(list_transform(codes_r, lambda y: levenshtein(x, y))))) <= 2",
                "closest codes within Levenshtein 2",
            ),
        ],
    )
    jaccard = (
        "len(list_intersect(title_words_l, title_words_r)) / "
        "len(list_distinct(list_concat(title_words_l, title_words_r)))"
    )
    words = list_comparison(
        "title_words", "no title", [(f"{jaccard} >= {t}", f"word Jaccard >= {t}") for t in (0.7, 0.5, 0.3)]
    )
    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[cl.JaroWinklerAtThresholds("title", [0.95, 0.88, 0.7]), words, codes],
        retain_intermediate_calculation_columns=False,
    )


def labels(name: str, split: str) -> pd.DataFrame:
    frame = pd.read_parquet(EM_ROOT / name / f"{split}.parquet", columns=["left_id", "right_id", "label"])
    return pd.DataFrame(
        {
            "unique_id_l": frame["left_id"],
            "unique_id_r": frame["right_id"],
            "clerical_match_score": frame["label"].astype(float),
        }
    )


def truth(linker, db_api, frame: pd.DataFrame) -> pd.DataFrame:
    """Splink's truth table of labelled pairs: at each match weight, the counts if it were the threshold."""
    registered = db_api.register(frame)
    out = linker.evaluation.accuracy_analysis_from_labels_table(registered, output_type="table").as_pandas_dataframe()
    return out.sort_values("truth_threshold").reset_index(drop=True)


def run(name: str) -> dict:
    from splink import DuckDBAPI, Linker

    t0 = time.perf_counter()
    db_api = DuckDBAPI()
    data = records(name)
    train = labels(name, "train")
    linker = Linker(db_api.register(data), settings())
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=0)
    # it reads every row as a match (its clerical_match_score is ignored): the matches alone
    matches = train[train["clerical_match_score"] > 0.5]
    linker.training.estimate_m_from_pairwise_labels(db_api.register(matches))
    valid = truth(linker, db_api, labels(name, "valid"))
    best = valid.loc[valid["f1"].idxmax()]
    test = truth(linker, db_api, labels(name, "test"))
    at = test[test["truth_threshold"] >= best["truth_threshold"]]
    row = at.iloc[0] if len(at) else None
    f1 = float(row["f1"]) if row is not None else 0.0
    return {
        "f1": 100 * f1,
        "precision": 100 * float(row["precision"]) if row is not None else 0.0,
        "recall": 100 * float(row["recall"]) if row is not None else 0.0,
        "threshold": float(best["truth_threshold"]),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(PUBLISHED))
    args = ap.parse_args()
    try:
        import splink  # noqa: F401
    except ImportError:
        raise SystemExit("bench_peers.py needs Splink: pip install -e '.[peers]'") from None
    rows = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        with console.status(f"Splink on {name}"):
            got = run(name)
        rows.append(
            [
                name,
                f"{got['f1']:.1f}",
                f"{got['precision']:.1f} / {got['recall']:.1f}",
                f"{got['threshold']:.2f}",
                f"{PUBLISHED[name]['Ditto']:.2f}",
                f"{got['seconds']:.0f}",
            ]
        )
    table(
        "(p) Splink 5 (DuckDB; m from the training matches, u by random sampling, threshold on valid): test F1",
        ["set", "Splink F1", "precision / recall", "match weight threshold", "Ditto", "seconds"],
        rows,
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
