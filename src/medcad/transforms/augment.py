"""The book's augmentation set (flip, offset, scale, rotation, noise), batched, seeded and replayable.

*Deep Learning with PyTorch* (chapters 12-13) augments nodule crops with mirror flips, a small
offset, a scale change, a rotation about the slice axis and Gaussian noise in HU. Here that set
rides on :mod:`medcad.transforms.augment3d`'s machinery (draw parameters from a
``torch.Generator``, then apply them deterministically with one ``grid_sample`` on the batch's
device) plus per-sample flips. Both shapes the CAD trains on work:

- 3D crops (B, C, D, H, W) for the nodule / malignancy classifiers;
- 2D slices with context (B, C, H, W), where the C context slices move together in plane, for
  the segmentation U-Net (rotation in plane only, no offset across slices).

Masks (segmentation labels) go through the same parameters with nearest-neighbour sampling and no
noise, so they stay aligned with their images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from medcad.errors import MedcadError
from medcad.transforms.augment3d import Augment3dConfig, AugmentParams, apply_augment, sample_params

__all__ = ["BookAugmentConfig", "BookAugmentParams", "draw_params", "apply_params", "BookAugment"]


@dataclass(frozen=True)
class BookAugmentConfig:
    """Strengths of the book's augmentations (0 / False switches one off).

    Attributes:
        flip: mirror each in-plane axis (and the slice axis for 3D) with probability 1/2.
        offset: largest shift as a fraction of the crop size (the book: 0.1 for 3D, 0.03 for 2D).
        scale: largest relative zoom change, uniform in ±scale (the book: 0.2).
        rotate_deg: largest rotation about the slice axis, uniform in ± (the book: any angle, 180).
        noise_hu: standard deviation of added Gaussian noise in HU (the book: 25).
        padding_mode: what comes in from outside the crop ("border" repeats the edge HU, as the book).
    """

    flip: bool = True
    offset: float = 0.1
    scale: float = 0.2
    rotate_deg: float = 180.0
    noise_hu: float = 25.0
    padding_mode: str = "border"

    @classmethod
    def segmentation(cls) -> "BookAugmentConfig":
        """The book's settings for the 2D segmentation crops."""
        return cls(offset=0.03)

    def as_augment3d(self) -> Augment3dConfig:
        """The shared 3D augmenter's config with exactly these steps on."""
        return Augment3dConfig(
            p_rotate=float(self.rotate_deg > 0), max_rotate_deg=(self.rotate_deg, 0.0, 0.0),
            p_scale=float(self.scale > 0), scale_range=(1.0 - self.scale, 1.0 + self.scale),
            p_shift=float(self.offset > 0), max_shift_fraction=self.offset,
            p_elastic=0.0, p_noise=float(self.noise_hu > 0), noise_std_range=(self.noise_hu, self.noise_hu),
            p_brightness=0.0, p_contrast=0.0, padding_mode=self.padding_mode)


@dataclass(frozen=True, eq=False)
class BookAugmentParams:
    """One batch's draw: the spatial / noise parameters and the flips ((B, 3) bool, axes index, row, column)."""

    spatial: AugmentParams
    flips: torch.Tensor


def draw_params(batch_size: int, shape_irc: tuple[int, int, int], config: BookAugmentConfig,
                generator: torch.Generator) -> BookAugmentParams:
    """Draws a batch's parameters; a generator in the same state draws the same ones.

    ``shape_irc`` is the crop's (D, H, W); a 2D batch passes D = 1, which turns off every move
    across slices (the offset along the slice axis).
    """
    spatial = sample_params(batch_size, shape_irc, config.as_augment3d(), generator)
    flips = torch.rand((batch_size, 3), generator=generator) < (0.5 if config.flip else 0.0)
    if shape_irc[0] == 1:
        spatial = replace(spatial, shift_irc=spatial.shift_irc * torch.tensor([0.0, 1.0, 1.0]))
        flips[:, 0] = False
    return BookAugmentParams(spatial, flips)


def _flip(batch: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirrors each sample of a (B, C, D, H, W) batch along the axes its flip bits name."""
    flips = flips.to(batch.device)
    for axis in range(3):
        if flips[:, axis].any():
            chosen = flips[:, axis].view(-1, 1, 1, 1, 1)
            batch = torch.where(chosen, batch.flip(2 + axis), batch)
    return batch


def apply_params(image: torch.Tensor, params: BookAugmentParams, mask: torch.Tensor | None = None,
                 padding_mode: str = "border") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Applies drawn parameters to a 3D (B, C, D, H, W) or 2D (B, C, H, W) batch and its optional mask."""
    if image.ndim not in (4, 5):
        raise MedcadError(f"augmentation needs a batch (B, C, H, W) or (B, C, D, H, W), got shape {tuple(image.shape)}")
    flat = image.ndim == 4
    volume = image[:, :, None] if flat else image
    masks = None if mask is None else (mask[:, :, None] if flat else mask)
    result = apply_augment(_flip(volume, params.flips), params.spatial,
                           None if masks is None else _flip(masks, params.flips), padding_mode)
    out_image, out_mask = result.image, result.mask
    if flat:
        out_image = out_image[:, :, 0]
        out_mask = None if out_mask is None else out_mask[:, :, 0]
    return out_image, out_mask


class BookAugment:
    """Callable augmenter with its own seeded generator; ``state()`` / ``load_state()`` for exact resume."""

    def __init__(self, config: BookAugmentConfig = BookAugmentConfig(), seed: int = 0):
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None):
        shape = (1, *image.shape[2:]) if image.ndim == 4 else tuple(image.shape[2:])
        params = draw_params(image.shape[0], shape, self.config, self.generator)
        return apply_params(image, params, mask, self.config.padding_mode)

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
