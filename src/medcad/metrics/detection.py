"""Detection scoring the LUNA16 way: hits within the nodule radius, the FROC curve, CPM, bootstrap CI.

The rules (those of the LUNA16 evaluation script, ``noduleCADEvaluationLUNA16.py``):

- a finding *hits* a reference nodule when the distance between centres is < diameter_mm / 2;
- several hits on one nodule count once, with the highest probability; the other hits are neither
  true nor false positives; a finding that hits two nodules counts for both;
- a finding that hits no reference nodule but an *excluded* one (``annotations_excluded.csv``;
  diameter -1 there means 10 mm) is dropped: neither true nor false positive;
- every other finding is a false positive; a nodule nobody hits counts toward sensitivity as missed;
- each scan keeps its ``max_findings`` most probable findings (100 by default; ties at the cut
  are broken by file order, where the script drops every finding tied with the first one cut).

The FROC curve has one point per distinct probability threshold t: sensitivity = nodules whose
best hit has probability >= t over all nodules, false positives per scan = false positives with
probability >= t over the number of scans, starting at (0, 0). The sensitivity at a given FP rate
is read off the polyline through those points (linear between points; at an FP rate reached by
several points, the best sensitivity; beyond the last point, the last sensitivity): the same as
``np.interp(rate, fps, sens)`` on the script's curve (sklearn's ROC rescaled; a test checks it),
taken at the exact rate rather than at the nearest point of the script's 10,001-point grid.
CPM is the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan.

The confidence interval resamples scans with replacement (``n_bootstrap`` times, seeded) and takes
the percentile interval of each sensitivity and of the CPM.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
EXCLUDED_UNKNOWN_DIAMETER_MM = 10.0
DEFAULT_MAX_FINDINGS = 100
_ENTRIES_PER_CHUNK = 2_000_000


class Located(Protocol):
    """Anything with a world position in mm (findings, reference nodules)."""

    series_uid: str
    center_xyz: tuple[float, float, float]


class Sized(Located, Protocol):
    """A reference nodule: a position and a diameter in mm."""

    diameter_mm: float


class Scored(Located, Protocol):
    """A finding: a position and a nodule probability."""

    nodule_prob: float


@dataclass(frozen=True)
class ScanScore:
    """One scan's part of the FROC analysis.

    Attributes:
        series_uid: the scan.
        hit_probs: per reference nodule, the highest probability among the findings that hit it
            (None when no finding does: a missed nodule).
        fp_probs: probabilities of the false positives.
        double_hits: findings that hit a nodule already hit by a more probable finding (ignored).
        excluded_hits: findings dropped because they hit only an excluded finding.
        over_cap: findings dropped because the scan had more than ``max_findings``.
    """

    series_uid: str
    hit_probs: tuple[float | None, ...]
    fp_probs: tuple[float, ...]
    double_hits: int = 0
    excluded_hits: int = 0
    over_cap: int = 0

    @property
    def n_nodules(self) -> int:
        return len(self.hit_probs)


@dataclass(frozen=True, eq=False)
class FrocCurve:
    """The FROC curve: one point per distinct threshold, the first at (0, 0) with threshold +inf."""

    fps_per_scan: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    n_scans: int
    n_nodules: int

    def sensitivity_at(self, fp_rates: Iterable[float]) -> np.ndarray:
        """Sensitivity at the given false positives per scan (see the module docstring)."""
        return _sensitivity_at(self.fps_per_scan[None], self.sensitivity[None], fp_rates)[0]


@dataclass(frozen=True, eq=False)
class BootstrapInterval:
    """Percentile confidence interval from resampling scans.

    Attributes:
        sensitivity_low, sensitivity_high: bounds of the sensitivity at each of the FP rates.
        cpm_low, cpm_high: bounds of the CPM.
        band_fps: FP rates of the band (log-spaced over 1/8..8).
        band_low, band_high: bounds of the sensitivity at ``band_fps`` (for the plotted CI band).
    """

    n_resamples: int
    seed: int
    confidence: float
    sensitivity_low: np.ndarray
    sensitivity_high: np.ndarray
    cpm_low: float
    cpm_high: float
    band_fps: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray


@dataclass(frozen=True, eq=False)
class DetectionEvaluation:
    """Everything the FROC analysis of a set of scans says."""

    scans: tuple[ScanScore, ...]
    curve: FrocCurve
    fp_rates: tuple[float, ...]
    sensitivities: np.ndarray
    cpm: float
    interval: BootstrapInterval | None

    @property
    def n_detected(self) -> int:
        return sum(p is not None for s in self.scans for p in s.hit_probs)

    @property
    def n_false_positives(self) -> int:
        return sum(len(s.fp_probs) for s in self.scans)


def positions(records: Sequence[Located]) -> np.ndarray:
    """World positions (mm) of records as an (n, 3) array."""
    return np.asarray([r.center_xyz for r in records], dtype=float).reshape(-1, 3)


def squared_distances(nodules: Sequence[Located], findings: Sequence[Located]) -> np.ndarray:
    """(n_nodules, n_findings) squared distances in mm^2."""
    delta = positions(nodules)[:, None, :] - positions(findings)[None, :, :]
    return (delta**2).sum(axis=-1)


def hit_matrix(nodules: Sequence[Sized], findings: Sequence[Located]) -> np.ndarray:
    """(n_nodules, n_findings) bool, the LUNA16 rule: a finding hits a nodule when its centre lies
    closer than the nodule's radius (diameter / 2)."""
    radii = np.asarray([n.diameter_mm for n in nodules], dtype=float) / 2
    return squared_distances(nodules, findings) < radii[:, None] ** 2


def most_probable(findings: Sequence[Scored], max_findings: int | None) -> list:
    """The ``max_findings`` most probable findings (all when None or <= 0); ties keep file order."""
    if not max_findings or max_findings <= 0 or len(findings) <= max_findings:
        return list(findings)
    order = sorted(range(len(findings)), key=lambda i: -findings[i].nodule_prob)
    return [findings[i] for i in order[:max_findings]]


def score_scan(series_uid: str, findings: Sequence[Scored], nodules: Sequence[Sized],
               excluded: Sequence[Sized] = (), max_findings: int | None = DEFAULT_MAX_FINDINGS) -> ScanScore:
    """Matches one scan's findings to its reference nodules by the LUNA16 rules."""
    kept = most_probable(findings, max_findings)
    probs = np.asarray([f.nodule_prob for f in kept], dtype=float)
    hits = hit_matrix(nodules, kept)
    excluded_diameters = np.asarray([d if d >= 0 else EXCLUDED_UNKNOWN_DIAMETER_MM
                                     for d in (e.diameter_mm for e in excluded)], dtype=float)
    on_excluded = (squared_distances(excluded, kept) < (excluded_diameters[:, None] / 2) ** 2).any(axis=0)
    on_nodule = hits.any(axis=0)

    hit_probs: list[float | None] = []
    counted = np.zeros(len(kept), dtype=bool)
    for row in hits:
        if row.any():
            best = int(np.flatnonzero(row)[np.argmax(probs[row])])
            counted[best] = True
            hit_probs.append(float(probs[best]))
        else:
            hit_probs.append(None)
    false_positive = ~on_nodule & ~on_excluded
    return ScanScore(
        series_uid=series_uid,
        hit_probs=tuple(hit_probs),
        fp_probs=tuple(float(p) for p in probs[false_positive]),
        double_hits=int((on_nodule & ~counted).sum()),
        excluded_hits=int((on_excluded & ~on_nodule).sum()),
        over_cap=len(findings) - len(kept),
    )


def group_by_series(records: Iterable[Located]) -> dict[str, list]:
    """Records grouped by ``series_uid`` (file order kept within a series)."""
    grouped: dict[str, list] = {}
    for record in records:
        grouped.setdefault(record.series_uid, []).append(record)
    return grouped


def score_scans(findings_by_series: Mapping[str, Sequence[Scored]], nodules: Iterable[Sized],
                series_uids: Iterable[str], excluded: Iterable[Sized] = (),
                max_findings: int | None = DEFAULT_MAX_FINDINGS) -> tuple[ScanScore, ...]:
    """Scores every scan of ``series_uids`` (a scan with no findings still counts)."""
    nodules_by_series = group_by_series(nodules)
    excluded_by_series = group_by_series(excluded)
    return tuple(
        score_scan(uid, findings_by_series.get(uid, ()), nodules_by_series.get(uid, ()),
                   excluded_by_series.get(uid, ()), max_findings)
        for uid in series_uids
    )


def froc_curve(scans: Sequence[ScanScore]) -> FrocCurve:
    """The FROC curve of a set of scored scans."""
    table = _EntryTable.from_scans(scans)
    fps, sens = table.curves(np.ones((1, len(scans))))
    return FrocCurve(fps[0], sens[0], table.thresholds, len(scans), int(table.nodules_per_scan.sum()))


def cpm(curve: FrocCurve, fp_rates: Sequence[float] = FROC_FP_RATES) -> float:
    """Competition performance metric: mean sensitivity at the FP rates."""
    return float(np.mean(curve.sensitivity_at(fp_rates)))


def bootstrap_interval(scans: Sequence[ScanScore], n_resamples: int = 1000, seed: int = 0,
                       confidence: float = 0.95, fp_rates: Sequence[float] = FROC_FP_RATES,
                       band_points: int = 100) -> BootstrapInterval:
    """Percentile CI of the sensitivities and the CPM by resampling scans with replacement."""
    table = _EntryTable.from_scans(scans)
    chunk = max(1, _ENTRIES_PER_CHUNK // max(len(table.scan_index), 1))  # bounds memory: rows x entries
    band_fps = np.geomspace(min(fp_rates), max(fp_rates), band_points)
    rng = np.random.default_rng(seed)
    n_scans = len(scans)
    at_rates, at_band = [], []
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        draws = rng.integers(0, n_scans, size=(rows, n_scans))
        weights = np.zeros((rows, n_scans))
        np.add.at(weights, (np.arange(rows)[:, None], draws), 1.0)
        fps, sens = table.curves(weights)
        at_rates.append(_sensitivity_at(fps, sens, fp_rates))
        at_band.append(_sensitivity_at(fps, sens, band_fps))
    rates = np.concatenate(at_rates)
    band = np.concatenate(at_band)
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(rates, [tail, 1 - tail], axis=0)
    cpm_low, cpm_high = np.nanquantile(rates.mean(axis=1), [tail, 1 - tail])
    band_low, band_high = np.nanquantile(band, [tail, 1 - tail], axis=0)
    return BootstrapInterval(n_resamples, seed, confidence, low, high, float(cpm_low), float(cpm_high),
                             band_fps, band_low, band_high)


def evaluate_detection(findings_by_series: Mapping[str, Sequence[Scored]], nodules: Iterable[Sized],
                       series_uids: Iterable[str] | None = None, excluded: Iterable[Sized] = (),
                       max_findings: int | None = DEFAULT_MAX_FINDINGS, n_bootstrap: int = 1000,
                       seed: int = 0, confidence: float = 0.95,
                       fp_rates: Sequence[float] = FROC_FP_RATES) -> DetectionEvaluation:
    """FROC, sensitivities at the FP rates, CPM and (``n_bootstrap`` > 0) their bootstrap CI.

    Args:
        findings_by_series: findings per scan.
        nodules: reference nodules (``annotations.csv`` records); only those of evaluated scans count.
        series_uids: the scans evaluated; default: the scans of ``findings_by_series``.
        excluded: findings that count neither way (``annotations_excluded.csv`` records).
    """
    uids = list(dict.fromkeys(findings_by_series if series_uids is None else series_uids))
    scans = score_scans(findings_by_series, nodules, uids, excluded, max_findings)
    curve = froc_curve(scans)
    sensitivities = curve.sensitivity_at(fp_rates)
    interval = (bootstrap_interval(scans, n_bootstrap, seed, confidence, fp_rates)
                if n_bootstrap > 0 and scans else None)
    return DetectionEvaluation(scans, curve, tuple(fp_rates), sensitivities, float(np.mean(sensitivities)),
                               interval)


@dataclass(frozen=True, eq=False)
class _EntryTable:
    """Hits and false positives of all scans sorted by probability, for weighted (resampled) curves."""

    scan_index: np.ndarray
    is_hit: np.ndarray
    group_end: np.ndarray
    thresholds: np.ndarray
    nodules_per_scan: np.ndarray

    @classmethod
    def from_scans(cls, scans: Sequence[ScanScore]) -> "_EntryTable":
        probs, scan_index, is_hit = [], [], []
        for index, scan in enumerate(scans):
            found = [p for p in scan.hit_probs if p is not None]
            probs += found + list(scan.fp_probs)
            scan_index += [index] * (len(found) + len(scan.fp_probs))
            is_hit += [True] * len(found) + [False] * len(scan.fp_probs)
        probs_array = np.asarray(probs, dtype=float)
        order = np.argsort(-probs_array, kind="stable")
        sorted_probs = probs_array[order]
        group_end = np.flatnonzero(np.append(sorted_probs[1:] != sorted_probs[:-1], True)) if len(order) else order
        return cls(
            scan_index=np.asarray(scan_index, dtype=int)[order],
            is_hit=np.asarray(is_hit, dtype=bool)[order],
            group_end=group_end,
            thresholds=np.concatenate([[np.inf], sorted_probs[group_end]]),
            nodules_per_scan=np.asarray([s.n_nodules for s in scans], dtype=float),
        )

    def curves(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FP-per-scan and sensitivity rows, one per row of scan weights (how often each scan is drawn)."""
        entry_weights = weights[:, self.scan_index]
        hits = np.cumsum(entry_weights * self.is_hit, axis=1)[:, self.group_end]
        false_positives = np.cumsum(entry_weights * ~self.is_hit, axis=1)[:, self.group_end]
        n_nodules = weights @ self.nodules_per_scan
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = hits / n_nodules[:, None]
        fps = false_positives / weights.sum(axis=1, keepdims=True)
        zero = np.zeros((len(weights), 1))
        return np.hstack([zero, fps]), np.hstack([np.where(n_nodules[:, None] > 0, 0.0, np.nan), sens])


def _sensitivity_at(fps: np.ndarray, sens: np.ndarray, fp_rates: Iterable[float]) -> np.ndarray:
    """Reads each row's polyline at the FP rates; rows of ``fps`` are non-decreasing and start at 0."""
    rates = np.asarray(list(fp_rates), dtype=float)
    rows = np.arange(len(fps))[:, None]
    last = fps.shape[1] - 1
    left = np.stack([np.searchsorted(row, rates, side="right") for row in fps]) - 1
    right = np.minimum(left + 1, last)
    x0, x1 = fps[rows, left], fps[rows, right]
    y0, y1 = sens[rows, left], sens[rows, right]
    fraction = np.where(right > left, (rates[None, :] - x0) / np.where(right > left, x1 - x0, 1.0), 0.0)
    return y0 + fraction * (y1 - y0)
