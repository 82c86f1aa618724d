"""MIPs: rows run head -> feet, and a row maps to a slice index and a z in mm and back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcad.errors import InputError
from medcad.io import Scan, read_scan
from medcad.transforms.mip import MipConfig, project, project_views, spine_center
from tests.conftest import shared_path


def _phantom(slices: int = 40, spacing_z: float = 2.5, flip_z: bool = False, bright_slice: int | None = None,
             origin_z: float = -100.0) -> Scan:
    """A small body with a 'spine' column (bone) and optionally one bright slice; z flipped on request."""
    hu = np.full((slices, 24, 30), -1000, dtype=np.int16)
    hu[:, 4:20, 3:27] = 40
    hu[:, 12:16, 13:17] = 400  # the spine: bone in every slice, centred at x = 14.5 voxels
    if bright_slice is not None:
        hu[bright_slice, 12:16, 13:17] = 1500
    direction = np.diag([1.0, 1.0, -1.0 if flip_z else 1.0])
    if flip_z:  # the same world content stored feet -> head reversed: index 0 is the top slice
        hu = hu[::-1].copy()
        origin_z = origin_z + spacing_z * (slices - 1)
    return Scan.from_array(hu, origin_xyz=(-20.0, 30.0, origin_z), spacing_xyz=(1.5, 1.2, spacing_z),
                           direction=direction)


@settings(max_examples=40, deadline=None)
@given(spacing_z=st.floats(0.4, 6.0), slices=st.integers(12, 120), flip=st.booleans(),
       origin_z=st.floats(-800, 800), pixel=st.floats(0.5, 3.0), rows=st.integers(8, 600),
       fraction=st.floats(0, 1))
def test_row_slice_z_round_trip_any_spacing_and_padding(spacing_z, slices, flip, origin_z, pixel, rows, fraction):
    scan = _phantom(slices, spacing_z, flip_z=flip, origin_z=origin_z)
    if spacing_z * (slices - 1) < 30:
        with pytest.raises(InputError, match="covers only"):
            project(scan, "frontal", MipConfig(pixel_mm=pixel, size=(rows, 16)))
        return
    geometry = project(scan, "frontal", MipConfig(pixel_mm=pixel, size=(rows, 16))).geometry
    index = fraction * (slices - 1)
    z_mm = scan.irc_to_xyz([index, 0, 0])[2]
    assert geometry.slice_to_z_mm(index) == pytest.approx(z_mm, abs=1e-6)
    row = geometry.slice_to_row(index)
    assert geometry.row_to_slice(row) == pytest.approx(index, abs=1e-6)
    assert geometry.row_to_z_mm(row) == pytest.approx(z_mm, abs=1e-6)
    assert geometry.z_mm_to_row(z_mm) == pytest.approx(row, abs=1e-6)
    # head at the top: a more superior slice has a smaller row, whatever the direction
    top_index = slices - 1 if not flip else 0  # unflipped: index 0 is the lowest z (feet)
    assert geometry.row_to_z_mm(geometry.slice_to_row(top_index)) == pytest.approx(geometry.top_z_mm)
    assert geometry.slice_to_row(top_index) == pytest.approx(geometry.row_offset)
    assert geometry.row_offset == (rows - geometry.content_rows) // 2


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("view", ["frontal", "sagittal"])
def test_bright_slice_lands_on_its_row(view, flip):
    scan = _phantom(60, 2.5, flip_z=flip, bright_slice=17)  # world content fixed; stored reversed when flipped
    mip = project(scan, view, MipConfig(size=(256, 64)))
    stored_index = 17 if not flip else 42
    expected_row = mip.geometry.slice_to_row(stored_index)
    profile = mip.image.max(axis=1)
    assert abs(int(np.argmax(profile)) - expected_row) <= 0.5
    assert mip.geometry.nearest_slice(np.argmax(profile)) == stored_index
    first, stop = mip.geometry.content_row_range()
    assert profile[:first].max() == 0 and profile[stop:].max() == 0  # padding is black
    assert profile[first:stop].min() > 0  # the spine is seen on every scanned row


def test_flipped_z_gives_the_same_image():
    plain = project_views(_phantom(50, 3.0, bright_slice=10), MipConfig(size=(192, 64)))
    flipped = project_views(_phantom(50, 3.0, flip_z=True, bright_slice=10), MipConfig(size=(192, 64)))
    for view in ("frontal", "sagittal"):
        np.testing.assert_allclose(plain[view].image, flipped[view].image, atol=1e-6)
        assert plain[view].geometry.top_z_mm == pytest.approx(flipped[view].geometry.top_z_mm)
        assert plain[view].geometry.slices.step_mm == -flipped[view].geometry.slices.step_mm


def test_crop_when_the_scan_is_taller_than_the_image():
    scan = _phantom(200, 2.0, bright_slice=100)  # 398 mm tall into 128 rows: centre crop
    mip = project(scan, "frontal", MipConfig(size=(128, 48)))
    assert mip.geometry.row_offset < 0 and mip.image.shape == (128, 48)
    assert abs(np.argmax(mip.image.max(axis=1)) - mip.geometry.slice_to_row(100)) <= 0.5


def test_pixel_size_and_window():
    scan = _phantom(40, 2.5)
    mip = project(scan, "frontal", MipConfig(pixel_mm=0.5, size=None, multiple=16))
    assert mip.geometry.content_rows == int(round(39 * 2.5 / 0.5)) + 1
    assert mip.image.shape[0] % 16 == 0 and mip.image.shape[0] >= mip.geometry.content_rows
    assert mip.image.max() == pytest.approx((400 - 100) / 1400, abs=1e-5)  # bone window [100, 1500]


def test_spine_found_and_sides_masked():
    scan = _phantom(40, 2.5)
    spine = spine_center(scan)
    assert spine.x_mm == pytest.approx(-20.0 + 14.5 * 1.5, abs=1.0)
    assert spine.y_mm == pytest.approx(30.0 + 13.5 * 1.2, abs=1.0)
    hu = scan.hu.copy()
    hu[:, 6:8, 2:4] = 1200  # a bright lateral object (an arm) beside the spine
    with_arm = scan.replace_hu(hu)
    frontal = project(with_arm, "frontal", MipConfig(size=(128, 64), keep_width_mm=12))
    columns = np.flatnonzero(frontal.image.max(axis=0) > 0)
    assert np.all(np.abs(frontal.geometry.col_to_mm(columns) - spine.x_mm) <= 6)
    sagittal_all = project(with_arm, "sagittal", MipConfig(size=(128, 64)))
    sagittal_slab = project(with_arm, "sagittal", MipConfig(size=(128, 64), sagittal_slab_mm=10))
    assert sagittal_all.image.max() > 0.7 and sagittal_slab.image.max() < 0.3  # the arm is outside the slab


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="single image"):
        project(Scan.from_array(np.zeros((1, 32, 32), dtype=np.int16)), "frontal")
    oblique = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    with pytest.raises(InputError, match="oblique"):
        project(Scan.from_array(np.zeros((30, 8, 8), dtype=np.int16), spacing_xyz=(1, 1, 3), direction=oblique),
                "sagittal")
    with pytest.raises(ValueError, match="view"):
        project(_phantom(), "axial")


def test_real_ct_l3_band_maps_back_to_its_z_range():
    ct = read_scan(shared_path("totalseg", "example_ct.nii.gz"))
    labels = read_scan(shared_path("totalseg", "vertebrae_totalseg.nii.gz"))
    l3_slices = np.flatnonzero((labels.hu == 29).any(axis=(1, 2)))
    l3_z_mm = ct.irc_to_xyz(np.stack([l3_slices, np.zeros_like(l3_slices), np.zeros_like(l3_slices)], 1))[:, 2]
    config = MipConfig(sagittal_slab_mm=60)
    ct_mips = project_views(ct, config)
    label_mips = project_views(labels.replace_hu(np.where(labels.hu == 29, 1500, 0).astype(np.int16)), config)
    for view in ("frontal", "sagittal"):
        geometry = ct_mips[view].geometry
        assert ct_mips[view].image.shape == (512, 512)
        band = np.flatnonzero(label_mips[view].image.max(axis=1) > 0.5)
        assert band.size > 0 and np.all(np.diff(band) == 1)  # one contiguous band of rows
        z_band = geometry.row_to_z_mm(band[[0, -1]])
        # the band's rows map back to the labelled slices' z range (within one 3 mm slice)
        assert z_band[0] == pytest.approx(l3_z_mm.max(), abs=3.0)
        assert z_band[1] == pytest.approx(l3_z_mm.min(), abs=3.0)
        assert {int(geometry.nearest_slice(band[len(band) // 2]))} <= set(l3_slices.tolist())
        # and the CT shows bone (vertebrae) on those rows near the spine column
        column = int(round(geometry.spine_col))
        assert ct_mips[view].image[band, column - 15:column + 15].mean() > 0.1
