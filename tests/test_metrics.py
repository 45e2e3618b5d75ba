"""Metrics equal hand-computed values on crafted cases (MMSA's definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mercli.metrics import classification_metrics, regression_metrics, seven_class_label


def test_perfect_predictions() -> None:
    t = np.array([-2.0, -0.4, 0.6, 2.2])
    m = regression_metrics(t, t)
    assert m["mae"] == 0 and m["corr"] == pytest.approx(1.0)
    assert m["acc2_has0"] == m["acc2_non0"] == m["f1_has0"] == m["acc7"] == 1.0


def test_zero_labels_count_as_non_negative_for_has0_and_are_dropped_for_non0() -> None:
    truth = np.array([0.0, 0.0, 1.0, -1.0])
    pred = np.array([-0.2, 0.3, 0.5, 0.5])
    m = regression_metrics(pred, truth)
    # has0: truth>=0 = [T, T, T, F]; pred>=0 = [F, T, T, T] -> 2/4
    assert m["acc2_has0"] == 0.5
    # non0 keeps the last two: truth>0 = [T, F]; pred>0 = [T, T] -> 1/2
    assert m["acc2_non0"] == 0.5
    # weighted F1 over [T, F] vs [T, T]: class T f1 = 2/3 (weight 1/2), class F f1 = 0
    assert m["f1_non0"] == pytest.approx(1 / 3)
    # has0 F1: truth [1,1,1,0], pred [0,1,1,1]: class1 p=2/3 r=2/3 f=2/3 (w 3/4); class0 f=0
    assert m["f1_has0"] == pytest.approx(0.5)


def test_round_half_to_even_edges() -> None:
    # np.round: 0.5 -> 0, -0.5 -> -0, 2.5 -> 2, 1.5 -> 2
    truth = np.array([0.0, 0.0, 2.0, 2.0, 3.0])
    pred = np.array([0.5, -0.5, 2.5, 1.5, 3.7])
    m = regression_metrics(pred, truth)
    assert m["acc7"] == 1.0
    assert (
        seven_class_label(2.5) == 2
        and seven_class_label(-3.6) == -3
        and seven_class_label(0.5) == 0
    )
    # Acc-5 clips to [-2, 2]: 3.7 and 3.0 both become 2
    assert m["acc5"] == 1.0
    assert regression_metrics(np.array([1.5]), np.array([1.0]))["acc7"] == 0.0


def test_mae_and_corr_by_hand() -> None:
    truth = np.array([1.0, 2.0, 3.0])
    pred = np.array([1.5, 2.0, 2.0])
    m = regression_metrics(pred, truth)
    assert m["mae"] == pytest.approx(0.5)
    assert m["corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])


def test_all_one_class_predictions() -> None:
    truth = np.array([-1.0, 1.0, 2.0, -2.0])
    m = regression_metrics(np.full(4, 1.0), truth)
    assert m["acc2_has0"] == 0.5
    assert m["f1_has0"] == pytest.approx(0.5 * (2 / 3))  # class "non-negative" f1 2/3, weight 1/2
    assert math.isnan(m["corr"])  # constant predictions have no correlation


def test_classification_metrics_from_logits_and_classes() -> None:
    truth = np.array([1, 0, 1, 1])
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.7, 0.3], [0.0, 1.0]])
    m = classification_metrics(logits, truth)
    assert m["acc2"] == 0.75
    assert classification_metrics(np.array([1, 0, 0, 1]), truth) == m
    # class 1: p=1, r=2/3 -> 0.8 (weight 3/4); class 0: p=1/2, r=1 -> 2/3 (weight 1/4)
    assert m["f1"] == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
