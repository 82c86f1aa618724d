"""The book's end-to-end confusion matrix (*Deep Learning with PyTorch*, chapter 14, ``match_and_score``).

Rows are the truth: Non-Nodules (findings that match no reference nodule), Benign, Malignant.
Columns are what the CAD did: Complete Miss (no finding matches the nodule), Filtered Out (a finding
matches but its nodule probability is below the nodule threshold), Pred. Benign, Pred. Malignant
(nodule probability at or above the threshold, malignancy probability below / at or above the
malignancy threshold). Without a malignancy model the last two columns merge into Pred. Nodule.

The book's rules, kept here:

- a finding matches a nodule when distance / diameter_mm < 0.7 (a looser rule than LUNA16's
  distance < diameter / 2);
- a nodule matched by several findings takes the "highest" column among them (Pred. Malignant >
  Pred. Benign > Filtered Out); a finding matching several nodules counts for all of them;
- a finding that matches no nodule lands in the Non-Nodules row under its own column (the
  Non-Nodules / Complete Miss cell has no meaning and is shown blank);
- thresholds 0.5 for both probabilities; a finding without a malignancy probability is
  Pred. Benign, as the book's zero malignancy probabilities are. (The book compares the
  malignancy probability against its nodule threshold; both are 0.5 there, so the defaults agree.)

A nodule table without malignancy (``annotations.csv``) puts every nodule in the Benign row and
marks the matrix ``malignancy_known = False``, so reports show one row, "Nodules".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medcad.metrics.detection import Scored, Sized, group_by_series, squared_distances

MATCH_DISTANCE_OVER_DIAMETER = 0.7
NODULE_THRESHOLD = 0.5
MALIGNANCY_THRESHOLD = 0.5
ROW_LABELS = ("Non-Nodules", "Benign", "Malignant")
COLUMN_LABELS = ("Complete Miss", "Filtered Out", "Pred. Benign", "Pred. Malignant")
NON_NODULE, BENIGN, MALIGNANT = 0, 1, 2
MISS, FILTERED, PRED_BENIGN, PRED_MALIGNANT = 0, 1, 2, 3


@dataclass(frozen=True, eq=False)
class CadConfusion:
    """The book's confusion matrix of a set of scans, per scan and in total.

    Attributes:
        per_scan: (3, 4) counts per series UID, in evaluation order.
        total: (3, 4) counts summed over the scans.
        with_malignancy_model: some finding carries a malignancy probability (4 columns, not 3).
        malignancy_known: the reference nodules say benign / malignant (3 rows, not 2).
    """

    per_scan: Mapping[str, np.ndarray]
    total: np.ndarray
    with_malignancy_model: bool
    malignancy_known: bool


def finding_column(finding: Scored, nodule_threshold: float = NODULE_THRESHOLD,
                   malignancy_threshold: float = MALIGNANCY_THRESHOLD) -> int:
    """The column a finding falls in: Filtered Out, Pred. Benign or Pred. Malignant."""
    if finding.nodule_prob < nodule_threshold:
        return FILTERED
    malignancy = getattr(finding, "malignancy_prob", None)
    if malignancy is None or malignancy < malignancy_threshold:
        return PRED_BENIGN
    return PRED_MALIGNANT


def book_matches(findings: Sequence[Scored], nodules: Sequence[Sized]) -> np.ndarray:
    """(n_nodules, n_findings) booleans: distance / diameter < 0.7."""
    diameters = np.asarray([n.diameter_mm for n in nodules], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.sqrt(squared_distances(nodules, findings)) / diameters[:, None]
    return ratio < MATCH_DISTANCE_OVER_DIAMETER


def match_and_score(findings: Sequence[Scored], nodules: Sequence[Sized],
                    nodule_threshold: float = NODULE_THRESHOLD,
                    malignancy_threshold: float = MALIGNANCY_THRESHOLD) -> np.ndarray:
    """One scan's (3, 4) confusion counts by the book's rules (see the module docstring)."""
    columns = np.asarray([finding_column(f, nodule_threshold, malignancy_threshold) for f in findings], dtype=int)
    matches = book_matches(findings, nodules)
    counts = np.zeros((3, 4), dtype=np.int64)
    for column in columns[~matches.any(axis=0)]:
        counts[NON_NODULE, column] += 1
    for nodule, row in zip(nodules, matches):
        column = int(columns[row].max()) if row.any() else MISS
        counts[MALIGNANT if getattr(nodule, "is_malignant", False) else BENIGN, column] += 1
    return counts


def cad_confusion(findings_by_series: Mapping[str, Sequence[Scored]], nodules: Iterable[Sized],
                  series_uids: Iterable[str] | None = None, nodule_threshold: float = NODULE_THRESHOLD,
                  malignancy_threshold: float = MALIGNANCY_THRESHOLD) -> CadConfusion:
    """The book's confusion matrix per scan and in total over the evaluated scans."""
    nodule_list = list(nodules)
    nodules_by_series = group_by_series(nodule_list)
    uids = list(dict.fromkeys(findings_by_series if series_uids is None else series_uids))
    per_scan = {
        uid: match_and_score(findings_by_series.get(uid, ()), nodules_by_series.get(uid, ()),
                             nodule_threshold, malignancy_threshold)
        for uid in uids
    }
    total = sum(per_scan.values(), np.zeros((3, 4), dtype=np.int64))
    with_model = any(getattr(f, "malignancy_prob", None) is not None
                     for uid in uids for f in findings_by_series.get(uid, ()))
    known = bool(nodule_list) and all(getattr(n, "is_malignant", None) is not None for n in nodule_list)
    return CadConfusion(per_scan, total, with_model, known)


def matched_malignancy(findings_by_series: Mapping[str, Sequence[Scored]], nodules: Iterable[Sized],
                       series_uids: Iterable[str], nodule_threshold: float = NODULE_THRESHOLD,
                       ) -> tuple[list, np.ndarray]:
    """The reference nodules the CAD detected and their malignancy scores, for a malignancy ROC.

    A nodule is detected when a finding matches it by the book's rule with nodule probability at or
    above ``nodule_threshold`` and a malignancy probability; its score is the highest malignancy
    probability among those findings (as the confusion matrix takes the "highest" column).
    """
    nodules_by_series = group_by_series(nodules)
    detected, scores = [], []
    for uid in series_uids:
        findings = [f for f in findings_by_series.get(uid, ())
                    if f.nodule_prob >= nodule_threshold and getattr(f, "malignancy_prob", None) is not None]
        scan_nodules = nodules_by_series.get(uid, [])
        for nodule, row in zip(scan_nodules, book_matches(findings, scan_nodules)):
            if row.any():
                detected.append(nodule)
                scores.append(max(f.malignancy_prob for f, hit in zip(findings, row) if hit))
    return detected, np.asarray(scores, dtype=float)
