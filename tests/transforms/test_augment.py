"""The book's augmentation: seeded draws replay exactly, flips are exact, masks follow images, 2D stays in plane."""

from __future__ import annotations

import torch

from medcad.transforms.augment import BookAugment, BookAugmentConfig, apply_params, draw_params


def test_same_generator_state_replays_the_same_batch():
    image = torch.randn(4, 1, 8, 12, 12) * 300
    first, second = BookAugment(seed=3), BookAugment(seed=3)
    a, _ = first(image)
    b, _ = second(image)
    torch.testing.assert_close(a, b)
    c, _ = BookAugment(seed=4)(image)
    assert not torch.allclose(a, c)


def test_flip_only_mirrors_exactly():
    image = torch.arange(2 * 4 * 6 * 6, dtype=torch.float32).reshape(2, 1, 4, 6, 6)
    config = BookAugmentConfig(flip=True, offset=0, scale=0, rotate_deg=0, noise_hu=0)
    params = draw_params(2, (4, 6, 6), config, torch.Generator().manual_seed(0))
    out, _ = apply_params(image, params)
    for b in range(2):
        expected = image[b]
        for axis in range(3):
            if params.flips[b, axis]:
                expected = expected.flip(1 + axis)
        torch.testing.assert_close(out[b], expected)


def test_mask_moves_with_the_image_and_gets_no_noise():
    image = torch.zeros(3, 7, 32, 32)
    image[:, :, 10:16, 12:20] = 500.0
    mask = (image[:, 3:4] > 0).float()
    config = BookAugmentConfig(offset=0.1, scale=0.2, rotate_deg=180, noise_hu=0, padding_mode="zeros")
    params = draw_params(3, (1, 32, 32), config, torch.Generator().manual_seed(1))
    out, out_mask = apply_params(image, params, mask, "zeros")
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    bright = out[:, 3:4] > 250
    agreement = (bright == (out_mask > 0.5)).float().mean()
    assert agreement > 0.97
    assert params.spatial.shift_irc[:, 0].abs().max() == 0  # nothing moves across the context slices
    noisy, clean_mask = apply_params(image, draw_params(3, (1, 32, 32), BookAugmentConfig(noise_hu=25),
                                                        torch.Generator().manual_seed(2)), mask)
    assert set(clean_mask.unique().tolist()) <= {0.0, 1.0}
    assert noisy.shape == image.shape


def test_runs_on_the_batch_device_and_dtype():
    image = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64)
    out, _ = BookAugment(seed=0)(image)
    assert out.dtype == torch.float64 and out.device == image.device and torch.isfinite(out).all()
