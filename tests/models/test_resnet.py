"""ResNet 2D / 3D: every depth builds, shapes, parameter counts (MedicalNet's table), zero-init, MedicalNet weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcad.errors import InputError, MedcadError
from medcad.models import create, list_models
from medcad.models.resnet import ResNet, load_medicalnet_state_dict, map_medicalnet_keys, read_medicalnet_checkpoint


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **kwargs) -> nn.Module:
    """Builds a model without memory or initialisation (enough for counting parameters)."""
    with torch.device("meta"):
        return create(name, **kwargs)


def conv_params(c_in: int, c_out: int, k: int, dims: int) -> int:
    return c_in * c_out * k ** dims


def test_every_variant_is_registered():
    names = set(list_models())
    for depth in (10, 18, 34, 50):
        for dims in (2, 3):
            assert f"resnet{depth}_{dims}d" in names


@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_3d_forward_shapes(depth):
    torch.manual_seed(0)
    model = create(f"resnet{depth}_3d", in_channels=1, num_classes=3, width=8).eval()
    x = torch.randn(2, 1, 24, 32, 40)
    features = model.forward_features(x)
    expansion = 4 if depth == 50 else 1
    assert features.shape == (2, 8 * 8 * expansion)
    assert model.num_features == 8 * 8 * expansion
    logits = model(x)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, model.head(features))


@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_2d_forward_shapes(depth):
    model = create(f"resnet{depth}_2d", in_channels=3, num_classes=5, width=8).eval()
    assert model(torch.randn(3, 3, 64, 48)).shape == (3, 5)


def test_2d_resnet18_and_50_match_torchvision_parameter_counts():
    """Same architecture as torchvision's (shortcut B) apart from the input channels and the head."""
    from torchvision.models import resnet18, resnet50

    with torch.device("meta"):
        pairs = ((create("resnet18_2d", in_channels=3, num_classes=1000), resnet18()),
                 (create("resnet50_2d", in_channels=3, num_classes=1000), resnet50()))
    for ours, theirs in pairs:
        assert count(ours) == count(theirs)


def test_resnet18_3d_parameter_count_matches_medicalnet_table():
    """MedicalNet's table: 3D-ResNet18 has 32.99 M parameters (their resnet_18 uses shortcut A)."""
    head = 512 * 2 + 2
    model_a = on_meta("resnet18_3d", in_channels=1, num_classes=2, shortcut="A")
    assert count(model_a) == 32_987_202
    assert round((count(model_a) - head) / 1e6, 2) == 32.99
    # shortcut B adds three 1x1x1 projections with their norms: 64->128, 128->256, 256->512
    model_b = on_meta("resnet18_3d", in_channels=1, num_classes=2)
    projections = sum(conv_params(c, 2 * c, 1, 3) + 2 * 2 * c for c in (64, 128, 256))
    assert count(model_b) - count(model_a) == projections == 173_824
    assert 33.0e6 < count(model_b) < 33.2e6


@pytest.mark.parametrize("depth,shortcut,table_millions", [(10, "B", 14.36), (34, "A", 63.31), (50, "B", 46.21)])
def test_other_depths_within_a_tenth_of_a_percent_of_medicalnet_table(depth, shortcut, table_millions):
    model = on_meta(f"resnet{depth}_3d", in_channels=1, num_classes=2, shortcut=shortcut)
    backbone = count(model) - count(model.head)
    assert abs(backbone / 1e6 - table_millions) / table_millions < 1.2e-3


def test_stem_parameter_count_by_hand():
    model = on_meta("resnet10_3d", in_channels=1, num_classes=2)
    assert model.conv1.weight.numel() == conv_params(1, 64, 7, 3)
    assert count(model.bn1) == 2 * 64


def test_zero_init_residual_makes_every_block_start_as_identity_branch():
    model = create("resnet18_3d", width=8, zero_init_residual=True)
    lasts = [block.last_norm.weight for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
             for block in layer]
    assert len(lasts) == 8
    assert all(torch.count_nonzero(w) == 0 for w in lasts)
    plain = create("resnet18_3d", width=8)
    assert torch.all(plain.layer1[0].bn2.weight == 1)
    bottleneck = create("resnet50_3d", width=8, zero_init_residual=True)
    assert torch.count_nonzero(bottleneck.layer1[0].bn3.weight) == 0
    assert torch.all(bottleneck.layer1[0].bn2.weight == 1)


def test_reset_head_changes_only_the_head():
    model = create("resnet10_3d", width=8, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_head(7)
    assert model.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 7)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_shortcut_a_has_no_downsample_parameters():
    model = create("resnet34_3d", width=8, shortcut="A")
    assert not any("downsample" in name for name, _ in model.named_parameters())
    assert model.eval()(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2)


def test_bad_options_are_clear_errors():
    with pytest.raises(MedcadError, match="depth"):
        ResNet(depth=20)
    with pytest.raises(MedcadError, match="shortcut"):
        ResNet(shortcut="C")
    with pytest.raises(MedcadError, match="global_pool"):
        ResNet(global_pool="median")


def test_global_max_pool_takes_the_strongest_response_anywhere():
    """With ``global_pool="max"`` the features are the maxima of the last stage over space (the
    same weights give the mean with "avg"); a local change moves the max more than the mean."""
    torch.manual_seed(0)
    avg = create("resnet10_3d", width=4).eval()
    peak = create("resnet10_3d", width=4, global_pool="max").eval()
    peak.load_state_dict(avg.state_dict())  # no parameters of its own
    x = torch.randn(2, 1, 32, 32, 32)
    stages = lambda m, v: m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(torch.relu(m.bn1(m.conv1(v))))))))  # noqa: E731
    with torch.no_grad():
        last = stages(avg, x)
        assert torch.allclose(avg.forward_features(x), last.mean(dim=(2, 3, 4)), atol=1e-6)
        assert torch.allclose(peak.forward_features(x), last.amax(dim=(2, 3, 4)))
        assert peak(x).shape == (2, 2)


def _medicalnet_style_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict shaped like MedicalNet's: DataParallel prefix, random values, plus a decoder.

    (Their networks have width 64; the mapping does not depend on it, so tests use narrow ones.)
    """
    generator = torch.Generator().manual_seed(3)
    state = {f"module.{k}": torch.randn(v.shape, generator=generator) if v.is_floating_point() else v.clone()
             for k, v in model.state_dict().items() if not k.startswith("head.")}
    state["module.conv_seg.0.weight"] = torch.randn(model.num_features, 32, 2, 2, 2)
    state["module.conv_seg.4.weight"] = torch.randn(2, 32, 1, 1, 1)
    return state


@pytest.mark.parametrize("depth,shortcut", [(10, "B"), (18, "A")])
def test_medicalnet_weights_load_into_the_backbone(depth, shortcut):
    torch.manual_seed(0)
    model = create(f"resnet{depth}_3d", num_classes=2, shortcut=shortcut, width=16)
    reference = create(f"resnet{depth}_3d", num_classes=2, shortcut=shortcut, width=16)
    state = _medicalnet_style_state(reference)
    assert "module.layer1.0.conv1.weight" in state and "module.bn1.running_mean" in state
    if shortcut == "B":
        assert "module.layer2.0.downsample.0.weight" in state and "module.layer2.0.downsample.1.weight" in state
    head_before = model.head.weight.clone()
    report = load_medicalnet_state_dict(model, state)
    assert set(report.dropped) == {"module.conv_seg.0.weight", "module.conv_seg.4.weight"}
    assert set(report.missing) == {"head.weight", "head.bias"}
    own = model.state_dict()
    for key, value in state.items():
        if "conv_seg" not in key:
            assert torch.equal(own[key[len("module."):]], value), key
    assert torch.equal(model.head.weight, head_before)


def test_medicalnet_weights_of_another_shortcut_are_refused():
    shortcut_b = _medicalnet_style_state(create("resnet18_3d", num_classes=2, shortcut="B", width=8))
    with pytest.raises(MedcadError, match="unknown keys"):
        load_medicalnet_state_dict(create("resnet18_3d", shortcut="A", width=8), shortcut_b)
    wrong_depth = _medicalnet_style_state(create("resnet50_3d", num_classes=2, width=8))
    with pytest.raises(MedcadError, match="do not fit"):
        load_medicalnet_state_dict(create("resnet18_3d", width=8), wrong_depth)
    wrong_width = _medicalnet_style_state(create("resnet18_3d", num_classes=2, width=16))
    with pytest.raises(MedcadError, match="shapes differ"):
        load_medicalnet_state_dict(create("resnet18_3d", width=8), wrong_width)


def test_key_mapping_without_prefix_and_fc_dropped():
    mapped, dropped = map_medicalnet_keys({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1),
                                           "module.layer4.1.bn2.bias": torch.zeros(1)})
    assert set(mapped) == {"conv1.weight", "layer4.1.bn2.bias"}
    assert dropped == ["fc.weight"]


def test_medicalnet_checkpoint_file_reads_tensors_only(tmp_path):
    reference = create("resnet10_3d", num_classes=2, width=8)
    state = _medicalnet_style_state(reference)
    del state["module.conv_seg.0.weight"], state["module.conv_seg.4.weight"]
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": state}, path)
    loaded = read_medicalnet_checkpoint(path)
    model = create("resnet10_3d", num_classes=2, width=8)
    assert set(load_medicalnet_state_dict(model, loaded).missing) == {"head.weight", "head.bias"}
    unsafe = tmp_path / "object.pth"
    torch.save({"state_dict": state, "optimizer": nn.Linear(1, 1)}, unsafe)
    with pytest.raises(InputError, match="tensors-only"):
        read_medicalnet_checkpoint(unsafe)
