"""Where ``detect --lungs-only`` runs the U-Net: the lungs' bounding box, found by thresholds.

The U-Net costs most of a CPU detection and a chest CT's lungs fill a fraction of its slices'
area (about a third to a half of a 512 x 512 slice; the rest is body wall, mediastinum, abdomen,
table and outside air). The box is the air inside the body (lungs and airways, steps 1-2 of
:mod:`medcad.transforms.lung_mask`) grown by ``margin_mm``, so juxtapleural nodules and the
U-Net's view around the lung edge stay inside. It changes the result (the U-Net sees the border
of the box instead of the tissue beyond it, and nothing outside is proposed), hence an option.
"""

from __future__ import annotations

from medcad.io.scan import Scan
from medcad.transforms.spatial import BoxIrc

#: Margin around the air inside the body. Wider than the book U-Net's view (about 24 pixels each
#: side, 17 mm at 0.7 mm pixels), so inside the lungs it sees what it sees on the whole slice.
LUNG_MARGIN_MM = 20.0
#: The air is found on a grid of about this pixel size (every n-th row and column): the box
#: only needs to be right to a pixel or two under its margin, and this is 4-9x less work.
WORKING_MM = 1.5


def lung_region(scan: Scan, margin_mm: float = LUNG_MARGIN_MM) -> BoxIrc | None:
    """The box (z, y, x) holding the air inside the body plus ``margin_mm``; None when there is no such air."""
    import numpy as np

    from medcad.errors import MedcadError
    from medcad.transforms.lung_mask import air_inside_body
    from medcad.transforms.spatial import bounding_box

    step = max(1, int(WORKING_MM // min(scan.spacing_xyz[:2])))
    coarse = Scan.from_array(np.ascontiguousarray(scan.hu[:, ::step, ::step]),
                             spacing_xyz=(scan.spacing_xyz[0] * step, scan.spacing_xyz[1] * step, scan.spacing_xyz[2]),
                             source=scan.source)
    try:
        air, _ = air_inside_body(coarse)
    except MedcadError:
        return None
    found = bounding_box(air)
    spacing_zyx = np.asarray(scan.spacing_xyz[::-1], dtype=np.float64)
    margin = np.ceil(margin_mm / spacing_zyx).astype(int) + (0, step, step)  # + the coarse grid's uncertainty
    start = np.asarray(found.start_irc) * (1, step, step) - margin
    stop = np.asarray(found.stop_irc) * (1, step, step) + margin
    shape = np.asarray(scan.hu.shape)
    return BoxIrc(tuple(int(n) for n in np.maximum(start, 0)), tuple(int(n) for n in np.minimum(stop, shape)))
