"""Losses against direct formulas on small tensors; class weights by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from medcad.errors import MedcadError
from medcad.losses import (
    AsymmetricLoss,
    FocalDiceLoss,
    FocalLoss,
    SoftDiceLoss,
    WeightedCrossEntropyLoss,
    class_weights,
    make_loss,
)

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
TARGET = torch.tensor([0, 2, 1, 0])
WEIGHT = torch.tensor([0.5, 2.0, 1.0])


def softmax_rows(logits):
    return [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]


def test_weighted_cross_entropy_by_hand():
    p = softmax_rows(LOGITS)
    terms = [-WEIGHT[t].item() * math.log(p[i][t]) for i, t in enumerate(TARGET.tolist())]
    expected = sum(terms) / sum(WEIGHT[t].item() for t in TARGET.tolist())
    assert WeightedCrossEntropyLoss(WEIGHT)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-6)
    plain = sum(-math.log(p[i][t]) for i, t in enumerate(TARGET.tolist())) / 4
    assert WeightedCrossEntropyLoss()(LOGITS, TARGET).item() == pytest.approx(plain, rel=1e-6)


def test_focal_by_hand():
    p = softmax_rows(LOGITS)
    gamma = 2.0
    terms = [-WEIGHT[t].item() * (1 - p[i][t]) ** gamma * math.log(p[i][t]) for i, t in enumerate(TARGET.tolist())]
    expected_mean = sum(terms) / sum(WEIGHT[t].item() for t in TARGET.tolist())
    assert FocalLoss(WEIGHT, gamma)(LOGITS, TARGET).item() == pytest.approx(expected_mean, rel=1e-6)
    assert FocalLoss(WEIGHT, gamma, reduction="sum")(LOGITS, TARGET).item() == pytest.approx(sum(terms), rel=1e-6)
    per_item = FocalLoss(WEIGHT, gamma, reduction="none")(LOGITS, TARGET)
    torch.testing.assert_close(per_item, torch.tensor(terms))


@pytest.mark.parametrize("weight", [None, WEIGHT])
def test_focal_with_gamma_zero_is_weighted_cross_entropy(weight):
    focal = FocalLoss(weight, gamma=0.0)(LOGITS, TARGET)
    ce = F.cross_entropy(LOGITS, TARGET, weight=weight)
    torch.testing.assert_close(focal, ce)
    # also on segmentation-shaped inputs (N, C, D, H, W)
    logits = torch.randn(2, 3, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 2, 3, 4), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(FocalLoss(weight, 0.0)(logits, target), F.cross_entropy(logits, target, weight=weight))


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[6.0, -6.0]])
    hard = torch.tensor([[0.2, -0.2]])
    target = torch.tensor([0])
    ratio_ce = FocalLoss(gamma=0)(easy, target) / FocalLoss(gamma=0)(hard, target)
    ratio_focal = FocalLoss(gamma=2)(easy, target) / FocalLoss(gamma=2)(hard, target)
    assert ratio_focal < ratio_ce / 100


def test_soft_dice_by_hand_and_perfect_prediction():
    p = softmax_rows(LOGITS)
    dice = []
    for c in range(3):
        inter = sum(p[i][c] for i, t in enumerate(TARGET.tolist()) if t == c)
        sum_p = sum(row[c] for row in p)
        sum_t = sum(1 for t in TARGET.tolist() if t == c)
        dice.append((2 * inter + 1.0) / (sum_p + sum_t + 1.0))
    assert SoftDiceLoss(smooth=1.0)(LOGITS, TARGET).item() == pytest.approx(1 - sum(dice) / 3, rel=1e-6)
    perfect = F.one_hot(TARGET, 3).float() * 50
    assert SoftDiceLoss(smooth=0.0)(perfect, TARGET).item() == pytest.approx(0.0, abs=1e-6)
    # one channel: sigmoid against 0/1 targets
    logit = torch.tensor([[3.0], [-2.0]])
    truth = torch.tensor([1, 0])
    s = [1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(2.0))]
    expected = 1 - (2 * s[0] + 1) / (s[0] + s[1] + 1 + 1)
    assert SoftDiceLoss()(logit, truth).item() == pytest.approx(expected, rel=1e-6)
    without_background = SoftDiceLoss(include_background=False)(LOGITS, TARGET).item()
    assert without_background == pytest.approx(1 - sum(dice[1:]) / 2, rel=1e-6)


def test_focal_dice_is_the_weighted_sum():
    combined = FocalDiceLoss(WEIGHT, gamma=1.5, focal_weight=0.3, dice_weight=2.0)(LOGITS, TARGET)
    expected = 0.3 * FocalLoss(WEIGHT, 1.5)(LOGITS, TARGET) + 2.0 * SoftDiceLoss()(LOGITS, TARGET)
    torch.testing.assert_close(combined, expected)


def test_asymmetric_loss_by_hand():
    gamma_pos, gamma_neg, clip = 1.0, 4.0, 0.05
    loss = AsymmetricLoss(gamma_pos, gamma_neg, clip)
    total = 0.0
    for row, t in zip(LOGITS.tolist(), TARGET.tolist()):
        for c, z in enumerate(row):
            p = 1 / (1 + math.exp(-z))
            if c == t:
                total += -((1 - p) ** gamma_pos) * math.log(p)
            else:
                pm = max(p - clip, 0.0)
                total += -(pm ** gamma_neg) * math.log(1 - pm)
    assert loss(LOGITS, TARGET).item() == pytest.approx(total / 4, rel=1e-5)
    multi_hot = F.one_hot(TARGET, 3)
    torch.testing.assert_close(loss(LOGITS, multi_hot), loss(LOGITS, TARGET))
    # with no focusing and no clipping it is binary cross-entropy summed over classes
    plain = AsymmetricLoss(0.0, 0.0, 0.0)(LOGITS, TARGET)
    bce = F.binary_cross_entropy_with_logits(LOGITS, multi_hot.float(), reduction="sum") / 4
    torch.testing.assert_close(plain, bce)


def test_class_weights_inverse_and_effective_number():
    counts = [90, 10]
    inverse = class_weights(counts, "inverse")
    torch.testing.assert_close(inverse, torch.tensor([2 * (1 / 90) / (1 / 90 + 1 / 10), 2 * (1 / 10) / (1 / 90 + 1 / 10)]))
    assert inverse.sum().item() == pytest.approx(2.0)
    beta = 0.99
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    effective = class_weights(counts, "effective", beta)
    torch.testing.assert_close(effective, torch.tensor([2 * r / sum(raw) for r in raw]))
    # beta -> 0: equal weights; the effective weights lie between equal and inverse
    torch.testing.assert_close(class_weights(counts, "effective", 0.0), torch.ones(2))
    assert inverse[1] > effective[1] > 1.0
    torch.testing.assert_close(class_weights([5, 0, 5], "inverse"), torch.tensor([1.5, 0.0, 1.5]))
    torch.testing.assert_close(class_weights(counts, "none"), torch.ones(2))
    for bad in (dict(method="median"), dict(method="effective", beta=1.0)):
        with pytest.raises(MedcadError):
            class_weights(counts, **bad)
    with pytest.raises(MedcadError):
        class_weights([0, 0])


def test_make_loss_by_name():
    assert isinstance(make_loss("focal", WEIGHT, 1.0), FocalLoss)
    assert make_loss("ce", WEIGHT).weight is not None
    for name in ("dice", "focal_dice", "asymmetric"):
        assert make_loss(name)(LOGITS, TARGET).item() > 0
    with pytest.raises(MedcadError, match="unknown loss"):
        make_loss("hinge")
