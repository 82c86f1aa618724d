"""CT-like noise and quantisation to int16 HU, slab by slab.

Noise is Gaussian, correlated over about a pixel in-plane (as reconstruction kernels make it), and
scaled with the voxel volume (thin slices and small pixels are noisier). Drawing 80 M normals per
scan would dominate the run time, so each slice takes a random window of a small bank of noise
fields instead: statistically the same texture at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medcad.data.synthetic.canvas import for_each_slab

#: The HU range a CT stores.
HU_RANGE = (-1024, 3071)
#: Value outside the reconstruction circle (as GE and Siemens scanners write it).
OUTSIDE_CIRCLE_HU = -3024
#: Thin slices of a low-dose scan get no noisier than this.
MAX_SIGMA_HU = 70.0
_BANK_SLICES = 12
_BANK_MARGIN = 48
_REFERENCE_VOXEL_MM3 = 0.7 * 0.7 * 1.25


def noise_sigma_hu(noise_hu: float, spacing_xyz) -> float:
    """Noise standard deviation for a voxel size, from the one at the reference voxel."""
    volume = float(np.prod(spacing_xyz))
    return float(min(noise_hu * np.sqrt(_REFERENCE_VOXEL_MM3 / volume), MAX_SIGMA_HU))


def quantise_with_noise(volume: np.ndarray, sigma_hu: float, rng: np.random.Generator,
                        outside_circle: bool = False, slab: int = 16) -> np.ndarray:
    """Returns ``volume`` (float32, z y x) plus noise, rounded to int16 HU (``volume`` is used up).

    Args:
        sigma_hu: noise standard deviation.
        outside_circle: set voxels outside the inscribed reconstruction circle to -3024 (padding).
    """
    depth, rows, cols = volume.shape
    bank = rng.standard_normal((_BANK_SLICES, rows + _BANK_MARGIN, cols + _BANK_MARGIN), dtype=np.float32)
    bank = ndimage.gaussian_filter(bank, sigma=(0, 0.8, 0.8))
    bank *= np.float32(sigma_hu / bank.std())
    choice = rng.integers(0, _BANK_SLICES, depth)
    offsets = rng.integers(0, _BANK_MARGIN + 1, (depth, 2))
    outside = None
    if outside_circle:
        yy, xx = np.ogrid[:rows, :cols]
        outside = ((yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2) > (min(rows, cols) / 2) ** 2
    out = np.empty(volume.shape, dtype=np.int16)

    def quantise(start: int, stop: int) -> None:
        block = volume[start:stop]
        for k in range(len(block)):
            oy, ox = offsets[start + k]
            block[k] += bank[choice[start + k], oy:oy + rows, ox:ox + cols]
        np.rint(block, out=block)
        np.clip(block, *HU_RANGE, out=block)
        if outside is not None:
            block[:, outside] = OUTSIDE_CIRCLE_HU
        out[start:stop] = block

    for_each_slab(depth, slab, quantise)
    return out
