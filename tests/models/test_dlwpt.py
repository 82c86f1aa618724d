"""Import of the book's checkpoints: key mapping, safe loading, outputs equal to the book's layout."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medcad.errors import InputError
from medcad.models.dlwpt import import_book_checkpoint, map_cnn_key, map_unet_key
from medcad.models.store import load_model


# Modules named as in the book's code (util/unet.py, p2ch13/model.py, p2ch14/model.py), written
# from its description: the oracle the converted models must agree with. util/unet.py with ReLU:
# the version the published checkpoint reproduces the book's reference run with (see
# medcad.models.unet2d).
class BookConvBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out),
                                   nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return self.block(x)


class BookUpBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv_block = BookConvBlock(c_in, c_out)

    def forward(self, x, bridge):
        return self.conv_block(torch.cat([self.up(x), bridge], 1))


class BookUNet(nn.Module):
    def __init__(self, depth=3, wf=4):
        super().__init__()
        sizes = [2 ** (wf + i) for i in range(depth)]
        self.down_path = nn.ModuleList(BookConvBlock(c_in, c) for c_in, c in zip([7] + sizes[:-1], sizes))
        self.up_path = nn.ModuleList(BookUpBlock(sizes[i + 1], sizes[i]) for i in reversed(range(depth - 1)))
        self.last = nn.Conv2d(sizes[0], 1, 1)

    def forward(self, x):
        bridges = []
        for i, down in enumerate(self.down_path):
            x = down(x)
            if i != len(self.down_path) - 1:
                bridges.append(x)
                x = F.avg_pool2d(x, 2)
        for i, up in enumerate(self.up_path):
            x = up(x, bridges[-i - 1])
        return self.last(x)


class BookUNetWrapper(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.input_batchnorm = nn.BatchNorm2d(7)
        self.unet = BookUNet(**kwargs)

    def forward(self, x):
        return torch.sigmoid(self.unet(self.input_batchnorm(x)))


class BookLunaBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1)

    def forward(self, x):
        return F.max_pool3d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)


class BookLunaModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.tail_batchnorm = nn.BatchNorm3d(1)
        self.block1, self.block2 = BookLunaBlock(1, 8), BookLunaBlock(8, 16)
        self.block3, self.block4 = BookLunaBlock(16, 32), BookLunaBlock(32, 64)
        self.head_linear = nn.Linear(1152, 2)

    def forward(self, x):
        x = self.tail_batchnorm(x)
        x = self.block4(self.block3(self.block2(self.block1(x))))
        logits = self.head_linear(x.flatten(1))
        return logits, F.softmax(logits, dim=1)


def randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so a swapped norm layer would show."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 50)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1e4 + 1)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def save_book_checkpoint(path, model, model_name, **extra):
    torch.save({"model_state": model.state_dict(), "model_name": model_name, "epoch": 5,
                "optimizer_state": {"state": {}}, **extra}, path)
    return path


def test_unet_keys_map_as_documented():
    assert map_unet_key("input_batchnorm.running_var") == "input_norm.running_var"
    assert map_unet_key("unet.down_path.2.block.0.weight") == "encoder.2.conv1.weight"
    assert map_unet_key("unet.down_path.0.block.2.num_batches_tracked") == "encoder.0.norm1.num_batches_tracked"
    assert map_unet_key("unet.down_path.1.block.3.bias") == "encoder.1.conv2.bias"
    assert map_unet_key("unet.down_path.1.block.5.weight") == "encoder.1.norm2.weight"
    assert map_unet_key("unet.down_path.1.block.2.weight", batch_norm=False) == "encoder.1.conv2.weight"
    assert map_unet_key("unet.up_path.0.up.weight") == "decoder.0.up.weight"
    assert map_unet_key("unet.up_path.1.conv_block.block.5.running_mean") == "decoder.1.block.norm2.running_mean"
    assert map_unet_key("unet.last.bias") == "out_conv.bias"
    with pytest.raises(KeyError):
        map_unet_key("unet.middle.weight")


def test_cnn_keys_map_as_documented():
    assert map_cnn_key("tail_batchnorm.weight") == "input_norm.weight"
    assert map_cnn_key("block1.conv1.weight") == "blocks.0.conv1.weight"
    assert map_cnn_key("block4.conv2.bias") == "blocks.3.conv2.bias"
    assert map_cnn_key("head_linear.weight") == "head.weight"
    with pytest.raises(KeyError):
        map_cnn_key("head_activation.weight")


def test_book_unet_converts_to_the_same_function(tmp_path):
    book = randomise_norms(BookUNetWrapper(depth=2, wf=2))
    source = save_book_checkpoint(tmp_path / "seg_test.state", book, "UNetWrapper")
    folder = import_book_checkpoint(source, tmp_path / "segmentation")
    model, description = load_model(folder)
    assert description.name == "nodule_unet2d"
    assert description.kwargs == {"in_channels": 7, "out_channels": 1, "depth": 2, "width": 4,
                                  "batch_norm": True, "up_mode": "upconv", "activation": "relu"}
    assert description.preprocessing["kind"] == "slice_context"
    assert description.preprocessing["context_slices"] == 3
    x = torch.randn(2, 7, 16, 24) * 400
    with torch.inference_mode():
        assert torch.allclose(model(x), book(x), atol=1e-6)


def test_book_classifier_converts_to_the_same_function(tmp_path):
    book = randomise_norms(BookLunaModel())
    source = save_book_checkpoint(tmp_path / "cls_test.state", book, "LunaModel")
    folder = import_book_checkpoint(source, tmp_path / "nodule")
    model, description = load_model(folder)
    assert description.name == "nodule_cnn3d"
    assert description.preprocessing["crop_irc"] == [32, 48, 48]
    assert description.provenance["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert description.provenance["epoch"] == 5
    x = torch.randn(3, 1, 32, 48, 48) * 400
    with torch.inference_mode():
        assert torch.allclose(torch.softmax(model(x), 1), book(x)[1], atol=1e-6)
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "model.json"}


def test_a_pickle_with_code_is_refused(tmp_path):
    source = tmp_path / "evil.state"
    torch.save({"model_state": OrderedDict(), "model_name": "LunaModel", "hook": BookLunaBlock(1, 1)}, source)
    with pytest.raises(InputError, match="holds more than weights"):
        import_book_checkpoint(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (b"not a pickle at all", "not a readable PyTorch checkpoint"),
    (None, "not a checkpoint of the book"),
    ("ModifiedLunaModel", "not supported"),
])
def test_bad_checkpoints_give_one_clear_error(tmp_path, content, message):
    source = tmp_path / "bad.state"
    if isinstance(content, bytes):
        source.write_bytes(content)
    elif content is None:
        torch.save({"weights": {}}, source)
    else:
        torch.save({"model_state": {}, "model_name": content}, source)
    with pytest.raises(InputError, match=message):
        import_book_checkpoint(source, tmp_path / "out")


def test_weights_of_another_layout_are_refused(tmp_path):
    state = BookLunaModel().state_dict()
    state["head_linear.weight"] = torch.zeros(2, 1000)
    torch.save({"model_state": state, "model_name": "LunaModel"}, tmp_path / "odd.state")
    with pytest.raises(InputError, match="do not have the book's layout"):
        import_book_checkpoint(tmp_path / "odd.state", tmp_path / "out")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        import_book_checkpoint(tmp_path / "nope.state", tmp_path / "out")


@pytest.mark.realdata
def test_the_real_checkpoints_import(dlwpt_dir, tmp_path):
    expected = {"seg": ("nodule_unet2d", 81, {"depth": 3, "width": 16, "in_channels": 7}),
                "cls": ("nodule_cnn3d", 23, {"depth": 4, "width": 8, "num_classes": 2})}
    oracles = {"seg": (lambda: BookUNetWrapper(depth=3, wf=4), (1, 7, 64, 64), lambda y: y),
               "cls": (BookLunaModel, (1, 1, 32, 48, 48), lambda y: y[0])}
    for source in sorted(dlwpt_dir.glob("*.state")):
        name, key_count, kwargs = expected[source.name[:3]]
        make_book, shape, book_output = oracles[source.name[:3]]
        folder = import_book_checkpoint(source, tmp_path / source.name[:3])
        model, description = load_model(folder)
        assert description.name == name
        assert len(model.state_dict()) == key_count
        assert kwargs.items() <= description.kwargs.items()
        document = json.loads((folder / "model.json").read_text())
        assert document["provenance"]["file"] == source.name
        assert len(document["provenance"]["sha256"]) == 64
        book = make_book()
        book.load_state_dict(torch.load(source, map_location="cpu", weights_only=True)["model_state"])
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 400
        with torch.inference_mode():
            assert torch.allclose(model(x), book_output(book.eval()(x)), atol=1e-5)


def test_a_book_unet_imported_without_its_activation_is_refused(tmp_path):
    book = randomise_norms(BookUNetWrapper(depth=2, wf=2))
    folder = import_book_checkpoint(save_book_checkpoint(tmp_path / "seg.state", book, "UNetWrapper"), tmp_path / "s")
    document = json.loads((folder / "model.json").read_text())
    del document["architecture"]["kwargs"]["activation"]  # as written by medcad before it recorded it
    (folder / "model.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="import it again"):
        load_model(folder)
