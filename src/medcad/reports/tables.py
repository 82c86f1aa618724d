"""Printed tables: FROC with CPM and CI, the book's confusion matrix, the diameter baseline.

Tables are ``rich`` tables for the terminal; ``book_confusion_text`` prints the confusion matrix in
the book's plain-text layout (16-character right-aligned cells joined by `` | ``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.table import Table

from medcad.metrics.book_confusion import COLUMN_LABELS, NON_NODULE, ROW_LABELS, CadConfusion
from medcad.metrics.detection import DetectionEvaluation
from medcad.metrics.diameter_baseline import DiameterBaseline

BOOK_CELL_WIDTH = 16


def confusion_layout(counts: np.ndarray, with_malignancy_model: bool,
                     malignancy_known: bool) -> tuple[list[str], list[list[str]]]:
    """Column labels and labelled rows of strings, in the book's layout.

    Without a malignancy model the Pred. Benign and Pred. Malignant columns merge into Pred. Nodule;
    without malignancy in the reference the Benign and Malignant rows merge into Nodules.
    """
    table = np.asarray(counts, dtype=np.int64).copy()
    columns = list(COLUMN_LABELS)
    if not with_malignancy_model:
        table[:, -2] += table[:, -1]
        table = table[:, :-1]
        columns = columns[:-2] + ["Pred. Nodule"]
    row_labels = list(ROW_LABELS)
    if not malignancy_known:
        table = np.vstack([table[0], table[1] + table[2]])
        row_labels = [ROW_LABELS[0], "Nodules"]
    rows = []
    for index, (label, values) in enumerate(zip(row_labels, table)):
        cells = [str(int(v)) for v in values]
        if index == NON_NODULE:
            cells[0] = ""  # a non-nodule cannot be "missed"
        rows.append([label, *cells])
    return columns, rows


def book_confusion_text(label: str, counts: np.ndarray, with_malignancy_model: bool,
                        malignancy_known: bool = True) -> str:
    """The confusion matrix as the book prints it (``print_confusion`` in ``nodule_analysis.py``)."""
    columns, rows = confusion_layout(counts, with_malignancy_model, malignancy_known)
    def line(cells: Sequence[str]) -> str:
        return " | ".join(f"{cell:>{BOOK_CELL_WIDTH}}" for cell in cells)
    return "\n".join([label, line(["", *columns]), *(line(row) for row in rows)])


def confusion_table(confusion: CadConfusion, title: str = "Confusion (book's match_and_score), total") -> Table:
    """The total confusion matrix as a rich table."""
    columns, rows = confusion_layout(confusion.total, confusion.with_malignancy_model, confusion.malignancy_known)
    table = Table(title=title, caption=f"{len(confusion.per_scan)} scans")
    table.add_column("")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def froc_table(evaluation: DetectionEvaluation, title: str = "FROC (LUNA16 rules)") -> Table:
    """Sensitivity at each FP rate with its bootstrap CI, then the CPM."""
    interval = evaluation.interval
    table = Table(title=title, caption=(
        f"{evaluation.curve.n_scans} scans, {evaluation.curve.n_nodules} nodules, "
        f"{evaluation.n_detected} detected at any threshold, {evaluation.n_false_positives} false positives"))
    table.add_column("FP / scan", justify="right")
    table.add_column("sensitivity", justify="right")
    ci_header = f"{interval.confidence:.0%} CI" if interval else "CI"
    table.add_column(ci_header, justify="right")
    for index, (rate, sensitivity) in enumerate(zip(evaluation.fp_rates, evaluation.sensitivities)):
        ci = (f"{interval.sensitivity_low[index]:.3f} - {interval.sensitivity_high[index]:.3f}"
              if interval else "")
        table.add_row(f"{rate:g}", f"{sensitivity:.3f}", ci)
    table.add_section()
    table.add_row("CPM", f"{evaluation.cpm:.3f}",
                  f"{interval.cpm_low:.3f} - {interval.cpm_high:.3f}" if interval else "")
    return table


def baseline_table(baselines: Sequence[DiameterBaseline], title: str = "Malignancy baseline: diameter") -> Table:
    """AUC of the diameter baseline per method, with its operating points."""
    table = Table(title=title)
    for column in ("method", "malignant", "benign", "AUC"):
        table.add_column(column, justify="left" if column == "method" else "right")
    thresholds = [p.threshold_mm for p in baselines[0].operating_points] if baselines else []
    for threshold in thresholds:
        table.add_column(f">= {threshold:g} mm: FPR, TPR", justify="right")
    for baseline in baselines:
        points = [f"{p.fpr:.2f}, {p.tpr:.2f}" for p in baseline.operating_points]
        table.add_row(baseline.method, str(baseline.n_malignant), str(baseline.n_benign), f"{baseline.auc:.3f}", *points)
    return table
