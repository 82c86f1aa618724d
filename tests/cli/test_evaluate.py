"""``medcad evaluate`` end to end: a folder of findings files, tables printed, JSON and PNGs written."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from medcad.cli import main
from medcad.findings import Finding, write_findings

NODULES = [  # series, x, diameter, malignant
    ("A", 0.0, 10.0, False), ("A", 100.0, 8.0, True), ("B", 0.0, 6.0, False), ("D", 0.0, 12.0, True),
]


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["medcad", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def case(tmp_path):
    """Reference tables, a findings folder (JSON with findings, JSON without, CSV) and a series list."""
    annotations = tmp_path / "annotations.csv"
    annotations.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                           + "".join(f"{s},{x},0,0,{d}\n" for s, x, d, _ in NODULES))
    malignancy = tmp_path / "annotations_with_malignancy.csv"
    malignancy.write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool,mal_details,bboxLowX,bboxLowY,bboxLowZ,"
        "bboxHighX,bboxHighY,bboxHighZ,len_mal_details\n"
        + "".join(f'{s},{x},0,0,{d},{m},"[{4 if m else 2}, {4 if m else 1}]",{x - 3},-3,-3,{x + 3},3,3,2\n'
                  for s, x, d, m in NODULES))
    folder = tmp_path / "findings"
    write_findings(folder / "a.json", [
        Finding("A", (1.0, 0.0, 0.0), 0.9, 0.2),     # hits A1 (benign): Pred. Benign
        Finding("A", (101.0, 0.0, 0.0), 0.8, 0.9),   # hits A2 (malignant): Pred. Malignant
        Finding("A", (50.0, 0.0, 0.0), 0.6, 0.1),    # false positive
    ], series_uid="A")
    write_findings(folder / "b.json", [], series_uid="B")   # nothing found on B: B still counts
    write_findings(folder / "c.csv", [Finding("C", (10.0, 10.0, 10.0), 0.7)])
    series = tmp_path / "series.txt"
    series.write_text("D\n")                                  # D has a nodule and no findings file
    return tmp_path, annotations, malignancy, folder, series


def test_evaluate_folder_prints_tables_and_writes_json_and_pngs(case, monkeypatch, capsys):
    tmp_path, annotations, malignancy, folder, series = case
    out = tmp_path / "out"
    code, text, err = run_cli(monkeypatch, capsys, "evaluate", folder, "--annotations", annotations,
                              "--malignancy", malignancy, "--series-list", series, "--bootstrap", "200",
                              "--per-scan", "--out", out)
    assert code == 0, err
    assert "CPM" in text and "Complete Miss" in text and "Pred. Malignant" in text and "95% CI" in text
    document = json.loads((out / "evaluation.json").read_text())
    # scans A, B, C (findings files) and D (series list); 4 nodules; sorted marks .9 TP, .8 TP, .7 FP, .6 FP:
    # sensitivity 2/4 from 0 FP/scan on, so every FP rate reads 0.5 and CPM = 0.5
    assert (document["scans"], document["nodules"], document["detected"], document["false_positives"]) == (4, 4, 2, 2)
    assert document["froc"]["sensitivity"] == [0.5] * 7 and document["froc"]["cpm"] == pytest.approx(0.5)
    # Non-Nodules: the FP on A and the one on C are Pred. Benign; A1 Pred. Benign, B1 missed;
    # A2 Pred. Malignant, D1 missed
    assert document["confusion"]["total"] == [[0, 0, 2, 0], [1, 0, 1, 0], [1, 0, 0, 1]]
    assert document["malignancy"]["auc"] == pytest.approx(1.0)
    for name in ("froc.png", "roc_findings.png", "roc_malignancy.png"):
        pixels = imread(out / name)
        assert (out / name).stat().st_size > 10_000 and pixels.shape[0] >= 300
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50
    # per-scan matrices in the book's layout, one per scan
    assert sum(line.strip() == uid for line in text.splitlines() for uid in "ABCD") == 4


def test_without_series_list_only_the_scans_of_the_findings_count(case, monkeypatch, capsys):
    tmp_path, annotations, _, folder, _ = case
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", folder, "--annotations", annotations,
                           "--bootstrap", "0", "--out", tmp_path / "o2")
    assert code == 0, err
    document = json.loads((tmp_path / "o2" / "evaluation.json").read_text())
    assert (document["scans"], document["nodules"]) == (3, 3)
    assert document["confusion"]["malignancy_known"] is False


def test_missing_reference_is_a_one_line_error(case, monkeypatch, capsys):
    _, _, _, folder, _ = case
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", folder)
    assert code == 2 and "--annotations" in err and "Traceback" not in err


def test_baseline_diameter_prints_the_auc_of_the_real_table(luna_dir, monkeypatch, capsys):
    table = luna_dir / "annotations_with_malignancy.csv"
    code, text, err = run_cli(monkeypatch, capsys, "evaluate", "--baseline", "diameter", "--table", table,
                              "--method", "both")
    assert code == 0, err
    assert "diameter baseline AUC (exact): 0.919" in text
    assert "diameter baseline AUC (book): 0.917" in text
