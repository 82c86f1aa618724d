"""Reading and writing scans and tables.

``read_scan(path)`` accepts a DICOM series folder (any nesting) or file, ``.mhd/.raw``, ``.mha``,
``.nrrd`` and ``.nii/.nii.gz``, and returns a :class:`Scan` in HU with its exact geometry.
"""

from __future__ import annotations

from pathlib import Path

from medcad.errors import InputError
from medcad.io.scan import AIR_HU, Scan

__all__ = ["Scan", "read_scan", "write_scan", "AIR_HU"]


def read_scan(path: str | Path, series_uid: str | None = None, irregular: str = "refuse",
              padding_to_air: bool = True) -> Scan:
    """Reads a CT scan from any supported file or folder.

    Args:
        path: DICOM folder or file, or a volume file.
        series_uid: the series to read from a DICOM folder holding several.
        irregular: DICOM slice-spacing policy, ``"refuse"`` or ``"resample"``.
        padding_to_air: map padding voxels (header padding value, or below -1500 HU) to -1000 HU.
    """
    from medcad.io.dicom import read_dicom_series
    from medcad.io.volume_files import read_volume_file, volume_suffix

    source = Path(path)
    if not source.exists():
        raise InputError(source, "no such file or folder")
    if source.is_dir():
        return read_dicom_series(source, series_uid=series_uid, irregular=irregular,
                                 padding_to_air=padding_to_air)
    if volume_suffix(source) is not None:
        return read_volume_file(source, padding_to_air=padding_to_air)
    if _is_dicom_file(source):
        return read_dicom_series(source, irregular=irregular, padding_to_air=padding_to_air)
    raise InputError(source, "not a recognised scan (expected a DICOM folder or file, .mhd, .mha, .nrrd, .nii or .nii.gz)")


def write_scan(scan: Scan, path: str | Path, compress: bool | None = None) -> Path:
    """Writes a scan to ``.mhd`` (+ ``.raw``), ``.mha``, ``.nrrd`` or ``.nii(.gz)`` atomically."""
    from medcad.io.volume_files import write_volume_file

    return write_volume_file(scan, path, compress=compress)


def _is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble ('DICM' at byte 128) or a .dcm suffix."""
    if path.suffix.lower() == ".dcm":
        return True
    with path.open("rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"
