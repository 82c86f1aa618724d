"""Reading the real data in ../shared/data: LIDC-IDRI-0001, the TotalSegmentator NIfTI, odd DICOM."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from medcad.geometry import LPS_FROM_RAS
from medcad.io import read_scan, write_scan
from medcad.io.luna import read_annotations
from tests.conftest import LIDC_0001_SERIES_UID, shared_path


def test_lidc_series_reads_with_its_geometry(lidc_scan):
    assert lidc_scan.hu.shape == (133, 512, 512)
    np.testing.assert_allclose(lidc_scan.spacing_xyz, (0.703125, 0.703125, 2.5))
    assert lidc_scan.series_uid == LIDC_0001_SERIES_UID
    np.testing.assert_allclose(lidc_scan.direction, np.eye(3))
    # LUNA16's .mhd of this series has origin (-166, -171.7, -340): the lowest slice is first.
    np.testing.assert_allclose(lidc_scan.origin_xyz, (-166.0, -171.699997, -340.0), atol=1e-6)
    assert lidc_scan.hu.dtype == np.int16
    assert lidc_scan.hu.min() >= -1024  # GE padding (-3024 HU) mapped to air
    assert "PatientID" not in lidc_scan.metadata and "PatientName" not in lidc_scan.metadata


def test_luna_nodule_maps_into_the_nodule_and_back(lidc_scan, luna_dir):
    (nodule,) = read_annotations(luna_dir / "annotations.csv").for_series(LIDC_0001_SERIES_UID)
    irc = lidc_scan.xyz_to_irc(nodule.center_xyz, round=True)
    assert lidc_scan.geometry.contains_irc(irc)
    assert lidc_scan.hu[tuple(irc)] > -400
    back_xyz = lidc_scan.irc_to_xyz(irc)
    assert np.all(np.abs(back_xyz - np.array(nodule.center_xyz)) <= lidc_scan.spacing_xyz / 2)


@pytest.fixture(scope="module")
def lidc_written(lidc_scan, tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    return {suffix: read_scan(write_scan(lidc_scan, folder / f"scan{suffix}"))
            for suffix in (".mhd", ".nii.gz", ".nrrd")}


@pytest.mark.parametrize("suffix", [".mhd", ".nii.gz", ".nrrd"])
def test_written_formats_read_back_identically(lidc_scan, lidc_written, suffix):
    back = lidc_written[suffix]
    assert back.hu.dtype == lidc_scan.hu.dtype
    np.testing.assert_array_equal(back.hu, lidc_scan.hu)
    # NIfTI stores its affine as float32: agreement to 1e-4 mm, exact for the other formats.
    tolerance = 1e-4 if suffix == ".nii.gz" else 1e-9
    np.testing.assert_allclose(back.origin_xyz, lidc_scan.origin_xyz, atol=tolerance)
    np.testing.assert_allclose(back.spacing_xyz, lidc_scan.spacing_xyz, atol=tolerance)
    np.testing.assert_allclose(back.direction, lidc_scan.direction, atol=1e-6)
    voxel = (100, 200, 300)
    np.testing.assert_allclose(back.irc_to_xyz(voxel), lidc_scan.irc_to_xyz(voxel), atol=tolerance)


def _nifti_sform_ras(path) -> np.ndarray:
    """The 3x4 sform affine (RAS) straight from a .nii.gz header, without SimpleITK."""
    header = gzip.open(path).read(348)
    assert struct.unpack("<i", header[:4])[0] == 348
    rows = [struct.unpack("<4f", header[offset:offset + 16]) for offset in (280, 296, 312)]
    return np.array(rows, dtype=np.float64)


def test_nifti_stores_ras_and_reads_as_lps(lidc_scan, tmp_path):
    """NIfTI (RAS on disk) and DICOM (LPS) give one world point for one anatomical voxel."""
    path = write_scan(lidc_scan, tmp_path / "scan.nii.gz")
    affine_ras = _nifti_sform_ras(path)
    voxel_irc = np.array([90, 367, 316])
    point_ras = affine_ras[:, :3] @ voxel_irc[::-1] + affine_ras[:, 3]
    np.testing.assert_allclose(LPS_FROM_RAS @ point_ras, lidc_scan.irc_to_xyz(voxel_irc), atol=1e-3)


def test_totalseg_nifti_reads_in_lps():
    path = shared_path("totalseg", "example_ct.nii.gz")
    scan = read_scan(path)
    assert scan.hu.shape == (112, 101, 122)
    np.testing.assert_allclose(scan.spacing_xyz, (3.0, 3.0, 3.0), atol=1e-4)
    affine_ras = _nifti_sform_ras(path)
    for voxel_irc in ([0, 0, 0], [50, 60, 70], [111, 100, 121]):
        point_ras = affine_ras[:, :3] @ np.array(voxel_irc[::-1]) + affine_ras[:, 3]
        np.testing.assert_allclose(LPS_FROM_RAS @ point_ras, scan.irc_to_xyz(voxel_irc), atol=1e-3)
    assert -1100 < np.median(scan.hu) < 200  # HU, not raw values


def test_odd_minimal_dicom_slices_read():
    folder = shared_path("dicom_misc")
    scan = read_scan(folder)
    assert scan.hu.shape == (2, 512, 512)
    np.testing.assert_allclose(scan.spacing_xyz, (0.625, 0.625, 1.0))
    single = read_scan(folder / "lungmask_0.dcm")
    assert single.hu.shape == (1, 512, 512)
    np.testing.assert_array_equal(single.hu[0], scan.hu[0])
