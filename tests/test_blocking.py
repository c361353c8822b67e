"""Candidates from shared rare values: tokens, block purging, meta-blocking."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prodmatch.blocking import item_tokens, shared_token_neighbours
from prodmatch.catalogue import Catalogue, Modality
from prodmatch.errors import ConfigError, DataError
from prodmatch.matching import MatchConfig


def _catalogue(names, attributes, vectors=None) -> Catalogue:
    n = len(names)
    vectors = np.eye(n, dtype=np.float32) if vectors is None else vectors
    return Catalogue(
        ids=pd.Index(np.arange(100, 100 + n)),
        modalities={"v": Modality("v", np.ascontiguousarray(vectors), np.ones(n, dtype=bool))},
        names=np.array(names, dtype=object),
        attributes=np.array(attributes, dtype=object),
    )


def _pairs(q, j) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in zip(q, j, strict=True)}


def test_tokens_are_attribute_values_under_any_key_and_name_words_in_one_space():
    cat = _catalogue(
        ["Кроссовки X-7853 черные", None, "", "ЧЁРНЫЙ кот"],
        [
            json.dumps({"Модель": ["X7853"], "Цвет": ["черный"]}),
            json.dumps({"Артикул": "x7853 ", "Размер": [42, None]}),
            None,
            json.dumps({"Модель товара": ["Черный"]}),
        ],
    )
    tokens = item_tokens(cat)
    assert tokens.shape[0] == 4 and set(np.unique(tokens.data)) == {1.0}
    shared = (tokens @ tokens.T).toarray()
    assert shared[0, 1] == 1  # "X7853" (model) and "x7853 " (article): one value, whatever the key
    assert shared[0, 3] == 1  # the attribute value "черный" of item 0 and the name word "черный" (ё as е)
    assert tokens[2].nnz == 0  # neither attributes nor a name
    assert shared[1, 1] == 2  # x7853 and 42; the None value is left out


@pytest.mark.parametrize("bad", ["{not json", '["X1"]'])
def test_an_attribute_mapping_that_is_not_a_json_object_names_the_item(bad):
    cat = _catalogue(["a", "b"], ['{"Модель": ["X1"]}', bad])
    with pytest.raises(DataError, match=r"item 101 .*not a JSON object"):
        item_tokens(cat)


def test_common_values_are_purged_and_each_item_keeps_its_rarest_neighbours():
    # 6 items: all share "common" (purged at max_block=4); 0, 1, 2 share "family"; 0 and 1 also share "code"
    names = ["common family code", "common family code", "common family", "common", "common", "common"]
    cat = _catalogue(names, [None] * 6)
    rows = np.arange(6)
    q, j, report = shared_token_neighbours(item_tokens(cat), rows, rows, k=1, max_block=4)
    assert report.tokens == 3 and report.tokens_purged == 1 and report.tokens_kept == 2
    assert _pairs(q, j) == {(0, 1), (1, 0), (2, 0)}  # 2 ties between 0 and 1: row order without vectors
    q, j, _ = shared_token_neighbours(item_tokens(cat), rows, rows, k=5, max_block=4)
    assert _pairs(q, j) == {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)}  # never itself, never via "common"
    # with every item holding "common" allowed, items 3-5 find the others too
    q, _, report = shared_token_neighbours(item_tokens(cat), rows, rows, k=5, max_block=6)
    assert report.tokens_purged == 0 and {3, 4, 5} <= set(q.tolist())


def test_ties_are_broken_by_the_search_vectors_and_targets_limit_what_is_found():
    vectors = np.array([[1, 0], [0, 1], [0.9, 0.1], [0.8, 0.2]], dtype=np.float32)
    cat = _catalogue(["a x", "a x", "a x", "a x"], [None] * 4, vectors)
    q, j, _ = shared_token_neighbours(item_tokens(cat), np.array([0]), np.arange(4), k=1, vectors=vectors)
    assert _pairs(q, j) == {(0, 2)}  # all share the same tokens; item 2 is the nearest
    q, j, _ = shared_token_neighbours(item_tokens(cat), np.array([0]), np.array([0, 1, 3]), k=1, vectors=vectors)
    assert _pairs(q, j) == {(0, 3)}  # item 2 is not a target


def test_token_settings_are_checked():
    with pytest.raises(ConfigError, match="--token-k"):
        MatchConfig(token_k=-1)
    with pytest.raises(ConfigError, match="--token-max-block"):
        MatchConfig(token_max_block=1)


def test_mining_over_shared_values_keeps_rows_past_the_int32_range_of_their_products():
    """Over 46,341 items a row times the item count overflows int32: the mined rows must stay in range."""
    from prodmatch.mining import mine_negatives
    from prodmatch.pairs import PairSet

    n = 50_000
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cat = _catalogue([f"family{i // 3}" for i in range(n)], [None] * n, vectors)
    left = np.arange(n - 3002, n - 2, 3, dtype=np.int32)  # families of 3 from row 46,998: row * n is past int32
    right = left + 1
    ids = cat.ids.to_numpy()
    train = PairSet(left, right, np.ones(len(left), np.float32), np.arange(len(left)), ids[left], ids[right])
    mined, report = mine_negatives(cat, train, ["v"], per_item=20, k=2)
    assert report.shared_value_neighbours > 0 and len(mined) > 0
    assert mined.left.min() >= 0 and mined.right.min() >= 0
    assert mined.left.max() < n and mined.right.max() < n
    # a family's third item is found through the shared name word, and is never its labelled partner
    assert set(zip(mined.left.tolist(), mined.right.tolist(), strict=True)) >= {(int(left[0]), int(left[0]) + 2)}
