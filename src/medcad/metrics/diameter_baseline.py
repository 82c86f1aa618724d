"""Malignancy baseline by nodule diameter (the book, section 14.5.2): "malignant if diameter >= t".

Any malignancy model has to beat this. ``method="exact"`` takes every distinct diameter as a
threshold (the AUC equals ``sklearn.metrics.roc_auc_score(is_malignant, diameter_mm)``);
``method="book"`` is the book's approximation: 100 thresholds from
``torch.linspace(max, min)`` and trapezoids. The book marks two operating points on its curve,
at 10.55 mm and 5.42 mm (its thresholds 62 and 88 on its validation nodules).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from medcad.errors import MedcadError
from medcad.io.luna import MalignancyNodule
from medcad.metrics.classification import RocCurve, linspace_roc, roc_curve

BOOK_OPERATING_POINTS_MM = (10.55, 5.42)
METHODS = ("exact", "book")


@dataclass(frozen=True)
class OperatingPoint:
    """Rates of "malignant if diameter >= threshold_mm"."""

    threshold_mm: float
    fpr: float
    tpr: float


@dataclass(frozen=True, eq=False)
class DiameterBaseline:
    """ROC and AUC of the diameter baseline on a set of nodules."""

    method: str
    roc: RocCurve
    operating_points: tuple[OperatingPoint, ...]
    n_malignant: int
    n_benign: int

    @property
    def auc(self) -> float:
        return self.roc.auc


def diameter_baseline(nodules: Sequence[MalignancyNodule], method: str = "exact",
                      series_uids: Iterable[str] | None = None,
                      operating_points_mm: Sequence[float] = BOOK_OPERATING_POINTS_MM) -> DiameterBaseline:
    """The diameter baseline over ``nodules`` (only those of ``series_uids`` when given, e.g. a split)."""
    if method not in METHODS:
        raise MedcadError(f"unknown baseline method {method!r} (choose one of {', '.join(METHODS)})")
    if series_uids is not None:
        wanted = set(series_uids)
        nodules = [n for n in nodules if n.series_uid in wanted]
    diameters = np.asarray([n.diameter_mm for n in nodules], dtype=float)
    malignant = np.asarray([n.is_malignant for n in nodules], dtype=bool)
    if malignant.all() or not malignant.any():
        raise MedcadError(f"the diameter baseline needs benign and malignant nodules "
                          f"({malignant.sum()} malignant of {len(malignant)})")
    if method == "exact":
        roc = roc_curve(malignant, diameters)
    else:
        roc = linspace_roc(malignant, diameters, diameters.max(), diameters.min())
    points = tuple(
        OperatingPoint(float(t), float((diameters[~malignant] >= t).mean()), float((diameters[malignant] >= t).mean()))
        for t in operating_points_mm
    )
    return DiameterBaseline(method, roc, points, int(malignant.sum()), int((~malignant).sum()))
