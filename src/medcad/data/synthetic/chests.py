"""Small hand-made chests with and without a solid nodule: a scan-level classification task.

Far simpler than :mod:`medcad.data.synthetic.phantom`: a noisy body ellipsoid with two lung
ellipsoids (sizes and positions vary) and, in the "nodule" class, one solid ellipsoid of soft
tissue (15 x 15 x 20 mm) somewhere in one lung. No vessels look like it, so a small 3D network
learns the task within minutes of CPU (``medcad synth-chests``, then ``medcad preprocess`` and
``medcad train volume-cls``; see the README).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.io.scan import Scan

#: The two class folders, in writing order.
CLASSES = ("clear", "nodule")
#: Default chest grid (z, y, x) of 2.5 x 2.5 x 4 mm voxels: 96 x 120 x 120 mm.
CHEST_SHAPE = (24, 48, 48)


def ellipsoid(shape, center, radii) -> np.ndarray:
    """Boolean mask of the voxels within an axis-aligned ellipsoid (centre and radii in voxels)."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1


def small_chest(seed: int | tuple[int, ...], nodule: bool, shape=CHEST_SHAPE) -> Scan:
    """A small noisy chest (two lungs in a body) with, optionally, a solid 'nodule' in one lung.

    Lung sizes, positions and the nodule's place vary with ``seed`` (an int or a tuple of ints,
    as :func:`numpy.random.default_rng` takes); the same seed gives the same voxels.
    """
    rng = np.random.default_rng(seed)
    d, h, w = shape
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body_centre, body_radii = (d / 2, h / 2, w / 2), np.array([d * 0.8, h * 0.42, w * 0.46])
    hu[ellipsoid(shape, body_centre, body_radii)] = 40
    # lungs end 2.5 voxels inside the body: a chest wall the noise cannot break (the lung mask
    # takes air joined to the outside for outside air)
    inside = ellipsoid(shape, body_centre, body_radii - 2.5)
    lungs = []
    for side in (-1, 1):
        centre = (d / 2 + rng.uniform(-1, 1), h / 2 + rng.uniform(-2, 2), w / 2 + side * w * rng.uniform(0.2, 0.24))
        radii = (d * rng.uniform(0.3, 0.38), h * rng.uniform(0.26, 0.32), w * rng.uniform(0.13, 0.16))
        hu[ellipsoid(shape, centre, radii) & inside] = -850
        lungs.append((centre, radii))
    if nodule:
        centre, radii = lungs[rng.integers(2)]
        offset = rng.uniform(-0.4, 0.4, size=3) * np.asarray(radii)
        hu[ellipsoid(shape, np.asarray(centre) + offset, (2.5, 3.0, 3.0))] = 60
    hu += rng.normal(0, 20, size=shape).astype(np.float32)
    seed_text = "-".join(map(str, np.atleast_1d(seed)))
    return Scan.from_array(np.round(hu).astype(np.int16), origin_xyz=(-60, -60, -50), spacing_xyz=(2.5, 2.5, 4.0),
                           series_uid=f"chest-{seed_text}")


def write_chests(out_dir: str | Path, per_class: int, seed: int = 0, shape=CHEST_SHAPE,
                 on_scan: Callable[[Path], None] | None = None) -> list[Path]:
    """Writes ``per_class`` chests into each of ``out_dir/clear/`` and ``out_dir/nodule/`` as .nii.gz.

    Chest ``i`` (``chest000`` ...; even numbers clear, odd ones with a nodule) is
    ``small_chest((seed, i), ...)``, so the same seed gives byte-identical files. The folder reads
    as a volume table of class folders (``medcad preprocess OUT_DIR``).

    Raises:
        InputError: for fewer than 1 chest per class, a grid under 8 voxels a side, or class
            folders holding volumes this cohort would not write (another cohort's files).
    """
    from medcad.io import write_scan

    if per_class < 1:
        raise InputError(None, f"--per-class must be at least 1, got {per_class}")
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(None, f"the chest grid must be 3 sizes of at least 8 voxels, got {tuple(shape)}")
    out = Path(out_dir)
    names = {label: set() for label in CLASSES}
    for index in range(2 * per_class):
        names[CLASSES[index % 2]].add(f"chest{index:03d}.nii.gz")
    for label, own in names.items():
        folder = out / label
        foreign = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name not in own) \
            if folder.is_dir() else []
        if foreign:
            raise InputError(folder, f"holds {len(foreign)} file(s) this cohort would not write (e.g. "
                                     f"{foreign[0]}); choose an empty --out")
    paths = []
    for index in range(2 * per_class):
        label = CLASSES[index % 2]
        path = write_scan(small_chest((seed, index), nodule=label == "nodule", shape=shape),
                          out / label / f"chest{index:03d}.nii.gz")
        paths.append(path)
        if on_scan is not None:
            on_scan(path)
    return paths
