"""The evaluation of a CAD run against a reference: what ``medcad evaluate`` computes, prints and writes.

It combines the LUNA16 FROC analysis (``metrics.detection``), the book's confusion matrix
(``metrics.book_confusion``), a finding-level ROC (hits vs false positives, the pairs the LUNA16
script's FROC is built from) and, when the reference has malignancy and the findings carry
malignancy probabilities, the malignancy ROC of the detected nodules next to the diameter baseline
on the same nodules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcad.io.atomic import write_text_atomic
from medcad.metrics.book_confusion import (
    COLUMN_LABELS, MALIGNANCY_THRESHOLD, NODULE_THRESHOLD, ROW_LABELS, CadConfusion, cad_confusion,
    matched_malignancy,
)
from medcad.metrics.classification import RocCurve, roc_curve
from medcad.metrics.detection import DEFAULT_MAX_FINDINGS, DetectionEvaluation, Scored, Sized, evaluate_detection
from medcad.metrics.diameter_baseline import DiameterBaseline, diameter_baseline

FORMAT_NAME = "medcad-evaluation"
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """All results of one evaluation, and the settings that produced them."""

    detection: DetectionEvaluation
    confusion: CadConfusion
    findings_roc: RocCurve | None
    malignancy_roc: RocCurve | None
    malignancy_baseline: DiameterBaseline | None
    settings: Mapping[str, object] = field(default_factory=dict)


def evaluate_findings(findings_by_series: Mapping[str, Sequence[Scored]], nodules: Sequence[Sized],
                      series_uids: Iterable[str], malignancy_nodules: Sequence[Sized] | None = None,
                      excluded: Sequence[Sized] = (), max_findings: int | None = DEFAULT_MAX_FINDINGS,
                      n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95,
                      nodule_threshold: float = NODULE_THRESHOLD,
                      malignancy_threshold: float = MALIGNANCY_THRESHOLD,
                      settings: Mapping[str, object] | None = None) -> EvaluationReport:
    """Scores findings on the scans ``series_uids`` against ``nodules`` (``annotations.csv``).

    ``malignancy_nodules`` (``annotations_with_malignancy.csv``), when given, are the truth of the
    confusion matrix's Benign / Malignant rows, as in the book; otherwise ``nodules`` are, in one row.
    """
    uids = list(dict.fromkeys(series_uids))
    detection = evaluate_detection(findings_by_series, nodules, uids, excluded, max_findings, n_bootstrap,
                                   seed, confidence)
    confusion = cad_confusion(findings_by_series, malignancy_nodules if malignancy_nodules is not None else nodules,
                              uids, nodule_threshold, malignancy_threshold)
    hits = [p for s in detection.scans for p in s.hit_probs if p is not None]
    false_positives = [p for s in detection.scans for p in s.fp_probs]
    findings_roc = (roc_curve([1] * len(hits) + [0] * len(false_positives), hits + false_positives)
                    if hits and false_positives else None)
    malignancy_roc = baseline = None
    if malignancy_nodules is not None and confusion.with_malignancy_model:
        detected, scores = matched_malignancy(findings_by_series, malignancy_nodules, uids, nodule_threshold)
        labels = np.asarray([n.is_malignant for n in detected], dtype=bool)
        if labels.any() and not labels.all():
            malignancy_roc = roc_curve(labels, scores)
            baseline = diameter_baseline(detected)
    return EvaluationReport(detection, confusion, findings_roc, malignancy_roc, baseline, dict(settings or {}))


def _finite(values) -> list[float | None]:
    """Floats for JSON, with None for infinities and NaN (JSON has neither)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def report_document(report: EvaluationReport) -> dict:
    """The report as a JSON-ready dict."""
    detection, confusion, interval = report.detection, report.confusion, report.detection.interval
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "settings": dict(report.settings),
        "scans": detection.curve.n_scans,
        "nodules": detection.curve.n_nodules,
        "detected": detection.n_detected,
        "false_positives": detection.n_false_positives,
        "froc": {
            "fp_rates": list(detection.fp_rates),
            "sensitivity": _finite(detection.sensitivities),
            "cpm": detection.cpm,
            "ci": None if interval is None else {
                "confidence": interval.confidence, "n_resamples": interval.n_resamples, "seed": interval.seed,
                "sensitivity_low": _finite(interval.sensitivity_low),
                "sensitivity_high": _finite(interval.sensitivity_high),
                "cpm_low": interval.cpm_low, "cpm_high": interval.cpm_high,
            },
            "curve": {
                "fps_per_scan": _finite(detection.curve.fps_per_scan),
                "sensitivity": _finite(detection.curve.sensitivity),
                "thresholds": _finite(detection.curve.thresholds),
            },
        },
        "confusion": {
            "rows": list(ROW_LABELS), "columns": list(COLUMN_LABELS),
            "with_malignancy_model": confusion.with_malignancy_model,
            "malignancy_known": confusion.malignancy_known,
            "total": confusion.total.tolist(),
            "per_scan": {uid: counts.tolist() for uid, counts in confusion.per_scan.items()},
        },
        "per_scan": [
            {"series_uid": s.series_uid, "nodules": s.n_nodules,
             "detected": sum(p is not None for p in s.hit_probs), "false_positives": len(s.fp_probs),
             "double_hits": s.double_hits, "excluded_hits": s.excluded_hits, "over_cap": s.over_cap}
            for s in detection.scans
        ],
        "findings_auc": None if report.findings_roc is None else report.findings_roc.auc,
    }
    if report.malignancy_roc is not None:
        baseline = report.malignancy_baseline
        document["malignancy"] = {
            "detected_nodules": baseline.n_malignant + baseline.n_benign,
            "malignant": baseline.n_malignant, "auc": report.malignancy_roc.auc,
            "diameter_baseline_auc": baseline.auc,
        }
    return document


def write_report(report: EvaluationReport, out_dir: str | Path) -> list[Path]:
    """Writes ``evaluation.json``, ``froc.png`` and the ROC plots into ``out_dir``; returns the paths."""
    from medcad.reports.plots import MarkedPoint, plot_froc, plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "evaluation.json"
    write_text_atomic(json_path, json.dumps(report_document(report), indent=1) + "\n")
    written = [json_path, plot_froc(report.detection, out / "froc.png")]
    if report.findings_roc is not None:
        written.append(plot_roc([("findings: nodule hit vs false positive", report.findings_roc)],
                                out / "roc_findings.png", title="ROC of findings (LUNA16 hits)"))
    if report.malignancy_roc is not None:
        baseline = report.malignancy_baseline
        written.append(plot_roc(
            [("malignancy model", report.malignancy_roc), ("diameter baseline", baseline.roc)],
            out / "roc_malignancy.png", title="Malignancy ROC of the detected nodules",
            points=[MarkedPoint(f"{p.threshold_mm:g} mm", p.fpr, p.tpr) for p in baseline.operating_points]))
    return written
