"""TensorBoard extras for binary classifiers: the book's ``label_neg`` / ``label_pos`` histograms and a ROC figure.

The book (chapter 11-12) logs, each epoch, a histogram of the predicted positive probability over
the true negatives (``label_neg``) and over the true positives (``label_pos``): two humps that
move apart as the classifier learns. :class:`ScoreRecorder` is a fit-loop metrics accumulator that
keeps the last pass's labels and scores so a callback can draw them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from medcad.training.metrics import ClassifierMetrics, positive_scores, probabilities


class ScoreRecorder(ClassifierMetrics):
    """:class:`ClassifierMetrics` that also keeps the labels and positive scores of the last pass."""

    def reset(self) -> None:
        super().reset()
        self.labels: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        super().update(outputs, targets)
        self.labels.append(targets.detach().cpu().numpy())
        self.scores.append(positive_scores(probabilities(outputs.detach().float())).cpu().numpy())

    def last_pass(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) of everything since the last reset."""
        if not self.labels:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(self.labels), np.concatenate(self.scores)


def log_label_histograms(writer, labels: np.ndarray, scores: np.ndarray, step: int, prefix: str = "val") -> None:
    """The book's ``label_neg`` / ``label_pos`` histograms of the positive-class probability."""
    if scores.ndim != 1:
        return
    bins = np.linspace(0.0, 1.0, 51)
    for name, chosen in (("label_neg", labels == 0), ("label_pos", labels == 1)):
        if chosen.any():
            writer.add_histogram(f"{prefix}/{name}", scores[chosen], step, bins=bins)


def log_roc_figure(writer, labels: np.ndarray, scores: np.ndarray, step: int, prefix: str = "val") -> None:
    """A ROC curve figure (with AUC) of a binary pass; skipped when one class is absent."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medcad.metrics.classification import roc_curve

    if scores.ndim != 1 or len(np.unique(labels)) < 2:
        return
    curve = roc_curve(labels, scores)
    figure = Figure(figsize=(4, 4), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(curve.fpr, curve.tpr, label=f"AUC {curve.auc:.3f}")
    axes.plot([0, 1], [0, 1], "--", color="grey")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(loc="lower right")
    writer.add_figure(f"{prefix}/roc", figure, step)


def score_figures_callback(recorder: ScoreRecorder, logger):
    """A fit callback logging the validation pass's histograms and ROC to the run's TensorBoard."""

    def callback(row: Mapping, _model) -> None:
        if logger is None or getattr(logger, "tensorboard", None) is None:
            return
        labels, scores = recorder.last_pass()
        if len(labels):
            writer = logger.tensorboard.writer
            log_label_histograms(writer, labels, scores, int(row["epoch"]))
            log_roc_figure(writer, labels, scores, int(row["epoch"]))
            writer.flush()

    return callback
