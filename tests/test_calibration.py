"""Calibration maps and the threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from prodmatch import ConfigError
from prodmatch.calibration import Calibrator, choose_threshold


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.4).astype(np.int8)
    s = rng.normal(loc=np.where(y == 1, 1.5, -1.0), scale=1.0) * 3.0  # overconfident raw logits
    return s, y


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_is_monotone_and_calibrated(scores, method):
    s, y = scores
    cal = Calibrator.fit(method, s, y)
    grid = np.linspace(s.min() - 5, s.max() + 5, 2001)
    p = cal(grid)
    assert (np.diff(p) >= 0).all()  # never reorders pairs
    assert p.min() >= 0.0 and p.max() <= 1.0
    # calibrated: in each band of predictions the positive rate matches the mean prediction
    prob = cal(s)
    for lo, hi in ((0.05, 0.3), (0.3, 0.7), (0.7, 0.95)):
        band = (prob >= lo) & (prob < hi)
        assert abs(y[band].mean() - prob[band].mean()) < 0.06
    restored = Calibrator.from_dict(cal.to_dict())
    np.testing.assert_array_equal(restored(grid), p)


def test_platt_keeps_the_ranking(scores):
    s, y = scores
    p = Calibrator.fit("platt", s, y)(s)
    assert (np.diff(p[np.argsort(s)]) > 0).all()  # strictly increasing: no two pairs tie


def test_none_is_the_sigmoid():
    assert Calibrator.fit("none", np.array([0.0]), np.array([1]))(np.array([0.0]))[0] == pytest.approx(0.5)


def test_max_f1_threshold():
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    choice = choose_threshold(y, p)
    # at 0.3: 3 TP, 1 FP -> F1 6/7, the best; at 0.8: 2 TP -> F1 0.8
    assert choice.threshold == pytest.approx(0.3)
    assert choice.f1 == pytest.approx(6 / 7)
    assert choice.rule == "max_f1"


def test_target_precision_takes_the_lowest_threshold_that_reaches_it():
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    choice = choose_threshold(y, p, target_precision=0.9)
    assert choice.threshold == pytest.approx(0.8)  # 0.3 gives precision 0.75; 0.8 gives 1.0
    assert choice.precision == 1.0 and choice.recall == pytest.approx(2 / 3) and choice.reached
    # precision 0.75 is reached at 0.3 already: the lowest such threshold, for the most recall
    assert choice_threshold(y, p, 0.75) == pytest.approx(0.3)


def choice_threshold(y, p, target):
    return choose_threshold(y, p, target_precision=target).threshold


def test_unreachable_target_precision_is_flagged():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.5, 0.5, 0.5, 0.5])
    choice = choose_threshold(y, p, target_precision=0.9)
    assert not choice.reached and choice.precision == pytest.approx(0.5)


def test_bad_target_precision():
    with pytest.raises(ConfigError, match="target-precision"):
        choose_threshold(np.array([0, 1]), np.array([0.1, 0.9]), target_precision=1.5)
