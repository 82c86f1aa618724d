"""3D augmentation: seeded, identities, masks aligned with images under every spatial step, intensity steps."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from medcad.errors import MedcadError
from medcad.transforms.augment3d import (
    Augment3dConfig,
    AugmentParams,
    RandomAugment3d,
    apply_augment,
    sample_params,
    sampling_grid,
)

SHAPE = (24, 28, 32)
SPATIAL = ("rotate", "scale", "shift", "elastic")


def blobs(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with two off-centre ellipsoids of labels 1 and 2 (smooth edges), and their label masks."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij"))
    labels = torch.zeros((batch, 1, *SHAPE), dtype=torch.uint8)
    for b in range(batch):
        for label, centre, radii in ((1, (8 + b, 10, 11), (5, 6, 7)), (2, (15, 18 - b, 21), (4, 5, 6))):
            r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
            labels[b, 0][r2 <= 1] = label
    return labels.float(), labels


def identity_params(batch: int) -> AugmentParams:
    return sample_params(batch, SHAPE, Augment3dConfig().off(), torch.Generator().manual_seed(0))


def test_same_seed_same_output_different_seed_different_output():
    image, mask = blobs()
    noisy = image + 0.1 * torch.randn(image.shape, generator=torch.Generator().manual_seed(5))
    config = Augment3dConfig(p_rotate=1, p_scale=1, p_shift=1, p_elastic=1, p_noise=1, p_brightness=1, p_contrast=1)
    first = RandomAugment3d(config, seed=7)(noisy, mask)
    second = RandomAugment3d(config, seed=7)(noisy, mask)
    other = RandomAugment3d(config, seed=8)(noisy, mask)
    assert torch.equal(first.image, second.image) and torch.equal(first.mask, second.mask)
    assert not torch.allclose(first.image, other.image)
    params = sample_params(3, SHAPE, config, torch.Generator().manual_seed(1))
    assert torch.equal(apply_augment(noisy, params, mask).image, apply_augment(noisy, params, mask).image)


def test_the_seed_means_the_same_whatever_is_switched_on():
    on = sample_params(4, SHAPE, Augment3dConfig.only("rotate", "noise"), torch.Generator().manual_seed(3))
    more = sample_params(4, SHAPE, Augment3dConfig.only("rotate", "noise", "shift"), torch.Generator().manual_seed(3))
    assert torch.equal(on.angles_rad, more.angles_rad) and on.noise_seed == more.noise_seed


def test_rotation_zero_and_scale_one_are_identities():
    image, mask = blobs()
    image = image + torch.rand(image.shape, generator=torch.Generator().manual_seed(2))
    config = Augment3dConfig(p_rotate=1, max_rotate_deg=(0, 0, 0), p_scale=1, scale_range=(1, 1)).off()
    config = replace(config, p_rotate=1.0, p_scale=1.0)
    params = sample_params(3, SHAPE, config, torch.Generator().manual_seed(0))
    assert not params.angles_rad.any() and torch.all(params.scale == 1)
    out = apply_augment(image, params, mask)
    assert torch.equal(out.image, image) and torch.equal(out.mask, mask)
    # the sampling grid itself is the identity: resampling through it changes nothing
    grid = sampling_grid(identity_params(3), SHAPE)
    resampled = F.grid_sample(image, grid, mode="bilinear", align_corners=True)
    torch.testing.assert_close(resampled, image, atol=1e-4, rtol=0)
    nearest = F.grid_sample(mask.float(), grid, mode="nearest", align_corners=True)
    assert torch.equal(nearest.to(torch.uint8), mask)


def test_rotation_by_90_degrees_about_the_index_axis_turns_rows_into_columns():
    cube = (SHAPE[0], 20, 20)
    image = torch.rand((1, 1, *cube), generator=torch.Generator().manual_seed(4))
    params = sample_params(1, cube, Augment3dConfig().off(), torch.Generator().manual_seed(0))
    params = replace(params, angles_rad=torch.tensor([[math.pi / 2, 0.0, 0.0]]))
    out = apply_augment(image, params).image
    expected = torch.rot90(image, k=1, dims=(3, 4))
    assert torch.allclose(out, expected, atol=1e-4) or torch.allclose(out, torch.rot90(image, k=-1, dims=(3, 4)), atol=1e-4)


def test_shift_moves_content_by_whole_voxels():
    image, _ = blobs(1)
    params = replace(identity_params(1), shift_irc=torch.tensor([[2.0, -3.0, 1.0]]))
    out = apply_augment(image, params).image
    # output voxel p reads input p + shift
    torch.testing.assert_close(out[0, 0, 0:20, 3:28, 0:31], image[0, 0, 2:22, 0:25, 1:32], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", SPATIAL)
def test_masks_stay_aligned_with_images(name):
    _, mask = blobs()
    # one image channel per label: where the (linearly interpolated) image says "label k", the
    # (nearest-neighbour) mask must say so too
    image = torch.cat([(mask == k).float() for k in (1, 2)], dim=1)
    overrides = {"max_rotate_deg": (25.0, 25.0, 25.0), "scale_range": (0.8, 1.25), "elastic_max_voxels": 1.5}
    config = Augment3dConfig.only(name, **overrides)
    params = sample_params(3, SHAPE, config, torch.Generator().manual_seed(11))
    assert params.has_spatial()
    out = apply_augment(image, params, mask)
    assert out.mask.dtype == torch.uint8 and set(out.mask.unique().tolist()) <= {0, 1, 2}
    assert not torch.equal(out.mask, mask)  # something moved
    for channel, label in enumerate((1, 2)):
        from_image = out.image[:, channel:channel + 1] > 0.5
        from_mask = out.mask == label
        dice = 2 * (from_image & from_mask).sum() / (from_image.sum() + from_mask.sum())
        assert dice > 0.95, (name, label, float(dice))
        for b in range(3):
            a = torch.nonzero(from_image[b, 0]).float().mean(0)
            m = torch.nonzero(from_mask[b, 0]).float().mean(0)
            assert torch.all((a - m).abs() < 0.3), (name, label, a, m)


def test_elastic_is_smooth_and_bounded():
    cube = (32, 32, 32)
    params = sample_params(2, cube, Augment3dConfig.only("elastic", elastic_max_voxels=1.0),
                           torch.Generator().manual_seed(0))
    grid = sampling_grid(params, cube)
    base = sampling_grid(sample_params(2, cube, Augment3dConfig().off()), cube)
    size = torch.tensor(cube[::-1], dtype=torch.float32)
    displacement_vox = (grid - base) * (size - 1) / 2
    assert displacement_vox.abs().max() > 0.5
    assert displacement_vox.abs().max() < 5 * 1.0  # a few standard deviations
    # neighbouring voxels move almost together (a coarse field, upsampled)
    step = (displacement_vox[:, 1:] - displacement_vox[:, :-1]).abs().max()
    assert step < 1.0


def test_intensity_steps_follow_their_formulas():
    image = torch.rand((2, 1, 8, 8, 8), generator=torch.Generator().manual_seed(0))
    base = identity_params(2)
    params = replace(base, contrast=torch.tensor([1.5, 1.0]), brightness=torch.tensor([0.0, 0.2]))
    out = apply_augment(image, params).image
    mean = image[0].mean()
    torch.testing.assert_close(out[0], (image[0] - mean) * 1.5 + mean)
    torch.testing.assert_close(out[1], image[1] + 0.2)
    noisy = apply_augment(image, replace(base, noise_std=torch.tensor([0.1, 0.0]))).image
    assert abs(float((noisy[0] - image[0]).std()) - 0.1) < 0.02
    assert torch.equal(noisy[1], image[1])


def test_bad_input_is_refused():
    with pytest.raises(MedcadError):
        Augment3dConfig(p_rotate=1.5)
    with pytest.raises(MedcadError):
        Augment3dConfig.only("twist")
    params = identity_params(2)
    with pytest.raises(MedcadError, match="B, C, D, H, W"):
        apply_augment(torch.zeros(2, 8, 8, 8), params)
    with pytest.raises(MedcadError, match="parameters for 2"):
        apply_augment(torch.zeros(3, 1, 8, 8, 8), params)
