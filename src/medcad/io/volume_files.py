"""Single-file volume formats through SimpleITK: MetaImage (.mhd/.raw, .mha), NRRD, NIfTI.

SimpleITK reports every format in LPS world coordinates (it converts NIfTI's RAS on reading and
back on writing), so a ``Scan`` from any of them uses the same frame as DICOM and LUNA16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.geometry import VolumeGeometry
from medcad.io.atomic import atomic_dir_files
from medcad.io.scan import Scan, map_padding_to_air

#: Suffixes read and written through SimpleITK (longest first for matching).
VOLUME_SUFFIXES = (".nii.gz", ".mhd", ".mha", ".nrrd", ".nhdr", ".nii")
WRITE_SUFFIXES = (".nii.gz", ".mhd", ".mha", ".nrrd", ".nii")


def volume_suffix(path: str | Path) -> str | None:
    """The recognised volume suffix of a path (``.nii.gz`` counts as one), or None."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def read_volume_file(path: str | Path, padding_to_air: bool = True) -> Scan:
    """Reads a 3D scalar volume file into a Scan."""
    import SimpleITK as sitk

    source = Path(path)
    if not source.exists():
        raise InputError(source, "file not found")
    try:
        image = sitk.ReadImage(str(source))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()
        detail = next((line for line in reversed(reason) if line.strip()), "unreadable")
        raise InputError(source, f"cannot read the volume ({detail.strip()[:200]})") from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(source, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; a CT volume has one")
    if image.GetDimension() != 3:
        raise InputError(source, f"is a {image.GetDimension()}D image; medcad needs a 3D volume")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError(source, "contains non-finite values (NaN or infinity)")
        array = array.astype(np.float32)
        if np.array_equal(array, np.round(array)) and array.min() >= -32768 and array.max() <= 32767:
            array = array.astype(np.int16)
    elif array.dtype != np.int16:
        if array.min() < -32768 or array.max() > 32767:
            raise InputError(source, f"voxel values {array.min()}..{array.max()} do not fit HU (int16)")
        array = array.astype(np.int16)
    if padding_to_air:
        map_padding_to_air(array)
    geometry = VolumeGeometry(array.shape, image.GetOrigin(), image.GetSpacing(),
                              np.array(image.GetDirection()).reshape(3, 3))
    suffix = volume_suffix(source) or source.suffix
    stem = source.name[: -len(suffix)] if suffix else source.stem
    # LUNA16 names each .mhd after its series UID.
    series_uid = stem if suffix == ".mhd" and _looks_like_uid(stem) else None
    return Scan(hu=array, geometry=geometry, series_uid=series_uid, source=str(source))


def _looks_like_uid(text: str) -> bool:
    return len(text) > 8 and all(part.isdigit() for part in text.split("."))


def write_volume_file(scan: Scan, path: str | Path, compress: bool | None = None) -> Path:
    """Writes a Scan to .mhd (+.raw), .mha, .nrrd or .nii(.gz), atomically, keeping its geometry.

    Args:
        compress: compress the voxel data; by default only .nii.gz is compressed (LUNA16-style
            .mhd/.raw stays memory-mappable).
    """
    return write_array_file(scan.hu, scan.geometry, path, compress)


def write_array_file(array: np.ndarray, geometry: VolumeGeometry, path: str | Path,
                     compress: bool | None = None) -> Path:
    """Writes any 3D array (z, y, x) on ``geometry`` (a label map, say) as :func:`write_volume_file` does."""
    import SimpleITK as sitk

    target = Path(path)
    suffix = volume_suffix(target)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(target, f"unknown output format; use one of {', '.join(WRITE_SUFFIXES)}")
    if tuple(array.shape) != geometry.shape_irc:
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape_irc}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetOrigin(tuple(float(v) for v in geometry.origin_xyz))
    image.SetSpacing(tuple(float(v) for v in geometry.spacing_xyz))
    image.SetDirection(tuple(float(v) for v in geometry.direction.ravel()))
    use_compression = suffix == ".nii.gz" if compress is None else compress
    with atomic_dir_files(target.parent) as tmp:
        sitk.WriteImage(image, str(tmp / target.name), use_compression)
    return target
