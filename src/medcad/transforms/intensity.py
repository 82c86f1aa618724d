"""Intensity steps: HU windows (by name or numbers) and normalisation.

A window clips HU to ``[low_hu, high_hu]`` and scales that range linearly to ``[0, 1]``, so air
(below the lung window) becomes 0, which is also what zero padding in the spatial augmentations
fills in. Named windows use the usual radiology level / width pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcad.errors import MedcadError

__all__ = ["HuWindow", "WINDOWS", "resolve_window", "apply_window", "normalize"]


@dataclass(frozen=True)
class HuWindow:
    """A display / model window in Hounsfield units."""

    low_hu: float
    high_hu: float
    name: str = ""

    def __post_init__(self) -> None:
        if not np.isfinite(self.low_hu) or not np.isfinite(self.high_hu) or self.high_hu <= self.low_hu:
            raise MedcadError(f"a HU window needs low < high, got {self.low_hu}..{self.high_hu}")

    @classmethod
    def from_level_width(cls, level: float, width: float, name: str = "") -> "HuWindow":
        return cls(level - width / 2, level + width / 2, name)

    @property
    def level(self) -> float:
        return (self.low_hu + self.high_hu) / 2

    @property
    def width(self) -> float:
        return self.high_hu - self.low_hu


#: Named windows (level / width in HU). "lung" is the default of the volume classifier.
WINDOWS: dict[str, HuWindow] = {
    "lung": HuWindow(-1000.0, 400.0, "lung"),
    "mediastinum": HuWindow.from_level_width(50, 350, "mediastinum"),
    "soft_tissue": HuWindow.from_level_width(40, 400, "soft_tissue"),
    "bone": HuWindow.from_level_width(400, 1800, "bone"),
    "brain": HuWindow.from_level_width(40, 80, "brain"),
    "liver": HuWindow.from_level_width(60, 160, "liver"),
    "nodule": HuWindow(-1000.0, 1000.0, "nodule"),  # the book's clamp for nodule crops
}


def resolve_window(window: str | HuWindow | tuple[float, float] | list[float]) -> HuWindow:
    """A window from a name (``"lung"``), ``"LOW,HIGH"`` text, a (low, high) pair or a HuWindow."""
    if isinstance(window, HuWindow):
        return window
    if isinstance(window, str):
        key = window.strip().lower()
        if key in WINDOWS:
            return WINDOWS[key]
        parts = key.split(",") if "," in key else key.split("..")
        try:
            low, high = (float(p) for p in parts)
        except ValueError:
            raise MedcadError(f"unknown HU window {window!r}: use one of {', '.join(WINDOWS)} "
                              "or 'LOW,HIGH' in HU") from None
        return HuWindow(low, high)
    low, high = window
    return HuWindow(float(low), float(high))


def apply_window(hu: np.ndarray, window: str | HuWindow | tuple[float, float] = "lung") -> np.ndarray:
    """Clips HU to the window and scales it to [0, 1] (float32)."""
    resolved = resolve_window(window)
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(resolved.low_hu)) / np.float32(resolved.width)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def normalize(volume: np.ndarray, method: str = "zscore", mask: np.ndarray | None = None,
              eps: float = 1e-6) -> np.ndarray:
    """Normalises intensities with statistics taken inside ``mask`` (everywhere without one).

    Args:
        method: ``"zscore"`` (zero mean, unit standard deviation) or ``"minmax"`` (to [0, 1]).
        mask: where to take the statistics (e.g. the lungs); the whole volume is transformed.
    """
    values = np.asarray(volume, dtype=np.float32)
    sample = values if mask is None else values[np.asarray(mask, dtype=bool)]
    if sample.size == 0:
        raise MedcadError("cannot normalise: the mask selects no voxels")
    if method == "zscore":
        return (values - sample.mean()) / max(float(sample.std()), eps)
    if method == "minmax":
        low, high = float(sample.min()), float(sample.max())
        return (values - low) / max(high - low, eps)
    raise MedcadError(f"unknown normalisation {method!r}: use 'zscore' or 'minmax'")
