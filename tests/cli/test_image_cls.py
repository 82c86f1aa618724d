"""``medcad train image-cls``, ``predict image``, ``evaluate image-cls`` (= ``evaluate-images``) and ``data summary`` end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from medcad.data.images import ImagePreprocessing
from medcad.models.store import ModelDescription, save_model
from medcad.models.torchvision_backbones import TorchvisionClassifier
from medcad.tasks.image_cls import train_image_classifier
from tests.conftest import shared_path

OCT_CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]


@pytest.fixture(scope="module")
def medcad():
    """Runs ``medcad ARGS`` in this process (no interpreter start per call); returns the click result."""
    from typer.testing import CliRunner

    from medcad.cli import _register, app, expand_aliases

    _register()
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, expand_aliases([str(a) for a in args]))  # as the console entry point
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke


def write_toy_images(root, patients: int = 8, per_patient: int = 2):
    """Two easily told apart classes: bright top half (TOP) or bright bottom half (BOTTOM)."""
    rng = np.random.default_rng(1)
    for name in ("TOP", "BOTTOM"):
        (root / name).mkdir(parents=True)
        for p in range(patients):
            for i in range(per_patient):
                pixels = rng.normal(60, 20, (24, 24))
                rows = slice(0, 12) if name == "TOP" else slice(12, 24)
                pixels[rows] += 120
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"{name}-{p}{name[0]}-{i}.png")
    return root


def test_train_predict_evaluate_and_resume_on_toy_images(tmp_path, medcad):
    data = write_toy_images(tmp_path / "toy")
    run = tmp_path / "run"
    common = ["--arch", "shufflenet_v2_x0_5", "--weights", "none", "--freeze", "none", "--image-size", "32", "--channels", "1",
              "--batch-size", "8", "--lr", "0.003", "--seed", "5", "--split-fractions", "0.5,0.25,0.25"]
    result = medcad("train", "image-cls", data, "--out", run, "--epochs", "2", *common)
    assert result.exit_code == 0, result.output
    assert "343,410 parameters, 343,410 trainable" in result.stdout  # shufflenet_v2_x0_5, 1 channel in, 2 out
    for name in ("config.yaml", "split.json", "history.csv", "history.png", "test_metrics.json", "test_confusion.png",
                 "model/model.safetensors", "model/model.json", "model/split.json", "checkpoints/latest"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    description = json.loads((run / "model" / "model.json").read_text())
    assert description["class_names"] == ["BOTTOM", "TOP"] and description["preprocessing"]["image_size"] == [32, 32]

    resumed = medcad("train", "image-cls", "--out", run, "--epochs", "3", "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert (run / "history.csv").read_text().count("\n") == 4  # header + epochs 1..3

    image = next((data / "TOP").iterdir())
    predicted = medcad("predict", "image", image, "--model", run, "--top-k", "2", "--json")
    assert predicted.exit_code == 0, predicted.output
    top = json.loads(predicted.stdout)[0]["top"]
    assert [t["class"] for t in top] in (["TOP", "BOTTOM"], ["BOTTOM", "TOP"])
    assert abs(sum(t["probability"] for t in top) - 1) < 1e-5

    out = tmp_path / "evaluation"
    evaluated = medcad("evaluate", "image-cls", data, "--model", run / "model", "--out", out, "--samples", "4")
    assert evaluated.exit_code == 0, evaluated.output
    assert "accuracy" in evaluated.stdout and "TOP" in evaluated.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    test_keys = json.loads((run / "split.json").read_text())["splits"]["test"]
    assert metrics["images"] == len(test_keys)  # the held-out patients of the training split
    for png in ("confusion_matrix.png", "predictions.png"):
        assert (out / png).stat().st_size > 10_000


def test_weights_file_with_frozen_features_keeps_the_backbone_and_trains_the_head(tmp_path, medcad):
    from medcad.models.store import load_state_dict

    data = write_toy_images(tmp_path / "toy")
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(num_classes=1000)
    weights = tmp_path / "resnet18-imagenet-like.pth"
    torch.save(reference.state_dict(), weights)
    run = tmp_path / "run"
    result = medcad("train", "image-cls", data, "--out", run, "--arch", "resnet18", "--weights", weights,
                    "--freeze", "features", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
                    "--lr", "0.05", "--seed", "1", "--split-fractions", "0.5,0.25,0.25")
    assert result.exit_code == 0, result.output
    assert "11,177,538 parameters, 1,026 trainable" in result.stdout  # head: 512 features x 2 classes + 2 biases
    epochs = [load_state_dict(run / "checkpoints" / f"epoch-000{n}" / "model.safetensors") for n in (1, 2)]
    for state in epochs:
        for name, value in reference.state_dict().items():  # batch-norm statistics included
            if not name.startswith("fc."):
                assert torch.equal(state[f"backbone.{name}"], value), name
    assert {name for name in epochs[0] if not torch.equal(epochs[0][name], epochs[1][name])} == {"head.weight",
                                                                                                  "head.bias"}


def test_a_trained_run_reloads_and_predicts_identically(tmp_path):
    from medcad.tasks.image_cls import (ImageClsConfig, evaluate_records, load_image_classifier, predict_files,
                                        predict_probabilities)
    from medcad.training.config import apply_overrides

    data = write_toy_images(tmp_path / "toy")
    config = apply_overrides(ImageClsConfig(), {
        "data.source": str(data), "data.image_size": (32, 32), "data.channels": 1, "data.batch_size": 8,
        "data.fractions": (0.5, 0.25, 0.25), "model.arch": "shufflenet_v2_x0_5", "model.weights": "none",
        "model.freeze": "none", "fit.epochs": 2, "fit.ema_decay": 0.9, "fit.tensorboard": False, "tta": True,
        "fit.device": "cpu"})  # trained where it is reloaded: bit-identity across devices is not the point
    trained = train_image_classifier(config, tmp_path / "run")
    loaded = load_image_classifier(tmp_path / "run")
    assert loaded.tta and loaded.class_names == ("BOTTOM", "TOP")
    again = evaluate_records(loaded, trained.splits["test"], batch_size=8, tta=True)
    assert np.array_equal(again.probabilities, trained.test.probabilities)
    assert json.loads((tmp_path / "run" / "test_metrics.json").read_text())["accuracy"] == again.report.accuracy
    image = trained.splits["test"][0].source
    from medcad.data.images import eval_transform, read_image

    tensor = eval_transform(loaded.preprocessing)(read_image(image, 1)).unsqueeze(0)
    expected = predict_probabilities(trained.fit.model.eval(), tensor, tta=True)[0]
    top = predict_files(loaded, [image], top_k=2, tta=True)[0].top
    assert dict(top) == {name: float(expected[i]) for i, name in enumerate(loaded.class_names)}


def test_evaluate_image_cls_is_the_image_evaluation_command():
    from medcad.cli import expand_aliases

    assert expand_aliases(["evaluate", "image-cls", "d", "--model", "m"]) == ["evaluate-images", "d", "--model", "m"]
    assert expand_aliases(["--debug", "evaluate", "image-cls", "d"]) == ["--debug", "evaluate-images", "d"]
    assert expand_aliases(["evaluate", "findings.json"]) == ["evaluate", "findings.json"]
    assert expand_aliases([]) == []


def test_bad_options_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    from medcad.cli import main

    data = write_toy_images(tmp_path / "toy", patients=2)
    monkeypatch.setattr(sys, "argv", ["medcad", "train", "image-cls", str(data), "--out", str(tmp_path / "run"),
                                      "--weights", "none", "--freeze", "some"])
    with pytest.raises(SystemExit) as exited:
        main()
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and "all-but-last-N" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    from medcad.errors import InputError
    from medcad.tasks.image_cls import load_image_classifier

    with pytest.raises(InputError, match="not a medcad model folder"):
        load_image_classifier(tmp_path)


def _untrained_oct_model(folder):
    kwargs = {"arch": "resnet18", "num_classes": 4, "in_channels": 1, "head_hidden": 0, "dropout": 0.0,
              "freeze": "none"}
    torch.manual_seed(0)
    save_model(folder, TorchvisionClassifier(**kwargs), ModelDescription(
        "torchvision", kwargs, preprocessing=ImagePreprocessing.imagenet((64, 128), 1).to_dict(),
        extra={"class_names": OCT_CLASSES}))
    return folder


def test_predict_one_oct_image_prints_top4_summing_to_one(tmp_path, medcad):
    image = shared_path("oct", "DME", "DME-1029576-1.jpeg")
    model = _untrained_oct_model(tmp_path / "model")
    result = medcad("predict", "image", image, "--model", model, "--top-k", "4", "--json")
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)[0]["top"]
    assert sorted(t["class"] for t in top) == OCT_CLASSES
    assert abs(sum(t["probability"] for t in top) - 1) < 1e-5
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    table = medcad("predict", "image", image, "--model", model, "--top-k", "4")
    assert all(name in table.stdout for name in OCT_CLASSES) and "DME-1029576-1.jpeg" in table.stdout


def test_data_summary_of_real_oct(tmp_path, medcad):
    root = shared_path("oct")
    figure = tmp_path / "summary.png"
    result = medcad("data", "summary", root, "--figure", figure)
    assert result.exit_code == 0, result.output
    assert "DRUSEN" in result.stdout and "499" in result.stdout and "1024 x 496" in result.stdout
    assert figure.stat().st_size > 20_000


@pytest.mark.slow
def test_pneumoniamnist_tiny_budget_learns():
    archive = shared_path("pneumoniamnist", "pneumoniamnist.npz")
    from medcad.tasks.image_cls import ImageClsConfig, train_image_classifier
    from medcad.training.config import apply_overrides

    config = apply_overrides(ImageClsConfig(), {
        "data.source": str(archive), "data.image_size": (28, 28), "data.channels": 1, "data.batch_size": 128,
        "data.class_names": ("normal", "pneumonia"), "model.arch": "resnet18", "model.weights": "none",
        "model.freeze": "none", "fit.epochs": 2, "fit.optimizer.lr": 0.002, "fit.scheduler.name": "cosine",
        "fit.tensorboard": False})
    trained = train_image_classifier(config)
    assert trained.fit.history[-1]["val_loss"] < trained.fit.history[0]["train_loss"]
    assert trained.test.auc > 0.85


@pytest.mark.parametrize("name", ["oct-resnet18-scratch.yaml", "pneumoniamnist-resnet18-scratch.yaml"])
def test_shipped_recipes_load_and_train_from_scratch(name):
    from pathlib import Path

    from medcad.tasks.image_cls import config_with_overrides

    config = config_with_overrides(Path(__file__).parents[2] / "configs" / name, {"data.source": "data"})
    assert config.model.weights == "none" and config.model.freeze == "none" and config.data.channels == 1
