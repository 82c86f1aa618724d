"""The book's match_and_score confusion matrix: findings placed in every cell, by hand."""

from __future__ import annotations

import numpy as np

from medcad.findings import Finding
from medcad.io.luna import LunaNodule, MalignancyNodule
from medcad.metrics.book_confusion import cad_confusion, match_and_score, matched_malignancy


def mal_nodule(uid: str, x: float, malignant: bool, diameter: float = 10.0) -> MalignancyNodule:
    return MalignancyNodule(uid, (x, 0.0, 0.0), diameter, malignant, (4, 4) if malignant else (2,),
                            (x - 5, -5.0, -5.0), (x + 5, 5.0, 5.0))


def mark(uid: str, x: float, nodule: float, malignancy: float | None = None) -> Finding:
    return Finding(uid, (x, 0.0, 0.0), nodule, malignancy)


# Diameter 10 mm everywhere: a finding matches when its distance is < 0.7 * 10 = 7 mm.
NODULES = [
    mal_nodule("S1", 0, False),     # benign, nothing near                  -> Benign / Complete Miss
    mal_nodule("S1", 100, False),   # benign, 3 mm away, nodule 0.3 < 0.5   -> Benign / Filtered Out
    mal_nodule("S1", 200, False),   # benign, 6.9 mm (0.69), 0.8 / mal 0.2  -> Benign / Pred. Benign
    mal_nodule("S1", 300, False),   # benign, on it, 0.9 / mal 0.7          -> Benign / Pred. Malignant
    mal_nodule("S1", 400, True),    # malignant, the mark 7 mm away is not < 7 -> Malignant / Complete Miss
    mal_nodule("S1", 500, True),    # malignant, nodule 0.49                -> Malignant / Filtered Out
    mal_nodule("S1", 600, True),    # malignant, 0.5 / mal 0.49             -> Malignant / Pred. Benign
    mal_nodule("S1", 700, True),    # malignant, 0.5 / mal 0.5              -> Malignant / Pred. Malignant
]
FINDINGS = {
    "S1": [
        mark("S1", 103, 0.3, 0.9),
        mark("S1", 206.9, 0.8, 0.2),
        mark("S1", 195, 0.1, 0.0),     # a second, lower match on the same nodule: the highest column wins
        mark("S1", 300, 0.9, 0.7),
        mark("S1", 407, 0.9, 0.1),     # matches nothing -> Non-Nodules / Pred. Benign
        mark("S1", 500, 0.49, 0.9),
        mark("S1", 600, 0.5, 0.49),
        mark("S1", 700, 0.5, 0.5),
        mark("S1", 1000, 0.2, 0.9),    # -> Non-Nodules / Filtered Out
        mark("S1", 1100, 0.95, 0.95),  # -> Non-Nodules / Pred. Malignant
    ],
    "S2": [mark("S2", 0, 0.7, None)],  # a scan without nodules; no malignancy probability -> Pred. Benign
}
# columns: Complete Miss, Filtered Out, Pred. Benign, Pred. Malignant
SCAN_1 = [[0, 1, 1, 1],   # Non-Nodules
          [1, 1, 1, 1],   # Benign
          [1, 1, 1, 1]]   # Malignant


def test_findings_land_in_every_cell():
    np.testing.assert_array_equal(match_and_score(FINDINGS["S1"], NODULES), SCAN_1)


def test_per_scan_and_total():
    confusion = cad_confusion(FINDINGS, NODULES, ["S1", "S2", "S3"])
    np.testing.assert_array_equal(confusion.per_scan["S2"], [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(confusion.per_scan["S3"], np.zeros((3, 4)))
    np.testing.assert_array_equal(confusion.total, np.asarray(SCAN_1) + [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert confusion.with_malignancy_model and confusion.malignancy_known


def test_one_finding_matching_two_nodules_counts_for_both():
    nodules = [mal_nodule("S", 0, False), mal_nodule("S", 8, True)]   # x=4 is 4 mm (0.4) from both
    np.testing.assert_array_equal(match_and_score([mark("S", 4, 0.9, 0.9)], nodules),
                                  [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])


def test_thresholds_are_parameters():
    counts = match_and_score([mark("S", 0, 0.4, 0.4)], [mal_nodule("S", 0, True)], nodule_threshold=0.3,
                             malignancy_threshold=0.3)
    assert counts[2, 3] == 1


def test_reference_without_malignancy_and_findings_without_model():
    nodules = [LunaNodule("S", (0.0, 0.0, 0.0), 10.0)]
    confusion = cad_confusion({"S": [mark("S", 1, 0.9)]}, nodules)
    assert not confusion.with_malignancy_model and not confusion.malignancy_known
    assert confusion.total[1, 2] == 1


def test_matched_malignancy_takes_the_highest_malignancy_of_the_matching_findings():
    detected, scores = matched_malignancy(FINDINGS, NODULES, ["S1", "S2"])
    # matched with nodule prob >= 0.5: x=206.9 (0.2), x=300 (0.7), x=600 (0.49), x=700 (0.5)
    assert [n.center_xyz[0] for n in detected] == [200, 300, 600, 700]
    np.testing.assert_allclose(scores, [0.2, 0.7, 0.49, 0.5])
