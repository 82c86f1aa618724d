"""Random 3D augmentation of batches (B, C, D, H, W): parameters first, then a deterministic apply.

:func:`sample_params` draws every parameter of a batch from a seeded ``torch.Generator`` (always
the same amount of random numbers, so a seed means the same thing whichever augmentations are
switched on); :func:`apply_augment` applies them without any randomness of its own. Spatial
steps (rotation about each axis, scaling, shift, elastic deformation) become one sampling grid
and one ``grid_sample`` call on whatever device the batch is on (GPU included); images are
interpolated linearly, masks with nearest neighbour through the same grid, so they stay aligned.
The elastic deformation is a coarse random displacement field (a few control points per axis)
upsampled smoothly to the volume: batched, no per-voxel loop. Intensity steps (contrast,
brightness, Gaussian noise) apply to images only.

Voxel geometry: rotations and shifts are in voxel units about the volume centre; the inputs are
expected to be (near) isotropic, which the preprocessing makes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch.nn import functional as F

from medcad.errors import MedcadError

__all__ = ["Augment3dConfig", "AugmentParams", "AugmentedBatch", "sample_params", "apply_augment",
           "sampling_grid", "RandomAugment3d"]


@dataclass(frozen=True)
class Augment3dConfig:
    """Which augmentations run, how often (``p_*``, per volume) and how strongly.

    Attributes:
        max_rotate_deg: largest rotation about the (index, row, column) axes, degrees, uniform in ±.
        scale_range: zoom factor range (> 1 magnifies), the same on every axis.
        max_shift_fraction: largest shift per axis as a fraction of the volume size.
        elastic_control_points: control points per axis of the coarse displacement field.
        elastic_max_voxels: standard deviation of the control-point displacements, in voxels.
        noise_std_range: standard deviation range of added Gaussian noise (image units).
        max_brightness: largest added offset, uniform in ±.
        contrast_range: factor on the deviation from each volume's mean.
        padding_mode: ``grid_sample`` padding for images ("zeros": air after a lung window).
    """

    p_rotate: float = 0.5
    max_rotate_deg: tuple[float, float, float] = (15.0, 15.0, 15.0)
    p_scale: float = 0.5
    scale_range: tuple[float, float] = (0.9, 1.1)
    p_shift: float = 0.5
    max_shift_fraction: float = 0.08
    p_elastic: float = 0.25
    elastic_control_points: int = 5
    elastic_max_voxels: float = 2.0
    p_noise: float = 0.3
    noise_std_range: tuple[float, float] = (0.0, 0.03)
    p_brightness: float = 0.3
    max_brightness: float = 0.05
    p_contrast: float = 0.3
    contrast_range: tuple[float, float] = (0.85, 1.15)
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        for item in fields(self):
            if item.name.startswith("p_") and not 0.0 <= getattr(self, item.name) <= 1.0:
                raise MedcadError(f"augmentation probability {item.name} must lie in [0, 1], got {getattr(self, item.name)}")
        if self.padding_mode not in ("zeros", "border", "reflection"):
            raise MedcadError(f"padding_mode must be zeros, border or reflection, got {self.padding_mode!r}")

    @classmethod
    def only(cls, *names: str, **overrides) -> "Augment3dConfig":
        """A config with the named augmentations always on (p = 1) and every other one off."""
        known = [f.name[2:] for f in fields(cls) if f.name.startswith("p_")]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise MedcadError(f"unknown augmentation(s) {unknown}: use {', '.join(known)}")
        probabilities = {f"p_{name}": float(name in names) for name in known}
        return cls(**{**probabilities, **overrides})

    def off(self) -> "Augment3dConfig":
        """The same strengths with every augmentation switched off."""
        return replace(self, **{f.name: 0.0 for f in fields(self) if f.name.startswith("p_")})


@dataclass(frozen=True, eq=False)
class AugmentParams:
    """Everything random about one batch, drawn by :func:`sample_params` (CPU tensors).

    Attributes:
        angles_rad: (B, 3) rotation about the index, row and column axes (0 where off).
        scale: (B,) zoom factor (1 where off).
        shift_irc: (B, 3) shift in voxels (0 where off).
        elastic_irc: (B, 3, G, G, G) control-point displacements in voxels (0 where off).
        noise_std: (B,) Gaussian noise level (0 where off); the noise itself comes from ``noise_seed``.
        brightness: (B,) added offset (0 where off).
        contrast: (B,) factor about the mean (1 where off).
        noise_seed: seed of the noise field, so applying twice gives the same noise.
    """

    angles_rad: torch.Tensor
    scale: torch.Tensor
    shift_irc: torch.Tensor
    elastic_irc: torch.Tensor
    noise_std: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    noise_seed: int

    @property
    def batch_size(self) -> int:
        return int(self.scale.shape[0])

    def has_spatial(self) -> bool:
        return bool(self.angles_rad.any() or (self.scale != 1).any() or self.shift_irc.any() or self.elastic_irc.any())


@dataclass(frozen=True, eq=False)
class AugmentedBatch:
    """Augmented images and, when given, masks (same shapes and dtypes as the inputs)."""

    image: torch.Tensor
    mask: torch.Tensor | None = None


def _uniform(generator: torch.Generator | None, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def sample_params(batch_size: int, shape_irc: tuple[int, int, int], config: Augment3dConfig,
                  generator: torch.Generator | None = None) -> AugmentParams:
    """Draws the parameters of a batch; the same generator state gives the same parameters.

    ``generator`` None draws from torch's global generator (which the fit loop seeds per epoch).
    """
    b = batch_size

    def on(p: float) -> torch.Tensor:
        return torch.rand((b,), generator=generator) < p

    rotate, scale_on, shift_on, elastic_on, noise_on, bright_on, contrast_on = (
        on(config.p_rotate), on(config.p_scale), on(config.p_shift), on(config.p_elastic),
        on(config.p_noise), on(config.p_brightness), on(config.p_contrast))
    max_rad = torch.tensor([math.radians(a) for a in config.max_rotate_deg])
    angles = _uniform(generator, (b, 3), -1.0, 1.0) * max_rad * rotate[:, None]
    scale = torch.where(scale_on, _uniform(generator, (b,), *config.scale_range), torch.ones(b))
    max_shift = config.max_shift_fraction * torch.tensor(shape_irc, dtype=torch.float32)
    shift = _uniform(generator, (b, 3), -1.0, 1.0) * max_shift * shift_on[:, None]
    g = config.elastic_control_points
    elastic = torch.randn((b, 3, g, g, g), generator=generator) * config.elastic_max_voxels
    elastic = elastic * elastic_on[:, None, None, None, None]
    noise_std = _uniform(generator, (b,), *config.noise_std_range) * noise_on
    brightness = _uniform(generator, (b,), -config.max_brightness, config.max_brightness) * bright_on
    contrast = torch.where(contrast_on, _uniform(generator, (b,), *config.contrast_range), torch.ones(b))
    noise_seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    return AugmentParams(angles, scale, shift, elastic, noise_std, brightness, contrast, noise_seed)


def _rotation_matrices(angles_rad: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations in (index, row, column) coordinates: about index, then row, then column."""
    cos, sin = torch.cos(angles_rad), torch.sin(angles_rad)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    about_i = matrix([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    about_r = matrix([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    about_c = matrix([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return about_c @ about_r @ about_i


def sampling_grid(params: AugmentParams, shape_irc: tuple[int, int, int], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``grid_sample`` grid (B, D, H, W, 3; x, y, z in [-1, 1], align_corners=True).

    Output voxel ``p`` reads the input at ``R (p - centre) / scale + centre + shift + elastic(p)``.
    """
    size = torch.tensor(shape_irc, dtype=dtype, device=device)
    centre = (size - 1) / 2
    axes = [torch.arange(n, dtype=dtype, device=device) for n in shape_irc]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) - centre  # (D, H, W, 3) irc
    matrix = _rotation_matrices(params.angles_rad.to(device, dtype)) / params.scale.to(device, dtype)[:, None, None]
    source = torch.einsum("bij,dhwj->bdhwi", matrix, base) + centre + params.shift_irc.to(device, dtype)[:, None, None, None]
    if params.elastic_irc.any():
        field = F.interpolate(params.elastic_irc.to(device, dtype), size=tuple(shape_irc), mode="trilinear",
                              align_corners=True)
        source = source + field.permute(0, 2, 3, 4, 1)
    normalised = 2 * source / torch.clamp(size - 1, min=1) - 1
    return normalised.flip(-1)  # grid_sample wants (x, y, z) = (column, row, index)


def _intensity(image: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    device, dtype = image.device, image.dtype
    shape = (-1,) + (1,) * (image.ndim - 1)
    contrast = params.contrast.to(device, dtype).view(shape)
    if (params.contrast != 1).any():
        mean = image.mean(dim=tuple(range(2, image.ndim)), keepdim=True)
        image = (image - mean) * contrast + mean
    image = image + params.brightness.to(device, dtype).view(shape)
    if params.noise_std.any():
        generator = torch.Generator(device=device).manual_seed(params.noise_seed)
        noise = torch.randn(image.shape, generator=generator, device=device, dtype=dtype)
        image = image + noise * params.noise_std.to(device, dtype).view(shape)
    return image


def apply_augment(image: torch.Tensor, params: AugmentParams, mask: torch.Tensor | None = None,
                  padding_mode: str = "zeros") -> AugmentedBatch:
    """Applies drawn parameters to images (B, C, D, H, W) and optional masks of the same grid."""
    if image.ndim != 5:
        raise MedcadError(f"3D augmentation needs a batch (B, C, D, H, W), got shape {tuple(image.shape)}")
    if image.shape[0] != params.batch_size:
        raise MedcadError(f"parameters for {params.batch_size} volumes, batch holds {image.shape[0]}")
    if mask is not None and (mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]):
        raise MedcadError(f"mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)}")
    out_mask = mask
    if params.has_spatial():
        work = image if image.is_floating_point() else image.float()
        grid = sampling_grid(params, tuple(image.shape[2:]), work.device, work.dtype)
        image = F.grid_sample(work, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
        if mask is not None:
            warped = F.grid_sample(mask.to(grid.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=True)
            out_mask = warped.to(mask.dtype)
    return AugmentedBatch(_intensity(image, params), out_mask)


class RandomAugment3d:
    """Callable augmenter: ``augment(image, mask)`` per batch.

    Its own generator seeded with ``seed``, or torch's global one for ``seed=None`` (so runs that
    seed torch per epoch, like :func:`medcad.training.loop.fit`, are reproducible and resumable).
    """

    def __init__(self, config: Augment3dConfig = Augment3dConfig(), seed: int | None = 0):
        self.config = config
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> AugmentedBatch:
        params = sample_params(image.shape[0], tuple(image.shape[2:]), self.config, self.generator)
        return apply_augment(image, params, mask, self.config.padding_mode)
