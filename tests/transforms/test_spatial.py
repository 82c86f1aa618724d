"""Spatial steps keep world geometry: resampling (linear / nearest), crops, pads, resizes, box grids."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.errors import MedcadError
from medcad.geometry import VolumeGeometry
from medcad.io.scan import Scan
from medcad.transforms.spatial import (
    BoxIrc,
    bounding_box,
    box_grid,
    crop,
    fit_to_shape,
    margin_irc_for_mm,
    pad_or_crop,
    resample_scan,
    resample_to_grid,
    resample_to_spacing,
    resize,
    spacing_geometry,
)

FLIPPED = np.diag([-1.0, 1.0, -1.0])


def blob_volume(shape=(30, 50, 60), center_irc=(14.0, 22.0, 31.0), radius_vox=(4.0, 9.0, 8.0)) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center_irc, radius_vox))
    return (r2 <= 1).astype(np.float32) * 100.0


def world_centroid(values: np.ndarray, geometry: VolumeGeometry) -> np.ndarray:
    weights = np.clip(values, 0, None)
    irc = np.array(np.nonzero(weights > 0), dtype=np.float64).T
    w = weights[weights > 0]
    return geometry.irc_to_xyz((irc * w[:, None]).sum(0) / w.sum())


@pytest.mark.parametrize("direction", [np.eye(3), FLIPPED])
def test_resample_keeps_world_position_and_field_of_view(direction):
    volume = blob_volume()
    geometry = VolumeGeometry(volume.shape, (-12.5, 30.0, 101.0), (0.7, 0.8, 2.5), direction)
    out = resample_to_spacing(volume, geometry, 1.0)
    np.testing.assert_allclose(out.geometry.spacing_xyz, [1, 1, 1])
    assert out.geometry.shape_irc == (75, 40, 42)  # round(extent / spacing) per axis
    np.testing.assert_allclose(out.geometry.extent_mm, [42, 40, 75])
    # the outer corner of the field of view stays where it was
    corner = geometry.irc_to_xyz([-0.5, -0.5, -0.5])
    np.testing.assert_allclose(out.geometry.irc_to_xyz([-0.5, -0.5, -0.5]), corner, atol=0.6)
    np.testing.assert_allclose(world_centroid(out.array, out.geometry), world_centroid(volume, geometry), atol=0.15)
    assert out.array.dtype == np.float32


def test_nearest_keeps_mask_labels_and_dtype():
    labels = np.zeros((20, 30, 30), dtype=np.uint8)
    labels[5:10, 5:15, 5:15] = 1
    labels[12:16, 10:25, 10:20] = 2
    geometry = VolumeGeometry(labels.shape, (0, 0, 0), (0.6, 0.6, 2.0), np.eye(3))
    out = resample_to_spacing(labels, geometry, 1.2, interpolation="nearest")
    assert out.array.dtype == np.uint8
    assert set(np.unique(out.array)) == {0, 1, 2}
    for label in (1, 2):
        volume_ml = (labels == label).sum() * np.prod(geometry.spacing_xyz)
        resampled_ml = (out.array == label).sum() * np.prod(out.geometry.spacing_xyz)
        assert abs(resampled_ml - volume_ml) / volume_ml < 0.15
    as_bool = resample_to_spacing(labels > 0, geometry, 1.2, interpolation="nearest")
    assert as_bool.array.dtype == bool and np.array_equal(as_bool.array, out.array > 0)


def test_linear_interpolation_between_voxels_and_unknown_mode():
    ramp = np.tile(np.arange(10, dtype=np.float32), (4, 4, 1))
    geometry = VolumeGeometry(ramp.shape, (0, 0, 0), (1, 1, 1), np.eye(3))
    half = VolumeGeometry((4, 4, 10), (0.5, 0, 0), (1, 1, 1), np.eye(3))
    out = resample_to_grid(ramp, geometry, half, "linear", default_value=-7)
    np.testing.assert_allclose(out[0, 0, :9], np.arange(9) + 0.5, atol=1e-5)
    assert out[0, 0, 9] == -7  # beyond the last voxel centre: outside
    with pytest.raises(MedcadError):
        resample_to_grid(ramp, geometry, half, "cubic")


def test_antialias_keeps_a_small_bright_dot():
    dot = np.zeros((20, 40, 40), dtype=np.float32)
    dot[10, 21, 21] = 1000.0
    geometry = VolumeGeometry(dot.shape, (0, 0, 0), (0.7, 0.7, 2.5), np.eye(3))
    target = spacing_geometry(geometry, 3.0)
    plain = resample_to_grid(dot, geometry, target)
    smooth = resample_to_grid(dot, geometry, target, antialias=True)
    assert plain.max() == 0.0  # the dot falls between the coarse samples
    mass = smooth.sum() * np.prod(target.spacing_xyz) / np.prod(geometry.spacing_xyz)
    assert 0.5 * 1000 < mass < 1.5 * 1000


def test_resample_scan_is_isotropic_float_and_air_outside():
    hu = np.full((10, 20, 20), 40, dtype=np.int16)
    scan = Scan.from_array(hu, origin_xyz=(5, 6, 7), spacing_xyz=(0.5, 0.5, 2.0), series_uid="1.2.3")
    out = resample_scan(scan, 1.0)
    assert isinstance(out, Scan) and out.series_uid == "1.2.3"
    np.testing.assert_allclose(out.spacing_xyz, [1, 1, 1])
    assert out.hu.dtype == np.float32 and out.shape_irc == (20, 10, 10)
    np.testing.assert_allclose(out.hu[5:15, 2:8, 2:8], 40)
    shifted = Scan.from_array(hu, origin_xyz=(5, 6, 7), spacing_xyz=(0.5, 0.5, 2.0))
    outside = resample_to_grid(shifted.hu, shifted.geometry, spacing_geometry(shifted.geometry, 1.0).with_shape((30, 10, 10)),
                               default_value=-1000)
    assert outside[-1, 5, 5] == -1000


def test_bounding_box_margin_and_clipping():
    mask = np.zeros((10, 20, 30), dtype=bool)
    mask[3:5, 6:9, 0:4] = True
    assert bounding_box(mask) == BoxIrc((3, 6, 0), (5, 9, 4))
    box = bounding_box(mask, (1, 2, 3))
    assert box == BoxIrc((2, 4, 0), (6, 11, 7)) and box.shape_irc == (4, 7, 7)
    geometry = VolumeGeometry(mask.shape, (0, 0, 0), (0.7, 0.7, 2.5), np.eye(3))
    assert margin_irc_for_mm(geometry, 5.0) == (2, 8, 8)
    with pytest.raises(MedcadError):
        bounding_box(np.zeros((3, 3, 3), dtype=bool))


@pytest.mark.parametrize("direction", [np.eye(3), FLIPPED])
def test_crop_and_pad_keep_world_positions(direction):
    volume = np.arange(10 * 12 * 14, dtype=np.float32).reshape(10, 12, 14)
    geometry = VolumeGeometry(volume.shape, (3.0, -4.0, 50.0), (0.5, 0.75, 2.0), direction)
    point_irc = np.array([6, 7, 9])
    point_xyz = geometry.irc_to_xyz(point_irc)
    cropped = crop(volume, geometry, BoxIrc((4, 5, 6), (9, 10, 12)))
    assert cropped.array.shape == (5, 5, 6)
    inside = cropped.geometry.xyz_to_irc(point_xyz, round=True)
    assert cropped.array[tuple(inside)] == volume[tuple(point_irc)]
    for shape in ((16, 16, 16), (6, 20, 9)):
        padded = pad_or_crop(volume, shape, fill=-1.0, geometry=geometry)
        assert padded.array.shape == shape
        where = padded.geometry.xyz_to_irc(point_xyz, round=True)
        assert padded.array[tuple(where)] == volume[tuple(point_irc)]
    assert (pad_or_crop(volume, (16, 16, 16), fill=-1.0).array == -1.0).sum() == 16 ** 3 - volume.size


def test_resize_and_fit_to_shape_keep_the_content_centre_and_aspect():
    volume = blob_volume(shape=(20, 40, 60), center_irc=(9.5, 19.5, 29.5), radius_vox=(5, 10, 10))
    geometry = VolumeGeometry(volume.shape, (10, 20, 30), (1.0, 1.0, 2.0), np.eye(3))
    resized = resize(volume, (32, 32, 32), geometry=geometry)
    assert resized.array.shape == (32, 32, 32)
    np.testing.assert_allclose(resized.geometry.extent_mm, geometry.extent_mm)
    np.testing.assert_allclose(world_centroid(resized.array, resized.geometry), world_centroid(volume, geometry), atol=0.3)
    labels = (volume > 0).astype(np.uint8)
    assert set(np.unique(resize(labels, (16, 16, 16), "nearest").array)) == {0, 1}
    fitted = fit_to_shape(volume, (32, 32, 32), geometry=geometry)
    spacing = fitted.geometry.spacing_xyz
    assert np.allclose(spacing, spacing[0])  # isotropic: not stretched
    np.testing.assert_allclose(world_centroid(fitted.array, fitted.geometry), world_centroid(volume, geometry), atol=0.5)
    # the blob is a sphere of radius 10 mm: equal extents along every axis after fitting
    extents = [np.ptp(np.nonzero(fitted.array > 50)[axis]) for axis in range(3)]
    assert max(extents) - min(extents) <= 1


@pytest.mark.parametrize("direction", [np.eye(3), FLIPPED])
def test_box_grid_centres_and_fits_the_box(direction):
    geometry = VolumeGeometry((100, 200, 200), (-100, -100, -300), (0.7, 0.7, 2.5), direction)
    box = BoxIrc((10, 40, 30), (90, 160, 190))
    grid = box_grid(geometry, box, (64, 64, 64))
    extent = np.asarray(box.shape_irc) * geometry.spacing_xyz[::-1]
    np.testing.assert_allclose(grid.spacing_xyz, [extent.max() / 64] * 3)
    centre = geometry.irc_to_xyz((np.asarray(box.start_irc) + np.asarray(box.stop_irc) - 1) / 2)
    np.testing.assert_allclose(grid.irc_to_xyz([31.5, 31.5, 31.5]), centre, atol=1e-9)
    fixed = box_grid(geometry, box, (32, 32, 32), spacing_mm=2.0)
    np.testing.assert_allclose(fixed.spacing_xyz, [2, 2, 2])
