"""World (mm, patient LPS) <-> voxel (irc: index, row, column) coordinates.

Frames:
- ``xyz``: world millimetres in the patient LPS frame used by DICOM, MetaImage and LUNA16
  (x to the patient's left, y to posterior, z to head). NIfTI files store RAS on disk; SimpleITK
  converts them to LPS on reading, so every ``Scan`` is LPS.
- ``irc``: array index into ``Scan.hu`` whose axes are (z, y, x) = (index, row, column).
  ``cri`` is the same index reversed, in ITK's (column, row, index) order.

The mapping is ITK's: ``xyz = origin_xyz + direction @ (spacing_xyz * cri)``, where the columns
of ``direction`` are the world directions of the column, row and index axes. Voxel centres sit at
integer indices.

Rounding convention: :meth:`VolumeGeometry.xyz_to_irc` returns continuous (float) indices;
``round=True`` gives the nearest voxel centre with ``numpy.rint`` (ties to even, as the book's
``np.round``). Points outside the volume are returned as they are (use :meth:`contains_irc`).

Note: the book's ``xyz2irc`` multiplies by ``inv(direction)`` from the right, which equals the
correct ``inv(direction) @ v`` only for symmetric (e.g. diagonal) direction matrices; here the
inverse is applied correctly for any direction, oblique ones included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VolumeGeometry", "LPS_FROM_RAS"]

#: Multiply a RAS point by this to get LPS (and back: it is its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def _as_points(points: np.ndarray | list | tuple) -> tuple[np.ndarray, bool]:
    """Returns points as an (N, 3) float64 array and whether the input was a single point."""
    array = np.asarray(points, dtype=np.float64)
    if array.shape == (3,):
        return array[None, :], True
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"expected a point (3,) or points (N, 3), got shape {array.shape}")
    return array, False


@dataclass(frozen=True, eq=False)
class VolumeGeometry:
    """Where a voxel grid sits in the world.

    Attributes:
        shape_irc: number of voxels along (index z, row y, column x).
        origin_xyz: world position (mm, LPS) of the centre of voxel irc = (0, 0, 0).
        spacing_xyz: voxel size in mm along the column, row and index axes.
        direction: 3x3 matrix whose columns are the unit world directions of those axes.
    """

    shape_irc: tuple[int, int, int]
    origin_xyz: np.ndarray
    spacing_xyz: np.ndarray
    direction: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_irc", tuple(int(n) for n in self.shape_irc))
        origin = np.asarray(self.origin_xyz, dtype=np.float64).reshape(3)
        spacing = np.asarray(self.spacing_xyz, dtype=np.float64).reshape(3)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(origin)) or not np.all(np.isfinite(spacing)):
            raise ValueError("origin and spacing must be finite")
        if np.any(spacing <= 0):
            raise ValueError(f"spacing must be positive, got {spacing.tolist()}")
        if abs(np.linalg.det(direction)) < 1e-6:
            raise ValueError("direction matrix is singular")
        for name, value in (("origin_xyz", origin), ("spacing_xyz", spacing), ("direction", direction)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def _cri_to_xyz(self) -> np.ndarray:
        """The 3x3 matrix taking a (column, row, index) offset to a world offset in mm."""
        return self.direction * self.spacing_xyz[None, :]

    def irc_to_xyz(self, points_irc: np.ndarray | list | tuple) -> np.ndarray:
        """Maps voxel indices (irc, integer or fractional) to world mm (xyz, LPS)."""
        irc, single = _as_points(points_irc)
        xyz = irc[:, ::-1] @ self._cri_to_xyz.T + self.origin_xyz
        return xyz[0] if single else xyz

    def xyz_to_irc(self, points_xyz: np.ndarray | list | tuple, round: bool = False) -> np.ndarray:
        """Maps world mm (xyz, LPS) to voxel indices (irc).

        Args:
            points_xyz: one point (3,) or many (N, 3).
            round: return the nearest voxel as int64 (``numpy.rint``, ties to even) instead of
                continuous indices.
        """
        xyz, single = _as_points(points_xyz)
        cri = np.linalg.solve(self._cri_to_xyz, (xyz - self.origin_xyz).T).T
        irc = cri[:, ::-1]
        if round:
            irc = np.rint(irc).astype(np.int64)
        return irc[0] if single else irc

    def contains_irc(self, points_irc: np.ndarray | list | tuple) -> np.ndarray | bool:
        """True where a (rounded) voxel index lies inside the grid."""
        irc, single = _as_points(points_irc)
        rounded = np.rint(irc)
        inside = np.all((rounded >= 0) & (rounded < np.asarray(self.shape_irc)), axis=1)
        return bool(inside[0]) if single else inside

    @property
    def is_axis_aligned(self) -> bool:
        """True when each axis runs along one world axis (a permuted, possibly flipped identity)."""
        return bool(np.allclose(np.abs(self.direction).round(), np.abs(self.direction), atol=1e-6))

    @property
    def extent_mm(self) -> np.ndarray:
        """Physical size of the grid along (x, y, z) image axes, in mm."""
        return self.spacing_xyz * np.asarray(self.shape_irc[::-1], dtype=np.float64)

    def with_shape(self, shape_irc: tuple[int, int, int]) -> "VolumeGeometry":
        """The same placement for a grid of another shape (e.g. a cropped or padded copy)."""
        return VolumeGeometry(shape_irc, self.origin_xyz, self.spacing_xyz, self.direction)
