"""Word-by-word name comparisons (prodmatch.fuzzy) on hand-made titles."""

import numpy as np
import pytest

from prodmatch.fuzzy import FUZZY_FEATURES, NEAR_SIMILARITY, ItemWords, compare_words, near_words
from prodmatch.sparse_text import NAME_HASH_FEATURES, hash_words


def _features(names, texts=None, brands=None, idf=None, pairs=((0, 1),)):
    idf = np.ones(NAME_HASH_FEATURES, dtype=np.float32) if idf is None else idf
    items = ItemWords.build(np.array(names, dtype=object), None if texts is None else np.array(texts, dtype=object),
                            brands, idf)  # fmt: skip
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return dict(zip(FUZZY_FEATURES, compare_words(items, a, b), strict=True))


def test_near_words_are_letters_only_and_close():
    vocab = ["kindergarden", "kindergarten", "hero4", "hero5", "pro", "pre", "camera", "canvas"]
    near = near_words(vocab).toarray()
    assert near[0, 1] >= NEAR_SIMILARITY and near[0, 1] == near[1, 0]
    assert near[2, 3] == 0  # a digit changes the product: codes are compared elsewhere
    assert near[4, 5] == 0  # too short to be a misspelling
    assert near[6, 7] == 0  # two edits apart but not alike
    assert np.all(np.diag(near) == 0)


def test_a_misspelt_word_counts_in_soft_tfidf_and_monge_elkan():
    f = _features(["reader rabbit kindergarden", "reader rabbit kindergarten"])
    assert f["name_idf_jaccard"][0] == pytest.approx(2 / 4)  # exact words only: 2 shared of 4
    assert 0.95 < f["name_soft_tfidf_min"][0] < 1.0  # the third word meets its near spelling
    jw = near_words(["kindergarden", "kindergarten"])[0, 1]
    assert f["name_monge_elkan_min"][0] == pytest.approx((1 + 1 + jw) / 3, abs=1e-6)


def test_monge_elkan_per_direction_and_idf_weights():
    names = ["adobe photoshop", "adobe photoshop elements upgrade"]
    idf = np.ones(NAME_HASH_FEATURES, dtype=np.float32)
    idf[hash_words(np.array(["photoshop"], dtype=object)).indices] = 3.0
    f = _features(names, idf=idf)
    assert f["name_monge_elkan_max"][0] == pytest.approx(1.0)  # the short name is wholly in the long one
    assert f["name_monge_elkan_min"][0] == pytest.approx(0.5)
    assert f["name_idf_jaccard"][0] == pytest.approx(4 / 6)  # (1 + 3) of (1 + 3 + 1 + 1)


def test_symmetric_and_the_same_in_any_batch():
    names = ["sony alpha a6000 body", "sony a6000 camera body black", "nikon d750", None]
    whole = _features(names, pairs=((0, 1), (1, 0), (2, 0), (3, 0)))
    alone = _features(names[:2], pairs=((0, 1),))
    for name in FUZZY_FEATURES:
        column = whole[name]
        assert column[0] == pytest.approx(column[1], abs=1e-7), name
        assert column[0] == pytest.approx(alone[name][0], abs=1e-7), name
        if name.startswith("name_"):
            assert np.isnan(column[3]), name  # no name: nothing to compare
    assert whole["name_idf_jaccard"][2] == 0  # nothing in common is a 0, not a missing value


def test_a_brand_missing_from_the_attributes_is_read_from_the_title():
    names = ["alpha a6000 body", "sony a6000 mirrorless", "canon eos 80d"]
    f = _features(names, brands=["Sony", None, None], pairs=((0, 1), (0, 2), (1, 2)))
    assert f["brand_seen_min"][0] == 1 and f["brand_seen_max"][0] == 1  # sony, by attribute and by title
    assert f["brand_seen_max"][1] == 0  # sony against canon
    assert f["brand_seen_max"][2] == 0
    # the long text counts as what the item says
    g = _features(["encore westward", "westward"], texts=["", "encore software 13781"])
    assert g["brand_seen_min"][0] == 1
