"""nodule_unet2d and nodule_cnn3d: registry, shapes, configurable size, backbone / head split."""

from __future__ import annotations

import pytest
import torch

from medcad.models import create, list_models


def test_both_are_registered():
    assert {"nodule_unet2d", "nodule_cnn3d"} <= set(list_models())


@pytest.mark.parametrize("depth, width", [(3, 16), (2, 4), (4, 2)])
def test_unet_keeps_the_slice_size_and_gives_probabilities(depth, width):
    model = create("nodule_unet2d", depth=depth, width=width).eval()
    x = torch.randn(2, 7, 16, 24) * 500
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 1, 16, 24)
    assert torch.all((y >= 0) & (y <= 1))
    assert model.encoder[-1].conv2.out_channels == width * 2 ** (depth - 1)
    assert torch.allclose(y, torch.sigmoid(model.logits(x)))


def test_unet_upsample_mode_and_no_batch_norm():
    model = create("nodule_unet2d", up_mode="upsample", batch_norm=False, width=4).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())
    with torch.inference_mode():
        assert model(torch.zeros(1, 7, 16, 16)).shape == (1, 1, 16, 16)


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"width": 0}, {"up_mode": "nearest"}])
def test_unet_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create("nodule_unet2d", **kwargs)


def test_cnn_matches_the_books_layout():
    model = create("nodule_cnn3d")
    assert model.num_features == 1152  # 64 channels x 2 x 3 x 3, the book's Linear(1152, 2)
    assert [block.conv1.out_channels for block in model.blocks] == [8, 16, 32, 64]
    assert model.head.out_features == 2


def test_cnn_backbone_and_head_are_separate():
    model = create("nodule_cnn3d", width=4, depth=3, input_shape=(16, 24, 24)).eval()
    x = torch.randn(3, 1, 16, 24, 24) * 300
    with torch.inference_mode():
        features = model.forward_features(x)
        assert features.shape == (3, model.num_features)
        assert torch.equal(model(x), model.head(features))
    backbone_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_head(5)
    with torch.inference_mode():
        assert model(x).shape == (3, 5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone_before.items())


def test_cnn_refuses_a_crop_too_small_for_its_depth():
    with pytest.raises(ValueError, match="too small"):
        create("nodule_cnn3d", depth=4, input_shape=(8, 48, 48))
