"""LUNA16 scoring: hand-computed cases (arithmetic in the comments) and an independent re-implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medcad.findings import Finding
from medcad.io.luna import LunaNodule
from medcad.metrics.detection import (
    FROC_FP_RATES, ScanScore, bootstrap_interval, cpm, evaluate_detection, froc_curve, score_scan, score_scans,
)


def finding(uid: str, x: float, prob: float, y: float = 0.0) -> Finding:
    return Finding(series_uid=uid, center_xyz=(x, y, 0.0), nodule_prob=prob)


def nodule(uid: str, x: float, diameter: float, y: float = 0.0) -> LunaNodule:
    return LunaNodule(uid, (x, y, 0.0), diameter)


# Scan A: three nodules, one excluded finding, six findings. Scan B: no nodules, two findings.
# Scan C: no nodules, no findings (named by the series list only).
NODULES = [nodule("A", 0, 10), nodule("A", 100, 6), nodule("A", 200, 8)]   # radii 5, 3, 4
EXCLUDED = [nodule("A", 300, -1)]                                            # diameter -1 -> 10 mm, radius 5
FINDINGS = {
    "A": [
        finding("A", 4.0, 0.9),     # |4| < 5: hits nodule 1
        finding("A", -4.9, 0.6),    # |-4.9| < 5: hits nodule 1 again, less probable: ignored
        finding("A", 5.0, 0.95),    # |5| is not < 5: outside the radius -> false positive
        finding("A", 102.0, 0.4),   # |2| < 3: hits nodule 2
        finding("A", 303.0, 0.99),  # |3| < 5 of the excluded finding: dropped
        finding("A", 50.0, 0.7),    # nowhere: false positive
    ],
    "B": [finding("B", 0.0, 0.8), finding("B", 10.0, 0.3)],  # a scan without nodules: both false positives
}


def test_hits_inside_outside_radius_double_hits_and_excluded():
    score = score_scan("A", FINDINGS["A"], NODULES, EXCLUDED)
    assert score.hit_probs == (0.9, 0.4, None)        # nodule 3 is never found
    assert sorted(score.fp_probs) == [0.7, 0.95]
    assert score.double_hits == 1 and score.excluded_hits == 1 and score.over_cap == 0


def test_froc_points_and_cpm_by_hand():
    scans = score_scans(FINDINGS, NODULES, ["A", "B", "C"], EXCLUDED)
    curve = froc_curve(scans)
    # 3 scans, 3 nodules. Sorted marks: 0.95 FP, 0.9 TP, 0.8 FP, 0.7 FP, 0.4 TP, 0.3 FP.
    # Points (FP count / 3 scans, TP count / 3 nodules):
    #   inf (0, 0); 0.95 (1/3, 0); 0.9 (1/3, 1/3); 0.8 (2/3, 1/3); 0.7 (1, 1/3); 0.4 (1, 2/3); 0.3 (4/3, 2/3)
    np.testing.assert_allclose(curve.fps_per_scan, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 4 / 3])
    np.testing.assert_allclose(curve.sensitivity, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(curve.thresholds, [math.inf, 0.95, 0.9, 0.8, 0.7, 0.4, 0.3])
    # At 1/8 and 1/4: on the segment (0, 0)-(1/3, 0) -> 0. At 1/2: on (1/3, 1/3)-(2/3, 1/3) -> 1/3.
    # At 1: the best point with 1 FP/scan -> 2/3. At 2, 4, 8: past the last point -> 2/3.
    expected = [0, 0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]
    np.testing.assert_allclose(curve.sensitivity_at(FROC_FP_RATES), expected)
    # CPM = (0 + 0 + 1/3 + 4 * 2/3) / 7 = 3/7
    assert cpm(curve) == pytest.approx(3 / 7, abs=1e-12)


def test_scan_without_findings_counts_as_a_scan():
    with_c = froc_curve(score_scans(FINDINGS, NODULES, ["A", "B", "C"], EXCLUDED))
    without_c = froc_curve(score_scans(FINDINGS, NODULES, ["A", "B"], EXCLUDED))
    # 4 false positives over 3 scans vs over 2 scans
    assert with_c.fps_per_scan[-1] == pytest.approx(4 / 3)
    assert without_c.fps_per_scan[-1] == pytest.approx(4 / 2)


def test_tied_probabilities_interpolate_along_the_diagonal():
    # One scan, one nodule (radius 5). A hit and a false positive both at 0.6, another FP at 0.1.
    # Points: (0, 0); t=0.6 -> (1 FP, 1/1 nodules) = (1, 1); t=0.1 -> (2, 1).
    scan = score_scan("S", [finding("S", 1, 0.6), finding("S", 50, 0.6), finding("S", 60, 0.1)], [nodule("S", 0, 10)])
    curve = froc_curve([scan])
    np.testing.assert_allclose(curve.sensitivity_at(FROC_FP_RATES), [0.125, 0.25, 0.5, 1, 1, 1, 1])
    # CPM = (0.125 + 0.25 + 0.5 + 4) / 7 = 4.875 / 7
    assert cpm(curve) == pytest.approx(4.875 / 7, abs=1e-12)


def test_finding_on_two_nodules_counts_for_both_and_on_excluded_and_nodule_is_a_hit():
    nodules = [nodule("S", 0, 10), nodule("S", 6, 10)]     # overlapping: x=3 is 3 mm from both
    excluded = [nodule("S", 3, 4)]
    score = score_scan("S", [finding("S", 3, 0.7)], nodules, excluded)
    assert score.hit_probs == (0.7, 0.7) and score.fp_probs == () and score.excluded_hits == 0


def test_at_most_max_findings_per_scan_keep_the_most_probable():
    findings = [finding("S", 0, 0.2), finding("S", 50, 0.9), finding("S", 60, 0.5)]
    score = score_scan("S", findings, [nodule("S", 0, 10)], max_findings=2)
    # the hit (0.2) is the least probable of three: cut, so the nodule is missed
    assert score.hit_probs == (None,) and sorted(score.fp_probs) == [0.5, 0.9] and score.over_cap == 1
    assert score_scan("S", findings, [nodule("S", 0, 10)], max_findings=None).hit_probs == (0.2,)


def test_sensitivity_is_nan_without_nodules():
    curve = froc_curve(score_scans({"B": FINDINGS["B"]}, [], ["B"]))
    assert curve.n_nodules == 0 and np.isnan(curve.sensitivity_at([1.0])[0])


# ---- an independent, straightforward implementation: loops, a threshold at a time ----

def reference_froc(findings_by_series, nodules, excluded, uids, rates, max_findings=100):
    positives, negatives, n_nodules = [], [], 0
    for uid in uids:
        marks = sorted(findings_by_series.get(uid, []), key=lambda f: -f.nodule_prob)[:max_findings]
        truth = [n for n in nodules if n.series_uid == uid]
        ignore = [e for e in excluded if e.series_uid == uid]
        n_nodules += len(truth)
        used = set()
        for n in truth:
            best = None
            for i, f in enumerate(marks):
                if math.dist(f.center_xyz, n.center_xyz) < n.diameter_mm / 2:
                    used.add(i)
                    best = f.nodule_prob if best is None else max(best, f.nodule_prob)
            if best is not None:
                positives.append(best)
        for i, f in enumerate(marks):
            if i in used:
                continue
            radius = [(e.diameter_mm if e.diameter_mm >= 0 else 10.0) / 2 for e in ignore]
            if any(math.dist(f.center_xyz, e.center_xyz) < r for e, r in zip(ignore, radius)):
                continue
            negatives.append(f.nodule_prob)
    points = [(0.0, 0.0)]
    for t in sorted(set(positives + negatives), reverse=True):
        points.append((sum(p >= t for p in negatives) / len(uids), sum(p >= t for p in positives) / n_nodules))
    sens = []
    for r in rates:
        value = points[-1][1]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if x0 <= r < x1:
                value = y0 + (r - x0) / (x1 - x0) * (y1 - y0)
                break
        # at an FP rate several points share, the best of them
        same = [y for x, y in points if x == r]
        sens.append(max(same) if same else value)
    return sens


@pytest.mark.parametrize("seed", range(6))
def test_froc_and_cpm_agree_with_independent_implementation(seed):
    rng = np.random.default_rng(seed)
    uids = [f"S{i}" for i in range(int(rng.integers(3, 12)))]
    nodules, excluded, findings = [], [], {}
    for uid in uids:
        for _ in range(int(rng.integers(0, 4))):
            nodules.append(LunaNodule(uid, tuple(rng.uniform(0, 60, 3)), float(rng.uniform(3, 25))))
        for _ in range(int(rng.integers(0, 2))):
            excluded.append(LunaNodule(uid, tuple(rng.uniform(0, 60, 3)), float(rng.choice([-1.0, 6.0]))))
        marks = []
        for _ in range(int(rng.integers(0, 40))):
            near = [n for n in nodules if n.series_uid == uid]
            if near and rng.random() < 0.4:
                anchor = near[int(rng.integers(len(near)))].center_xyz
                center = tuple(np.asarray(anchor) + rng.normal(0, 4, 3))
            else:
                center = tuple(rng.uniform(0, 60, 3))
            # probabilities on a coarse grid so that ties occur
            marks.append(Finding(uid, tuple(float(v) for v in center), float(rng.integers(0, 21) / 20)))
        if marks or rng.random() < 0.5:
            findings[uid] = marks
    if not nodules:
        nodules.append(LunaNodule(uids[0], (30.0, 30.0, 30.0), 12.0))
    rates = list(FROC_FP_RATES) + list(rng.uniform(0, 10, 5))
    evaluation = evaluate_detection(findings, nodules, uids, excluded, max_findings=30, n_bootstrap=0)
    expected = reference_froc(findings, nodules, excluded, uids, rates, max_findings=30)
    np.testing.assert_allclose(evaluation.curve.sensitivity_at(rates), expected, atol=1e-9)
    assert evaluation.cpm == pytest.approx(float(np.mean(expected[:7])), abs=1e-9)


def test_bootstrap_is_seeded_and_collapses_when_all_scans_are_alike():
    rng = np.random.default_rng(0)
    varied = [ScanScore(f"S{i}", tuple(float(p) if p > 0.3 else None for p in rng.random(3)),
                        tuple(float(p) for p in rng.random(int(rng.integers(0, 6))))) for i in range(40)]
    first = bootstrap_interval(varied, n_resamples=200, seed=3)
    again = bootstrap_interval(varied, n_resamples=200, seed=3)
    other = bootstrap_interval(varied, n_resamples=200, seed=4)
    np.testing.assert_array_equal(first.band_low, again.band_low)
    assert (first.cpm_low, first.cpm_high) == (again.cpm_low, again.cpm_high)
    assert (first.cpm_low, first.cpm_high) != (other.cpm_low, other.cpm_high)
    point = cpm(froc_curve(varied))
    assert first.cpm_low < point < first.cpm_high
    assert np.all(first.sensitivity_low <= first.sensitivity_high)
    # identical scans: every resample is the same set, so the interval is the point estimate
    same = [score_scan("A", FINDINGS["A"], NODULES, EXCLUDED)] * 5
    point = cpm(froc_curve(same))
    interval = bootstrap_interval(same, n_resamples=50, seed=0)
    assert interval.cpm_low == pytest.approx(point) and interval.cpm_high == pytest.approx(point)


def test_evaluate_detection_defaults_to_the_scans_of_the_findings():
    evaluation = evaluate_detection(FINDINGS, NODULES, excluded=EXCLUDED, n_bootstrap=100)
    assert [s.series_uid for s in evaluation.scans] == ["A", "B"]
    assert evaluation.n_detected == 2 and evaluation.n_false_positives == 4
    assert evaluation.interval is not None and evaluation.interval.n_resamples == 100


def test_agrees_with_the_luna16_scripts_froc_formula():
    """The script's computeFROC: sklearn's ROC over found nodules and FPs, rescaled, then np.interp."""
    from sklearn.metrics import roc_curve as sklearn_roc

    rng = np.random.default_rng(7)
    for _ in range(30):
        scans = [ScanScore(f"S{i}", tuple(round(float(p), 2) if p > 0.3 else None for p in rng.random(rng.integers(1, 4))),
                           tuple(round(float(p), 2) for p in rng.random(rng.integers(1, 20))))
                 for i in range(int(rng.integers(2, 30)))]
        found = [p for s in scans for p in s.hit_probs if p is not None]
        false_positives = [p for s in scans for p in s.fp_probs]
        n_nodules = sum(s.n_nodules for s in scans)
        fpr, tpr, _ = sklearn_roc([1] * len(found) + [0] * len(false_positives), found + false_positives)
        fps = fpr * len(false_positives) / len(scans)
        sens = tpr * len(found) / n_nodules
        expected = np.interp(FROC_FP_RATES, fps, sens)
        np.testing.assert_allclose(froc_curve(scans).sensitivity_at(FROC_FP_RATES), expected, atol=1e-12)
