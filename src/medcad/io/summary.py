"""A plain-dict summary of a scan, for ``medcad info`` and reports."""

from __future__ import annotations

import numpy as np

from medcad.io.scan import Scan


def summarise_scan(scan: Scan) -> dict:
    """Shape, geometry, HU range and identifiers of a scan as JSON-ready values."""
    hu = scan.hu
    return {
        "source": scan.source,
        "series_uid": scan.series_uid,
        "shape_irc": list(scan.shape_irc),
        "spacing_xyz_mm": [round(float(v), 6) for v in scan.spacing_xyz],
        "origin_xyz_mm": [round(float(v), 6) for v in scan.origin_xyz],
        "direction": [[round(float(v), 6) for v in row] for row in scan.direction],
        "extent_mm": [round(float(v), 3) for v in scan.geometry.extent_mm],
        "dtype": str(hu.dtype),
        "hu_min": float(hu.min()),
        "hu_max": float(hu.max()),
        "hu_mean": round(float(hu.mean(dtype=np.float64)), 3),
        "slice_spacing": _slice_spacing_note(scan),
        "metadata": {k: v for k, v in scan.metadata.items() if k != "SliceGapsMm"},
    }


def _slice_spacing_note(scan: Scan) -> str:
    gaps = scan.metadata.get("SliceGapsMm")
    if gaps is None:
        return "regular grid (volume file)"
    if "resampled" in gaps:
        return f"irregular, resampled to {scan.spacing_xyz[2]:.4f} mm (gaps {gaps.split()[0]} mm)"
    return f"regular (DICOM gaps {gaps} mm)"
