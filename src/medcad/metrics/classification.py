"""Classification metrics: ROC / AUC, precision, recall, F1, accuracy, confusion, top-k, thresholds.

scikit-learn does the counting where it already has the function; this module gives the results
typed names, adds the threshold rules (F1-optimal, Youden, fixed), the book's coarse ROC
(``linspace_roc``) and an accumulator that collects batches (``update`` / ``compute`` / ``reset``).
Labels are 0 / 1 (binary) or 0..n-1; scores are probabilities of class 1 (binary, shape (n,)) or
per class (shape (n, n_classes)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medcad.errors import MedcadError

THRESHOLD_RULES = ("f1", "youden", "fixed")


@dataclass(frozen=True, eq=False)
class RocCurve:
    """ROC curve (false / true positive rates, falling thresholds) and its area."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


@dataclass(frozen=True)
class BinaryReport:
    """Counts and rates of a binary classifier at one threshold (score >= threshold is positive)."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    specificity: float
    f1: float
    auc: float | None


@dataclass(frozen=True)
class MulticlassReport:
    """Accuracy, per-class accuracy (recall), confusion (rows truth, columns prediction), top-k, macro F1."""

    n_classes: int
    accuracy: float
    per_class_accuracy: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]
    top_k_accuracy: dict[int, float]
    macro_f1: float


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold picked by a named rule, with the value the rule maximised (F1 or Youden's J)."""

    rule: str
    threshold: float
    value: float


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores as NumPy arrays (accepts lists, arrays, CPU or GPU tensors)."""
    def as_array(values):
        if hasattr(values, "detach"):
            values = values.detach().cpu().numpy()
        return np.asarray(values)
    label_array, score_array = as_array(labels).astype(int).ravel(), as_array(scores).astype(float)
    if len(label_array) != len(score_array):
        raise MedcadError(f"{len(label_array)} labels but {len(score_array)} scores")
    return label_array, score_array


def roc_curve(labels, scores) -> RocCurve:
    """ROC curve at every distinct score and the exact AUC (``sklearn.metrics.roc_auc_score``)."""
    from sklearn import metrics

    y, s = _arrays(labels, scores)
    fpr, tpr, thresholds = metrics.roc_curve(y, s, drop_intermediate=False)
    return RocCurve(fpr, tpr, thresholds, float(metrics.roc_auc_score(y, s)))


def linspace_roc(labels, scores, start: float, end: float, steps: int = 100) -> RocCurve:
    """The book's coarse ROC: ``steps`` thresholds from ``torch.linspace(start, end)``, AUC by trapezoids.

    "Positive" is score >= threshold. The book uses it with (max, min) of the nodule diameters for
    the diameter baseline, and with (1, 0) for model probabilities; the area is the sum of
    trapezoids between consecutive points (no extra (0, 0) or (1, 1) end points are added).

    Scores keep their float64 precision while the thresholds are ``torch.linspace``'s default
    float32, as when the book's code runs on a pandas column. That matters at the ends: float32
    rounding moves the first threshold just above the largest score and the last one just above
    the smallest, so the curve starts at (0, 0) and stops short of (1, 1). On the LUNA malignancy
    table this gives 0.9171; casting the diameters to float32 first (the book's dataset objects)
    makes the ends exact and gives 0.9184.
    """
    import torch

    y, s = _arrays(labels, scores)
    values = torch.from_numpy(np.asarray(s, dtype=np.float64))
    positive = torch.tensor(y.astype(bool).tolist())
    thresholds = torch.linspace(float(start), float(end), steps)
    predicted = values[None] >= thresholds[:, None]
    tpr = ((predicted & positive[None]).sum(1).double() / positive.sum()).numpy()
    fpr = ((predicted & ~positive[None]).sum(1).double() / (~positive).sum()).numpy()
    area = float(((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2).sum())
    return RocCurve(fpr, tpr, thresholds.double().numpy(), area)


def binary_report(labels, scores, threshold: float = 0.5) -> BinaryReport:
    """Confusion counts, accuracy, precision, recall, specificity, F1 and AUC at ``threshold``."""
    from sklearn import metrics

    y, s = _arrays(labels, scores)
    predicted = (s >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in metrics.confusion_matrix(y, predicted, labels=[0, 1]).ravel())
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        y, predicted, labels=[1], zero_division=0)
    auc = float(metrics.roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None
    return BinaryReport(
        threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn,
        accuracy=(tp + tn) / max(len(y), 1), precision=float(precision[0]), recall=float(recall[0]),
        specificity=tn / (tn + fp) if tn + fp else 0.0, f1=float(f1[0]), auc=auc,
    )


def multiclass_report(labels, scores, top_k: Sequence[int] = (1, 5)) -> MulticlassReport:
    """Accuracy, per-class accuracy, n-class confusion, top-k accuracy (k < n_classes) and macro F1."""
    from sklearn import metrics

    y, s = _arrays(labels, scores)
    n_classes = s.shape[1]
    classes = list(range(n_classes))
    predicted = s.argmax(axis=1)
    confusion = metrics.confusion_matrix(y, predicted, labels=classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / confusion.sum(axis=1)
    top = {k: float(metrics.top_k_accuracy_score(y, s, k=k, labels=classes)) for k in top_k if k < n_classes}
    return MulticlassReport(
        n_classes=n_classes,
        accuracy=float(metrics.accuracy_score(y, predicted)),
        per_class_accuracy=tuple(float(v) for v in per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        top_k_accuracy=top,
        macro_f1=float(metrics.f1_score(y, predicted, labels=classes, average="macro", zero_division=0)),
    )


def choose_threshold(labels, scores, rule: str = "f1", fixed: float = 0.5) -> ThresholdChoice:
    """Picks the decision threshold by a named rule.

    Rules: ``f1`` (the score threshold with the highest F1), ``youden`` (highest TPR - FPR),
    ``fixed`` (``fixed``, reported with its F1).
    """
    from sklearn import metrics

    if rule not in THRESHOLD_RULES:
        raise MedcadError(f"unknown threshold rule {rule!r} (choose one of {', '.join(THRESHOLD_RULES)})")
    y, s = _arrays(labels, scores)
    if rule == "fixed":
        return ThresholdChoice(rule, float(fixed), binary_report(y, s, fixed).f1)
    if rule == "youden":
        fpr, tpr, thresholds = metrics.roc_curve(y, s, drop_intermediate=False)
        finite = np.isfinite(thresholds)
        best = int(np.argmax(np.where(finite, tpr - fpr, -np.inf)))
        return ThresholdChoice(rule, float(thresholds[best]), float(tpr[best] - fpr[best]))
    precision, recall, thresholds = metrics.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]))
    best = int(np.argmax(f1))
    return ThresholdChoice(rule, float(thresholds[best]), float(f1[best]))


class ScoreAccumulator:
    """Collects labels and scores batch by batch; ``compute`` reports on everything seen since ``reset``.

    Scores of shape (n,) make a binary report at ``threshold``; (n, n_classes) a multi-class one.
    """

    def __init__(self, threshold: float = 0.5, top_k: Sequence[int] = (1, 5)):
        self.threshold = threshold
        self.top_k = tuple(top_k)
        self.reset()

    def reset(self) -> None:
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def update(self, labels, scores) -> None:
        y, s = _arrays(labels, scores)
        self._labels.append(y)
        self._scores.append(s)

    def compute(self) -> BinaryReport | MulticlassReport:
        if not self._labels:
            raise MedcadError("no labels and scores collected yet (call update first)")
        y, s = np.concatenate(self._labels), np.concatenate(self._scores)
        if s.ndim == 1:
            return binary_report(y, s, self.threshold)
        return multiclass_report(y, s, self.top_k)
