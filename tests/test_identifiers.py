"""Product codes and numbers with units: extraction, normalisation and the pair comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from prodmatch.identifiers import (
    CODE_FEATURES,
    QUANTITY_FEATURES,
    ItemCodes,
    ItemQuantities,
    codes_of,
    compare_codes,
    compare_quantities,
    describe_codes,
    describe_quantities,
    quantities,
)


def test_codes_are_normalised_and_kept_apart_from_quantities_and_phrases():
    found = dict(codes_of("Sony Cyber-shot DSC-W120/P 7.2MP, KDL-40v3000 2-in-1 0027242741 1080p 2007 3x4"))
    assert set(found) == {"dscw120p", "kdl40v3000", "27242741", "1080p"}  # a year, 2in1, 3x4, 7.2mp: no code
    assert found["dscw120p"] == ["dsc", "w", "120", "p"]
    assert codes_of("dsc w120p") == [("w120p", ["w", "120", "p"])]  # a code split by a space: its coded piece
    assert codes_of("MDR-EX51LP/B") == codes_of("mdr.ex51lp-b") == [("mdrex51lpb", ["mdr", "ex", "51", "lp", "b"])]
    assert codes_of(None) == [] and codes_of("") == []


def test_quantities_are_normalised_to_one_unit_per_dimension():
    got = quantities("Sony 40' LCD 16 GB, 500mAh, 2.5\" screen, 1.2 м, 32 Гб, pack of 6, 4x optical zoom, 2-in-1")
    assert ("bytes", 16e9) in got and ("bytes", 32e9) in got
    assert ("amp_hours", pytest.approx(0.5)) in got
    assert ("metres", pytest.approx(2.5 * 0.0254)) in got and ("metres", pytest.approx(40 * 0.0254)) in got
    assert ("metres", pytest.approx(1.2)) in got
    assert ("count", 6.0) in got and ("zoom", 4.0) in got
    assert len(got) == 8  # "2-in-1" is no length


NAMES = np.array(
    [
        "Panasonic Lumix DMC-FZ35K 12.1 MP 16 GB",  # 0
        "Panasonic DMC-FZ35 digital camera 16GB",  # 1: the same model without its colour suffix
        "Panasonic Lumix DMC-FZ28 10 MP",  # 2: another model of the family
        "Panasonic DMCFZ35K",  # 3: the same code, written without a hyphen
        "Panasonic Lumix camera 32 GB",  # 4: no code
        "Panasonic DMC-FZ53K",  # 5: a transposition of 0's code
    ],
    dtype=object,
)
TEXTS = np.array([None, None, None, None, "fits the DMC-FZ35K and others", None], dtype=object)


def _compare(a, b):
    items = ItemCodes.build(NAMES, TEXTS)
    return dict(zip(CODE_FEATURES, compare_codes(items, np.array(a), np.array(b)), strict=True))


def test_code_comparisons_tell_shared_contained_near_and_conflicting_codes():
    got = _compare([0, 0, 0, 0, 1], [3, 1, 2, 5, 0])
    assert list(got["code_shared"][:4]) == [1, 0, 0, 0]
    assert list(got["code_contained"][:3]) == [0, 1, 0]  # dmcfz35 is held in dmcfz35k
    assert got["code_contained"][4] == got["code_contained"][1]  # symmetric
    assert list(got["code_near"][:4]) == [0, 0, 0, 1]  # fz28: edit distance 3; fz53k: a transposition
    assert list(got["code_family_conflict"][:4]) == [0, 0, 1, 1]
    assert list(got["code_unseen_max"][:3]) == [0, 1, 1]


def test_no_code_on_a_side_is_no_evidence_and_a_code_in_the_long_text_is_seen():
    got = _compare([0, 4], [4, 4])
    for name in ("code_shared", "code_contained", "code_near", "code_family_conflict"):
        assert np.isnan(got[name]).all(), name
    assert got["code_unseen_max"][0] == 0  # 0's code is not in 4's name, but 4's long text holds it
    items = ItemCodes.build(NAMES, np.array([None] * 6, dtype=object))
    without_text = dict(zip(CODE_FEATURES, compare_codes(items, np.array([0]), np.array([4])), strict=True))
    assert without_text["code_unseen_max"][0] == 1
    assert np.isnan(got["code_unseen_max"][1])  # neither side has a code


def test_code_features_do_not_depend_on_the_other_pairs_or_the_order_of_the_two_sides():
    items = ItemCodes.build(NAMES, TEXTS)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    whole = np.column_stack(compare_codes(items, a, b))
    swapped = np.column_stack(compare_codes(items, b, a))
    one = np.column_stack(compare_codes(items, a[7:8], b[7:8]))
    np.testing.assert_array_equal(whole, swapped)
    np.testing.assert_array_equal(whole[7:8], one)


def test_quantities_agree_within_the_tolerance_and_conflict_otherwise():
    names = np.array(["16 GB 2.5 in", "16gb 6.35 cm", "32 GB 2.5in 4x zoom", "no numbers", "16 GB 32 GB"], dtype=object)
    items = ItemQuantities.build(names)
    compared = compare_quantities(items, np.array([0, 0, 0, 4]), np.array([1, 2, 3, 2]))
    got = dict(zip(QUANTITY_FEATURES, compared, strict=True))
    assert list(got["quantity_dims_shared"][:2]) == [2, 2] and np.isnan(got["quantity_dims_shared"][2])
    assert list(got["quantity_agree"][:2]) == [2, 1]  # 2.5 in is 6.35 cm
    assert list(got["quantity_conflicts"][:2]) == [0, 1]  # 16 GB against 32 GB
    assert np.isnan(got["quantity_agree"][2]) and np.isnan(got["quantity_conflicts"][2])  # nothing to compare
    assert got["quantity_agree"][3] == 1 and got["quantity_conflicts"][3] == 0  # one of its two values agrees


def test_code_and_number_evidence_in_words():
    assert describe_codes("Panasonic DMC-FZ35", "Lumix DMC-FZ35K black") == (
        "codes 'DMC-FZ35' vs 'DMC-FZ35K': one contains the other"
    )
    assert describe_codes("Sony KDL-40V3000", "Sony kdl40v3000") == "shared code 'KDL-40V3000'"
    assert describe_codes("Panasonic DMC-FZ35", "Panasonic DMC-FZ28").endswith("same family, another model")
    assert describe_codes("Sony KDL-40V3000", "Sony TV") == "a product code on one side only"
    assert describe_codes("Sony MDR-EX51", "Sony HT-DDW790", text_b="fits the MDR-EX51") == (
        "code 'HT-DDW790' appears nowhere in the other listing"
    )
    assert describe_quantities("Kingston 16 GB SD", "Kingston 32 GB SD") == "capacity '16 GB' vs '32 GB'"
    assert describe_quantities("16 GB, 2.5 in", "16GB 6.35 cm") == "capacity '16 GB' on both; size '2.5 in' on both"
    assert describe_quantities("a cable", "16 GB") == "no number with a unit to compare"
