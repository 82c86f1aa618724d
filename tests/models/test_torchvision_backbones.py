"""torchvision backbones as medcad classifiers: head swap, freezing, weights files, safe reloads."""

from __future__ import annotations

import pickle
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from medcad.errors import InputError, MedcadError
from medcad.models import create
from medcad.models.store import ModelDescription, load_model, save_model
from medcad.models.torchvision_backbones import TorchvisionClassifier, count_parameters
from medcad.training.loop import train_one_epoch


def _images(n: int = 8, channels: int = 3, size: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def test_vgg16_with_the_reference_head_has_the_reference_parameter_counts():
    # The reference notebook: VGG16 features + classifier frozen, head 4096 -> 256 -> 4 (built on the meta
    # device: shapes only, no 540 MB of weights to initialise).
    with torch.device("meta"):
        model = create("torchvision", arch="vgg16", num_classes=4, head_hidden=256, dropout=0.4, freeze="features")
    assert count_parameters(model).total == 135_310_404
    assert count_parameters(model).trainable == 1_049_860


def test_with_frozen_features_only_the_head_changes_after_an_epoch():
    model = create("torchvision", arch="resnet18", num_classes=4, freeze="features")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = _images(16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.weight", "head.bias"}  # batch-norm statistics of the frozen backbone included


def test_all_but_last_n_trains_the_last_blocks_and_the_head():
    model = create("torchvision", arch="resnet18", num_classes=3, freeze="all-but-last-2")
    assert model.trainable_blocks == ["layer4.0", "layer4.1"]
    trainable = {name.split(".")[0] + "." + name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.layer4", "head.weight", "head.bias"}
    with pytest.raises(MedcadError, match="all-but-last-N"):
        create("torchvision", arch="resnet18", freeze="some")


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(MedcadError, match="did you mean resnet18"):
        create("torchvision", arch="resnet19")


def test_greyscale_input_matches_rgb_replication():
    rgb = create("torchvision", arch="resnet18", num_classes=4).eval()
    grey = create("torchvision", arch="resnet18", num_classes=4, in_channels=1).eval()
    grey_state = grey.state_dict()
    for name, value in rgb.state_dict().items():
        if name == "backbone.conv1.weight":
            grey_state[name] = value.sum(dim=1, keepdim=True)
        else:
            grey_state[name] = value
    grey.load_state_dict(grey_state)
    images, _ = _images(2, channels=1)
    with torch.no_grad():
        assert torch.allclose(rgb(images.expand(-1, 3, -1, -1)), grey(images), atol=1e-4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_torchvision_state_dict_file_loads_via_weights(tmp_path, suffix):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(reference.state_dict(), str(path))
    model = create("torchvision", arch="resnet18", num_classes=4, weights=str(path))
    assert torch.equal(model.backbone.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_var, reference.bn1.running_var)
    reference.fc = nn.Identity()
    reference.eval()
    model.eval()
    images, _ = _images(2)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(images), reference(images), atol=1e-5)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_files_are_never_unpickled_and_must_fit(tmp_path):
    pickled = tmp_path / "evil.pth"
    pickled.write_bytes(pickle.dumps({"conv1.weight": _Payload()}))
    with pytest.raises(InputError, match="weights_only"):
        create("torchvision", arch="resnet18", weights=str(pickled))
    wrong = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), wrong)
    with pytest.raises(InputError, match="do not fit"):
        create("torchvision", arch="resnet18", weights=str(wrong))


def test_offline_without_a_file_says_how_to_go_on(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(MedcadError, match="--weights none"):
        create("torchvision", arch="resnet18", weights="DEFAULT")
    with pytest.raises(MedcadError, match="IMAGENET1K_V1"):
        create("torchvision", arch="resnet18", weights="IMAGENET_V9")


def test_saved_classifier_reloads_and_predicts_identically(tmp_path):
    kwargs = {"arch": "resnet18", "num_classes": 4, "in_channels": 1, "head_hidden": 16, "dropout": 0.1}
    model = TorchvisionClassifier(**kwargs).eval()
    save_model(tmp_path, model, ModelDescription("torchvision", kwargs))
    loaded, description = load_model(tmp_path)
    images, _ = _images(3, channels=1)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert description.kwargs == kwargs


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf"])
def test_other_families_get_a_new_head(arch):
    model = create("torchvision", arch=arch, num_classes=5, freeze="all-but-last-1").eval()
    images, _ = _images(2, size=64)
    with torch.no_grad():
        assert model(images).shape == (2, 5)
    assert len(model.trainable_blocks) == 1
