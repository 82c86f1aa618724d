"""Hand-made test volumes shared by the transform, data and CLI tests (``small_chest`` lives in the
package: ``medcad synth-chests`` writes it)."""

from __future__ import annotations

import numpy as np

from medcad.data.synthetic.chests import ellipsoid, small_chest
from medcad.io.scan import Scan

__all__ = ["chest_phantom", "ellipsoid", "small_chest"]


def chest_phantom() -> tuple[Scan, dict]:
    """Body (40 HU) with two lungs (-850 HU) and vessels, a trachea joining both lungs through
    bronchi, outside air, and a table below the body with an air cavity inside it."""
    shape = (40, 96, 96)
    hu = np.full(shape, -1000, dtype=np.int16)
    body = ellipsoid(shape, (20, 44, 48), (30, 30, 44))
    hu[body] = 40
    right = ellipsoid(shape, (20, 44, 30), (14, 18, 12))
    left = ellipsoid(shape, (20, 44, 66), (14, 18, 12))
    hu[right | left] = -850
    hu[(right | left) & ellipsoid(shape, (20, 44, 30), (20, 2, 2))] = 30  # a vessel: a hole to fill
    trachea = np.zeros(shape, dtype=bool)
    trachea[24:, 42:46, 46:50] = True  # runs up out of the lungs' level
    trachea[24:27, 42:46, 36:61] = True  # bronchi into both lungs
    hu[trachea] = -1000
    hu[80:86, 8:88] = 200  # the table, below the body (rows 80+), with air inside
    hu[82:84, 20:70] = -1000
    spacing = (1.5, 1.5, 2.0)
    voxel_ml = np.prod(spacing) / 1000
    truth = {"right_ml": right.sum() * voxel_ml, "left_ml": left.sum() * voxel_ml, "right": right, "left": left,
             "trachea_top": trachea & ~(right | left)}
    return Scan.from_array(hu, origin_xyz=(-70, -70, -40), spacing_xyz=spacing), truth

