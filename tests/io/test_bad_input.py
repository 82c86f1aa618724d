"""Bad input gives one clear sentence naming the file and the problem (and the CLI exits 2)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pydicom
import pytest

from medcad.errors import InputError
from medcad.io import Scan, read_scan, write_scan
from medcad.io.dicom_writer import derived_uid, write_dicom_series
from medcad.io.luna import read_annotations, read_malignancy


def _phantom(direction=None) -> Scan:
    rng = np.random.default_rng(7)
    hu = rng.integers(-1000, 1000, size=(6, 9, 11)).astype(np.int16)
    return Scan.from_array(hu, origin_xyz=(-12.5, 40.0, -300.25), spacing_xyz=(0.61, 0.83, 1.7),
                           direction=direction, series_uid=derived_uid("test-series"))


def _series(tmp_path, direction=None):
    folder = tmp_path / "series"
    scan = _phantom(direction)
    write_dicom_series(scan, folder)
    return scan, folder, sorted(folder.glob("*.dcm"))


def _edit(path, **fields):
    ds = pydicom.dcmread(path)
    for name, value in fields.items():
        setattr(ds, name, value)
    ds.save_as(path)


def test_written_series_reads_back_with_flipped_axes(tmp_path):
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    scan, folder, _ = _series(tmp_path, direction)
    back = read_scan(tmp_path)  # any nesting
    # DICOM order follows the slice normal (row x column), so the z axis comes back reversed;
    # what must hold is that each anatomical voxel keeps its world position and value.
    np.testing.assert_array_equal(back.hu, scan.hu[::-1])
    for irc in ((0, 0, 0), (5, 8, 10), (2, 3, 4)):
        twin = (scan.shape_irc[0] - 1 - irc[0], irc[1], irc[2])
        np.testing.assert_allclose(back.irc_to_xyz(twin), scan.irc_to_xyz(irc), atol=1e-5)


def test_missing_slice(tmp_path):
    _, folder, files = _series(tmp_path)
    files[3].unlink()
    with pytest.raises(InputError, match=r"1 slice\(s\) missing"):
        read_scan(folder)


def test_duplicated_slice(tmp_path):
    _, folder, files = _series(tmp_path)
    copy = folder / "dup.dcm"
    shutil.copy(files[2], copy)
    _edit(copy, SOPInstanceUID=derived_uid("dup"))
    with pytest.raises(InputError, match="duplicated slices"):
        read_scan(folder)


def test_irregular_spacing_refused_or_resampled(tmp_path):
    scan, folder, files = _series(tmp_path)
    position = [float(v) for v in pydicom.dcmread(files[2]).ImagePositionPatient]
    position[2] += 0.5  # slice 2 sits 0.5 mm off its place
    _edit(files[2], ImagePositionPatient=[f"{v:.6f}" for v in position])
    with pytest.raises(InputError, match="irregular slice spacing"):
        read_scan(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resampled = read_scan(folder, irregular="resample")
    assert any("irregular" in str(w.message) for w in caught)
    assert resampled.hu.shape == scan.hu.shape
    np.testing.assert_array_equal(resampled.hu[0], scan.hu[0])
    np.testing.assert_array_equal(resampled.hu[-1], scan.hu[-1])


def test_mixed_orientations(tmp_path):
    _, folder, files = _series(tmp_path)
    _edit(files[1], ImageOrientationPatient=["0", "1", "0", "1", "0", "0"])
    with pytest.raises(InputError, match="mixed orientations"):
        read_scan(folder)


def test_two_series_need_a_choice(tmp_path):
    _, folder, _ = _series(tmp_path)
    other = _phantom()
    write_dicom_series(other, tmp_path / "other", series_uid=derived_uid("other-series"))
    with pytest.raises(InputError, match="holds 2 series") as error:
        read_scan(tmp_path)
    assert derived_uid("other-series") in str(error.value)
    assert read_scan(tmp_path, series_uid=derived_uid("other-series")).series_uid == derived_uid("other-series")
    with pytest.raises(InputError, match="not found"):
        read_scan(tmp_path, series_uid="1.2.3")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM image files"):
        read_scan(tmp_path)


def test_truncated_dicom_pixels(tmp_path):
    _, folder, files = _series(tmp_path)
    data = files[4].read_bytes()
    files[4].write_bytes(data[: len(data) - 50])
    with pytest.raises(InputError) as error:
        read_scan(folder)
    assert files[4].name in str(error.value)


def test_truncated_raw_file(tmp_path):
    path = write_scan(_phantom(), tmp_path / "scan.mhd")
    raw = tmp_path / "scan.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(InputError, match="cannot read the volume") as error:
        read_scan(path)
    assert str(path) in str(error.value)


def test_non_finite_values(tmp_path):
    scan = _phantom()
    values = scan.hu.astype(np.float32)
    values[1, 2, 3] = np.nan
    path = write_scan(scan.replace_hu(values), tmp_path / "nan.nrrd")
    with pytest.raises(InputError, match="non-finite"):
        read_scan(path)


def test_two_dimensional_image_and_unknown_file(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="2D image"):
        read_scan(tmp_path / "flat.nrrd")
    (tmp_path / "x.txt").write_text("no")
    with pytest.raises(InputError, match="not a recognised scan"):
        read_scan(tmp_path / "x.txt")


def test_csv_without_needed_column(tmp_path):
    table = tmp_path / "annotations.csv"
    table.write_text("seriesuid,coordX,coordY,diameter_mm\n1.2.3,1,2,3\n")
    with pytest.raises(InputError, match="lacks the column.*coordZ"):
        read_annotations(table)
    broken = tmp_path / "mal.csv"
    broken.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool,mal_details,bboxLowX,bboxLowY,"
                      "bboxLowZ,bboxHighX,bboxHighY,bboxHighZ\n1.2.3,1,2,3,4,True,oops,0,0,0,1,1,1\n")
    with pytest.raises(InputError, match="mal_details"):
        read_malignancy(broken)


def test_cli_prints_one_line_and_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = subprocess.run([sys.executable, "-m", "medcad", "info", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0] and "no DICOM" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_write_is_atomic_on_failure(tmp_path):
    with pytest.raises(InputError, match="unknown output format"):
        write_scan(_phantom(), tmp_path / "scan.xyz")
    assert list(tmp_path.iterdir()) == []
