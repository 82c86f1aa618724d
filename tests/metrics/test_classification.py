"""Classification metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcad.errors import MedcadError
from medcad.metrics.classification import (
    ScoreAccumulator, binary_report, choose_threshold, linspace_roc, multiclass_report, roc_curve,
)


def test_roc_auc_by_hand():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs ranked right: (0.8>0.1), (0.8>0.4), (0.35>0.1) -> 3/4
    curve = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert curve.auc == pytest.approx(0.75)
    assert curve.fpr[0] == 0 and curve.tpr[-1] == 1


def test_binary_report_by_hand():
    # predictions at 0.5: [1, 0, 1, 0, 1] vs labels [1, 1, 0, 0, 1]: tp 2, fn 1, fp 1, tn 1
    report = binary_report([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.5], threshold=0.5)
    assert (report.tp, report.fn, report.fp, report.tn) == (2, 1, 1, 1)
    assert report.accuracy == pytest.approx(3 / 5)
    assert report.precision == pytest.approx(2 / 3) and report.recall == pytest.approx(2 / 3)
    assert report.f1 == pytest.approx(2 / 3) and report.specificity == pytest.approx(1 / 2)
    # AUC: positives {0.9, 0.4, 0.5} vs negatives {0.6, 0.1}: 0.9 beats 2, 0.4 beats 1, 0.5 beats 1 -> 4/6
    assert report.auc == pytest.approx(4 / 6)


def test_multiclass_report_by_hand():
    labels = [0, 1, 2, 2]
    scores = [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]
    report = multiclass_report(labels, scores, top_k=(1, 2))
    # arg-max predictions 0, 0, 2, 0
    assert report.confusion == ((1, 0, 0), (1, 0, 0), (1, 0, 1))
    assert report.accuracy == pytest.approx(2 / 4)
    assert report.per_class_accuracy == pytest.approx((1.0, 0.0, 0.5))
    # top-2: row 2's label 1 is second (0.3); row 4's label 2 is third (0.1) -> 3/4
    assert report.top_k_accuracy == pytest.approx({1: 0.5, 2: 0.75})


def test_threshold_rules_by_hand():
    # 2 positives (0.9, 0.2), 100 negatives: one at 0.8, ten at 0.5, 89 at 0.05.
    labels = [1, 1] + [0] * 100
    scores = [0.9, 0.2] + [0.8] + [0.5] * 10 + [0.05] * 89
    # F1 at t=0.9: tp 1, fp 0, fn 1 -> 2/3; at t=0.2: tp 2, fp 11 -> 4/15. Best: 0.9.
    f1 = choose_threshold(labels, scores, "f1")
    assert f1.threshold == pytest.approx(0.9) and f1.value == pytest.approx(2 / 3)
    # Youden J at t=0.9: 1/2 - 0 = 0.5; at t=0.2: 1 - 11/100 = 0.89. Best: 0.2.
    youden = choose_threshold(labels, scores, "youden")
    assert youden.threshold == pytest.approx(0.2) and youden.value == pytest.approx(0.89)
    fixed = choose_threshold(labels, scores, "fixed", fixed=0.5)
    # at 0.5: tp 1, fp 11, fn 1 -> F1 = 2 / (2 + 11 + 1) = 1/7
    assert fixed.threshold == 0.5 and fixed.value == pytest.approx(1 / 7)
    with pytest.raises(MedcadError, match="youden"):
        choose_threshold(labels, scores, "best")


def test_linspace_roc_is_the_books_coarse_approximation():
    labels, scores = [0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0]
    assert roc_curve(labels, scores).auc == pytest.approx(0.75)
    # thresholds 4, 2.5, 1: tpr [.5, .5, 1], fpr [0, .5, 1] -> .5 * .5 + .5 * (.5 + 1) / 2 = 0.625
    coarse = linspace_roc(labels, scores, 4, 1, steps=3)
    np.testing.assert_allclose(coarse.tpr, [0.5, 0.5, 1])
    np.testing.assert_allclose(coarse.fpr, [0, 0.5, 1])
    assert coarse.auc == pytest.approx(0.625)


def test_accumulator_collects_batches_and_resets():
    accumulator = ScoreAccumulator(threshold=0.5)
    accumulator.update(torch.tensor([1, 1]), torch.tensor([0.9, 0.4]))
    accumulator.update(np.array([0, 0, 1]), np.array([0.6, 0.1, 0.5]))
    assert accumulator.compute() == binary_report([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.5])
    accumulator.reset()
    with pytest.raises(MedcadError):
        accumulator.compute()
    accumulator.update([2, 0], [[0.1, 0.2, 0.7], [0.3, 0.5, 0.2]])
    assert accumulator.compute().accuracy == pytest.approx(0.5)
