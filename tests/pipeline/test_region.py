"""The lungs of ``detect --lungs-only``: a hand-made chest phantom and a scan without lungs."""

from __future__ import annotations

import numpy as np

from medcad.io.scan import Scan
from medcad.pipeline.region import lung_region
from medcad.transforms.lung_mask import air_inside_body
from tests.transforms.phantoms import chest_phantom


def test_windows_hold_the_lungs_with_their_margin_and_leave_out_the_rest():
    scan, truth = chest_phantom()
    region = lung_region(scan, margin_mm=4.0)
    lungs = truth["right"] | truth["left"]
    covered = np.zeros(lungs.shape, dtype=bool)
    for index in np.flatnonzero(region.windows.runs):
        covered[index, slice(*region.windows.row_range[index]), slice(*region.windows.col_range[index])] = True
    assert not (lungs & ~covered).any()
    margin = region.margin_irc
    assert margin == (2, 3, 3)  # 4 mm on 2 x 1.5 x 1.5 mm voxels
    air, _ = air_inside_body(scan)
    for index in range(lungs.shape[0]):  # each slice's window reaches the margin beyond the air near it
        near = air[max(0, index - margin[0]):index + margin[0] + 1]
        if not near.any():
            continue
        rows, cols = np.flatnonzero(near.any(axis=(0, 2))), np.flatnonzero(near.any(axis=(0, 1)))
        assert region.windows.row_range[index, 0] <= max(0, rows[0] - margin[1])
        assert region.windows.row_range[index, 1] >= min(lungs.shape[1], rows[-1] + 1 + margin[1])
        assert region.windows.col_range[index, 0] <= max(0, cols[0] - margin[2])
        assert region.windows.col_range[index, 1] >= min(lungs.shape[2], cols[-1] + 1 + margin[2])
    assert region.share() < 0.6  # outside air, table and body wall are skipped
    z, y, x = np.argwhere(truth["right"])[len(np.argwhere(truth["right"])) // 2]
    assert region.holds((z, y, x)) and region.holds((z, y, x - 14))  # in the lung; 2 voxels beyond its edge
    assert not region.holds((20, 90, 48)) and not region.holds((20, 44, 2))  # below the body; outside air


def test_no_lungs_means_no_region():
    assert lung_region(Scan.from_array(np.full((10, 20, 20), 40, dtype=np.int16))) is None
