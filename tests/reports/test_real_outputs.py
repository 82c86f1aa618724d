"""``medcad detect --masks --report --dicom-out`` on the real LIDC-IDRI-0001 with the book's models.

One CLI run (module fixture) gives the findings JSON, the NIfTI label map, the HTML report and
the DICOM SEG + SR; the tests check each against independent truth: the LIDC readers' consensus
mask, SimpleITK's reading of the label map, dciodvfy, highdicom's readers and the source files'
ImagePositionPatient.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from medcad.findings import read_findings
from tests.pipeline.helpers import import_book_models

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
LUNA_NODULE_XYZ = (56.21, 86.34, -115.87)


@pytest.fixture(scope="module")
def outputs(lidc_dir, dlwpt_dir, luna_dir, tmp_path_factory):
    from typer.testing import CliRunner

    from medcad.cli import _register, app

    if not app.registered_commands:
        _register()
    models = import_book_models(dlwpt_dir, tmp_path_factory.mktemp("book_models"))
    out = tmp_path_factory.mktemp("outputs")
    args = ["detect", lidc_dir, "--models", models, "--backend", "onnx", "--out", out / "findings.json",
            "--masks", out / "masks.nii.gz", "--report", out / "report", "--dicom-out", out / "dicom",
            "--annotations", luna_dir / "annotations.csv"]
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def findings(outputs):
    return read_findings(outputs / "findings.json")


@pytest.fixture(scope="module")
def label_map(outputs):
    import SimpleITK as sitk

    return sitk.ReadImage(str(outputs / "masks.nii.gz"))


def test_the_findings_file_names_the_models(outputs):
    document = json.loads((outputs / "findings.json").read_text())
    roles = [m["role"] for m in document["models"]]
    assert roles == ["segmentation", "nodule"]
    assert all(len(m["sha256"]) == 64 for m in document["models"])


def test_the_luna16_finding_overlaps_the_readers_consensus(outputs, findings, lidc_scan, lidc_dir, label_map):
    import SimpleITK as sitk

    from medcad.io.lidc import find_lidc_xml, read_lidc_xml
    from medcad.io.lidc_nodules import group_nodules, sop_slice_index

    read = read_lidc_xml(find_lidc_xml(lidc_dir)[0])
    nodules = group_nodules(read, lidc_scan.geometry, series_uid=lidc_scan.series_uid,
                            sop_index=sop_slice_index(lidc_dir, lidc_scan.geometry))
    luna = min(nodules, key=lambda n: np.linalg.norm(n.centroid_xyz - LUNA_NODULE_XYZ))
    assert np.linalg.norm(luna.centroid_xyz - LUNA_NODULE_XYZ) < 2.0
    consensus = luna.consensus_mask().full()
    labels = sitk.GetArrayFromImage(label_map)
    k = 1 + min(range(len(findings)), key=lambda i: np.linalg.norm(np.subtract(findings[i].center_xyz, LUNA_NODULE_XYZ)))
    mask = labels == k
    dice = 2 * np.count_nonzero(mask & consensus) / (np.count_nonzero(mask) + np.count_nonzero(consensus))
    print(f"Dice of finding {k} against the {luna.reader_count} readers' consensus: {dice:.3f}")
    assert dice >= 0.5, dice


def test_the_label_map_sits_on_the_scan_and_around_each_centre(findings, lidc_scan, label_map):
    import SimpleITK as sitk

    assert np.allclose(label_map.GetOrigin(), lidc_scan.origin_xyz, atol=1e-4)
    assert np.allclose(label_map.GetSpacing(), lidc_scan.spacing_xyz, atol=1e-6)
    assert np.allclose(np.reshape(label_map.GetDirection(), (3, 3)), lidc_scan.direction, atol=1e-6)
    labels = sitk.GetArrayFromImage(label_map)
    assert labels.max() == len(findings) == 7
    for k, finding in enumerate(findings, start=1):
        voxels = np.argwhere(labels == k)
        assert len(voxels) == finding.voxel_count
        # The label map's own world coordinates (SimpleITK's index -> point, x y z order).
        centroid_xyz = np.mean([label_map.TransformContinuousIndexToPhysicalPoint(v[::-1].astype(float).tolist())
                                for v in voxels], axis=0)
        # The JSON centre is HU-weighted, the centroid is not: within one voxel.
        assert np.all(np.abs(centroid_xyz - finding.center_xyz) <= lidc_scan.spacing_xyz), (k, centroid_xyz)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
@pytest.mark.parametrize("name", ["seg.dcm", "sr.dcm"])
def test_the_dicom_results_pass_dciodvfy(outputs, name):
    result = subprocess.run(["dciodvfy", str(outputs / "dicom" / name)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_the_sr_gives_back_the_findings(outputs, findings):
    from medcad.reports.dicom_results import read_sr_findings

    read_back = read_sr_findings(outputs / "dicom" / "sr.dcm")
    assert len(read_back) == len(findings)
    for finding, item in zip(findings, read_back):
        assert np.allclose(item.center_xyz, finding.center_xyz, atol=0.01)
        assert abs(item.nodule_prob - finding.nodule_prob) < 1e-6
        assert abs(item.diameter_mm - finding.diameter_mm) < 1e-3


def test_the_seg_frames_lie_on_their_source_slices(outputs, findings, lidc_dir, label_map):
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk

    from medcad.io.dicom import series_slice_files

    seg = hd.seg.segread(outputs / "dicom" / "seg.dcm")
    assert len(seg.SegmentSequence) == len(findings)
    files = series_slice_files(lidc_dir)
    position_of = {}
    for path in files:
        source = pydicom.dcmread(path, stop_before_pixels=True)
        position_of[source.SOPInstanceUID] = np.array([float(v) for v in source.ImagePositionPatient])
    slice_of = {uid: i for i, uid in enumerate(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                                                for p in files)}
    labels = sitk.GetArrayFromImage(label_map)
    pixels = seg.pixel_array
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        assert np.allclose(position, position_of[source_uid], atol=1e-3)
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(pixels[frame].astype(bool), labels[slice_of[source_uid]] == segment)


def test_the_report_opens_in_a_browser_and_jumps_to_each_finding(outputs, findings, lidc_scan):
    from selenium.webdriver.common.by import By

    from tests.reports.test_html_report import _driver, _open, _severe

    (page,) = (outputs / "report").glob("*.html")
    driver = _driver()
    try:
        _open(driver, page)
        assert driver.execute_script("return document.body.dataset.viewerReady") == "1"
        assert _severe(driver) == []
        rows = driver.find_elements(By.CSS_SELECTOR, "#findings-table tbody tr")
        assert len(rows) == len(findings) == 7
        for k in (3, 1):
            driver.find_element(By.CSS_SELECTOR, f'#findings-table tbody tr[data-finding="{k}"]').click()
            assert driver.execute_script("return window.medcadViewer.currentFinding()") == k
            crosshair = np.asarray(driver.execute_script("return window.medcadViewer.crosshairMM()"))
            # the viewer's volume is reduced in-plane (~1.4 mm): within two of its voxels
            assert np.all(np.abs(crosshair - findings[k - 1].center_xyz) <= 2 * np.array([1.41, 1.41, 2.5])), k
            assert driver.execute_script("return window.medcadViewer.valuesAtCrosshair()")["label"] == k
        text = driver.find_element(By.TAG_NAME, "body").text
        assert "hit" in text  # the LUNA16 nodule of this scan is hit by finding 1
        assert _severe(driver) == []
    finally:
        driver.quit()
