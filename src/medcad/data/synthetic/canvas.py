"""Drawing shapes into a voxel grid with partial-volume edges, in local bounding boxes.

A :class:`Canvas` is a float32 HU array on an axis-aligned grid (identity direction; the phantom
flips axes only when it writes the scan). Shapes are given in world mm and painted only inside
their bounding box, so a vessel segment costs a few thousand voxels, not a full-volume distance
field. Edges are blended over one voxel measured along the surface normal, so a small sphere on
thick slices looks dimmer, as it does in a real CT.

Paint modes: ``"max"`` brightens only (vessels, bone, nodules over lung), ``"min"`` darkens only
(airway lumen), ``"set"`` blends towards the value regardless.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

_MODES = ("max", "min", "set")
#: Box sizes (voxels per axis) that capsule boxes are padded to, so similar boxes batch together.
_BOX_LADDER = np.unique(np.round(1.35 ** np.arange(30)).astype(int))


@dataclass(frozen=True)
class Box:
    """A sub-block of a canvas: its slices and the world mm of its voxel centres (broadcastable)."""

    slices: tuple[slice, slice, slice]
    z: np.ndarray  # (nz, 1, 1)
    y: np.ndarray  # (1, ny, 1)
    x: np.ndarray  # (1, 1, nx)


@dataclass(frozen=True, eq=False)
class Canvas:
    """A float32 HU volume (z, y, x) on an axis-aligned grid.

    Attributes:
        hu: the values, painted in place.
        origin_xyz: world mm of voxel (0, 0, 0).
        spacing_xyz: voxel size in mm along x, y, z.
    """

    hu: np.ndarray
    origin_xyz: np.ndarray
    spacing_xyz: np.ndarray

    @classmethod
    def filled(cls, shape_irc, origin_xyz, spacing_xyz, value: float) -> "Canvas":
        return cls(np.full(shape_irc, value, dtype=np.float32), np.asarray(origin_xyz, float),
                   np.asarray(spacing_xyz, float))

    def axis_mm(self, axis: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """World mm of voxel centres along array axis 0 (z), 1 (y) or 2 (x), as a 1D array."""
        xyz_axis = 2 - axis
        stop = self.hu.shape[axis] if stop is None else stop
        return self.origin_xyz[xyz_axis] + self.spacing_xyz[xyz_axis] * np.arange(start, stop)

    def box(self, low_xyz, high_xyz) -> Box | None:
        """The voxels whose centres lie in the world box [low, high] (None when empty)."""
        low = np.ceil((np.asarray(low_xyz) - self.origin_xyz) / self.spacing_xyz).astype(int)
        high = np.floor((np.asarray(high_xyz) - self.origin_xyz) / self.spacing_xyz).astype(int) + 1
        low_irc = np.maximum(low[::-1], 0)
        high_irc = np.minimum(high[::-1], self.hu.shape)
        if np.any(high_irc <= low_irc):
            return None
        z, y, x = (self.axis_mm(a, low_irc[a], high_irc[a]).astype(np.float32) for a in range(3))
        slices = tuple(slice(int(a), int(b)) for a, b in zip(low_irc, high_irc))
        return Box(slices, z[:, None, None], y[None, :, None], x[None, None, :])

    def whole(self) -> Box:
        """A box covering the whole canvas."""
        return self.box(self.origin_xyz - 1e-3, self.origin_xyz + self.spacing_xyz * (np.array(self.hu.shape[::-1]) - 1) + 1e-3)

    def paint(self, box: Box, signed_mm: np.ndarray, value, mode: str = "max",
              edge_mm: np.ndarray | float | None = None) -> None:
        """Blends ``value`` into the box where ``signed_mm`` (negative inside) says the shape is.

        Args:
            signed_mm: approximate signed distance to the shape's surface, in mm.
            value: HU of the shape (a number or an array broadcastable to the box).
            edge_mm: width of the partial-volume edge (default: the mean voxel size).
        """
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        edge = float(np.mean(self.spacing_xyz)) if edge_mm is None else edge_mm
        occupancy = np.clip(0.5 - signed_mm / edge, 0.0, 1.0)
        if not occupancy.any():
            return
        region = self.hu[box.slices]
        painted = region + occupancy * (np.float32(value) - region) if np.isscalar(value) else \
            region + occupancy * (value - region)
        if mode == "max":
            np.maximum(region, painted, out=region)
        elif mode == "min":
            np.minimum(region, painted, out=region)
        else:
            region[...] = painted

    def normal_edge_mm(self, dz, dy, dx, distance) -> np.ndarray:
        """The voxel's extent along the direction (dx, dy, dz) (mm): a partial-volume edge width.

        Never below the smallest voxel side (also where the direction is undefined, at a centre).
        """
        sx, sy, sz = (np.float32(s) for s in self.spacing_xyz)
        safe = np.maximum(distance, 1e-3)
        extent = np.sqrt((dx * sx) ** 2 + (dy * sy) ** 2 + (dz * sz) ** 2) / safe
        return np.maximum(extent, np.float32(self.spacing_xyz.min()))

    def paint_capsules(self, start_xyz, end_xyz, start_radius_mm, end_radius_mm, value: float,
                       mode: str = "max", batch_voxels: int = 1 << 20) -> None:
        """Paints tubes with linearly tapering radii (segments of vessels, airways, ribs).

        The tubes form one shape: where they overlap, a voxel takes the largest of their
        occupancies (no double blending at joints). Boxes of similar size are evaluated together
        as one array, so thousands of small vessel pieces cost a few array operations.

        Args:
            start_xyz, end_xyz: (N, 3) segment ends in world mm.
            start_radius_mm, end_radius_mm: radii at the ends (N,) or one number.
            value: HU of the tubes.
        """
        start, end, r0, r1 = _subdivide(start_xyz, end_xyz, start_radius_mm, end_radius_mm)
        margin = np.maximum(r0, r1)[:, None] + self.spacing_xyz[None, :]
        shape = np.asarray(self.hu.shape)
        low = np.ceil((np.minimum(start, end) - margin - self.origin_xyz) / self.spacing_xyz).astype(int)[:, ::-1]
        high = np.floor((np.maximum(start, end) + margin - self.origin_xyz) / self.spacing_xyz).astype(int)[:, ::-1] + 1
        low, high = np.maximum(low, 0), np.minimum(high, shape)
        useful = np.all(high > low, axis=1)
        start, end, r0, r1, low, high = start[useful], end[useful], r0[useful], r1[useful], low[useful], high[useful]
        if not len(start):
            return
        # boxes of about the same size are evaluated together, padded to a size on a coarse ladder
        ladder = np.searchsorted(_BOX_LADDER, high - low)
        buckets, bucket_of = np.unique(ladder, axis=0, return_inverse=True)
        touched, occupancies = [], []
        for bucket, rungs in enumerate(buckets):
            members = np.flatnonzero(bucket_of.ravel() == bucket)
            size = _BOX_LADDER[rungs]
            per_batch = max(1, batch_voxels // int(np.prod(size)))
            for first in range(0, len(members), per_batch):
                chosen = members[first:first + per_batch]
                flat, occupancy = self._capsule_batch(start[chosen], end[chosen], r0[chosen], r1[chosen],
                                                      low[chosen], high[chosen], size)
                touched.append(flat)
                occupancies.append(occupancy)
        self._blend_union(np.concatenate(touched), np.concatenate(occupancies), value, mode)

    def _capsule_batch(self, start, end, r0, r1, low, high, size) -> tuple[np.ndarray, np.ndarray]:
        """Flat voxel indices and occupancies (> 0) of capsules with boxes low:high (padded to size)."""
        axes = []
        for a in range(3):  # per array axis: voxel index, validity and world mm relative to the start
            index = low[:, a, None] + np.arange(size[a])[None, :]
            xyz = 2 - a
            mm = (self.origin_xyz[xyz] + self.spacing_xyz[xyz] * index - start[:, xyz, None]).astype(np.float32)
            shape = [len(start), 1, 1, 1]
            shape[a + 1] = size[a]
            axes.append((index.reshape(shape), (index < high[:, a, None]).reshape(shape), mm.reshape(shape)))
        (iz, vz, dz), (iy, vy, dy), (ix, vx, dx) = axes
        axis = (end - start).astype(np.float32)
        ax, ay, az = (axis[:, k].reshape(-1, 1, 1, 1) for k in range(3))
        length2 = np.maximum((axis * axis).sum(axis=1), 1e-9).reshape(-1, 1, 1, 1)
        t = np.clip((dx * ax + dy * ay + dz * az) / length2, 0.0, 1.0)
        ex, ey, ez = dx - t * ax, dy - t * ay, dz - t * az
        distance = np.sqrt(ex * ex + ey * ey + ez * ez)
        radius = r0.astype(np.float32).reshape(-1, 1, 1, 1) + t * (r1 - r0).astype(np.float32).reshape(-1, 1, 1, 1)
        edge = self.normal_edge_mm(ez, ey, ex, distance)
        occupancy = np.clip(0.5 - (distance - radius) / edge, 0.0, 1.0) * (vz & vy & vx)
        inside = occupancy > 0
        rows, cols = self.hu.shape[1:]
        flat = (iz * rows + iy) * cols + ix
        return np.broadcast_to(flat, inside.shape)[inside], occupancy[inside]

    def _blend_union(self, flat: np.ndarray, occupancy: np.ndarray, value: float, mode: str) -> None:
        """Blends ``value`` at flat voxel indices, taking the largest occupancy per voxel."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if flat.size == 0:
            return
        order = np.argsort(flat, kind="stable")
        flat = flat[order]
        starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
        union = np.maximum.reduceat(occupancy[order], starts)
        flat = flat[starts]
        voxels = self.hu.reshape(-1)
        current = voxels[flat]
        change = np.float32(value) - current
        if mode == "max":
            change = np.maximum(change, 0)
        elif mode == "min":
            change = np.minimum(change, 0)
        voxels[flat] = current + union * change

    def paint_ellipsoid(self, center_xyz, radii_mm, value, mode: str = "max",
                        rotation: np.ndarray | None = None) -> None:
        """Paints an ellipsoid (axes along the world axes unless ``rotation`` (3x3) is given)."""
        center = np.asarray(center_xyz, dtype=float)
        radii = np.asarray(radii_mm, dtype=float)
        reach = radii.max() + self.spacing_xyz
        box = self.box(center - reach, center + reach)
        if box is None:
            return
        d = [box.x - np.float32(center[0]), box.y - np.float32(center[1]), box.z - np.float32(center[2])]
        if rotation is not None:  # coordinates in the ellipsoid's own axes
            rot = np.asarray(rotation, dtype=np.float32)
            d = [rot[0, k] * d[0] + rot[1, k] * d[1] + rot[2, k] * d[2] for k in range(3)]
        rho = np.sqrt(sum((component / np.float32(r)) ** 2 for component, r in zip(d, radii)))
        self.paint(box, (rho - 1.0) * np.float32(radii.min()), value, mode)


def coarse_factors(spacing_xyz, target_mm: float) -> tuple[int, int, int]:
    """Integer subsampling factors (z, y, x) that make voxels about ``target_mm`` large."""
    return tuple(max(1, int(round(target_mm / s))) for s in np.asarray(spacing_xyz)[::-1])


def coarse_shape(shape_irc, factors) -> tuple[int, int, int]:
    """Shape of a coarse grid whose every ``factor``-th point is a fine voxel, reaching past the grid."""
    return tuple(-(-n // f) + 1 for n, f in zip(shape_irc, factors))


def upsample_linear(coarse: np.ndarray, factors, shape_irc, z_start: int = 0, z_stop: int | None = None) -> np.ndarray:
    """Linear interpolation of a coarse grid (see :func:`coarse_shape`) onto fine slices.

    Returns fine slices ``z_start:z_stop`` (float32). Interpolates along z first (on the small
    coarse planes), then y, then x, so a volume can be built slab by slab in about three passes.
    """
    z_stop = shape_irc[0] if z_stop is None else z_stop
    positions = np.arange(z_start, z_stop) / factors[0]
    lower = np.minimum(np.floor(positions).astype(int), coarse.shape[0] - 1)
    upper = np.minimum(lower + 1, coarse.shape[0] - 1)
    weight = (positions - lower).astype(np.float32)[:, None, None]
    below = coarse[lower]
    block = below + weight * (coarse[upper] - below)
    block = _upsample_axis(block, factors[1], shape_irc[1], axis=1)
    return _upsample_axis(block, factors[2], shape_irc[2], axis=2)


def _upsample_axis(array: np.ndarray, factor: int, size: int, axis: int) -> np.ndarray:
    """Linear interpolation along axis 1 or 2 by an integer factor (one broadcast, contiguous)."""
    def along(start, stop):
        index = [slice(None)] * array.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    if factor == 1:
        return array[along(0, size)]
    lower = np.expand_dims(array[along(0, -1)], axis + 1)
    step = np.expand_dims(array[along(1, None)], axis + 1) - lower
    weights = np.arange(factor, dtype=np.float32).reshape([factor if k == axis + 1 else 1 for k in range(array.ndim + 1)])
    weights /= factor
    out = step * weights  # (..., coarse - 1, factor, ...): every fine sample between two coarse ones
    out += lower
    shape = list(array.shape)
    shape[axis] = (array.shape[axis] - 1) * factor
    return out.reshape(shape)[along(0, size)]


def _subdivide(start_xyz, end_xyz, start_radius_mm, end_radius_mm) -> tuple[np.ndarray, ...]:
    """Splits long segments into pieces no longer than 3 radii (at least 3 mm): tighter boxes."""
    start = np.atleast_2d(np.asarray(start_xyz, dtype=float))
    end = np.atleast_2d(np.asarray(end_xyz, dtype=float))
    r0 = np.broadcast_to(np.asarray(start_radius_mm, dtype=float), (len(start),))
    r1 = np.broadcast_to(np.asarray(end_radius_mm, dtype=float), (len(start),))
    longest = np.maximum(3.0 * np.maximum(r0, r1), 3.0)
    pieces = np.maximum(1, np.ceil(np.linalg.norm(end - start, axis=1) / longest)).astype(int)
    owner = np.repeat(np.arange(len(start)), pieces)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    t0 = (rank / pieces[owner])[:, None]
    t1 = ((rank + 1) / pieces[owner])[:, None]
    step, r_step = end - start, r1 - r0
    return (start[owner] + t0 * step[owner], start[owner] + t1 * step[owner],
            r0[owner] + t0[:, 0] * r_step[owner], r0[owner] + t1[:, 0] * r_step[owner])


def for_each_slab(depth: int, step: int, work: Callable[[int, int], None], threads: int | None = None) -> None:
    """Calls ``work(start, stop)`` for consecutive slabs of ``step`` slices, on up to 2 threads.

    NumPy releases the GIL in array loops, so slabs run in parallel; each slab writes only its own
    slices and draws no random numbers, so the result does not depend on the thread count.
    """
    threads = threads or min(2, os.cpu_count() or 1)
    starts = range(0, depth, step)
    if threads == 1:
        for start in starts:
            work(start, min(start + step, depth))
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda start: work(start, min(start + step, depth)), starts):
            pass
