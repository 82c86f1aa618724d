"""L3 labels: where L3 is (segmentation, range, reference .npz) and the confidence maps around it."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.data.l3 import (LabelConfig, confidence_map, l3_z_from_range, l3_z_from_segmentation, load_dataset,
                            read_reference_npz, row_profile, save_dataset)
from medcad.errors import InputError
from medcad.io import Scan, read_scan
from medcad.transforms.mip import MipConfig
from tests.conftest import shared_path


def test_band_and_gaussian_profiles():
    band = row_profile(40, 20.0, LabelConfig(kind="band", half_width_rows=3))
    assert np.flatnonzero(band).tolist() == list(range(17, 24))
    gauss = row_profile(40, 12.4, LabelConfig(kind="gaussian", sigma_rows=2))
    assert int(np.argmax(gauss)) == 12 and gauss[12] > gauss[13] > gauss[14] and gauss.max() <= 1
    assert gauss[12] == pytest.approx(np.exp(-0.5 * 0.2**2))
    with pytest.raises(ValueError, match="kind"):
        LabelConfig(kind="box")


def test_confidence_map_columns_near_the_spine():
    label = confidence_map((30, 20), 10, LabelConfig(kind="band", half_width_rows=1, half_width_cols=3), spine_col=5)
    assert label.shape == (30, 20)
    assert np.flatnonzero(label.max(axis=1)).tolist() == [9, 10, 11]
    assert np.flatnonzero(label.max(axis=0)).tolist() == [2, 3, 4, 5, 6, 7, 8]
    everywhere = confidence_map((30, 20), 10, LabelConfig(kind="band", half_width_rows=1))
    assert everywhere[10].min() == 1 and everywhere[13].max() == 0


@pytest.mark.parametrize("flip", [False, True])
def test_l3_z_from_segmentation_any_direction(flip):
    labels = np.zeros((50, 6, 6), dtype=np.int16)
    labels[20:25, 2:4, 2:4] = 29  # slices 20..24 counted from the lowest z
    labels[30:34, 2:4, 2:4] = 30
    origin_z = 10.0 + (2.0 * 49 if flip else 0.0)
    scan = Scan.from_array(labels[::-1].copy() if flip else labels, origin_xyz=(0, 0, origin_z),
                           spacing_xyz=(1, 1, 2.0), direction=np.diag([1, 1, -1.0 if flip else 1.0]))
    assert l3_z_from_segmentation(scan) == pytest.approx(10.0 + 2.0 * 22)
    with pytest.raises(InputError, match="no voxel labelled 28"):
        l3_z_from_segmentation(scan, label=28)
    assert l3_z_from_range(40.0, 70.0) == 55.0


def test_l3_z_from_real_totalsegmentator_labels():
    labels = read_scan(shared_path("totalseg", "vertebrae_totalseg.nii.gz"))
    z_mm = l3_z_from_segmentation(labels)
    assert 289.3 < z_mm < 331.3  # the labelled slices span 289.3 .. 331.3 mm
    assert l3_z_from_segmentation(labels, label=28) < z_mm < l3_z_from_segmentation(labels, label=30)  # L4 < L3 < L2


def _write_reference_npz(path, ydata):
    rng = np.random.default_rng(0)
    frontal = np.empty(2, dtype=object)
    sagittal = np.empty(2, dtype=object)
    for i, rows in enumerate((60, 80)):  # different heights: object arrays, as in the reference file
        frontal[i] = rng.uniform(-100, 1200, (rows, 50)).astype(np.float32)
        sagittal[i] = rng.uniform(-100, 1200, (rows, 40)).astype(np.float32)
    np.savez(path, images_f=frontal, images_s=sagittal, ydata=ydata,
             names=np.array(["case_a", "case_b"], dtype=object), spacings=np.array([[0.8, 0.8, 2.5], [0.7, 0.7, 3.0]]))


def test_reference_npz_annotators_averaged(tmp_path):
    path = tmp_path / "l3.npz"
    _write_reference_npz(path, {"reader_1": np.array([20.0, 41.0]), "reader_2": np.array([22.0, 43.0])})
    dataset = read_reference_npz(path, MipConfig(size=(256, 64)))
    assert dataset.names == ("case_a", "case_b")
    assert dataset.l3_z_mm.tolist() == pytest.approx([-21.0 * 2.5, -42.0 * 3.0])
    rows = dataset.l3_rows("sagittal")
    for i in range(2):
        geometry = dataset.geometries["sagittal"][i]
        assert geometry.row_to_slice(rows[i]) == pytest.approx([21.0, 42.0][i])  # mean row, in original slices
        assert rows[i] == pytest.approx(geometry.row_offset + [21.0 * 2.5, 42.0 * 3.0][i])  # at 1 mm
    assert dataset.images["frontal"].shape == (2, 256, 64)
    assert dataset.geometries["frontal"][0].content_rows == int(59 * 2.5) + 1


def test_reference_npz_refuses_foreign_pickles(tmp_path):
    path = tmp_path / "evil.npz"
    _write_reference_npz(path, {"reader": [print, print]})  # a pickled builtin function, not an array
    with pytest.raises(InputError, match="refusing to unpickle builtins.print"):
        read_reference_npz(path)
    (tmp_path / "partial.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="unreadable"):
        read_reference_npz(tmp_path / "partial.npz")


def test_dataset_round_trip(tmp_path):
    path = tmp_path / "ref.npz"
    _write_reference_npz(path, np.array([20.0, 41.0]))
    dataset = read_reference_npz(path, MipConfig(size=(128, 64)))
    saved = save_dataset(dataset.subset([1, 0]), tmp_path / "mips.npz")
    again = load_dataset(saved)
    assert again.names == ("case_b", "case_a") and again.config == dataset.config
    np.testing.assert_allclose(again.l3_rows("frontal"), dataset.l3_rows("frontal")[::-1])
    np.testing.assert_allclose(again.images["sagittal"][1], dataset.images["sagittal"][0], atol=1e-3)
    assert again.geometries["frontal"][0] == dataset.geometries["frontal"][1]
    with pytest.raises(InputError, match="not an L3 MIP data set|unreadable"):
        load_dataset(path)
