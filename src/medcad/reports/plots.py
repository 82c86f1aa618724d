"""Plots as PNG files: the FROC curve with its bootstrap band, ROC curves with operating points.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), so
this works on machines without a display and does not disturb a notebook's backend. Files are
written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medcad.io.atomic import atomic_path
from medcad.metrics.classification import RocCurve
from medcad.metrics.detection import DetectionEvaluation


@dataclass(frozen=True)
class MarkedPoint:
    """A point to mark on a ROC plot (an operating point)."""

    label: str
    fpr: float
    tpr: float


def _figure(width: float = 6.4, height: float = 4.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, path: str | Path) -> Path:
    target = Path(path)
    figure.tight_layout()
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png")
    return target


def _fraction_label(rate: float) -> str:
    return f"1/{round(1 / rate)}" if rate < 1 else f"{rate:g}"


def plot_froc(evaluation: DetectionEvaluation, path: str | Path, title: str = "FROC") -> Path:
    """FROC (sensitivity vs false positives per scan, log x) with the CI band and the CPM points."""
    figure, axes = _figure()
    curve = evaluation.curve
    visible = curve.fps_per_scan > 0
    axes.plot(curve.fps_per_scan[visible], curve.sensitivity[visible], color="#0077bb", label="FROC")
    interval = evaluation.interval
    if interval is not None:
        axes.fill_between(interval.band_fps, interval.band_low, interval.band_high, color="#0077bb",
                          alpha=0.2, label=f"{interval.confidence:.0%} CI ({interval.n_resamples} bootstraps)")
    axes.plot(evaluation.fp_rates, evaluation.sensitivities, "o", color="#cc3311",
              label=f"CPM {evaluation.cpm:.3f}")
    axes.set_xscale("log")
    axes.set_xlim(min(evaluation.fp_rates) / 1.5, max(evaluation.fp_rates) * 1.5)
    axes.set_xticks(evaluation.fp_rates, [_fraction_label(r) for r in evaluation.fp_rates])
    axes.minorticks_off()
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("average false positives per scan")
    axes.set_ylabel("sensitivity")
    axes.set_title(f"{title} ({curve.n_scans} scans, {curve.n_nodules} nodules)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_roc(curves: Sequence[tuple[str, RocCurve]], path: str | Path, title: str = "ROC",
             points: Sequence[MarkedPoint] = ()) -> Path:
    """ROC curves (label with AUC in the legend) and marked operating points."""
    figure, axes = _figure()
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
    for label, curve in curves:
        axes.plot(curve.fpr, curve.tpr, label=f"{label}, AUC={curve.auc:.3f}")
    for point in points:
        axes.scatter([point.fpr], [point.tpr], color="#cc3311", zorder=3)
        axes.annotate(point.label, (point.fpr, point.tpr), textcoords="offset points", xytext=(6, -12))
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)
