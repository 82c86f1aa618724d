"""Maximum-intensity projections (MIPs) of a CT, with an exact map from image rows to slices.

Frontal MIPs project along the patient's anterior-posterior axis (world y), sagittal MIPs along
left-right (world x), optionally only over a slab around the spine. Each is resampled to
``pixel_mm`` (1 mm) in the projection plane, clipped to a bone window (default [100, 1500] HU),
scaled to [0, 1] and padded / cropped to a fixed size, centred.

Conventions (whatever the scan's direction matrix, flipped z included):
- rows run from head to feet: row 0 is the most superior (largest world z, LPS); rows grow
  towards the feet in steps of ``pixel_mm``;
- frontal columns run along world x (patient's right -> left, the radiological view), sagittal
  columns along world y (anterior -> posterior);
- the *slice index* is the index along the scan's array axis that runs along world z (the
  ``i`` of irc for an axial CT).

:class:`MipGeometry` keeps the offsets, so a (fractional) row maps to a world z in mm and a
slice index and back: ``z = top_z_mm - (row - row_offset) * pixel_mm``.
Only axis-aligned scans (any permutation or flip of the axes) are accepted; an oblique one
must be resampled first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcad.errors import InputError
from medcad.io.scan import Scan
from medcad.transforms.intensity import apply_window

__all__ = ["VIEWS", "MipConfig", "MipGeometry", "Mip", "AxisLine", "SpineCenter", "project", "project_views", "place_projection",
           "spine_center", "axis_lines"]

#: The two projections: frontal (along world y) and sagittal (along world x).
VIEWS = ("frontal", "sagittal")
#: World axis projected away per view, and the world axis along the image columns.
_PROJECTED_AXIS = {"frontal": 1, "sagittal": 0}
_COLUMN_AXIS = {"frontal": 0, "sagittal": 1}
#: A scan axis counts as aligned with a world axis within about 0.6 degrees (2.5 mm over 250 mm).
_ALIGNED_COSINE = 0.99995
#: Bone threshold (HU) and midline band width (mm) used to find the spine.
_SPINE_BONE_HU = 250.0
_SPINE_BAND_MM = 40.0
#: A scan shorter than this along z cannot show a vertebra and its neighbours.
MIN_EXTENT_Z_MM = 30.0


@dataclass(frozen=True)
class MipConfig:
    """How to make a MIP.

    Attributes:
        window_hu: HU clipped to this window then scaled to [0, 1] (a bone window).
        pixel_mm: pixel size in the projection plane (isotropic).
        size: output (rows, columns); None keeps the whole field, padded up to ``multiple``.
        multiple: with ``size=None``, rows and columns are padded to a multiple of this (U-Nets).
        sagittal_slab_mm: when set, the sagittal MIP covers only this width (world x) centred on
            the spine, so the ribs and pelvis of the sides do not hide the vertebrae.
        keep_width_mm: when set, columns farther than half this from the spine are set to 0
            (masking the image sides: arms, table edges).
    """

    window_hu: tuple[float, float] = (100.0, 1500.0)
    pixel_mm: float = 1.0
    size: tuple[int, int] | None = (512, 512)
    multiple: int = 32
    sagittal_slab_mm: float | None = None
    keep_width_mm: float | None = None

    def __post_init__(self) -> None:
        low, high = self.window_hu
        if not high > low:
            raise ValueError(f"window_hu must be (low, high) with high > low, got {self.window_hu}")
        if self.pixel_mm <= 0:
            raise ValueError(f"pixel_mm must be positive, got {self.pixel_mm}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (rows, columns) of positive ints or None, got {self.size}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be positive, got {self.multiple}")

    def to_dict(self) -> dict:
        """JSON-ready form (saved next to models as their preprocessing)."""
        return {"window_hu": list(self.window_hu), "pixel_mm": self.pixel_mm,
                "size": None if self.size is None else list(self.size), "multiple": self.multiple,
                "sagittal_slab_mm": self.sagittal_slab_mm, "keep_width_mm": self.keep_width_mm}

    @classmethod
    def from_dict(cls, values: dict) -> "MipConfig":
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {k: values[k] for k in ("window_hu", "pixel_mm", "size", "multiple", "sagittal_slab_mm",
                                        "keep_width_mm") if k in values}
        if "window_hu" in known:
            known["window_hu"] = tuple(float(v) for v in known["window_hu"])
        if known.get("size") is not None:
            known["size"] = tuple(int(v) for v in known["size"])
        return cls(**known)


@dataclass(frozen=True)
class AxisLine:
    """World coordinate along one scan array axis: ``world_mm = start_mm + step_mm * index``.

    Attributes:
        array_axis: the axis of ``Scan.hu`` (0, 1, 2 = i, r, c).
        start_mm: world coordinate (mm) of index 0.
        step_mm: signed change in mm per index (negative when the axis runs against the world axis).
        length: number of voxels along the axis.
    """

    array_axis: int
    start_mm: float
    step_mm: float
    length: int

    def index_to_mm(self, index):
        return self.start_mm + self.step_mm * np.asarray(index, dtype=np.float64)

    def mm_to_index(self, mm):
        return (np.asarray(mm, dtype=np.float64) - self.start_mm) / self.step_mm

    @property
    def low_mm(self) -> float:
        return float(min(self.start_mm, self.index_to_mm(self.length - 1)))

    @property
    def high_mm(self) -> float:
        return float(max(self.start_mm, self.index_to_mm(self.length - 1)))


@dataclass(frozen=True)
class MipGeometry:
    """Where the rows and columns of a MIP image sit: maps rows <-> world z (mm) <-> slice index.

    Attributes:
        view: ``"frontal"`` or ``"sagittal"``.
        shape: image (rows, columns).
        pixel_mm: pixel size (both directions).
        top_z_mm: world z of content row 0 (the most superior slice centre).
        row_offset: image row = content row + row_offset (negative when the top was cropped).
        content_rows: rows covered by the scan (before padding / cropping).
        slices: world z along the slice axis (the scan's axis along world z).
        left_mm: world coordinate (x frontal, y sagittal) of content column 0.
        col_offset: image column = content column + col_offset.
        content_cols: columns covered by the scan.
        spine_col: image column of the spine centre (estimated), for masks and label bands.
    """

    view: str
    shape: tuple[int, int]
    pixel_mm: float
    top_z_mm: float
    row_offset: int
    content_rows: int
    slices: AxisLine
    left_mm: float
    col_offset: int
    content_cols: int
    spine_col: float

    def row_to_z_mm(self, row):
        """World z (mm) of an image row (fractional rows allowed)."""
        return self.top_z_mm - (np.asarray(row, dtype=np.float64) - self.row_offset) * self.pixel_mm

    def z_mm_to_row(self, z_mm):
        """Image row (fractional) of a world z in mm."""
        return (self.top_z_mm - np.asarray(z_mm, dtype=np.float64)) / self.pixel_mm + self.row_offset

    def slice_to_z_mm(self, index):
        """World z (mm) of a (fractional) slice index."""
        return self.slices.index_to_mm(index)

    def z_mm_to_slice(self, z_mm):
        """Fractional slice index of a world z in mm."""
        return self.slices.mm_to_index(z_mm)

    def row_to_slice(self, row):
        """Fractional slice index of an image row."""
        return self.z_mm_to_slice(self.row_to_z_mm(row))

    def slice_to_row(self, index):
        """Fractional image row of a slice index."""
        return self.z_mm_to_row(self.slice_to_z_mm(index))

    def nearest_slice(self, row) -> np.ndarray | int:
        """The slice index nearest to a row, clipped to the scan."""
        index = np.clip(np.rint(self.row_to_slice(row)), 0, self.slices.length - 1).astype(np.int64)
        return int(index) if index.ndim == 0 else index

    def content_row_range(self) -> tuple[int, int]:
        """Image rows [first, stop) that show the scan (not padding)."""
        first = max(self.row_offset, 0)
        return first, min(self.row_offset + self.content_rows, self.shape[0])

    def col_to_mm(self, col):
        """World coordinate (x frontal, y sagittal) of an image column."""
        return self.left_mm + (np.asarray(col, dtype=np.float64) - self.col_offset) * self.pixel_mm

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"view": self.view, "shape": list(self.shape), "pixel_mm": self.pixel_mm,
                "top_z_mm": self.top_z_mm, "row_offset": self.row_offset, "content_rows": self.content_rows,
                "slices": {"array_axis": self.slices.array_axis, "start_mm": self.slices.start_mm,
                           "step_mm": self.slices.step_mm, "length": self.slices.length},
                "left_mm": self.left_mm, "col_offset": self.col_offset, "content_cols": self.content_cols,
                "spine_col": self.spine_col}

    @classmethod
    def from_dict(cls, values: dict) -> "MipGeometry":
        """Inverse of :meth:`to_dict`."""
        fields = dict(values)
        fields["shape"] = tuple(int(v) for v in fields["shape"])
        fields["slices"] = AxisLine(**fields["slices"])
        return cls(**fields)


@dataclass(frozen=True, eq=False)
class Mip:
    """A MIP image (rows head -> feet, values in [0, 1]) and where its pixels sit."""

    image: np.ndarray
    geometry: MipGeometry

    @property
    def view(self) -> str:
        return self.geometry.view


@dataclass(frozen=True)
class SpineCenter:
    """Estimated centre of the spine in the axial plane (world mm, LPS)."""

    x_mm: float
    y_mm: float


def axis_lines(scan: Scan) -> tuple[AxisLine, AxisLine, AxisLine]:
    """For world x, y, z: the scan axis that runs along it; an InputError for oblique scans."""
    geometry = scan.geometry
    lines: dict[int, AxisLine] = {}
    for array_axis in range(3):
        column = 2 - array_axis  # direction columns are in (column, row, index) order
        unit = geometry.direction[:, column]
        world_axis = int(np.argmax(np.abs(unit)))
        if abs(unit[world_axis]) < _ALIGNED_COSINE or world_axis in lines:
            raise InputError(scan.source, "oblique orientation (axes not along x, y, z); resample the scan to an "
                                          "axis-aligned grid before making projections")
        step = float(unit[world_axis] * geometry.spacing_xyz[column])
        lines[world_axis] = AxisLine(array_axis, float(geometry.origin_xyz[world_axis]), step,
                                     geometry.shape_irc[array_axis])
    return lines[0], lines[1], lines[2]


def _check_volume(scan: Scan, z_line: AxisLine) -> None:
    if min(scan.shape_irc) < 2:
        raise InputError(scan.source, f"a single image (shape {scan.shape_irc}), not a CT volume; L3 "
                                      "localisation needs a volume covering the abdomen")
    extent = z_line.high_mm - z_line.low_mm
    if extent < MIN_EXTENT_Z_MM:
        raise InputError(scan.source, f"covers only {extent:.0f} mm along z; L3 localisation needs a volume "
                                      f"covering at least {MIN_EXTENT_Z_MM:.0f} mm of the spine")


def _zyx_view(scan: Scan, lines: tuple[AxisLine, AxisLine, AxisLine]) -> np.ndarray:
    """The HU array with its axes permuted to (along z, along y, along x); a view, not a copy."""
    return np.transpose(scan.hu, (lines[2].array_axis, lines[1].array_axis, lines[0].array_axis))


def spine_center(scan: Scan) -> SpineCenter:
    """Where the spine sits in the axial plane (world mm), from the bone (> 250 HU) of the scan.

    x: the median over slices of each slice's bone centroid along x: ribs, pelvis and shoulders
    are left-right symmetric, so the centroid falls on the midline, and the median ignores the
    few slices with one-sided metal or contrast. y: the same median centroid, of the bone within
    a 40 mm band around that midline (mostly vertebrae). Falls back to the centre of the field of
    view without bone.
    """
    lines = axis_lines(scan)
    x_line, y_line = lines[0], lines[1]
    bone = _zyx_view(scan, lines) > _SPINE_BONE_HU  # (z, y, x)
    x_mm = x_line.index_to_mm(np.arange(x_line.length))
    y_mm = y_line.index_to_mm(np.arange(y_line.length))
    per_slice_x = bone.sum(axis=1, dtype=np.float64)  # (z, x)
    weight = per_slice_x.sum(axis=1)
    if not np.any(weight > 0):
        return SpineCenter((x_line.low_mm + x_line.high_mm) / 2, (y_line.low_mm + y_line.high_mm) / 2)
    centroids = per_slice_x[weight > 0] @ x_mm / weight[weight > 0]
    center_x = float(np.median(centroids))
    band = np.abs(x_mm - center_x) <= _SPINE_BAND_MM / 2
    per_slice_y = bone[:, :, band].sum(axis=2, dtype=np.float64)  # (z, y)
    weight_y = per_slice_y.sum(axis=1)
    if not np.any(weight_y > 0):
        return SpineCenter(center_x, (y_line.low_mm + y_line.high_mm) / 2)
    return SpineCenter(center_x, float(np.median(per_slice_y[weight_y > 0] @ y_mm / weight_y[weight_y > 0])))


def _fit(content: int, size: int | None, multiple: int) -> tuple[int, int]:
    """(output length, offset) placing ``content`` pixels centred in the output (crop when larger)."""
    length = size if size is not None else -(-content // multiple) * multiple
    return length, (length - content) // 2


def project(scan: Scan, view: str, config: MipConfig = MipConfig(), spine: SpineCenter | None = None) -> Mip:
    """One MIP of ``scan`` (``view`` is ``"frontal"`` or ``"sagittal"``), see the module notes.

    Args:
        scan: an axis-aligned CT volume in HU.
        view: which projection.
        config: window, pixel size, output size, slab and side masking.
        spine: the spine centre when already known (else estimated when the config needs it).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    lines = axis_lines(scan)
    z_line, column_line = lines[2], lines[_COLUMN_AXIS[view]]
    _check_volume(scan, z_line)
    if spine is None:
        spine = spine_center(scan)

    volume = _zyx_view(scan, lines)  # (z, y, x)
    if view == "sagittal" and config.sagittal_slab_mm is not None:
        x_line = lines[0]
        x_mm = x_line.index_to_mm(np.arange(x_line.length))
        inside = np.flatnonzero(np.abs(x_mm - spine.x_mm) <= config.sagittal_slab_mm / 2)
        if inside.size == 0:  # slab narrower than a voxel: the nearest column
            inside = np.array([int(np.argmin(np.abs(x_mm - spine.x_mm)))])
        volume = volume[:, :, inside[0]:inside[-1] + 1]
    projection_hu = volume.max(axis=2 if view == "sagittal" else 1)  # (z, column axis)
    return place_projection(projection_hu, z_line, column_line, view, config,
                            spine_mm=(spine.x_mm, spine.y_mm)[_COLUMN_AXIS[view]])


def place_projection(projection_hu: np.ndarray, z_line: AxisLine, column_line: AxisLine, view: str,
                     config: MipConfig = MipConfig(), spine_mm: float | None = None) -> Mip:
    """Windows, resamples and pads / crops a projection (rows along ``z_line``) into a :class:`Mip`.

    Args:
        projection_hu: 2D HU array, axis 0 along ``z_line``, axis 1 along ``column_line``.
        z_line: world z of each row of ``projection_hu`` (the slice axis).
        column_line: world coordinate of each column (x frontal, y sagittal).
        view: ``"frontal"`` or ``"sagittal"``.
        config: window, pixel size, output size, side masking.
        spine_mm: spine centre along ``column_line`` (default: the middle of the field).
    """
    from scipy.ndimage import map_coordinates

    if projection_hu.shape != (z_line.length, column_line.length):
        raise ValueError(f"projection shape {projection_hu.shape} does not match its axes "
                         f"({z_line.length}, {column_line.length})")
    if spine_mm is None:
        spine_mm = (column_line.low_mm + column_line.high_mm) / 2
    scaled = apply_window(projection_hu, config.window_hu)
    pixel = config.pixel_mm
    content_rows = int(np.floor((z_line.high_mm - z_line.low_mm) / pixel + 1e-6)) + 1
    content_cols = int(np.floor((column_line.high_mm - column_line.low_mm) / pixel + 1e-6)) + 1
    size = config.size or (None, None)
    rows, row_offset = _fit(content_rows, size[0], config.multiple)
    cols, col_offset = _fit(content_cols, size[1], config.multiple)
    geometry = MipGeometry(view=view, shape=(rows, cols), pixel_mm=pixel, top_z_mm=z_line.high_mm,
                           row_offset=row_offset, content_rows=content_rows, slices=z_line,
                           left_mm=column_line.low_mm, col_offset=col_offset, content_cols=content_cols,
                           spine_col=float((spine_mm - column_line.low_mm) / pixel + col_offset))

    content_row = np.arange(rows) - row_offset
    content_col = np.arange(cols) - col_offset
    slice_index = z_line.mm_to_index(geometry.row_to_z_mm(np.arange(rows)))
    column_index = column_line.mm_to_index(geometry.col_to_mm(np.arange(cols)))
    grid_rows, grid_cols = np.meshgrid(np.clip(slice_index, 0, z_line.length - 1),
                                       np.clip(column_index, 0, column_line.length - 1), indexing="ij")
    image = map_coordinates(scaled, [grid_rows, grid_cols], order=1, mode="nearest").astype(np.float32)
    image[(content_row < 0) | (content_row >= content_rows), :] = 0.0
    image[:, (content_col < 0) | (content_col >= content_cols)] = 0.0
    if config.keep_width_mm is not None:
        image[:, np.abs(geometry.col_to_mm(np.arange(cols)) - spine_mm) > config.keep_width_mm / 2] = 0.0
    return Mip(image=image, geometry=geometry)


def project_views(scan: Scan, config: MipConfig = MipConfig()) -> dict[str, Mip]:
    """The frontal and sagittal MIPs of a scan (the spine centre is estimated once)."""
    spine = spine_center(scan)
    return {view: project(scan, view, config, spine) for view in VIEWS}
