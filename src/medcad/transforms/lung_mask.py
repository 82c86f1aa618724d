"""Lung segmentation of a chest CT by thresholds and connected components (no model needed).

Steps (each a small function):

1. **Body**: the largest 6-connected component of voxels above ``body_threshold_hu`` (-320),
   holes filled slice by slice (air reaching the slice border is outside). The patient table
   and anything else outside the patient is not connected to it through tissue: it drops out.
2. **Air inside the body**: voxels below ``threshold_hu`` (-320) inside the body, in components
   of at least ``min_lung_ml``.
3. **Two lungs**: the lungs usually form one component with the trachea and main bronchi. Its
   core is found on a coarse grid (about ``working_mm`` voxels, vessels filled): the air is eroded
   by a growing distance (Euclidean distance transform, mm) until two large parts separate; those
   seeds grow back through the air, voxel by voxel, as far as they were eroded (a geodesic growth:
   the trachea, reached only through the bronchi, stays out). The two largest parts are the lungs.
4. **Holes** (vessels, nodules inside the lung) are filled slice by slice in each lung;
   ``closing_mm`` > 0 adds a morphological closing (brings juxtapleural nodules in).

Works on the scan's own grid; returns a :class:`LungMask` with the mask, the volume in ml and the
per-lung volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcad.errors import MedcadError
from medcad.io.scan import Scan
from medcad.transforms.spatial import bounding_box

__all__ = ["LungMaskConfig", "LungMask", "segment_lungs", "body_mask", "fill_holes_slicewise", "air_inside_body"]


@dataclass(frozen=True)
class LungMaskConfig:
    """Thresholds and sizes of the lung segmentation.

    Attributes:
        threshold_hu: air / lung below, tissue above (-320 HU, between lung and soft tissue).
        body_threshold_hu: tissue above, for the body outline. The same as ``threshold_hu`` by
            default, so the partial-volume rim of the skin (between air and fat) is outside the
            body and cannot link a lung to the outside where the body leaves the field of view.
        min_lung_ml: parts smaller than this are not a lung.
        working_mm: voxel size of the coarse grid used to separate the lungs.
        max_erosion_mm: give up separating beyond this depth (one component stays one lung).
        min_second_fraction: the smaller lung must hold at least this fraction of the two.
        closing_mm: radius of a final closing per lung (0: none).
    """

    threshold_hu: float = -320.0
    body_threshold_hu: float = -320.0
    min_lung_ml: float = 50.0
    working_mm: float = 2.5
    max_erosion_mm: float = 25.0
    min_second_fraction: float = 0.15
    closing_mm: float = 0.0


@dataclass(frozen=True, eq=False)
class LungMask:
    """The result of :func:`segment_lungs`.

    Attributes:
        mask: bool (z, y, x) on the scan's grid, true in either lung.
        labels: uint8 (z, y, x): 0 outside, 1 and 2 the two lungs (1 the larger).
        volume_ml: total lung volume in ml.
        lung_volumes_ml: volume of each lung, largest first (one entry if they never separated).
        body: bool (z, y, x), the patient's body with its cavities filled.
    """

    mask: np.ndarray
    labels: np.ndarray
    volume_ml: float
    lung_volumes_ml: tuple[float, ...]
    body: np.ndarray

    @property
    def component_count(self) -> int:
        return len(self.lung_volumes_ml)


def fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fills holes in every axial slice (2D, 4-connected background); a new bool array."""
    import cc3d

    filled = np.array(mask, dtype=bool, copy=True)
    for index in range(filled.shape[0]):
        plane = filled[index]
        if not plane.any():
            continue
        background = cc3d.connected_components(~plane, connectivity=4)
        border = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
        hole = np.ones(int(background.max()) + 1, dtype=bool)
        hole[border] = False
        hole[0] = False
        plane |= hole[background]
    return filled


def body_mask(hu: np.ndarray, threshold_hu: float = -320.0) -> np.ndarray:
    """The patient's body: largest 6-connected tissue component, holes filled slice by slice."""
    import cc3d

    tissue = hu > threshold_hu
    if not tissue.any():
        raise MedcadError(f"no voxel above {threshold_hu} HU: not a CT of a body")
    return fill_holes_slicewise(cc3d.largest_k(tissue, k=1, connectivity=6) > 0)


def air_inside_body(scan: Scan, config: LungMaskConfig = LungMaskConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2: the body and the air inside it in parts of at least ``min_lung_ml`` (lungs, airways).

    Returns (air, body), bool (z, y, x). Raises ``MedcadError`` when there is no such air.
    """
    hu = scan.hu
    voxel_ml = float(np.prod(scan.spacing_xyz)) / 1000.0
    body = body_mask(hu, config.body_threshold_hu)
    air = _large_components((hu < config.threshold_hu) & body, max(1, int(config.min_lung_ml / voxel_ml)))
    if not air.any():
        raise MedcadError(f"{scan.source or 'scan'}: no air-filled region of {config.min_lung_ml} ml inside the body")
    return air, body


def _large_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """The 6-connected components of ``mask`` with at least ``min_voxels`` voxels."""
    import cc3d

    labels = cc3d.connected_components(mask, connectivity=6)
    keep = np.bincount(labels.ravel()) >= min_voxels
    keep[0] = False
    return keep[labels]


def _block_any(mask: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Coarse mask: a block is true when any voxel in it is (no voxel is lost)."""
    pads = [(0, (-n) % f) for n, f in zip(mask.shape, factors)]
    padded = np.pad(mask, pads)
    shape = []
    for n, f in zip(padded.shape, factors):
        shape += [n // f, f]
    return padded.reshape(shape).any(axis=(1, 3, 5))


def _split_lungs(air: np.ndarray, spacing_zyx: np.ndarray, config: LungMaskConfig) -> np.ndarray:
    """Labels (uint8, full grid) of the separated lungs (1 the larger), the upper trachea left out."""
    import cc3d
    from scipy import ndimage

    factors = tuple(max(1, int(round(config.working_mm / s))) for s in spacing_zyx)
    coarse_spacing = spacing_zyx * np.asarray(factors)
    coarse = fill_holes_slicewise(_block_any(air, factors))
    box = bounding_box(coarse, 1)  # the distance transform is the slow part: only where air is
    coarse = coarse[box.slices]
    depth = ndimage.distance_transform_edt(coarse, sampling=coarse_spacing)
    voxel_ml = float(np.prod(coarse_spacing)) / 1000.0
    seeds = None
    for erosion_mm in np.arange(0.0, config.max_erosion_mm, float(coarse_spacing.min()) / 2):
        labels, count = cc3d.connected_components(depth > erosion_mm, connectivity=6, return_N=True)
        sizes = np.bincount(labels.ravel(), minlength=3)[1:]
        if count >= 2:
            first, second = np.argsort(sizes)[::-1][:2] + 1
            big, small = sizes[first - 1], sizes[second - 1]
            if small * voxel_ml >= config.min_lung_ml and small >= config.min_second_fraction * (big + small):
                seeds = np.where(labels == first, 1, np.where(labels == second, 2, 0)).astype(np.uint8)
                break
        elif count == 0:
            break
    if seeds is None:  # never separated: one lung-shaped part (e.g. after a pneumonectomy, or fused)
        return air.astype(np.uint8)
    placed = np.zeros(tuple(-(-n // f) for n, f in zip(air.shape, factors)), dtype=np.uint8)
    placed[box.slices] = seeds
    full = placed[np.ix_(*[np.arange(n) // f for n, f in zip(air.shape, factors)])]
    full[~air] = 0
    # the coarse grid can bridge a thin wall (trachea next to a lung apex): on the full grid,
    # keep only the largest connected part of each seed
    for label in (1, 2):
        seed = full == label
        full[seed & (cc3d.largest_k(seed, k=1, connectivity=6) == 0)] = 0
    # grow the seeds back through the air on the full grid, about as far as they were eroded: a
    # geodesic growth, so the trachea (reached only through the bronchi) stays out
    return _geodesic_grow(full, air, spacing_zyx, erosion_mm + float(coarse_spacing.max()))


def _geodesic_grow(labels: np.ndarray, region: np.ndarray, spacing_zyx: np.ndarray, distance_mm: float) -> np.ndarray:
    """Grows non-zero labels into ``region`` one voxel a step, about ``distance_mm`` along each axis.

    Each step reaches the 6 neighbours; an axis with coarser spacing grows only every few steps so
    the growth is about isotropic in mm. Where two labels meet, the larger label wins (a thin seam).
    """
    grown = labels.copy()
    step_mm = float(spacing_zyx.min())
    period = [max(1, int(round(s / step_mm))) for s in spacing_zyx]
    for step in range(int(np.ceil(distance_mm / step_mm))):
        reach = grown.copy()
        for axis in range(3):
            if step % period[axis]:
                continue
            head = [slice(None)] * 3
            tail = [slice(None)] * 3
            head[axis], tail[axis] = slice(1, None), slice(None, -1)
            np.maximum(reach[tuple(head)], grown[tuple(tail)], out=reach[tuple(head)])
            np.maximum(reach[tuple(tail)], grown[tuple(head)], out=reach[tuple(tail)])
        free = region & (grown == 0)
        grown[free] = reach[free]
    return grown


def _close(mask: np.ndarray, radius_irc: np.ndarray) -> np.ndarray:
    """Closing with a box of half-size ``radius_irc`` (separable max / min filters: fast)."""
    from scipy import ndimage

    size = tuple(int(2 * r + 1) for r in radius_irc)
    dilated = ndimage.maximum_filter(mask.view(np.uint8), size=size, mode="constant", cval=0)
    return ndimage.minimum_filter(dilated, size=size, mode="nearest").astype(bool)


def segment_lungs(scan: Scan, config: LungMaskConfig = LungMaskConfig()) -> LungMask:
    """Segments the two lungs of a chest CT (see the module docstring for the steps)."""
    import cc3d

    spacing_zyx = np.asarray(scan.spacing_xyz[::-1], dtype=np.float64)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    air, body = air_inside_body(scan, config)
    radius_irc = np.round(config.closing_mm / spacing_zyx).astype(int)
    box = bounding_box(air, tuple(radius_irc + 1))
    # different seed labels are different components even where the two lungs touch
    parts = cc3d.connected_components(_split_lungs(air[box.slices], spacing_zyx, config), connectivity=6)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    labels_box = np.zeros(parts.shape, dtype=np.uint8)
    for rank, part in enumerate(np.argsort(sizes)[::-1][:2]):
        if sizes[part] * voxel_ml < config.min_lung_ml:
            break
        lung = fill_holes_slicewise(parts == part)
        if radius_irc.any():
            lung = _close(lung, radius_irc) & body[box.slices]
        labels_box[lung & (labels_box == 0)] = rank + 1
    labels = np.zeros(air.shape, dtype=np.uint8)
    labels[box.slices] = labels_box
    counts = np.bincount(labels_box.ravel(), minlength=3)[1:]
    volumes = tuple(float(n) * voxel_ml for n in counts if n > 0)
    return LungMask(mask=labels > 0, labels=labels, volume_ml=float(sum(volumes)), lung_volumes_ml=volumes, body=body)
