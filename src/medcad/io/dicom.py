"""DICOM series folders -> ``Scan``, with the checks a CT reader needs.

Reading is in two passes: headers only (fast) to find the series, check orientations, sort the
slices along the slice normal and check their spacing; then pixel data of the chosen series.

Slice-spacing policy (``irregular``):
- ``"refuse"`` (default): irregular spacing is an error naming the largest deviation.
- ``"resample"``: the slices are linearly interpolated onto a regular grid with the median
  spacing, with a warning.
Missing slices (a gap that is a whole multiple of the usual spacing) and duplicated slices (two
slices at one position) are always errors: they mean an incomplete or mixed export.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.geometry import VolumeGeometry
from medcad.io.scan import AIR_HU, Scan, map_padding_to_air

#: Header fields kept in ``Scan.metadata``: technical, never patient-identifying.
SAFE_METADATA_FIELDS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "SliceThickness",
    "KVP", "BodyPartExamined", "PatientPosition", "ReconstructionDiameter", "SeriesDescription",
    "StudyInstanceUID",
)
_HEADER_TAGS = [
    "SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "Rows", "Columns", "InstanceNumber", "SeriesDescription", *SAFE_METADATA_FIELDS,
]


@dataclass(frozen=True)
class DicomSlice:
    """Header facts of one DICOM image file."""

    path: Path
    series_uid: str
    position_xyz: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing_rc: tuple[float, float] | None
    rows: int
    columns: int
    description: str


def _read_header(path: Path) -> DicomSlice | None:
    """Returns the slice header, or None when the file is not a DICOM image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError):
        return None
    except Exception as error:  # a truncated or damaged header
        raise InputError(path, f"damaged DICOM header ({error})") from error
    if "Rows" not in ds or "SeriesInstanceUID" not in ds:
        return None  # not an image (e.g. a structured report)
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    spacing = ds.get("PixelSpacing")
    return DicomSlice(
        path=path,
        series_uid=str(ds.SeriesInstanceUID),
        position_xyz=None if position is None else np.array([float(v) for v in position]),
        orientation=None if orientation is None else np.array([float(v) for v in orientation]),
        pixel_spacing_rc=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        description=str(ds.get("SeriesDescription", "")),
    )


def find_series(folder: str | Path) -> dict[str, list[DicomSlice]]:
    """All DICOM image series under a folder (any nesting), by SeriesInstanceUID."""
    root = Path(folder)
    series: dict[str, list[DicomSlice]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        header = _read_header(path)
        if header is not None:
            series.setdefault(header.series_uid, []).append(header)
    return series


def _choose_series(source: Path, series: dict[str, list[DicomSlice]], series_uid: str | None) -> list[DicomSlice]:
    if not series:
        raise InputError(source, "no DICOM image files found")
    listing = "; ".join(
        f"{uid} ({len(slices)} slices{', ' + slices[0].description if slices[0].description else ''})"
        for uid, slices in series.items()
    )
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(source, f"series {series_uid} not found; the folder holds: {listing}")
        return series[series_uid]
    if len(series) > 1:
        raise InputError(source, f"the folder holds {len(series)} series, choose one with --series UID: {listing}")
    return next(iter(series.values()))


@dataclass(frozen=True)
class _SliceStack:
    """Slices of one series sorted along the slice normal, with the grid they define."""

    slices: list[DicomSlice]
    positions_mm: np.ndarray  # position of each slice along the normal
    direction: np.ndarray
    pixel_spacing_rc: tuple[float, float]


def _sort_slices(source: Path, slices: list[DicomSlice]) -> _SliceStack:
    first = slices[0]
    if any(s.position_xyz is None or s.orientation is None for s in slices):
        raise InputError(source, "DICOM slices lack ImagePositionPatient / ImageOrientationPatient, so they cannot be placed in space")
    if first.pixel_spacing_rc is None:
        raise InputError(source, "DICOM slices lack PixelSpacing")
    for s in slices[1:]:
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise InputError(source, f"mixed orientations in one series ({s.path.name} differs from {first.path.name})")
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise InputError(source, f"slices of different sizes in one series ({s.path.name})")
    row_dir = first.orientation[:3] / np.linalg.norm(first.orientation[:3])
    col_dir = first.orientation[3:] / np.linalg.norm(first.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    positions = np.array([s.position_xyz @ normal for s in slices])
    order = np.argsort(positions, kind="stable")
    sorted_slices = [slices[i] for i in order]
    positions = positions[order]
    duplicates = np.flatnonzero(np.diff(positions) < 1e-3)
    if len(duplicates):
        i = duplicates[0]
        raise InputError(source, f"duplicated slices at {positions[i]:.3f} mm along the slice normal "
                                 f"({sorted_slices[i].path.name}, {sorted_slices[i + 1].path.name})")
    return _SliceStack(sorted_slices, positions, np.stack([row_dir, col_dir, normal], axis=1), first.pixel_spacing_rc)


def _check_spacing(source: Path, positions: np.ndarray, irregular: str) -> tuple[float, bool]:
    """Returns (slice spacing in mm, whether resampling is needed); raises on gaps."""
    if len(positions) < 2:
        return 1.0, False
    gaps = np.diff(positions)
    spacing = float(np.median(gaps))
    tolerance = max(0.01, 0.01 * spacing)
    deviation = np.abs(gaps - spacing)
    if deviation.max() <= tolerance:
        return spacing, False
    worst = int(np.argmax(deviation))
    ratio = gaps[worst] / spacing
    if ratio > 1.5 and abs(ratio - round(ratio)) * spacing <= tolerance:
        missing = int(round(ratio)) - 1
        raise InputError(source, f"{missing} slice(s) missing between {positions[worst]:.2f} and "
                                 f"{positions[worst + 1]:.2f} mm (usual spacing {spacing:.3f} mm)")
    message = (f"irregular slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm "
               f"(median {spacing:.3f} mm)")
    if irregular == "refuse":
        raise InputError(source, message + "; pass irregular='resample' (--irregular resample) to interpolate")
    warnings.warn(f"{source}: {message}; resampling to {spacing:.3f} mm", stacklevel=3)
    return spacing, True


def _read_pixels(path: Path, padding_to_air: bool) -> tuple[np.ndarray, dict]:
    """Reads one slice in HU (int32 when the rescale is integral, else float32); returns (hu, header fields)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception as error:
        raise InputError(path, f"cannot read the pixel data ({error})") from error
    if stored.ndim != 2:
        raise InputError(path, f"expected a single 2D image per file, got pixel data of shape {stored.shape}")
    slope = float(ds.get("RescaleSlope", 1.0))
    intercept = float(ds.get("RescaleIntercept", 0.0))
    if slope.is_integer() and intercept.is_integer():  # the usual CT case: exact in integers, no float pass
        hu = stored.astype(np.int32) * int(slope) + int(intercept)
    else:
        hu = stored.astype(np.float32) * slope + intercept
    padding = ds.get("PixelPaddingValue")
    if padding_to_air and padding is not None:
        padding = int(padding)
        if int(ds.get("PixelRepresentation", 0)) == 1 and padding > 32767:
            padding -= 65536  # written unsigned in the header, signed in the pixels
        hu[stored == padding] = AIR_HU
    fields = {name: str(ds.get(name)) for name in SAFE_METADATA_FIELDS if ds.get(name) is not None}
    return hu, fields


def read_dicom_series(folder: str | Path, series_uid: str | None = None, irregular: str = "refuse",
                      padding_to_air: bool = True) -> Scan:
    """Reads one DICOM series from a folder (any nesting) into a Scan in HU.

    Args:
        folder: a folder holding the series' files (other files are ignored).
        series_uid: which series to read when the folder holds several.
        irregular: ``"refuse"`` or ``"resample"`` irregular slice spacing (see module doc).
        padding_to_air: map the header's PixelPaddingValue and values below -1500 HU to -1000.
    """
    source = Path(folder)
    if irregular not in ("refuse", "resample"):
        raise ValueError(f"irregular must be 'refuse' or 'resample', got {irregular!r}")
    stack = _series_stack(source, series_uid)
    slice_spacing, resample = _check_spacing(source, stack.positions_mm, irregular)

    planes, fields = [], {}
    for s in stack.slices:
        hu_plane, fields = _read_pixels(s.path, padding_to_air)
        planes.append(hu_plane)
    volume = np.stack(planes) if len({p.dtype for p in planes}) == 1 else np.stack(planes).astype(np.float32)
    if volume.dtype.kind == "f" and not np.all(np.isfinite(volume)):
        raise InputError(source, "pixel data contain non-finite values")
    if padding_to_air:
        map_padding_to_air(volume)
    if resample:
        volume = _resample_slices(volume, stack.positions_mm, slice_spacing)
    hu = _compact(volume)
    gaps = np.diff(stack.positions_mm)
    if len(gaps):
        fields["SliceGapsMm"] = f"{gaps.min():.4f}..{gaps.max():.4f}" + (" (resampled)" if resample else "")

    row_spacing, col_spacing = stack.pixel_spacing_rc
    origin = stack.slices[0].position_xyz
    geometry = VolumeGeometry(hu.shape, origin, (col_spacing, row_spacing, slice_spacing), stack.direction)
    return Scan(hu=hu, geometry=geometry, series_uid=stack.slices[0].series_uid, source=str(source),
                metadata=fields)


def _series_stack(source: Path, series_uid: str | None) -> _SliceStack:
    """The chosen series' slices under ``source`` (a folder or one file), sorted along the normal."""
    if source.is_file():
        header = _read_header(source)
        if header is None:
            raise InputError(source, "not a DICOM image file")
        chosen = [header]
    else:
        chosen = _choose_series(source, find_series(source), series_uid)
    return _sort_slices(source, chosen)


def series_slice_files(folder: str | Path, series_uid: str | None = None) -> list[Path]:
    """The files of the series :func:`read_dicom_series` reads, in the Scan's slice (index) order.

    What DICOM results (Segmentation, SR) reference: slice ``i`` of the Scan is ``files[i]``
    (for a series read without resampling).
    """
    return [s.path for s in _series_stack(Path(folder), series_uid).slices]


def _resample_slices(volume: np.ndarray, positions: np.ndarray, spacing: float) -> np.ndarray:
    """Linearly interpolates slices at irregular positions onto a regular grid."""
    count = int(round((positions[-1] - positions[0]) / spacing)) + 1
    targets = positions[0] + spacing * np.arange(count)
    upper = np.clip(np.searchsorted(positions, targets, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    weight = ((targets - positions[lower]) / (positions[upper] - positions[lower])).astype(np.float32)
    weight = np.clip(weight, 0.0, 1.0)[:, None, None]
    return volume[lower] * (1 - weight) + volume[upper] * weight


def _compact(volume: np.ndarray) -> np.ndarray:
    """int16 when every value is an integer in range (the usual CT case), else float32."""
    in_range = volume.min() >= -32768 and volume.max() <= 32767
    if in_range and (volume.dtype.kind in "iu" or np.array_equal(volume, np.round(volume))):
        return volume.astype(np.int16)
    return volume.astype(np.float32)
