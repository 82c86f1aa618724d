"""LIDC marks on a scan's grid: contour masks, grouping into physical nodules, consensus labels.

Contours -> mask. Each ROI contour is placed on one slice of the scan: by its ``imageSOP_UID``
when a SOP-UID -> slice map is given (:func:`sop_slice_index`) and knows it, else by its
``imageZposition`` through the scan geometry (refused when it falls between slices or outside the
scan). Edge points are pixel (column x, row y) coordinates, so the scan's in-plane axes must be the
DICOM image's columns and rows, as in every scan :func:`medcad.io.read_scan` returns for DICOM
folders and LUNA16 ``.mhd`` files. On a slice, a pixel belongs to the mark when its centre lies
inside an inclusion contour (even-odd rule) or on it (LIDC outlines are drawn on boundary pixels,
which count as nodule, as in pylidc); pixels strictly inside an exclusion contour
(``inclusion=FALSE``) are removed: they are holes.

Grouping rule (pylidc-like, deterministic). Two marks of *different* readers (reading sessions)
are linked when their masks share a voxel or their mask centroids are at most ``tolerance_mm``
apart (this joins the single-point marks of nodules under 3 mm). Links are taken in order:
overlapping pairs first, then by increasing centroid distance; a link merges two groups only when
they have no reader in common, so a reader contributes at most one mark to a physical nodule.
Every mark ends in exactly one group; an unlinked mark is a one-reader nodule.

Consensus malignancy: :meth:`PhysicalNodule.is_malignant` applies
:func:`medcad.io.luna.consensus_malignant` to the readers' malignancy ratings (default: malignant
when at least 2 readers rate >= 4, as ``mal_bool`` in ``annotations_with_malignancy.csv``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.geometry import VolumeGeometry
from medcad.io.lidc import LidcRead, ReaderNodule, RoiContour
from medcad.io.luna import consensus_malignant

__all__ = [
    "NoduleMask", "PhysicalNodule", "mark_mask", "combine_masks", "group_nodules", "sop_slice_index",
    "DEFAULT_TOLERANCE_MM",
]

#: Centroids of two readers' marks closer than this (mm) are the same nodule (see module doc).
DEFAULT_TOLERANCE_MM = 5.0
#: How far (in slices) an ``imageZposition`` may sit from the nearest slice centre.
_SLICE_TOLERANCE = 0.25


@dataclass(frozen=True, eq=False)
class NoduleMask:
    """A boolean mask on a scan's (z, y, x) grid, stored as its bounding box.

    Attributes:
        geometry: the scan grid the mask lives on.
        offset_irc: grid index of the box's first voxel.
        box: the mask inside the box (bool, axes z, y, x).
    """

    geometry: VolumeGeometry
    offset_irc: tuple[int, int, int]
    box: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset_irc", tuple(int(v) for v in self.offset_irc))
        box = np.asarray(self.box, dtype=bool)
        box.setflags(write=False)
        object.__setattr__(self, "box", box)

    @property
    def _slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset_irc, self.box.shape))

    def full(self) -> np.ndarray:
        """The mask on the whole scan grid (bool, shape ``geometry.shape_irc``)."""
        mask = np.zeros(self.geometry.shape_irc, dtype=bool)
        mask[self._slices] = self.box
        return mask

    @property
    def voxel_count(self) -> int:
        return int(self.box.sum())

    @property
    def centroid_irc(self) -> np.ndarray:
        """Mean voxel index (index, row, column) of the mask, unweighted by HU."""
        voxels = np.argwhere(self.box)
        if len(voxels) == 0:
            raise ValueError("an empty mask has no centroid")
        return voxels.mean(axis=0) + np.asarray(self.offset_irc, dtype=np.float64)

    @property
    def centroid_xyz(self) -> np.ndarray:
        """The mask's centroid in world mm (LPS)."""
        return self.geometry.irc_to_xyz(self.centroid_irc)

    @property
    def volume_mm3(self) -> float:
        geometry = self.geometry
        voxel_mm3 = float(np.prod(geometry.spacing_xyz) * abs(np.linalg.det(geometry.direction)))
        return self.voxel_count * voxel_mm3

    @property
    def equivalent_diameter_mm(self) -> float:
        """Diameter of the sphere with the mask's volume."""
        return (6.0 * self.volume_mm3 / math.pi) ** (1.0 / 3.0)

    def overlaps(self, other: "NoduleMask") -> bool:
        """True when the two masks share a voxel."""
        low = np.maximum(self.offset_irc, other.offset_irc)
        high = np.minimum(np.add(self.offset_irc, self.box.shape), np.add(other.offset_irc, other.box.shape))
        if np.any(high <= low):
            return False
        mine = tuple(slice(a - o, b - o) for a, b, o in zip(low, high, self.offset_irc))
        theirs = tuple(slice(a - o, b - o) for a, b, o in zip(low, high, other.offset_irc))
        return bool(np.any(self.box[mine] & other.box[theirs]))


def combine_masks(masks: Sequence[NoduleMask], min_count: int = 1) -> NoduleMask:
    """Voxels covered by at least ``min_count`` of the masks (1: the union) on their common grid."""
    if not masks:
        raise ValueError("combine_masks needs at least one mask")
    low = np.min([m.offset_irc for m in masks], axis=0)
    high = np.max([np.add(m.offset_irc, m.box.shape) for m in masks], axis=0)
    counts = np.zeros(tuple(high - low), dtype=np.int32)
    for mask in masks:
        start = np.subtract(mask.offset_irc, low)
        counts[tuple(slice(s, s + n) for s, n in zip(start, mask.box.shape))] += mask.box
    return NoduleMask(masks[0].geometry, tuple(low), counts >= min_count)


def _polygon_inside(edge_xy: np.ndarray, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Even-odd test of pixel centres (rows x columns grid) against a closed polygon."""
    if len(edge_xy) < 3:
        return np.zeros((len(rows), len(columns)), dtype=bool)
    x1, y1 = edge_xy[:, 0].astype(np.float64), edge_xy[:, 1].astype(np.float64)
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    py = rows.astype(np.float64)[:, None]                       # (rows, 1) against edges (1, E)
    straddles = (y1 > py) != (y2 > py)                          # (rows, E)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = np.where(straddles, x1 + (py - y1) * (x2 - x1) / (y2 - y1), -np.inf)
    crossings = columns.astype(np.float64)[None, :, None] < x_cross[:, None, :]   # (rows, cols, E)
    return (crossings.sum(axis=2) % 2).astype(bool)


def _slice_index(contour: RoiContour, geometry: VolumeGeometry, sop_index: Mapping[str, int] | None,
                 where: str) -> int:
    """The scan slice a contour lies on: by SOP UID when known, else by its z position."""
    depth = geometry.shape_irc[0]
    if sop_index is not None and contour.sop_uid in sop_index:
        return int(sop_index[contour.sop_uid])
    column, row = contour.edge_xy.mean(axis=0)
    # World z along the slice axis at this in-plane position: z(k) = z0 + k * dz.
    z0, z1 = geometry.irc_to_xyz(np.array([[0.0, row, column], [1.0, row, column]]))[:, 2]
    if abs(z1 - z0) < 1e-6:
        raise InputError(None, f"{where}: the scan's slices are not stacked along z, "
                               "so imageZposition cannot place the contour")
    index = (contour.z_mm - z0) / (z1 - z0)
    nearest = int(np.rint(index))
    if not 0 <= nearest < depth:
        raise InputError(None, f"{where}: imageZposition {contour.z_mm:g} mm lies outside the scan ({depth} slices)")
    if abs(index - nearest) > _SLICE_TOLERANCE:
        raise InputError(None, f"{where}: imageZposition {contour.z_mm:g} mm falls between slices "
                               f"(index {index:.2f}); pass a SOP-UID map (sop_slice_index)")
    return nearest


def mark_mask(nodule: ReaderNodule, geometry: VolumeGeometry,
              sop_index: Mapping[str, int] | None = None) -> NoduleMask:
    """Rasterises one reader's mark onto the scan grid (rules in the module doc).

    Raises:
        InputError: a contour cannot be placed on a slice, or the mark covers no voxel of the scan.
    """
    where = f"reader {nodule.session_index + 1} nodule {nodule.nodule_id!r}"
    indices = [_slice_index(c, geometry, sop_index, where) for c in nodule.contours]
    points = np.concatenate([c.edge_xy for c in nodule.contours])
    depth, rows, columns = geometry.shape_irc
    low = np.maximum([min(indices), points[:, 1].min(), points[:, 0].min()], 0)
    high = np.minimum([max(indices) + 1, points[:, 1].max() + 1, points[:, 0].max() + 1], [depth, rows, columns])
    if np.any(high <= low):
        raise InputError(None, f"{where}: the contours lie outside the scan's {rows}x{columns} pixels")
    box = np.zeros(tuple(high - low), dtype=bool)
    row_grid = np.arange(low[1], high[1])
    column_grid = np.arange(low[2], high[2])
    holes = np.zeros_like(box)
    for contour, index in zip(nodule.contours, indices):
        inside = _polygon_inside(contour.edge_xy, column_grid, row_grid)
        edge = np.zeros_like(inside)
        x, y = contour.edge_xy[:, 0] - low[2], contour.edge_xy[:, 1] - low[1]
        keep = (x >= 0) & (x < edge.shape[1]) & (y >= 0) & (y < edge.shape[0])
        edge[y[keep], x[keep]] = True
        if contour.inclusion:
            box[index - low[0]] |= inside | edge
        else:
            holes[index - low[0]] |= inside & ~edge
    box &= ~holes
    if not box.any():
        raise InputError(None, f"{where}: the mark covers no voxel of the scan")
    return NoduleMask(geometry, tuple(low), box)


@dataclass(frozen=True, eq=False)
class PhysicalNodule:
    """One nodule as marked by one or more readers (at most one mark each).

    Attributes:
        marks: the readers' marks, in reading-session order.
        masks: each mark's mask on the scan grid (same order).
    """

    marks: tuple[ReaderNodule, ...]
    masks: tuple[NoduleMask, ...]

    @property
    def reader_count(self) -> int:
        return len(self.marks)

    @property
    def malignancy_ratings(self) -> tuple[int, ...]:
        """The malignancy rating (1-5) of each reader who rated the nodule (marks >= 3 mm)."""
        return tuple(m.characteristics.malignancy for m in self.marks if m.characteristics is not None)

    def is_malignant(self, min_readers: int = 2, min_rating: int = 4) -> bool:
        """Consensus label: at least ``min_readers`` readers rated malignancy >= ``min_rating``."""
        return consensus_malignant(self.malignancy_ratings, min_readers=min_readers, min_rating=min_rating)

    @property
    def centroid_xyz(self) -> np.ndarray:
        """Mean of the readers' mask centroids, world mm (LPS), as LUNA16 averages the readers."""
        return np.mean([m.centroid_xyz for m in self.masks], axis=0)

    @property
    def diameter_mm(self) -> float:
        """Mean of the readers' equivalent-sphere diameters."""
        return float(np.mean([m.equivalent_diameter_mm for m in self.masks]))

    def consensus_mask(self, level: float = 0.5) -> NoduleMask:
        """Voxels marked by at least ``level`` of this nodule's readers (pylidc's ``clevel``)."""
        if not 0.0 < level <= 1.0:
            raise ValueError(f"level must be in (0, 1], got {level}")
        return combine_masks(self.masks, min_count=max(1, math.ceil(level * self.reader_count - 1e-9)))


def group_nodules(read: LidcRead, geometry: VolumeGeometry, *, tolerance_mm: float = DEFAULT_TOLERANCE_MM,
                  series_uid: str | None = None,
                  sop_index: Mapping[str, int] | None = None) -> tuple[PhysicalNodule, ...]:
    """Groups the readers' nodule marks into physical nodules (rule in the module doc).

    Args:
        read: the reading file.
        geometry: the scan's grid.
        tolerance_mm: centroid distance under which marks of different readers are linked.
        series_uid: the scan's series; checked against the file's when both are known.
        sop_index: SOP instance UID -> slice index (see :func:`sop_slice_index`).

    Returns:
        The physical nodules, most readers first, then by centroid (slice, row, column).
    """
    if series_uid and read.series_uid and series_uid != read.series_uid:
        raise InputError(read.source, f"marks belong to series {read.series_uid}, not to the scan's {series_uid}")
    marks = read.nodules
    try:
        masks = [mark_mask(m, geometry, sop_index) for m in marks]
    except InputError as error:
        raise InputError(read.source, error.problem) from None
    centroids = np.array([m.centroid_xyz for m in masks]).reshape(-1, 3)
    links = []
    for i in range(len(marks)):
        for j in range(i + 1, len(marks)):
            if marks[i].session_index == marks[j].session_index:
                continue
            distance = float(np.linalg.norm(centroids[i] - centroids[j]))
            overlap = masks[i].overlaps(masks[j])
            if overlap or distance <= tolerance_mm:
                links.append((not overlap, distance, i, j))

    group_of = list(range(len(marks)))          # union-find parent
    readers = {i: {marks[i].session_index} for i in range(len(marks))}

    def root(i: int) -> int:
        while group_of[i] != i:
            group_of[i] = group_of[group_of[i]]
            i = group_of[i]
        return i

    for _, _, i, j in sorted(links):
        a, b = root(i), root(j)
        if a != b and not readers[a] & readers[b]:
            group_of[b] = a
            readers[a] |= readers.pop(b)

    members: dict[int, list[int]] = {}
    for i in range(len(marks)):
        members.setdefault(root(i), []).append(i)
    nodules = [PhysicalNodule(tuple(marks[i] for i in group), tuple(masks[i] for i in group))
               for group in members.values()]
    return tuple(sorted(nodules, key=lambda n: (-n.reader_count, *combine_masks(n.masks).centroid_irc)))


def sop_slice_index(folder: str | Path, geometry: VolumeGeometry, series_uid: str | None = None) -> dict[str, int]:
    """Maps each DICOM image's SOPInstanceUID in a folder to its slice index on the scan grid.

    The index comes from the image's ImagePositionPatient through ``geometry``; images of other
    series (when ``series_uid`` is given) or off the grid are left out.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    index: dict[str, int] = {}
    tags = ["SOPInstanceUID", "SeriesInstanceUID", "ImagePositionPatient"]
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags)
        except (InvalidDicomError, OSError):
            continue
        position = ds.get("ImagePositionPatient")
        if position is None or "SOPInstanceUID" not in ds:
            continue
        if series_uid is not None and str(ds.get("SeriesInstanceUID", "")) != series_uid:
            continue
        irc = geometry.xyz_to_irc([float(v) for v in position])
        if geometry.contains_irc(irc) and abs(irc[0] - np.rint(irc[0])) <= _SLICE_TOLERANCE:
            index[str(ds.SOPInstanceUID)] = int(np.rint(irc[0]))
    return index
