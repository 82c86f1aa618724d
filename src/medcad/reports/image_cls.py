"""What image classification shows: tables (data summary, metrics, confusion, top-k predictions) and
figures (data summary, confusion matrix, sample images with true and top-k predicted labels).

Figures use the Agg helpers of :mod:`medcad.reports.plots` and are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from medcad.reports.plots import _figure, _save


def summary_table(summary) -> Table:
    """Images per class and split, with patients per split (a :class:`medcad.data.images.DataSummary`)."""
    splits = list(summary.counts)
    table = Table(title=f"{summary.root}", caption=f"split: {summary.made_by}")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for name in summary.class_names:
        values = [summary.counts[s][name] for s in splits]
        table.add_row(name, *map(str, values), str(sum(values)))
    table.add_section()
    totals = [sum(summary.counts[s].values()) for s in splits]
    table.add_row("images", *map(str, totals), str(sum(totals)))
    table.add_row("patients", *(str(summary.patients[s]) for s in splits), str(sum(summary.patients.values())))
    return table


def sizes_table(summary, limit: int = 8) -> Table:
    """The most common image sizes (width x height) and colour modes."""
    table = Table(title="image sizes")
    table.add_column("width x height")
    table.add_column("images", justify="right")
    ranked = sorted(summary.sizes.items(), key=lambda item: -item[1])
    for (width, height), count in ranked[:limit]:
        table.add_row(f"{width} x {height}", str(count))
    if len(ranked) > limit:
        table.add_row(f"{len(ranked) - limit} other sizes", str(sum(c for _, c in ranked[limit:])))
    table.caption = "modes: " + ", ".join(f"{mode} {count}" for mode, count in sorted(summary.modes.items()))
    return table


def metrics_table(evaluation, title: str = "image classification") -> Table:
    """Per-class recall (per-class accuracy), precision and image counts; overall accuracy (and AUC)."""
    report = evaluation.report
    table = Table(title=title)
    for column in ("class", "images", "recall", "precision"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for i, name in enumerate(evaluation.class_names):
        table.add_row(name, str(sum(report.confusion[i])), f"{report.per_class_accuracy[i]:.3f}",
                      f"{evaluation.precision[i]:.3f}")
    table.add_section()
    table.add_row("accuracy", str(len(evaluation.labels)), f"{report.accuracy:.3f}", "")
    if evaluation.auc is not None:
        table.add_row(f"AUC ({evaluation.class_names[1]})", "", f"{evaluation.auc:.3f}", "")
    for k, value in report.top_k_accuracy.items():
        table.add_row(f"top-{k} accuracy", "", f"{value:.3f}", "")
    return table


def confusion_table(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> Table:
    """Rows: true class; columns: predicted class."""
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("true \\ predicted")
    for name in class_names:
        table.add_column(name, justify="right")
    for name, row in zip(class_names, confusion):
        table.add_row(name, *map(str, row))
    return table


def prediction_table(prediction) -> Table:
    """One image's top-k classes with their probabilities."""
    table = Table(title=prediction.path, min_width=min(len(prediction.path) + 4, 160))
    table.add_column("rank", justify="right")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for rank, (name, probability) in enumerate(prediction.top, start=1):
        table.add_row(str(rank), name, f"{probability:.4f}")
    return table


def plot_confusion_matrix(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                          title: str = "confusion matrix") -> Path:
    """Counts in each cell, shaded by the share of the true class (row-normalised)."""
    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.0 + 0.9 * len(class_names)
    figure, axes = _figure(size + 1.0, size)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(counts):
        axes.text(column, row, f"{int(value)}", ha="center", va="center",
                  color="white" if shares[row, column] > 0.5 else "black")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    return _save(figure, path)


def plot_predictions(images: Sequence, true_names: Sequence[str], top: Sequence[Sequence[tuple[str, float]]],
                     path: str | Path, columns: int = 4, title: str = "test images: true and top-k predicted") -> Path:
    """A grid of images, each titled with its true class and its top-k classes (green: top-1 correct)."""
    rows = -(-len(images) // columns) or 1
    figure, _ = _figure(3.2 * columns, 2.9 * rows)
    figure.clear()
    for index, (image, truth, ranked) in enumerate(zip(images, true_names, top)):
        axes = figure.add_subplot(rows, columns, index + 1)
        array = np.asarray(image)
        axes.imshow(array, cmap="gray" if array.ndim == 2 else None)
        axes.set_axis_off()
        lines = [f"true: {truth}"] + [f"{name} {p:.2f}" for name, p in ranked]
        correct = bool(ranked) and ranked[0][0] == truth
        axes.set_title("\n".join(lines), fontsize=8, color="#117733" if correct else "#cc3311")
    figure.suptitle(title)
    return _save(figure, path)


def plot_data_summary(summary, path: str | Path) -> Path:
    """Images per class per split (grouped bars) and image sizes (width against height, marker area = count)."""
    figure, _ = _figure(11.0, 4.2)
    figure.clear()
    bars = figure.add_subplot(1, 2, 1)
    splits = list(summary.counts)
    width = 0.8 / max(len(splits), 1)
    positions = np.arange(len(summary.class_names))
    for i, split in enumerate(splits):
        values = [summary.counts[split][name] for name in summary.class_names]
        bars.bar(positions + i * width - 0.4 + width / 2, values, width, label=f"{split} ({summary.patients[split]} patients)")
    bars.set_xticks(positions, summary.class_names, rotation=30 if len(summary.class_names) > 4 else 0)
    highest = max((v for counts in summary.counts.values() for v in counts.values()), default=1)
    bars.set_ylim(0, 1.4 * highest)  # room for the legend above the bars
    bars.set_ylabel("images")
    bars.set_title("images per class and split")
    bars.legend(fontsize="small", loc="upper right")
    scatter = figure.add_subplot(1, 2, 2)
    sizes = list(summary.sizes.items())
    if sizes:
        counts = np.array([c for _, c in sizes], dtype=float)
        scatter.scatter([w for (w, _), _ in sizes], [h for (_, h), _ in sizes], s=20 + 200 * counts / counts.max(),
                        alpha=0.6)
        for (w, h), count in sizes:
            scatter.annotate(str(count), (w, h), textcoords="offset points", xytext=(5, 5), fontsize=8)
    scatter.set_xlabel("width (pixels)")
    scatter.set_ylabel("height (pixels)")
    scatter.set_title("image sizes (label: images)")
    scatter.grid(alpha=0.3)
    return _save(figure, path)
