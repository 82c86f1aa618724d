"""Losses for imbalanced classes: weighted cross-entropy, focal, soft Dice, focal + Dice, asymmetric.

All take logits ``(N, C, ...)`` and integer targets ``(N, ...)`` (the asymmetric loss also takes
multi-hot targets ``(N, C, ...)``). Reductions follow ``torch.nn.functional.cross_entropy``:
``"mean"`` is the weighted mean (the sum of per-item losses divided by the sum of the per-item
class weights), so focal loss with ``gamma = 0`` is exactly weighted cross-entropy.

Class weights come from :func:`class_weights`: inverse frequency, or the effective number of
samples (Cui et al. 2019: ``(1 - beta) / (1 - beta ** n_c)``), normalised to sum to the number
of classes. Oversampling with a weighted sampler is the alternative
(:func:`medcad.data.volumes.balanced_sampler`); use one or the other, not both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from medcad.errors import MedcadError

__all__ = ["class_weights", "WeightedCrossEntropyLoss", "FocalLoss", "SoftDiceLoss", "FocalDiceLoss",
           "AsymmetricLoss", "LOSSES", "make_loss"]

WEIGHTINGS = ("none", "inverse", "effective")


def class_weights(counts: Sequence[int] | torch.Tensor, method: str = "inverse", beta: float = 0.999) -> torch.Tensor:
    """Per-class weights from class counts, summing to the number of classes.

    Args:
        counts: examples per class (a class with none gets weight 0).
        method: ``"inverse"`` (1 / n_c), ``"effective"`` ((1 - beta) / (1 - beta^n_c)) or ``"none"``.
        beta: for ``"effective"``; 0 gives equal weights, towards 1 it approaches inverse frequency.
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.ndim != 1 or (n < 0).any():
        raise MedcadError(f"class counts must be a list of non-negative numbers, got {n.tolist()}")
    present = n > 0
    if method == "none":
        raw = present.double()
    elif method == "inverse":
        raw = torch.where(present, 1.0 / n.clamp(min=1), torch.zeros_like(n))
    elif method == "effective":
        if not 0.0 <= beta < 1.0:
            raise MedcadError(f"beta must lie in [0, 1), got {beta}")
        raw = torch.where(present, (1.0 - beta) / (1.0 - beta ** n), torch.zeros_like(n))
    else:
        raise MedcadError(f"unknown class weighting {method!r}: use one of {', '.join(WEIGHTINGS)}")
    if raw.sum() == 0:
        raise MedcadError("class counts are all zero")
    return (raw / raw.sum() * len(n)).float()


def _reduce(per_item: torch.Tensor, weight_per_item: torch.Tensor | None, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_item
    if reduction == "sum":
        return per_item.sum()
    if reduction == "mean":
        if weight_per_item is None:
            return per_item.mean()
        return per_item.sum() / weight_per_item.sum()
    raise MedcadError(f"unknown reduction {reduction!r}: use mean, sum or none")


def _as_weight(weight, device) -> torch.Tensor | None:
    return None if weight is None else torch.as_tensor(weight, dtype=torch.float32, device=device)


class WeightedCrossEntropyLoss(nn.Module):
    """Cross-entropy with per-class weights (``weight[c]``); the weighted-mean reduction of torch."""

    def __init__(self, weight: Sequence[float] | torch.Tensor | None = None, reduction: str = "mean"):
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target.long(), weight=self.weight, reduction=self.reduction)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t`` over softmax probabilities.

    Args:
        alpha: per-class weights (e.g. from :func:`class_weights`); None for all ones.
        gamma: focusing strength; 0 gives weighted cross-entropy.
    """

    def __init__(self, alpha: Sequence[float] | torch.Tensor | None = None, gamma: float = 2.0, reduction: str = "mean"):
        super().__init__()
        if gamma < 0:
            raise MedcadError(f"focal gamma must be >= 0, got {gamma}")
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        focus = (1.0 - log_p.exp()).clamp(min=0).pow(self.gamma) if self.gamma else torch.ones_like(log_p)
        alpha_t = None if self.alpha is None else self.alpha[target]
        per_item = -focus * log_p * (1.0 if alpha_t is None else alpha_t)
        return _reduce(per_item, alpha_t, self.reduction)


def _one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, ...) class indices -> (N, C, ...) float one-hot."""
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).float()


class SoftDiceLoss(nn.Module):
    """``1 - mean_c (2 sum p t + s) / (sum p + sum t + s)``, sums over the batch and space.

    Softmax probabilities against one-hot targets; for one output channel, a sigmoid against a
    0/1 target. Works for classification (N, C) and segmentation (N, C, ...) alike.
    """

    def __init__(self, smooth: float = 1.0, include_background: bool = True):
        super().__init__()
        self.smooth = smooth
        self.include_background = include_background

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            probs, truth = torch.sigmoid(logits), target.float().unsqueeze(1)
        else:
            probs, truth = F.softmax(logits, dim=1), _one_hot(target, logits.shape[1])
            if not self.include_background:
                probs, truth = probs[:, 1:], truth[:, 1:]
        dims = (0,) + tuple(range(2, logits.ndim))
        overlap = (probs * truth).sum(dims)
        dice = (2 * overlap + self.smooth) / (probs.sum(dims) + truth.sum(dims) + self.smooth)
        return 1.0 - dice.mean()


class FocalDiceLoss(nn.Module):
    """``focal_weight * focal + dice_weight * soft Dice``."""

    def __init__(self, alpha: Sequence[float] | torch.Tensor | None = None, gamma: float = 2.0,
                 focal_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.focal = FocalLoss(alpha, gamma)
        self.dice = SoftDiceLoss(smooth)
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.focal_weight * self.focal(logits, target) + self.dice_weight * self.dice(logits, target)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ben-Baruch et al. 2020) over per-class sigmoids.

    Positives: ``-(1 - p)^gamma_pos log p``; negatives: ``-p_m^gamma_neg log(1 - p_m)`` with the
    shifted probability ``p_m = max(p - clip, 0)``, which discards very easy negatives: the many
    negatives of a rare class stop drowning its few positives. Targets are class indices (one
    positive per item) or multi-hot (N, C, ...). ``"mean"`` averages over items (summed over classes).
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 reduction: str = "mean", eps: float = 1e-8):
        super().__init__()
        self.gamma_pos, self.gamma_neg, self.clip = gamma_pos, gamma_neg, clip
        self.reduction = reduction
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        truth = target.float() if target.shape == logits.shape else _one_hot(target, logits.shape[1])
        p = torch.sigmoid(logits)
        p_shifted = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        positive = truth * (1 - p).pow(self.gamma_pos) * torch.log(p.clamp(min=self.eps))
        negative = (1 - truth) * p_shifted.pow(self.gamma_neg) * torch.log((1 - p_shifted).clamp(min=self.eps))
        per_item = -(positive + negative).sum(1)
        return _reduce(per_item, None, self.reduction)


LOSSES = ("ce", "focal", "dice", "focal_dice", "asymmetric")


def make_loss(name: str, weight: torch.Tensor | None = None, gamma: float = 2.0) -> nn.Module:
    """A loss by name for the CLI: ``ce`` (weighted when ``weight`` is given), ``focal``, ``dice``,
    ``focal_dice``, ``asymmetric``; ``weight`` is the per-class weight / focal alpha."""
    if name == "ce":
        return WeightedCrossEntropyLoss(weight)
    if name == "focal":
        return FocalLoss(weight, gamma)
    if name == "dice":
        return SoftDiceLoss()
    if name == "focal_dice":
        return FocalDiceLoss(weight, gamma)
    if name == "asymmetric":
        return AsymmetricLoss()
    raise MedcadError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}")
