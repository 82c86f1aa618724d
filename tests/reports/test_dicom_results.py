"""DICOM outputs of the nodule CAD: the Segmentation sits on the source slices, the SR reads back.

A synthetic series with odd geometry (oblique in-plane rotation, flipped row and slice axes,
odd spacing, non-zero origin) and the real LIDC-IDRI-0001 series; dciodvfy (dicom3tools) checks
both files when it is installed (CI has it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medcad.errors import InputError
from medcad.findings import Finding, FindingMasks
from medcad.io import Scan, read_scan
from medcad.io.dicom import series_slice_files
from medcad.io.dicom_writer import derived_uid, write_dicom_series
from medcad.pipeline.group import equivalent_diameter_mm
from medcad.pipeline.model_set import ModelIdentity
from medcad.reports.dicom_results import (
    REPORT_NAME,
    SEGMENTATION_NAME,
    DicomResults,
    read_sr_findings,
    write_dicom_results,
)

MODELS = (
    ModelIdentity("segmentation", "nodule_unet2d", "dlwpt book", "1" * 64),
    ModelIdentity("nodule", "luna_model", "dlwpt book", "2" * 64),
    ModelIdentity("malignancy", "luna_model", "trained here", "3" * 64),
)
LUNA_NODULE_XYZ = (56.21, 86.34, -115.87)  # LIDC-IDRI-0001's LUNA16 nodule
SOURCE_INSTITUTION = "Example Hospital"  # put into the synthetic source; must not reach the outputs
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy (Debian package dicom3tools) is not installed")


# --- helpers ------------------------------------------------------------------------------------


def sphere_voxels(scan: Scan, center_xyz, radius_mm: float) -> np.ndarray:
    """Ascending flat indices of the voxels whose centres lie within radius_mm of center_xyz."""
    center_irc = scan.xyz_to_irc(center_xyz)
    reach = np.ceil(radius_mm / scan.spacing_xyz[::-1]).astype(int) + 1
    low = np.maximum(np.floor(center_irc).astype(int) - reach, 0)
    high = np.minimum(np.ceil(center_irc).astype(int) + reach + 1, scan.shape_irc)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij"), -1).reshape(-1, 3)
    inside = grid[np.linalg.norm(scan.irc_to_xyz(grid) - np.asarray(center_xyz), axis=1) <= radius_mm]
    return np.sort(np.ravel_multi_index(inside.T, scan.shape_irc))


def finding_of(scan: Scan, voxels: np.ndarray, nodule_prob: float, malignancy_prob: float | None) -> Finding:
    """A made-up finding at the voxels' centroid, with their equivalent diameter."""
    irc = np.stack(np.unravel_index(voxels, scan.shape_irc), axis=1)
    center_irc = irc.mean(axis=0)
    volume_mm3 = len(voxels) * float(np.prod(scan.spacing_xyz))
    return Finding(series_uid=scan.series_uid or "", center_xyz=tuple(float(v) for v in scan.irc_to_xyz(center_irc)),
                   nodule_prob=nodule_prob, malignancy_prob=malignancy_prob,
                   center_irc=tuple(float(v) for v in center_irc), diameter_mm=equivalent_diameter_mm(volume_mm3),
                   voxel_count=len(voxels))


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    """dciodvfy's (error lines, warning lines) for a file."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


def source_headers(files) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def frames_by_segment(seg) -> dict[int, list[int]]:
    """Frame indices (0-based) of each segment number (per frame, or shared when the SEG has one segment)."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    frames: dict[int, list[int]] = {}
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        identification = (item if "SegmentIdentificationSequence" in item else shared).SegmentIdentificationSequence[0]
        frames.setdefault(int(identification.ReferencedSegmentNumber), []).append(index)
    return frames


def assert_frames_on_source_slices(seg_path: Path, files, masks: FindingMasks) -> None:
    """Each segment's frames: one per source slice holding its voxels, at that file's position,
    referencing that file's instance, with the mask's pixels exactly."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    headers = source_headers(files)
    source_positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    frames = frames_by_segment(seg)
    assert sorted(frames) == list(range(1, len(masks) + 1))
    for k in range(1, len(masks) + 1):
        mask = masks.mask(k)
        slices_with_voxels = sorted(int(i) for i in np.flatnonzero(mask.any(axis=(1, 2))))
        seen = []
        for f in frames[k]:
            item = seg.PerFrameFunctionalGroupsSequence[f]
            position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
            distances = np.abs(source_positions - position).max(axis=1)
            i = int(np.argmin(distances))
            assert distances[i] <= 1e-3, f"segment {k} frame {f} at {position} is on no source slice"
            source_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            assert source_uid == headers[i].SOPInstanceUID
            assert np.array_equal(pixels[f].astype(bool), mask[i]), f"segment {k} differs on slice {i}"
            seen.append(i)
        assert sorted(seen) == slices_with_voxels  # no empty frames, none missing


def assert_findings_read_back(sr_path: Path, scan: Scan, findings, masks: FindingMasks, seg_path: Path) -> None:
    import highdicom as hd

    read = read_sr_findings(sr_path)
    seg = hd.seg.segread(seg_path)
    voxel_mm3 = float(np.prod(scan.spacing_xyz))
    assert len(read) == len(findings)
    for k, (got, want) in enumerate(zip(read, findings), start=1):
        assert got.tracking_id == f"Nodule {k}"
        assert got.segment_number == k
        assert got.tracking_uid == seg.SegmentSequence[k - 1].TrackingUID
        np.testing.assert_allclose(got.center_xyz, want.center_xyz, atol=0.01)
        assert got.nodule_prob == pytest.approx(want.nodule_prob, abs=1e-6)
        if want.malignancy_prob is None:
            assert got.malignancy_prob is None
        else:
            assert got.malignancy_prob == pytest.approx(want.malignancy_prob, abs=1e-6)
        assert got.diameter_mm == pytest.approx(want.diameter_mm, rel=1e-6)
        assert got.volume_mm3 == pytest.approx(len(masks.voxels[k - 1]) * voxel_mm3, rel=1e-6)


def has_private_tags(ds: pydicom.Dataset) -> bool:
    return any(element.tag.is_private for element in ds.iterall())


# --- the synthetic series -------------------------------------------------------------------------


def rotated_flipped_direction(degrees: float) -> np.ndarray:
    """An in-plane rotation about z times diag(1, -1, -1): oblique rows, flipped row and slice axes, det +1."""
    a = np.radians(degrees)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    direction = rotation @ np.diag([1.0, -1.0, -1.0])
    assert np.linalg.det(direction) == pytest.approx(1.0)
    return direction


def complete_synthetic_headers(folder: Path) -> None:
    """What a scanner writes and medcad's test writer leaves out: a frame of reference (type 1 for CT
    images), a patient name, and things the outputs must not copy (a private tag, the institution)."""
    frame_of_reference_uid = derived_uid(f"frame-of-reference:{folder}")
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if "FrameOfReferenceUID" not in ds:
            ds.FrameOfReferenceUID = frame_of_reference_uid
            ds.PositionReferenceIndicator = ""
        ds.PatientName = "Phantom^Synthetic"
        ds.Manufacturer = "Example Scanners"  # with it highdicom would list the scanner, institution included
        ds.InstitutionName = SOURCE_INSTITUTION
        ds.private_block(0x0011, "MEDCAD TEST", create=True).add_new(0x01, "LO", "private value")
        ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def synthetic_series(tmp_path_factory):
    """(files, scan as read back, findings, masks) of a small CT with two spherical 'nodules'."""
    rng = np.random.default_rng(7)
    hu = rng.integers(-1000, 400, size=(14, 30, 34)).astype(np.int16)
    scan = Scan.from_array(hu, origin_xyz=(-101.5, 37.25, 412.0), spacing_xyz=(0.7, 0.9, 2.3),
                           direction=rotated_flipped_direction(20.0), series_uid=derived_uid("synthetic-series"))
    folder = tmp_path_factory.mktemp("synthetic_ct")
    write_dicom_series(scan, folder)
    complete_synthetic_headers(folder)
    files = series_slice_files(folder)
    read = read_scan(folder)
    first = sphere_voxels(read, read.irc_to_xyz((6.0, 12.0, 15.0)), 4.0)
    second = sphere_voxels(read, read.irc_to_xyz((3.0, 22.0, 8.0)), 2.5)
    masks = FindingMasks(read.shape_irc, (first, second))
    findings = [finding_of(read, first, 0.91234567, 0.3456789), finding_of(read, second, 0.6, None)]
    return files, read, findings, masks


@pytest.fixture(scope="module")
def synthetic_results(synthetic_series, tmp_path_factory) -> DicomResults:
    files, scan, findings, masks = synthetic_series
    return write_dicom_results(files, scan, findings, masks, MODELS, tmp_path_factory.mktemp("dicom_out"))


def test_synthetic_writes_both_files_and_no_temporary_ones(synthetic_results):
    folder = synthetic_results.report_path.parent
    assert synthetic_results.segmentation_path == folder / SEGMENTATION_NAME
    assert synthetic_results.report_path == folder / REPORT_NAME
    assert sorted(p.name for p in folder.iterdir()) == sorted([SEGMENTATION_NAME, REPORT_NAME])


def test_synthetic_segment_frames_sit_on_their_source_slices(synthetic_series, synthetic_results):
    files, _, _, masks = synthetic_series
    assert_frames_on_source_slices(synthetic_results.segmentation_path, files, masks)


def test_synthetic_sr_reads_back_the_findings(synthetic_series, synthetic_results):
    _, scan, findings, masks = synthetic_series
    assert_findings_read_back(synthetic_results.report_path, scan, findings, masks,
                              synthetic_results.segmentation_path)


def test_one_finding_gives_a_seg_of_one_segment_that_reads_back(synthetic_series, tmp_path):
    files, scan, findings, masks = synthetic_series
    one = FindingMasks(masks.shape_irc, masks.voxels[:1])
    results = write_dicom_results(files, scan, findings[:1], one, MODELS, tmp_path / "out")
    assert_frames_on_source_slices(results.segmentation_path, files, one)
    assert_findings_read_back(results.report_path, scan, findings[:1], one, results.segmentation_path)


def test_sr_references_the_source_slices_of_each_segment(synthetic_series, synthetic_results):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    files, _, _, masks = synthetic_series
    uids = [ds.SOPInstanceUID for ds in source_headers(files)]
    sr = hd.sr.srread(synthetic_results.report_path)
    for k, group in enumerate(sr.content.get_volumetric_roi_measurement_groups(), start=1):
        slices = np.flatnonzero(masks.mask(k).any(axis=(1, 2)))
        referenced = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in group[0].ContentSequence
                      if item.name == codes.DCM.SourceImageForSegmentation]
        assert sorted(referenced) == sorted(uids[i] for i in slices)


def test_synthetic_segments_are_coded_nodules_in_the_lung_by_medcad(synthetic_results):
    import highdicom as hd

    seg = hd.seg.segread(synthetic_results.segmentation_path)
    assert seg.SegmentationType == "BINARY"
    for k, segment in enumerate(seg.SegmentSequence, start=1):
        assert segment.SegmentNumber == k and segment.SegmentLabel == f"Nodule {k}"
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        kind = segment.SegmentedPropertyTypeCodeSequence[0]
        region = segment.AnatomicRegionSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", "49755003")
        assert (kind.CodingSchemeDesignator, kind.CodeValue) == ("SCT", "27925004")
        assert (region.CodingSchemeDesignator, region.CodeValue) == ("SCT", "39607008")
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "medcad nodule CAD"
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # DCM Artificial Intelligence
        for model in MODELS:
            assert model.sha256 in algorithm.AlgorithmParameters


def test_synthetic_sr_names_the_device_the_codes_and_the_models(synthetic_results):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sr = hd.sr.srread(synthetic_results.report_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    report = sr.content
    device = report.get_observer_contexts(observer_type=codes.DCM.Device)[0]
    assert device.observer_identifying_attributes.name == "medcad"
    groups = report.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    for group in groups:
        assert group.finding_type == codes.SCT.Nodule
        assert [site.value for site in group.finding_sites] == [codes.SCT.Lung]
        diameter, = group.get_measurements(name=codes.SCT.Diameter)
        volume, = group.get_measurements(name=codes.SCT.Volume)
        assert diameter.unit == codes.UCUM.Millimeter and volume.unit == codes.UCUM.CubicMillimeter
        nodule, = group.get_measurements(name=codes.DCM.CertaintyOfFinding)
        assert nodule.unit == codes.UCUM.NoUnits
        parameters = [item.value for item in group[0].ContentSequence if item.name == codes.DCM.AlgorithmParameters]
        assert all(any(model.sha256 in text for text in parameters) for model in MODELS)
    assert len(groups[0].get_measurements(name=codes.DCM.ProbabilityOfCancer)) == 1
    assert groups[1].get_measurements(name=codes.DCM.ProbabilityOfCancer) == []  # no malignancy probability


def test_synthetic_outputs_keep_patient_and_study_but_nothing_private_and_get_new_uids(synthetic_series,
                                                                                         synthetic_results):
    files, _, _, _ = synthetic_series
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    seg = pydicom.dcmread(synthetic_results.segmentation_path)
    sr = pydicom.dcmread(synthetic_results.report_path)
    assert has_private_tags(source)  # the check below can fail
    for output in (seg, sr):
        assert output.StudyInstanceUID == source.StudyInstanceUID
        assert output.PatientID == source.PatientID and output.PatientName == source.PatientName
        assert not has_private_tags(output)
        assert SOURCE_INSTITUTION not in str(output)  # nothing of the source beyond Patient / Study
        assert output.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.SeriesInstanceUID != sr.SeriesInstanceUID
    assert seg.SOPInstanceUID != sr.SOPInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID


def test_synthetic_sr_centres_are_in_the_source_frame_of_reference(synthetic_series, synthetic_results):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    files, _, _, _ = synthetic_series
    frame_of_reference_uid = pydicom.dcmread(files[0], stop_before_pixels=True).FrameOfReferenceUID
    sr = hd.sr.srread(synthetic_results.report_path)
    for group in sr.content.get_volumetric_roi_measurement_groups():
        centres = [item for item in group[0].ContentSequence if item.name == codes.DCM.Center]
        assert len(centres) == 1
        assert centres[0].GraphicType == "POINT"
        assert centres[0].ReferencedFrameOfReferenceUID == frame_of_reference_uid


@needs_dciodvfy
def test_synthetic_outputs_pass_dciodvfy(synthetic_results):
    for path in (synthetic_results.segmentation_path, synthetic_results.report_path):
        errors, _ = dciodvfy_errors(path)
        assert errors == [], f"{path.name}: {errors}"


# --- no findings, bad folders, bad inputs ---------------------------------------------------------


def test_no_findings_write_an_sr_without_groups_and_no_seg(synthetic_series, tmp_path):
    files, scan, _, _ = synthetic_series
    out = tmp_path / "out"
    out.mkdir()
    (out / SEGMENTATION_NAME).write_bytes(b"an older run's SEG")  # would not match the new SR
    results = write_dicom_results(files, scan, [], FindingMasks(scan.shape_irc), MODELS, out)
    assert results.segmentation_path is None
    assert sorted(p.name for p in out.iterdir()) == [REPORT_NAME]
    assert read_sr_findings(results.report_path) == []
    sr = pydicom.dcmread(results.report_path)
    assert sr.StudyInstanceUID == pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    if shutil.which("dciodvfy") is not None:
        errors, _ = dciodvfy_errors(results.report_path)
        assert errors == []


def test_out_dir_that_is_a_file_is_an_input_error_and_nothing_is_written(synthetic_series, tmp_path):
    files, scan, findings, masks = synthetic_series
    target = tmp_path / "results"
    target.write_text("a file")
    with pytest.raises(InputError, match="results"):
        write_dicom_results(files, scan, findings, masks, MODELS, target)
    assert target.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_out_dir_below_a_file_is_an_input_error(synthetic_series, tmp_path):
    files, scan, findings, masks = synthetic_series
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="file"):
        write_dicom_results(files, scan, findings, masks, MODELS, tmp_path / "file" / "out")


def test_a_failed_write_leaves_neither_file_nor_temporaries(synthetic_series, tmp_path, monkeypatch):
    files, scan, findings, masks = synthetic_series
    saved = []
    real_save_as = pydicom.Dataset.save_as

    def save_then_fail(self, filename, *args, **kwargs):
        if saved:
            raise OSError(28, "No space left on device")
        saved.append(filename)
        return real_save_as(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", save_then_fail)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="No space left"):
        write_dicom_results(files, scan, findings, masks, MODELS, out)
    assert saved  # the first file was written (to its temporary name) before the second failed
    assert list(out.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_dir_is_an_input_error(synthetic_series, tmp_path):
    files, scan, findings, masks = synthetic_series
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(InputError, match="read_only"):
            write_dicom_results(files, scan, findings, masks, MODELS, out)
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


def test_files_in_another_order_than_the_scan_are_an_input_error(synthetic_series, tmp_path):
    files, scan, findings, masks = synthetic_series
    with pytest.raises(InputError, match="slice 0"):
        write_dicom_results(list(reversed(files)), scan, findings, masks, MODELS, tmp_path / "out")
    with pytest.raises(InputError, match="slice files"):
        write_dicom_results(files[1:], scan, findings, masks, MODELS, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_series_without_frame_of_reference_is_an_input_error(tmp_path):
    scan = Scan.from_array(np.zeros((3, 8, 9), dtype=np.int16), spacing_xyz=(0.8, 0.8, 2.0),
                           series_uid=derived_uid("no-frame-of-reference"))
    folder = write_dicom_series(scan, tmp_path / "ct")
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        if "FrameOfReferenceUID" in ds:
            del ds.FrameOfReferenceUID
            ds.save_as(path, enforce_file_format=True)
    voxels = np.array([0, 1], dtype=np.int64)
    masks = FindingMasks(scan.shape_irc, (voxels,))
    with pytest.raises(InputError, match="FrameOfReferenceUID"):
        write_dicom_results(series_slice_files(folder), read_scan(folder), [finding_of(scan, voxels, 0.9, None)], masks,
                            MODELS, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_read_sr_findings_refuses_what_is_not_a_medcad_sr(synthetic_series, synthetic_results, tmp_path):
    files, _, _, _ = synthetic_series
    with pytest.raises(InputError, match="not a DICOM Structured Report"):
        read_sr_findings(files[0])  # a CT image
    with pytest.raises(InputError, match="not found"):
        read_sr_findings(tmp_path / "missing.dcm")
    other = pydicom.dcmread(synthetic_results.report_path)
    for item in other.ContentSequence:
        if item.get("TextValue") == "medcad":
            item.TextValue = "another CAD"
    other.save_as(tmp_path / "other.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="not a medcad SR"):
        read_sr_findings(tmp_path / "other.dcm")


# --- the real series ------------------------------------------------------------------------------


@pytest.mark.realdata
def test_lidc_0001_results_sit_on_the_ct_and_read_back(lidc_dir, lidc_scan, tmp_path):
    files = series_slice_files(lidc_dir)
    first = sphere_voxels(lidc_scan, LUNA_NODULE_XYZ, 3.0)  # a 6 mm sphere around the LUNA16 nodule
    second = sphere_voxels(lidc_scan, (-80.0, 10.0, -160.0), 1.5)
    assert len(first) > 50 and len(second) > 3
    masks = FindingMasks(lidc_scan.shape_irc, (first, second))
    findings = [finding_of(lidc_scan, first, 0.97, 0.62), finding_of(lidc_scan, second, 0.55, 0.1)]
    start = time.perf_counter()
    results = write_dicom_results(files, lidc_scan, findings, masks, MODELS, tmp_path / "dicom")
    seconds = time.perf_counter() - start
    assert seconds < 30, f"write_dicom_results took {seconds:.1f} s"
    assert_frames_on_source_slices(results.segmentation_path, files, masks)
    assert_findings_read_back(results.report_path, lidc_scan, findings, masks, results.segmentation_path)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert has_private_tags(source)
    for path in (results.segmentation_path, results.report_path):
        output = pydicom.dcmread(path)
        assert output.StudyInstanceUID == source.StudyInstanceUID and output.PatientID == source.PatientID
        assert not has_private_tags(output)
        if shutil.which("dciodvfy") is not None:
            errors, _ = dciodvfy_errors(path)
            assert errors == [], f"{path.name}: {errors}"
