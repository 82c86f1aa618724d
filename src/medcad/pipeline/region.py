"""Where ``detect --lungs-only`` looks: the lungs, found by thresholds.

The U-Net costs most of a CPU detection, and a chest CT's lungs fill a fraction of its slices
(about a third of a 512 x 512 slice on average along the scan; the rest is body wall,
mediastinum, abdomen, table and outside air). The lungs here are the air inside the body (lungs
and airways, steps 1-2 of :mod:`medcad.transforms.lung_mask`), found on a grid of about
``WORKING_MM`` pixels. Per slice, the U-Net runs on the bounding rectangle of that air in the
slices within ``margin_mm`` along the scan axis, grown by ``margin_mm`` in-plane (wider than the
book U-Net's view of about 24 pixels, so inside the lungs it sees what it sees on the whole
slice); candidates whose centre lies farther than ``margin_mm`` (along each axis) from that air
are dropped before classification. Nothing outside the lungs is proposed, and the result changes
there, hence an option.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcad.io.scan import Scan
from medcad.pipeline.segment import SliceWindows

#: Margin around the air inside the body: a pleural nodule's centre, a wall of a few cm.
LUNG_MARGIN_MM = 20.0
#: The air is found on a grid of about this pixel size (every n-th row and column): the windows
#: only need to be right to a pixel or two under their margin, and this is 4-9x less work.
WORKING_MM = 1.5


@dataclass(frozen=True, eq=False)
class LungRegion:
    """The lungs' windows of a scan and a test for candidate centres.

    Attributes:
        windows: per slice, where the U-Net runs (:class:`~medcad.pipeline.segment.SliceWindows`).
        air_sums: summed-area table of the air on the coarse grid, shape (z + 1, y + 1, x + 1).
        step: the coarse grid takes every ``step``-th row and column.
        margin_irc: the margin in full-grid voxels (z, y, x).
        shape_irc: the scan's shape.
    """

    windows: SliceWindows
    air_sums: np.ndarray
    step: int
    margin_irc: tuple[int, int, int]
    shape_irc: tuple[int, int, int]

    def share(self) -> float:
        """Fraction of the scan's voxels the U-Net computes."""
        return self.windows.pixels() / float(np.prod(self.shape_irc))

    def holds(self, center_irc) -> bool:
        """Whether air lies within the margin of a centre (a box of +-margin along each axis)."""
        centre = np.asarray(center_irc, dtype=np.float64)
        scale = np.array([1, self.step, self.step])
        low = np.floor((centre - self.margin_irc) / scale).astype(int)
        high = np.floor((centre + self.margin_irc) / scale).astype(int) + 1
        limit = np.asarray(self.air_sums.shape) - 1
        (z0, y0, x0), (z1, y1, x1) = np.clip(low, 0, limit), np.clip(high, 0, limit)
        s = self.air_sums
        count = (s[z1, y1, x1] - s[z0, y1, x1] - s[z1, y0, x1] - s[z1, y1, x0]
                 + s[z0, y0, x1] + s[z0, y1, x0] + s[z1, y0, x0] - s[z0, y0, x0])
        return bool(count > 0)


def lung_region(scan: Scan, margin_mm: float = LUNG_MARGIN_MM) -> LungRegion | None:
    """The lungs' windows and candidate test of a scan; None when there is no air inside the body."""
    from medcad.errors import MedcadError
    from medcad.transforms.lung_mask import air_inside_body

    step = max(1, int(WORKING_MM // min(scan.spacing_xyz[:2])))
    coarse = Scan.from_array(np.ascontiguousarray(scan.hu[:, ::step, ::step]),
                             spacing_xyz=(scan.spacing_xyz[0] * step, scan.spacing_xyz[1] * step, scan.spacing_xyz[2]),
                             source=scan.source)
    try:
        air, _ = air_inside_body(coarse)
    except MedcadError:
        return None
    margin_irc = tuple(int(n) for n in np.ceil(margin_mm / np.asarray(scan.spacing_xyz[::-1], dtype=np.float64)))
    shape = scan.hu.shape
    rows_with_air, cols_with_air = air.any(axis=2), air.any(axis=1)  # (z, coarse rows), (z, coarse cols)
    row_range = np.zeros((shape[0], 2), dtype=np.int64)
    col_range = np.zeros((shape[0], 2), dtype=np.int64)
    for index in range(shape[0]):
        near = slice(max(0, index - margin_irc[0]), index + margin_irc[0] + 1)
        rows, cols = np.flatnonzero(rows_with_air[near].any(axis=0)), np.flatnonzero(cols_with_air[near].any(axis=0))
        if len(rows):  # + one coarse pixel: the grid's own uncertainty
            row_range[index] = (max(0, rows[0] * step - margin_irc[1] - step),
                                min(shape[1], (rows[-1] + 2) * step + margin_irc[1]))
            col_range[index] = (max(0, cols[0] * step - margin_irc[2] - step),
                                min(shape[2], (cols[-1] + 2) * step + margin_irc[2]))
    air_sums = np.pad(air.astype(np.int32), ((1, 0), (1, 0), (1, 0))).cumsum(0).cumsum(1).cumsum(2)
    return LungRegion(SliceWindows(row_range, col_range), air_sums, step, margin_irc, tuple(shape))
