"""The ``Scan`` record: a CT volume in Hounsfield units with its exact geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medcad.geometry import VolumeGeometry

#: HU used for air; padding voxels (outside the scanner's field of view) are set to it.
AIR_HU = -1000
#: Values below this are not tissue or air but padding (e.g. -2000 / -3024 on GE / Siemens).
PADDING_BELOW_HU = -1500


@dataclass(frozen=True, eq=False)
class Scan:
    """A volume in HU, axes (z, y, x), placed in world mm (LPS).

    Attributes:
        hu: Hounsfield units, shape (index, row, column) = (z, y, x); int16 when the stored
            values rescale to integers, else float32.
        geometry: where the grid sits in the world (origin, spacing, direction).
        series_uid: DICOM SeriesInstanceUID (or the LUNA16 file stem) when known.
        source: the file or folder it was read from.
        metadata: non-identifying header fields (modality, manufacturer, kernel, ...).
    """

    hu: np.ndarray
    geometry: VolumeGeometry
    series_uid: str | None = None
    source: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"a Scan holds a 3D volume, got shape {self.hu.shape}")
        if tuple(self.hu.shape) != self.geometry.shape_irc:
            raise ValueError(f"array shape {self.hu.shape} does not match geometry {self.geometry.shape_irc}")

    @classmethod
    def from_array(
        cls,
        hu: np.ndarray,
        origin_xyz=(0.0, 0.0, 0.0),
        spacing_xyz=(1.0, 1.0, 1.0),
        direction=None,
        **kwargs,
    ) -> "Scan":
        """Builds a Scan from an array (z, y, x) and its geometry (identity direction by default)."""
        geometry = VolumeGeometry(
            hu.shape, origin_xyz, spacing_xyz, np.eye(3) if direction is None else direction
        )
        return cls(hu=hu, geometry=geometry, **kwargs)

    @property
    def origin_xyz(self) -> np.ndarray:
        return self.geometry.origin_xyz

    @property
    def spacing_xyz(self) -> np.ndarray:
        return self.geometry.spacing_xyz

    @property
    def direction(self) -> np.ndarray:
        return self.geometry.direction

    @property
    def shape_irc(self) -> tuple[int, int, int]:
        return self.geometry.shape_irc

    def xyz_to_irc(self, points_xyz, round: bool = False) -> np.ndarray:
        """See :meth:`VolumeGeometry.xyz_to_irc`."""
        return self.geometry.xyz_to_irc(points_xyz, round=round)

    def irc_to_xyz(self, points_irc) -> np.ndarray:
        """See :meth:`VolumeGeometry.irc_to_xyz`."""
        return self.geometry.irc_to_xyz(points_irc)

    def replace_hu(self, hu: np.ndarray) -> "Scan":
        """The same scan with another array of the same shape."""
        return Scan(hu=hu, geometry=self.geometry, series_uid=self.series_uid,
                    source=self.source, metadata=dict(self.metadata))


def map_padding_to_air(hu: np.ndarray, padding_hu: float | None = None) -> np.ndarray:
    """Sets padding voxels to air (-1000 HU), in place when possible.

    Padding voxels are those equal to the header's pixel padding value (after rescaling) or below
    -1500 HU, which no tissue or air reaches (GE writes -2000 raw = -3024 HU outside the
    reconstruction circle). Models clamp to [-1000, 1000] anyway; this keeps statistics, MIPs
    and HU-weighted centroids from being dragged by values that are not measurements.
    """
    padding = hu < PADDING_BELOW_HU
    if padding_hu is not None:
        padding |= hu == padding_hu
    if padding.any():
        hu[padding] = AIR_HU
    return hu
