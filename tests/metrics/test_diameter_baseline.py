"""The diameter baseline: hand values, and the real LUNA16 malignancy table."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medcad.errors import MedcadError
from medcad.io.luna import MalignancyNodule, read_malignancy
from medcad.metrics.classification import linspace_roc
from medcad.metrics.diameter_baseline import diameter_baseline


def nodule(uid: str, diameter: float, malignant: bool) -> MalignancyNodule:
    return MalignancyNodule(uid, (0.0, 0.0, 0.0), diameter, malignant, (), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))


def test_hand_values_and_split_filter():
    nodules = [nodule("a", 4, False), nodule("a", 12, True), nodule("b", 6, False), nodule("b", 5, True),
               nodule("c", 30, False)]
    # a and b: malignant {12, 5}, benign {4, 6}: pairs (12>4), (12>6), (5>4), (5<6) -> 3/4
    result = diameter_baseline(nodules, series_uids=["a", "b"], operating_points_mm=(5.0,))
    assert result.auc == pytest.approx(0.75) and (result.n_malignant, result.n_benign) == (2, 2)
    # diameter >= 5: benign 6 of {4, 6} -> FPR 1/2; malignant both -> TPR 1
    assert (result.operating_points[0].fpr, result.operating_points[0].tpr) == (0.5, 1.0)
    with pytest.raises(MedcadError, match="benign and malignant"):
        diameter_baseline(nodules, series_uids=["c"])


@pytest.fixture(scope="module")
def malignancy_table(luna_dir):
    return read_malignancy(luna_dir / "annotations_with_malignancy.csv")


def test_exact_auc_on_all_1182_real_nodules(malignancy_table):
    assert len(malignancy_table) == 1182
    result = diameter_baseline(malignancy_table, "exact")
    expected = roc_auc_score([n.is_malignant for n in malignancy_table], [n.diameter_mm for n in malignancy_table])
    assert result.auc == pytest.approx(expected, abs=1e-12)
    assert round(result.auc, 3) == 0.919
    assert (result.n_malignant, result.n_benign) == (378, 804)


def test_books_approximation_on_the_real_table(malignancy_table):
    # The book's code (p2ch14_malben_baseline): 100 thresholds torch.linspace(max, min), prediction
    # diameter >= threshold, trapezoids. The diameters stay float64 (the table's precision) while
    # torch.linspace returns float32, so the first threshold rounds just above the largest diameter
    # (curve starts at (0, 0)) and the last just above the smallest (fpr 803/804 at the end):
    # 0.917145 -> 0.917.
    result = diameter_baseline(malignancy_table, "book")
    assert result.auc == pytest.approx(0.9171454, abs=1e-6)
    assert round(result.auc, 3) == 0.917
    assert len(result.roc.thresholds) == 100
    assert (result.roc.tpr[0], result.roc.fpr[0]) == (0.0, 0.0)
    assert result.roc.fpr[-1] == pytest.approx(803 / 804)
    assert result.roc.thresholds[0] == pytest.approx(max(n.diameter_mm for n in malignancy_table), rel=1e-6)


def test_books_approximation_with_float32_diameters_reaches_both_ends(malignancy_table):
    # Cast to float32 first (the book's torch.tensor of Python floats) and the float32 linspace ends
    # equal the extreme diameters exactly: the curve then runs from tpr 1/378 to fpr 1, area 0.918389.
    diameters = np.array([n.diameter_mm for n in malignancy_table], dtype=np.float32)
    malignant = [n.is_malignant for n in malignancy_table]
    roc = linspace_roc(malignant, diameters.astype(np.float64), diameters.max(), diameters.min())
    assert roc.auc == pytest.approx(0.918389, abs=1e-6)
    assert roc.fpr[-1] == 1.0


def test_books_two_operating_points_on_the_real_table(malignancy_table):
    points = diameter_baseline(malignancy_table).operating_points
    assert [p.threshold_mm for p in points] == [10.55, 5.42]
    # >= 10.55 mm: 31 of 804 benign, 225 of 378 malignant; >= 5.42 mm: 441 / 804, 368 / 378
    assert (points[0].fpr, points[0].tpr) == pytest.approx((31 / 804, 225 / 378))
    assert (points[1].fpr, points[1].tpr) == pytest.approx((441 / 804, 368 / 378))
