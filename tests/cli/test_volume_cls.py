"""``medcad preprocess`` -> ``medcad train volume-cls`` -> ``medcad predict volume-cls`` on hand-made phantoms."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from medcad.data.synthetic import write_chests


def medcad(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "medcad", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"medcad {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def phantom_folders(root, per_class: int):
    """Class folders of small chests (``medcad synth-chests``): ``nodule/`` with a solid nodule, ``clear/`` without."""
    write_chests(root, per_class, seed=0)
    return root


@pytest.mark.slow
def test_preprocess_train_predict_end_to_end(tmp_path):
    data = phantom_folders(tmp_path / "scans", per_class=10)
    cache = tmp_path / "cache"
    medcad("preprocess", str(data), "--out", str(cache), "--shape", "16")
    rows = list(csv.DictReader((cache / "volumes.csv").open()))
    assert len(rows) == 20 and {r["label"] for r in rows} == {"clear", "nodule"}
    assert all(r["path"].endswith(".safetensors") and float(r["lung_volume_ml"]) > 50 for r in rows)

    run = tmp_path / "run"
    result = medcad("train", "volume-cls", "--data", str(cache / "volumes.csv"), "--out", str(run), "--width", "4",
                    "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--class-weights", "effective",
                    "--loss", "focal")
    assert "val_auc =" in result.stdout and "test_auc =" in result.stdout
    for name in ("model/model.json", "model/model.safetensors", "history.csv", "history.png", "metrics.json",
                 "split.csv", "config.yaml"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == ["clear", "nodule"]
    assert metrics["train_class_counts"] == [7, 7]  # 70 / 15 / 15 of 10 per class: 7 / 1 / 2
    assert metrics["reports"]["test"]["count"] == 4 and metrics["reports"]["val"]["count"] == 2
    assert len(metrics["reports"]["val"]["per_class"]) == 2
    history = list(csv.DictReader((run / "history.csv").open()))
    assert len(history) == 2 and {"val_auc", "val_f1", "val_precision", "val_recall", "train_loss"} <= set(history[0])
    split = list(csv.DictReader((run / "split.csv").open()))
    assert {r["split"] for r in split} == {"train", "val", "test"}

    volumes = [str(data / "nodule" / "chest001.nii.gz"), str(cache / rows[0]["path"])]
    out_csv = tmp_path / "predictions.csv"
    result = medcad("predict", "volume-cls", *volumes, "--model", str(run), "--out", str(out_csv))
    assert "chest001.nii.gz" in result.stdout
    predictions = list(csv.DictReader(out_csv.open()))
    assert len(predictions) == 2
    for row in predictions:
        assert row["predicted"] in ("clear", "nodule")
        assert abs(float(row["p_clear"]) + float(row["p_nodule"]) - 1) < 1e-5


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "table.csv").write_text("file,label\nx.nii.gz,a\n")
    result = medcad("train", "volume-cls", "--data", str(tmp_path / "table.csv"), "--out", str(tmp_path / "run"),
                    check=False)
    assert result.returncode == 2
    assert "table.csv: missing column(s) path" in result.stderr and "Traceback" not in result.stderr


def test_train_and_predict_in_process(tmp_path):
    """The library under the commands, small and quick: cached phantoms, one epoch, predictions."""
    from medcad.data.volume_cache import VolumePreprocessConfig, preprocess_table
    from medcad.data.volumes import read_volume_table
    from medcad.tasks.volume_cls import VolumeClsConfig, predict_volumes, train_volume_classifier
    from medcad.training.config import FitConfig

    data = phantom_folders(tmp_path / "scans", per_class=7)
    cached = preprocess_table(read_volume_table(data), VolumePreprocessConfig(shape=(16, 16, 16)), tmp_path / "cache")
    config = VolumeClsConfig(width=4, batch_size=4, sampler="balanced", loss="focal_dice",
                             fit=FitConfig(epochs=1, device="cpu", tensorboard=False))
    run = train_volume_classifier(read_volume_table(cached.table_path), config, tmp_path / "run")
    assert (tmp_path / "run" / "model" / "model.json").is_file()
    description = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert description["preprocessing"]["shape"] == [16, 16, 16]  # taken from the cache, not the default 64
    assert description["class_names"] == ["clear", "nodule"]
    assert set(run.reports) == {"val", "test"} and run.reports["test"].count == 2
    predictions = predict_volumes(tmp_path / "run" / "model", [data / "nodule" / "chest001.nii.gz"])
    assert predictions[0].predicted in ("clear", "nodule")
    assert abs(sum(predictions[0].probabilities.values()) - 1) < 1e-5


@pytest.fixture(scope="module")
def chest_cache(tmp_path_factory):
    """120 small chests per class (with / without a solid nodule), preprocessed to 32^3 once."""
    from medcad.data.volume_cache import VolumePreprocessConfig, preprocess_table
    from medcad.data.volumes import read_volume_table

    root = tmp_path_factory.mktemp("chests")
    data = phantom_folders(root / "scans", per_class=120)
    return preprocess_table(read_volume_table(data), VolumePreprocessConfig(shape=(32, 32, 32)), root / "cache").table_path


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_phantom_task_reaches_validation_auc_above_0_8(chest_cache, tmp_path, seed):
    """Small chests with / without a solid nodule, resnet10_3d on CPU: validation and test AUC > 0.8.

    Held out by patient (each chest its own), two training seeds. Global max pooling (the label
    is one small finding anywhere in the volume) and no augmentation (with this few volumes it
    learns faster; the augmented runs need more epochs than a test should take).
    """
    from medcad.data.volume_cache import VolumePreprocessConfig
    from medcad.data.volumes import read_volume_table
    from medcad.tasks.volume_cls import VolumeClsConfig, train_volume_classifier
    from medcad.training.config import FitConfig, OptimizerConfig

    config = VolumeClsConfig(model="resnet10_3d", width=16, global_pool="max", batch_size=8, augment=False,
                             preprocess=VolumePreprocessConfig(shape=(32, 32, 32)),
                             fit=FitConfig(epochs=16, optimizer=OptimizerConfig(lr=1e-3), monitor="val_auc",
                                           device="cpu", tensorboard=False, seed=seed))
    run = train_volume_classifier(read_volume_table(chest_cache), config, tmp_path / "run")
    assert run.reports["val"].count == 36  # 70 / 15 / 15 of 120 patients per class: 84 / 18 / 18
    split = list(csv.DictReader((tmp_path / "run" / "split.csv").open()))
    held_out = {r["patient_id"] for r in split if r["split"] != "train"}
    assert not held_out & {r["patient_id"] for r in split if r["split"] == "train"}
    print(f"seed {seed}: val_auc = {run.reports['val'].auc:.3f}, test_auc = {run.reports['test'].auc:.3f}")
    assert run.reports["val"].auc > 0.8
    assert run.reports["test"].auc > 0.8


def test_classification_scores_by_hand():
    """3 classes, 6 volumes: per-class and support-weighted precision / recall / F1, AUC one-vs-rest."""
    import numpy as np

    from medcad.tasks.volume_cls import classification_scores

    labels = [0, 0, 0, 1, 1, 2]
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],  # 0 0 1
                      [0.1, 0.8, 0.1], [0.5, 0.4, 0.1],                    # 1 0
                      [0.1, 0.2, 0.7]])                                    # 2
    report = classification_scores(labels, probs, ("a", "b", "c"), "val")
    # predictions 0 0 1 1 0 2: class a: tp 2, fp 1, fn 1; b: tp 1, fp 1, fn 1; c: tp 1
    a, b, c = report.per_class
    assert (a.precision, a.recall, a.support) == (2 / 3, 2 / 3, 3)
    assert (b.precision, b.recall, b.f1, b.support) == (0.5, 0.5, 0.5, 2)
    assert (c.precision, c.recall, c.f1) == (1.0, 1.0, 1.0)
    assert report.accuracy == 4 / 6
    assert report.f1 == pytest.approx((3 * (2 / 3) + 2 * 0.5 + 1 * 1.0) / 6)
    assert report.precision == pytest.approx((3 * (2 / 3) + 2 * 0.5 + 1.0) / 6)
    assert report.confusion == ((2, 1, 0), (1, 1, 0), (0, 0, 1))
    from sklearn.metrics import roc_auc_score

    assert report.auc == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    binary = classification_scores([0, 1, 1, 0], np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]]), ("n", "p"))
    assert binary.auc == 0.5  # positive scores 0.7, 0.4 against 0.1, 0.8: 2 of 4 pairs ordered
    assert np.isnan(classification_scores([1, 1], np.array([[0.2, 0.8], [0.4, 0.6]]), ("n", "p")).auc)
