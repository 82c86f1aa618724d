"""Scan geometry of a phantom: matrix size, spacing, slice thickness, z coverage, origin, flips.

Spacing and thickness vary as in LUNA16 (pixels 0.5-0.9 mm, slices 0.6-2.5 mm for ``full``), and
some scans have flipped axes (direction matrices with -1), written with the origin at the
flipped corner, so code that ignores the direction matrix puts things in the wrong place. Every
flip set has determinant +1, so a DICOM export (whose slice normal is row x column) reads back
with the same direction matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcad.geometry import VolumeGeometry
from medcad.data.synthetic.patient import Patient


@dataclass(frozen=True)
class SizePreset:
    """A scan size: in-plane matrix, slice count (None: coverage / thickness) and spacing scale."""

    matrix: int
    slices: int | None
    spacing_factor: float


SIZES = {
    "small": SizePreset(128, 64, 4.0),
    "medium": SizePreset(256, None, 2.0),
    "full": SizePreset(512, None, 1.0),
}
#: LUNA16-like slice thicknesses (mm) and how often they occur.
_THICKNESS_MM = (0.625, 0.7, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5)
_THICKNESS_P = (0.12, 0.04, 0.06, 0.04, 0.12, 0.24, 0.06, 0.12, 0.20)
_FLIPS = ((1, 1, 1), (-1, -1, 1), (1, -1, -1), (-1, 1, -1))
_FLIP_P = (0.55, 0.15, 0.15, 0.15)


@dataclass(frozen=True, eq=False)
class ScanLayout:
    """Where the phantom's voxel grid lies.

    Attributes:
        canonical: the grid the phantom is drawn on (identity direction, origin at the low corner).
        flips: -1 for each axis (x, y, z) the written scan runs backwards along.
    """

    canonical: VolumeGeometry
    flips: tuple[int, int, int]

    @property
    def geometry(self) -> VolumeGeometry:
        """The written scan's geometry: same voxels in the world, axes flipped per ``flips``."""
        c = self.canonical
        flips = np.asarray(self.flips, dtype=float)
        extent = c.spacing_xyz * (np.asarray(c.shape_irc[::-1]) - 1)
        origin = c.origin_xyz + np.where(flips < 0, extent, 0.0)
        return VolumeGeometry(c.shape_irc, origin, c.spacing_xyz, np.diag(flips))

    def orient(self, volume: np.ndarray) -> np.ndarray:
        """The canonical array (z, y, x) rearranged for the written geometry."""
        axes = tuple(axis for axis, flip in zip((2, 1, 0), self.flips) if flip < 0)
        return np.ascontiguousarray(np.flip(volume, axis=axes)) if axes else volume


def scan_z_range(patient: Patient, rng: np.random.Generator, abdomen: bool) -> tuple[float, float]:
    """World z (bottom, top) a scan covers: the lungs with margins, or down past L5."""
    top = patient.lung_apex_z_mm + rng.uniform(12.0, 35.0)
    if abdomen:
        bottom = patient.vertebra("L5").z_bottom_mm - rng.uniform(25.0, 50.0)
    else:
        bottom = patient.recess_z_mm - rng.uniform(10.0, 35.0)
    return bottom, top


def sample_layout(rng: np.random.Generator, patient: Patient, size: SizePreset, z_range_mm: tuple[float, float],
                  fov_center_xy: tuple[float, float]) -> ScanLayout:
    """Draws spacing, thickness and flips for a patient and a z coverage."""
    fov_mm = 2 * patient.half_width_mm / rng.uniform(0.8, 0.96)
    pixel = round(float(np.clip(fov_mm / 512, 0.5, 0.9)) * size.spacing_factor, 6)
    bottom, top = z_range_mm
    if size.slices is None:
        thickness = float(rng.choice(_THICKNESS_MM, p=_THICKNESS_P)) * size.spacing_factor
        slices = int(round((top - bottom) / thickness)) + 1
    else:
        slices = size.slices
        thickness = round((top - bottom) / (slices - 1), 4)
    spacing = np.array([pixel, pixel, thickness])
    origin = np.round([fov_center_xy[0] - pixel * (size.matrix - 1) / 2,
                       fov_center_xy[1] - pixel * (size.matrix - 1) / 2, bottom], 3)
    canonical = VolumeGeometry((slices, size.matrix, size.matrix), origin, spacing, np.eye(3))
    flips = _FLIPS[rng.choice(len(_FLIPS), p=_FLIP_P)]
    return ScanLayout(canonical, tuple(int(f) for f in flips))
