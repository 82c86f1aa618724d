"""Spatial steps that keep the geometry right: resample, crop to a box, pad / crop / resize.

Every step takes an array (z, y, x) with its :class:`VolumeGeometry` and returns a
:class:`GridVolume` (array + the geometry of the new grid), so world coordinates (LUNA16 centres,
``xyz``) still map to the right voxels afterwards. Images are interpolated linearly, masks with
nearest neighbour. Grids that change their voxel size keep the outer edges of the field of view
where they were (the first voxel centre moves by half the change of spacing), as SimpleITK users
and TorchIO do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medcad.errors import MedcadError
from medcad.geometry import VolumeGeometry
from medcad.io.scan import AIR_HU, Scan

__all__ = ["GridVolume", "BoxIrc", "resample_to_grid", "spacing_geometry", "resample_to_spacing", "resample_scan",
           "bounding_box", "margin_irc_for_mm", "crop", "pad_or_crop", "resize", "fit_to_shape", "box_grid"]

INTERPOLATIONS = ("linear", "nearest")


@dataclass(frozen=True, eq=False)
class GridVolume:
    """An array (z, y, x) and the grid it lives on."""

    array: np.ndarray
    geometry: VolumeGeometry


@dataclass(frozen=True)
class BoxIrc:
    """A box of voxels: ``start_irc`` included, ``stop_irc`` excluded (Python slicing)."""

    start_irc: tuple[int, int, int]
    stop_irc: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start_irc, self.stop_irc))

    @property
    def shape_irc(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start_irc, self.stop_irc))


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise MedcadError(f"unknown interpolation {interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")


def _regridded(geometry: VolumeGeometry, shape_irc, spacing_xyz) -> VolumeGeometry:
    """A grid over the same field of view with another voxel size (outer edges kept)."""
    spacing = np.asarray(spacing_xyz, dtype=np.float64)
    shift_cri = (spacing - geometry.spacing_xyz) / 2
    origin = geometry.origin_xyz + geometry.direction @ shift_cri
    return VolumeGeometry(shape_irc, origin, spacing, geometry.direction)


def spacing_geometry(geometry: VolumeGeometry, spacing_xyz: float | tuple[float, float, float]) -> VolumeGeometry:
    """The grid that covers ``geometry``'s field of view with voxels of ``spacing_xyz`` mm."""
    spacing = np.broadcast_to(np.asarray(spacing_xyz, dtype=np.float64), (3,))
    if np.any(spacing <= 0):
        raise MedcadError(f"target spacing must be positive, got {spacing.tolist()}")
    extent_xyz = geometry.extent_mm
    size_xyz = np.maximum(1, np.round(extent_xyz / spacing)).astype(int)
    return _regridded(geometry, tuple(int(n) for n in size_xyz[::-1]), spacing)


def resample_to_grid(array: np.ndarray, geometry: VolumeGeometry, target: VolumeGeometry,
                     interpolation: str = "linear", default_value: float = 0.0, antialias: bool = False) -> np.ndarray:
    """Samples ``array`` (on ``geometry``) at the voxel centres of ``target``, with SimpleITK.

    Linear interpolation returns float32; nearest keeps the dtype (masks stay masks). Points of
    ``target`` outside the source grid get ``default_value``. ``antialias`` (linear only) first
    averages blocks of ``floor(new / old spacing)`` voxels along each axis that gets coarser
    (``sitk.BinShrink``: a fast box filter), so small bright structures fade instead of
    flickering in and out with the grid (aliasing).
    """
    import SimpleITK as sitk

    _check_interpolation(interpolation)
    source = np.asarray(array)
    if source.dtype == bool:
        source = source.view(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(source))
    image.SetOrigin(tuple(float(v) for v in geometry.origin_xyz))
    image.SetSpacing(tuple(float(v) for v in geometry.spacing_xyz))
    image.SetDirection(tuple(float(v) for v in geometry.direction.ravel()))
    linear = interpolation == "linear"
    if linear and antialias:
        # per source axis; for a target rotated against the source this is an approximation
        factors = np.maximum(1, np.floor(target.spacing_xyz / geometry.spacing_xyz)).astype(int)
        if factors.max() > 1:
            image = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), [int(f) for f in factors])
    output_type = sitk.sitkFloat32 if linear else image.GetPixelID()
    resampled = sitk.Resample(
        image, [int(n) for n in target.shape_irc[::-1]], sitk.Transform(),
        sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
        tuple(float(v) for v in target.origin_xyz), tuple(float(v) for v in target.spacing_xyz),
        tuple(float(v) for v in target.direction.ravel()), float(default_value), output_type)
    result = sitk.GetArrayFromImage(resampled)
    return result.astype(bool) if np.asarray(array).dtype == bool else result


def resample_to_spacing(array: np.ndarray, geometry: VolumeGeometry, spacing_xyz: float | tuple[float, float, float],
                        interpolation: str = "linear", default_value: float = 0.0) -> GridVolume:
    """Resamples to voxels of ``spacing_xyz`` mm (one number: isotropic) over the same field of view."""
    target = spacing_geometry(geometry, spacing_xyz)
    return GridVolume(resample_to_grid(array, geometry, target, interpolation, default_value), target)


def resample_scan(scan: Scan, spacing_xyz: float | tuple[float, float, float] = 1.0) -> Scan:
    """The scan on an (isotropic by default) grid of ``spacing_xyz`` mm; linear, air outside (float32 HU)."""
    resampled = resample_to_spacing(scan.hu, scan.geometry, spacing_xyz, "linear", AIR_HU)
    return Scan(hu=resampled.array, geometry=resampled.geometry, series_uid=scan.series_uid,
                source=scan.source, metadata=dict(scan.metadata))


def bounding_box(mask: np.ndarray, margin_irc: int | tuple[int, int, int] = 0) -> BoxIrc:
    """The smallest box holding every true voxel of ``mask``, grown by a margin, clipped to the grid."""
    present = np.asarray(mask, dtype=bool)
    if not present.any():
        raise MedcadError("cannot take the bounding box of an empty mask")
    margin = np.broadcast_to(np.asarray(margin_irc, dtype=int), (3,))
    start, stop = [], []
    for axis in range(3):
        hit = np.flatnonzero(present.any(axis=tuple(a for a in range(3) if a != axis)))
        start.append(max(0, int(hit[0]) - int(margin[axis])))
        stop.append(min(present.shape[axis], int(hit[-1]) + 1 + int(margin[axis])))
    return BoxIrc(tuple(start), tuple(stop))


def margin_irc_for_mm(geometry: VolumeGeometry, margin_mm: float) -> tuple[int, int, int]:
    """Voxels along (i, r, c) that cover at least ``margin_mm`` mm."""
    return tuple(int(math.ceil(margin_mm / s)) for s in geometry.spacing_xyz[::-1])


def crop(array: np.ndarray, geometry: VolumeGeometry, box: BoxIrc) -> GridVolume:
    """The part of ``array`` inside ``box``; its first voxel keeps its world position."""
    origin = geometry.irc_to_xyz(np.asarray(box.start_irc, dtype=np.float64))
    cropped = np.asarray(array)[box.slices]
    return GridVolume(cropped, VolumeGeometry(cropped.shape, origin, geometry.spacing_xyz, geometry.direction))


def pad_or_crop(array: np.ndarray, shape_irc: tuple[int, int, int], fill: float = 0.0,
                geometry: VolumeGeometry | None = None) -> GridVolume:
    """Centres ``array`` in a grid of ``shape_irc``: pads with ``fill`` or crops, per axis.

    Without a geometry the result's geometry is unit-spaced at the origin (arrays without a place).
    """
    source = np.asarray(array)
    target = tuple(int(n) for n in shape_irc)
    if len(target) != source.ndim or min(target) < 1:
        raise MedcadError(f"target shape {shape_irc} does not fit an array of shape {source.shape}")
    out = np.full(target, fill, dtype=source.dtype)
    src_slices, dst_slices, offset_irc = [], [], []
    for size, want in zip(source.shape, target):
        # offset: source index of the target's first voxel (negative where padding comes first)
        offset = (size - want) // 2
        offset_irc.append(offset)
        src_start, dst_start = max(offset, 0), max(-offset, 0)
        length = min(size - src_start, want - dst_start)
        src_slices.append(slice(src_start, src_start + length))
        dst_slices.append(slice(dst_start, dst_start + length))
    out[tuple(dst_slices)] = source[tuple(src_slices)]
    base = geometry or VolumeGeometry(source.shape, (0, 0, 0), (1, 1, 1), np.eye(3))
    origin = base.irc_to_xyz(np.asarray(offset_irc, dtype=np.float64))
    return GridVolume(out, VolumeGeometry(target, origin, base.spacing_xyz, base.direction))


def resize(array: np.ndarray, shape_irc: tuple[int, int, int], interpolation: str = "linear",
           geometry: VolumeGeometry | None = None) -> GridVolume:
    """Stretches ``array`` to ``shape_irc`` over the same field of view (voxel size changes)."""
    import torch
    from torch.nn import functional as F

    _check_interpolation(interpolation)
    source = np.asarray(array)
    target = tuple(int(n) for n in shape_irc)
    tensor = torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32))[None, None]
    if interpolation == "linear":
        out = F.interpolate(tensor, size=target, mode="trilinear", align_corners=False)[0, 0].numpy()
    else:
        out = F.interpolate(tensor, size=target, mode="nearest-exact")[0, 0].numpy().astype(source.dtype)
    base = geometry or VolumeGeometry(source.shape, (0, 0, 0), (1, 1, 1), np.eye(3))
    spacing = base.spacing_xyz * np.asarray(source.shape[::-1], dtype=np.float64) / np.asarray(target[::-1])
    return GridVolume(out, _regridded(base, target, spacing))


def fit_to_shape(array: np.ndarray, shape_irc: tuple[int, int, int], interpolation: str = "linear",
                 fill: float = 0.0, geometry: VolumeGeometry | None = None) -> GridVolume:
    """Pads to the target's aspect ratio (in mm), then resizes: content is scaled, never distorted."""
    source = np.asarray(array)
    base = geometry or VolumeGeometry(source.shape, (0, 0, 0), (1, 1, 1), np.eye(3))
    target = np.asarray(shape_irc, dtype=np.float64)
    extent_irc = np.asarray(source.shape) * base.spacing_xyz[::-1]
    # the mm per target voxel that makes every axis fit, then the padded source shape for it
    mm_per_voxel = float(np.max(extent_irc / target))
    padded_shape = np.maximum(source.shape, np.round(target * mm_per_voxel / base.spacing_xyz[::-1])).astype(int)
    padded = pad_or_crop(source, tuple(padded_shape), fill, base)
    return resize(padded.array, tuple(int(n) for n in shape_irc), interpolation, padded.geometry)


def box_grid(geometry: VolumeGeometry, box: BoxIrc, shape_irc: tuple[int, int, int],
             spacing_mm: float | None = None) -> VolumeGeometry:
    """An isotropic grid of ``shape_irc`` voxels centred on ``box``, axes along ``geometry``'s.

    ``spacing_mm`` None: the smallest spacing at which the whole box fits (pads the short axes);
    a number: that spacing (the box is cut where it is larger). Resampling once onto this grid
    crops, makes isotropic and fits to a fixed shape in one interpolation.
    """
    shape = np.asarray(shape_irc, dtype=np.float64)
    extent_irc = np.asarray(box.shape_irc, dtype=np.float64) * geometry.spacing_xyz[::-1]
    spacing = float(np.max(extent_irc / shape)) if spacing_mm is None else float(spacing_mm)
    if spacing <= 0:
        raise MedcadError(f"grid spacing must be positive, got {spacing}")
    centre_irc = (np.asarray(box.start_irc) + np.asarray(box.stop_irc) - 1) / 2
    centre_xyz = geometry.irc_to_xyz(centre_irc)
    half_cri = (shape[::-1] - 1) / 2 * spacing
    origin = centre_xyz - geometry.direction @ half_cri
    return VolumeGeometry(tuple(int(n) for n in shape_irc), origin, (spacing,) * 3, geometry.direction)
