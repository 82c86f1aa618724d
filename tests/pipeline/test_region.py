"""The lungs' box of ``detect --lungs-only``: a hand-made chest phantom and a scan without lungs."""

from __future__ import annotations

import numpy as np

from medcad.io.scan import Scan
from medcad.pipeline.region import lung_region
from tests.transforms.phantoms import chest_phantom


def test_the_box_holds_both_lungs_with_its_margin_and_leaves_out_the_outside():
    scan, truth = chest_phantom()
    box = lung_region(scan, margin_mm=4.0)
    lungs = truth["right"] | truth["left"]
    inside = np.zeros(lungs.shape, dtype=bool)
    inside[box.slices] = True
    assert lungs[~inside].sum() == 0
    assert np.prod(box.shape_irc) < 0.8 * lungs.size  # outside air, table and body wall are skipped
    margin = np.ceil(4.0 / np.asarray(scan.spacing_xyz[::-1])).astype(int)
    z, y, x = np.nonzero(lungs)
    for axis, coordinates in enumerate((z, y, x)):  # at least the margin beyond the lungs where there is room
        assert box.start_irc[axis] <= max(0, coordinates.min() - margin[axis])
        assert box.stop_irc[axis] >= min(lungs.shape[axis], coordinates.max() + 1 + margin[axis])


def test_no_lungs_means_no_box():
    assert lung_region(Scan.from_array(np.full((10, 20, 20), 40, dtype=np.int16))) is None
