"""Classifier metrics for the fit loop: logits in, a flat ``{name: value}`` dict out.

A thin adapter over :class:`medcad.metrics.classification.ScoreAccumulator`: logits become
probabilities (softmax; sigmoid for a single logit), two-class problems report accuracy, AUC and F1
of the positive class, more classes report accuracy and macro F1.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from medcad.metrics.classification import BinaryReport, ScoreAccumulator


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits: softmax over classes, sigmoid for one logit per sample."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return torch.sigmoid(logits.reshape(-1))
    return torch.softmax(logits, dim=-1)


def positive_scores(probs: torch.Tensor) -> torch.Tensor:
    """Scores of the positive class for a binary problem ((n,) stays, (n, 2) -> column 1), else unchanged."""
    return probs[:, 1] if probs.ndim == 2 and probs.shape[1] == 2 else probs


class ClassifierMetrics:
    """Accumulates logits and integer labels; ``compute`` returns accuracy, AUC / F1 or macro F1."""

    def __init__(self, threshold: float = 0.5):
        self._scores = ScoreAccumulator(threshold=threshold, top_k=())

    def reset(self) -> None:
        self._scores.reset()

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self._scores.update(targets, positive_scores(probabilities(outputs.detach().float())))

    def compute(self) -> Mapping[str, float]:
        report = self._scores.compute()
        if isinstance(report, BinaryReport):
            values = {"accuracy": report.accuracy, "f1": report.f1}
            if report.auc is not None:
                values["auc"] = report.auc
            return values
        return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}
