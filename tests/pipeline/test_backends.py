"""ONNX Runtime and PyTorch backends: same outputs, the ONNX export cached once, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcad.errors import InputError, MedcadError
from medcad.models import create
from medcad.models.store import ModelDescription, save_model
from medcad.pipeline import load_predictor, resolve_backend
from medcad.pipeline.backends import ordered_map
from tests.pipeline.helpers import CLASSIFIER_PREPROCESSING, SEGMENTER_PREPROCESSING


@pytest.fixture
def random_models(tmp_path):
    torch.manual_seed(0)
    unet = create("nodule_unet2d", depth=3, width=4).eval()
    for module in unet.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-200, 0)
            module.running_var.uniform_(1e3, 1e5)
    save_model(tmp_path / "seg", unet, ModelDescription("nodule_unet2d", {"depth": 3, "width": 4}, SEGMENTER_PREPROCESSING))
    save_model(tmp_path / "cls", create("nodule_cnn3d", width=2).eval(),
               ModelDescription("nodule_cnn3d", {"width": 2}, CLASSIFIER_PREPROCESSING))
    return tmp_path


@pytest.mark.parametrize("name, shape", [("seg", (3, 7, 32, 40)), ("cls", (2, 1, 32, 48, 48))])
def test_onnx_and_torch_agree(random_models, name, shape):
    x = (np.random.default_rng(0).random(shape, dtype=np.float32) * 2000 - 1000)
    onnx = load_predictor(random_models / name, backend="onnx")
    eager = load_predictor(random_models / name, backend="torch", device="cpu")
    assert (onnx.backend, eager.backend) == ("onnx", "torch")
    np.testing.assert_allclose(onnx(x), eager(x), rtol=0, atol=1e-5)


def test_onnx_export_is_cached_next_to_the_model(random_models):
    first = load_predictor(random_models / "cls", backend="onnx")
    assert first.onnx_path.parent == random_models / "cls"
    stamp = first.onnx_path.stat().st_mtime_ns
    second = load_predictor(random_models / "cls", backend="onnx")
    assert second.onnx_path == first.onnx_path and second.onnx_path.stat().st_mtime_ns == stamp


def test_onnx_export_goes_to_the_cache_when_the_model_folder_is_read_only(random_models, tmp_path, monkeypatch):
    from medcad.pipeline import backends

    folder = random_models / "cls"
    export = backends.export_onnx

    def refuse_model_folder(model, description, path):
        if path.parent == folder:
            raise PermissionError(path)
        return export(model, description, path)

    monkeypatch.setattr(backends, "export_onnx", refuse_model_folder)
    monkeypatch.setenv("MEDCAD_CACHE_DIR", str(tmp_path / "cache"))
    predictor = load_predictor(folder, backend="onnx")
    assert predictor.onnx_path.parent == tmp_path / "cache" / "onnx"
    assert not list(folder.glob("*.onnx"))


def test_new_weights_get_a_new_export(random_models):
    first = load_predictor(random_models / "cls", backend="onnx").onnx_path
    save_model(random_models / "cls", create("nodule_cnn3d", width=2).eval(),
               ModelDescription("nodule_cnn3d", {"width": 2}, CLASSIFIER_PREPROCESSING))
    assert load_predictor(random_models / "cls", backend="onnx").onnx_path != first


def test_corrupt_weights_are_a_clear_error(random_models):
    (random_models / "cls" / "model.safetensors").write_bytes(b"\x00" * 100)
    for backend in ("onnx", "torch"):
        with pytest.raises(InputError, match="corrupt or unreadable weights"):
            load_predictor(random_models / "cls", backend=backend, device="cpu")


def test_backend_choice():
    assert resolve_backend("auto", device="cpu") == "onnx"
    assert resolve_backend("auto", device="cpu", kind="slice_context") == "onnx"
    assert resolve_backend("auto", device="cpu", kind="crop3d") == "torch"  # see resolve_backend
    assert resolve_backend("onnx", device="cpu", kind="crop3d") == "onnx"
    assert resolve_backend("auto", device="cuda") == "torch"
    assert resolve_backend("torch", device="cpu") == "torch"
    with pytest.raises(MedcadError, match="unknown backend"):
        resolve_backend("tensorrt")


def test_ordered_map_keeps_the_order():
    assert list(ordered_map(lambda v: v * v, range(20), workers=3)) == [v * v for v in range(20)]
    assert list(ordered_map(str, [], workers=2)) == []
