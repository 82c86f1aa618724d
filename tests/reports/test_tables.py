"""Printed tables: the book's confusion layout to the character, rich tables with the numbers."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from medcad.metrics.book_confusion import CadConfusion
from medcad.metrics.detection import evaluate_detection
from medcad.reports.tables import book_confusion_text, confusion_table, froc_table

COUNTS = np.array([[0, 10, 3, 2], [1, 2, 30, 4], [5, 6, 7, 80]])


def render(table) -> str:
    console = Console(width=120, record=True)
    console.print(table)
    return console.export_text()


def test_book_layout_with_malignancy_model():
    expected = "\n".join([
        "Total",
        "                 |    Complete Miss |     Filtered Out |     Pred. Benign |  Pred. Malignant",
        "     Non-Nodules |                  |               10 |                3 |                2",
        "          Benign |                1 |                2 |               30 |                4",
        "       Malignant |                5 |                6 |                7 |               80",
    ])
    assert book_confusion_text("Total", COUNTS, with_malignancy_model=True) == expected


def test_book_layout_without_malignancy_model_merges_the_predicted_columns():
    expected = "\n".join([
        "scan",
        "                 |    Complete Miss |     Filtered Out |     Pred. Nodule",
        "     Non-Nodules |                  |               10 |                5",
        "          Benign |                1 |                2 |               34",
        "       Malignant |                5 |                6 |               87",
    ])
    assert book_confusion_text("scan", COUNTS, with_malignancy_model=False) == expected


def test_unknown_malignancy_merges_the_nodule_rows():
    text = book_confusion_text("t", COUNTS, with_malignancy_model=False, malignancy_known=False)
    assert text.splitlines()[-1] == " | ".join(f"{c:>16}" for c in ["Nodules", "6", "8", "121"])


def test_rich_confusion_and_froc_tables_show_the_numbers():
    confusion = CadConfusion({"a": COUNTS}, COUNTS, True, True)
    text = render(confusion_table(confusion))
    assert "Pred. Malignant" in text and "80" in text and "Non-Nodules" in text
    from medcad.findings import Finding
    from medcad.io.luna import LunaNodule

    evaluation = evaluate_detection({"S": [Finding("S", (0.0, 0.0, 0.0), 0.9), Finding("S", (50.0, 0, 0), 0.5)]},
                                    [LunaNodule("S", (1.0, 0.0, 0.0), 6.0)], n_bootstrap=20)
    text = render(froc_table(evaluation))
    # one scan, one nodule hit at 0.9, one FP at 0.5: sensitivity 1.0 from 0 FP/scan on, CPM 1.000
    assert "CPM" in text and "1.000" in text and "0.125" in text and "95% CI" in text
