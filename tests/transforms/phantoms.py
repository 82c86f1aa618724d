"""Hand-made test volumes shared by the transform, data and CLI tests."""

from __future__ import annotations

import numpy as np

from medcad.io.scan import Scan


def ellipsoid(shape, center, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1


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


def small_chest(seed: int, nodule: bool, shape=(24, 48, 48)) -> Scan:
    """A small noisy chest (two lungs in a body) with, optionally, a solid 'nodule' in one lung.

    Lung sizes, positions and the nodule's place vary with ``seed``; for classification tests.
    """
    rng = np.random.default_rng(seed)
    d, h, w = shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[ellipsoid(shape, (d / 2, h / 2, w / 2), (d * 0.8, h * 0.42, w * 0.46))] = 40
    lungs = []
    for side in (-1, 1):
        centre = (d / 2 + rng.uniform(-1, 1), h / 2 + rng.uniform(-2, 2), w / 2 + side * w * rng.uniform(0.2, 0.24))
        radii = (d * rng.uniform(0.3, 0.38), h * rng.uniform(0.26, 0.32), w * rng.uniform(0.13, 0.16))
        lung = ellipsoid(shape, centre, radii)
        hu[lung] = -850
        lungs.append((centre, radii))
    if nodule:
        centre, radii = lungs[rng.integers(2)]
        offset = rng.uniform(-0.4, 0.4, size=3) * np.asarray(radii)
        hu[ellipsoid(shape, np.asarray(centre) + offset, (2.5, 3.0, 3.0))] = 60
    hu += rng.normal(0, 20, size=shape).astype(np.float32)
    return Scan.from_array(np.round(hu).astype(np.int16), origin_xyz=(-60, -60, -50), spacing_xyz=(2.5, 2.5, 4.0),
                           series_uid=f"phantom-{seed}")
