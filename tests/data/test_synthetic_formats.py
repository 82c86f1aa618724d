"""Phantom scans written as DICOM series and NIfTI read back with the same voxels and geometry."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.data.synthetic import PhantomOptions, generate_phantom, write_cohort
from medcad.io import read_scan

OPTIONS = PhantomOptions(size="small", negatives=5)


@pytest.mark.parametrize("file_format", ["dicom", "nifti"])
def test_other_formats_read_back_with_the_same_geometry(tmp_path, file_format):
    seed = 0  # its first scan runs backwards along x and z
    summaries = write_cohort(tmp_path / "a", 1, seed, OPTIONS, file_format)
    again = write_cohort(tmp_path / "b", 1, seed, OPTIONS, file_format)
    for summary, repeat in zip(summaries, again):
        scan = read_scan(summary.path)
        expected = generate_phantom(seed, 0, OPTIONS).scan
        assert scan.shape_irc == expected.shape_irc
        np.testing.assert_allclose(scan.origin_xyz, expected.origin_xyz, atol=1e-4)
        np.testing.assert_allclose(scan.spacing_xyz, expected.spacing_xyz, atol=1e-5)
        np.testing.assert_allclose(scan.direction, expected.direction, atol=1e-6)
        np.testing.assert_array_equal(scan.hu, np.where(expected.hu < -1500, -1000, expected.hu))
        if file_format == "dicom":
            assert scan.series_uid == summary.series_uid
        files = sorted(p for p in summary.path.rglob("*") if p.is_file()) if summary.path.is_dir() else [summary.path]
        twins = sorted(p for p in repeat.path.rglob("*") if p.is_file()) if repeat.path.is_dir() else [repeat.path]
        assert [p.read_bytes() for p in files] == [p.read_bytes() for p in twins]
    assert np.any(read_scan(summaries[-1].path).direction.diagonal() < 0)
