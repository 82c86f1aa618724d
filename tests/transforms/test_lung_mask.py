"""Lung segmentation: a hand-made chest phantom (fast) and the real LIDC-IDRI-0001 CT (acceptance)."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.errors import MedcadError
from medcad.io.scan import Scan
from medcad.transforms.lung_mask import LungMaskConfig, body_mask, fill_holes_slicewise, segment_lungs
from tests.transforms.phantoms import chest_phantom

LUNA_NODULE_XYZ = (56.21, 86.34, -115.87)


def test_phantom_two_lungs_without_outside_air_table_or_upper_trachea():
    scan, truth = chest_phantom()
    result = segment_lungs(scan, LungMaskConfig(min_lung_ml=5.0))
    assert result.component_count == 2
    assert result.mask.dtype == bool and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) == {0, 1, 2}
    total = truth["right_ml"] + truth["left_ml"]
    assert abs(result.volume_ml - total) / total < 0.08
    for name in ("right", "left"):
        overlap = [np.count_nonzero(result.labels[truth[name]] == k) for k in (1, 2)]
        assert max(overlap) / truth[name].sum() > 0.95  # each lung is (almost) one label
    assert not result.mask[82:84].any()  # the table's air
    assert not result.mask[:, :3].any() and not result.mask[:, :, :3].any()  # outside air
    assert not (result.mask & ~result.body).any()
    top = truth["trachea_top"][34:]  # the trachea well above the lungs stays out
    assert np.count_nonzero(result.mask[34:][top]) == 0
    # the vessel hole is filled
    assert result.mask[20, 44, 30]


def test_closing_brings_in_a_pleural_notch():
    scan, truth = chest_phantom()
    hu = scan.hu.copy()
    notch = np.zeros(hu.shape, dtype=bool)
    notch[18:23, 41:47, 15:23] = True  # a "juxtapleural nodule": tissue cut into the lateral edge
    hu[notch] = 40
    notched = scan.replace_hu(hu)
    plain = segment_lungs(notched, LungMaskConfig(min_lung_ml=5.0))
    closed = segment_lungs(notched, LungMaskConfig(min_lung_ml=5.0, closing_mm=6.0))
    inside = notch & truth["right"]
    assert inside.sum() > 100
    assert not plain.mask[inside].any()
    assert closed.mask[inside].mean() > 0.8
    assert closed.volume_ml > plain.volume_ml


def test_fill_holes_slicewise_and_body():
    ring = np.zeros((3, 9, 9), dtype=bool)
    ring[1, 2:7, 2:7] = True
    ring[1, 3:6, 3:6] = False
    filled = fill_holes_slicewise(ring)
    assert filled[1, 4, 4] and filled[1].sum() == 25 and not filled[0].any()
    open_ring = ring.copy()
    open_ring[1, 4, 2] = False  # the hole reaches the outside: not a hole
    assert not fill_holes_slicewise(open_ring)[1, 4, 4]
    hu = np.full((4, 10, 10), -1000, dtype=np.int16)
    hu[:, 2:8, 2:8] = 30
    hu[:, 4:6, 4:6] = -900  # air inside the body
    hu[:, 9, :] = 300  # a table, not connected
    body = body_mask(hu)
    assert body[:, 4, 4].all() and not body[:, 9].any()


def test_no_air_inside_the_body_is_a_clear_error():
    hu = np.full((10, 20, 20), 40, dtype=np.int16)
    with pytest.raises(MedcadError, match="no air-filled region"):
        segment_lungs(Scan.from_array(hu))


@pytest.mark.realdata
def test_real_ct_two_lungs_plausible_volume_and_the_luna_nodule(lidc_scan):
    from scipy import ndimage

    result = segment_lungs(lidc_scan)
    assert result.component_count == 2
    assert 2500 <= result.volume_ml <= 8000
    assert min(result.lung_volumes_ml) > 0.3 * result.volume_ml  # two real lungs, not a lung and a crumb
    # nothing outside the body: inside the body outline, away from the image border
    assert not (result.mask & ~result.body).any()
    assert not result.mask[:, :5].any() and not result.mask[:, -5:].any()
    assert not result.mask[:, :, :5].any() and not result.mask[:, :, -5:].any()
    hu_inside = lidc_scan.hu[result.mask]
    assert np.median(hu_inside) < -700  # lung parenchyma, not soft tissue
    # the two lungs lie on either side of the body's midline
    columns = [np.nonzero(result.labels == k)[2].mean() for k in (1, 2)]
    body_centre = np.nonzero(result.body[result.body.shape[0] // 2])[1].mean()
    assert min(columns) < body_centre < max(columns)
    # the LUNA16 nodule (juxtapleural) is inside the mask or within 10 mm of it
    irc = lidc_scan.xyz_to_irc(LUNA_NODULE_XYZ, round=True)
    spacing_zyx = lidc_scan.spacing_xyz[::-1]
    lo = np.maximum(irc - 10, 0)
    window = result.mask[lo[0]:irc[0] + 11, lo[1]:irc[1] + 40, lo[2]:irc[2] + 40]
    distance = ndimage.distance_transform_edt(~window, sampling=spacing_zyx)[tuple(irc - lo)]
    assert distance <= 10.0
