"""``medcad detect --masks / --report / --dicom-out`` and ``medcad report``: files out, errors in one line."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.findings import read_findings
from medcad.io import read_scan, write_scan
from tests.cli.test_detect import medcad, models_dir, run  # noqa: F401  (models_dir is a fixture)
from tests.pipeline.helpers import scan_with_blobs


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report_scans")
    write_scan(scan_with_blobs(shape=(40, 64, 64), blobs=((10, 20, 20), (30, 40, 44))), folder / "blobs.mha")
    write_scan(scan_with_blobs(shape=(24, 48, 48), blobs=((12, 24, 24),)), folder / "one.nrrd")
    return folder


def test_detect_writes_a_label_map_on_the_scan_grid(models_dir, scans, tmp_path):
    out, masks = tmp_path / "found.json", tmp_path / "masks.nrrd"
    run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--out", out, "--masks", masks)
    findings = read_findings(out)
    labels = read_scan(masks, padding_to_air=False)
    scan = read_scan(scans / "blobs.mha")
    assert labels.shape_irc == scan.shape_irc
    assert np.allclose(labels.origin_xyz, scan.origin_xyz) and np.allclose(labels.spacing_xyz, scan.spacing_xyz)
    assert int(labels.hu.max()) == len(findings) == 2
    for k, finding in enumerate(findings, start=1):
        voxels = np.argwhere(labels.hu == k)
        assert len(voxels) == finding.voxel_count
        assert np.all(np.abs(voxels.mean(axis=0) - finding.center_irc) < 1.0)
        assert np.all(scan.hu[labels.hu == k] > 500)  # the bright sphere the segmenter marks


def test_detect_and_report_write_the_same_report(models_dir, scans, tmp_path):
    out, masks = tmp_path / "found.json", tmp_path / "masks.nii.gz"
    result = run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--out", out,
                 "--masks", masks, "--report", tmp_path / "report")
    uid = read_findings(out)[0].series_uid
    page = (tmp_path / "report" / f"{uid}.html").read_text()
    assert "report" in result.stdout and page.count('data-finding="') >= 2
    run("report", scans / "blobs.mha", out, "--masks", masks, "--threshold", "0", "--out", tmp_path / "again")
    again = (tmp_path / "again" / f"{uid}.html").read_text()
    assert again.count('data-finding="') == page.count('data-finding="')
    for model in ("segmentation", "nodule", "malignancy"):  # the models named in the findings file
        assert model in again


def test_batch_detect_writes_one_report_per_scan_and_an_index(models_dir, scans, tmp_path):
    run("detect", scans, "--models", models_dir, "--threshold", "0", "--out", tmp_path / "found",
        "--masks", tmp_path / "masks", "--report", tmp_path / "report")
    reports = sorted(p.name for p in (tmp_path / "report").glob("*.html"))
    assert reports == sorted(["index.html", "blobs.html", "one.html"])
    index = (tmp_path / "report" / "index.html").read_text()
    assert 'href="blobs.html"' in index and 'href="one.html"' in index
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["blobs.nii.gz", "one.nii.gz"]


@pytest.mark.parametrize("option, problem", [
    ("--dicom-out", "needs a DICOM series"),
    ("--report", "must be a folder"),
    ("--masks", "give a file ending in"),
])
def test_bad_output_options_fail_in_one_line_before_any_work(models_dir, scans, tmp_path, option, problem):
    existing_file = tmp_path / "taken.txt"
    existing_file.write_text("not a folder")
    target = {"--dicom-out": tmp_path / "dicom", "--report": existing_file, "--masks": tmp_path / "masks.txt"}[option]
    result = medcad("detect", scans / "blobs.mha", "--models", models_dir, "--out", tmp_path / "f.json",
                    option, target, check=False)
    assert result.returncode == 2
    assert problem in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.txt"]  # nothing written


def test_a_report_folder_under_a_file_is_refused(models_dir, scans, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = medcad("report", scans / "blobs.mha", tmp_path / "missing.json", "--out", blocker / "report", check=False)
    assert result.returncode == 2 and "is a file" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_label_map_of_another_grid_is_refused(models_dir, scans, tmp_path):
    out = tmp_path / "found.json"
    run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--out", out,
        "--masks", tmp_path / "one.nii.gz")
    result = medcad("report", scans / "one.nrrd", out, "--masks", tmp_path / "one.nii.gz", "--out", tmp_path / "r",
                    check=False)
    assert result.returncode == 2 and "does not match the scan" in result.stderr


def test_a_scan_without_findings_gets_a_report_that_says_so(models_dir, tmp_path):
    from medcad.io import Scan

    write_scan(Scan.from_array(np.full((8, 32, 32), -1000, dtype=np.int16)), tmp_path / "air.nii.gz")
    run("detect", tmp_path / "air.nii.gz", "--models", models_dir, "--out", tmp_path / "air.json",
        "--masks", tmp_path / "air_masks.nii.gz", "--report", tmp_path / "report")
    page = (tmp_path / "report" / "air.html").read_text()
    assert "No findings above the threshold" in page and 'data-finding="' not in page
    assert int(read_scan(tmp_path / "air_masks.nii.gz", padding_to_air=False).hu.max()) == 0
