"""Image classification data: class folders / archives, patient splits without leaks, typed samples."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from medcad.data.images import (
    AugmentConfig,
    ImageDataset,
    ImagePreprocessing,
    eval_transform,
    load_image_splits,
    patient_of,
    read_image,
    summarise_images,
    train_transform,
    write_image_splits,
)
from medcad.errors import InputError


def write_class_folders(root, patients: int = 12, per_patient: int = 3, classes=("CNV", "NORMAL"), size=(40, 20)):
    """Kermany-style names; every third patient has images in both classes (as some real patients do)."""
    rng = np.random.default_rng(0)
    for p in range(patients):
        owned = classes if p % 3 == 0 else (classes[p % len(classes)],)
        for name in owned:
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_patient):
                pixels = rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}-{1000 + p}-{i + 1}.png")
    return root


def test_patient_ids_come_from_kermany_names_or_a_pattern():
    assert patient_of("CNV-1016042-3.jpeg") == "1016042"
    assert patient_of("scan_17_a.png") is None
    assert patient_of("scan_17_a.png", r"^scan_(?P<patient>\d+)_") == "17"


def test_pool_split_keeps_every_patient_in_one_split_and_is_seeded(tmp_path):
    root = write_class_folders(tmp_path / "pool", patients=30)
    splits = load_image_splits(root, seed=0)
    assert splits.class_names == ("CNV", "NORMAL") and splits.made_by.startswith("medcad")
    assert splits.patient_leaks() == {}
    assert sum(len(v) for v in splits.splits.values()) == len(list(root.rglob("*.png")))
    assert all(len(splits[name]) > 0 for name in ("train", "val", "test"))
    again = load_image_splits(root, seed=0)
    assert {k: [r.key for r in v] for k, v in again.splits.items()} == {k: [r.key for r in v]
                                                                       for k, v in splits.splits.items()}
    other = load_image_splits(root, seed=1)
    assert [r.key for r in other["test"]] != [r.key for r in splits["test"]]


def test_split_file_round_trip(tmp_path):
    root = write_class_folders(tmp_path / "pool")
    splits = load_image_splits(root, seed=3)
    path = write_image_splits(splits, tmp_path / "split.json", seed=3)
    reread = load_image_splits(root, seed=99, split_file=path)
    assert {k: sorted(r.key for r in v) for k, v in reread.splits.items()} == \
        {k: sorted(r.key for r in v) for k, v in splits.splits.items()}


def test_train_val_test_folders_are_used_and_val_is_carved_by_patient(tmp_path):
    write_class_folders(tmp_path / "data" / "train", patients=20)
    write_class_folders(tmp_path / "data" / "test", patients=4)
    splits = load_image_splits(tmp_path / "data")
    assert set(splits.splits) == {"train", "val", "test"} and "carved" in splits.made_by
    train_patients = {r.patient_id for r in splits["train"]}
    assert train_patients.isdisjoint({r.patient_id for r in splits["val"]})
    assert all(r.key.startswith("test/") for r in splits["test"])


def test_npz_archive_is_a_source(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 6), ("test", 4))}
    arrays.update({"train_labels": np.array([[0], [1], [0], [1], [1], [0]]), "test_labels": np.array([[1], [0], [0], [1]])})
    np.savez(tmp_path / "mini.npz", **arrays)
    splits = load_image_splits(tmp_path / "mini.npz", class_names=("normal", "pneumonia"))
    assert splits.class_names == ("normal", "pneumonia") and [r.label for r in splits["test"]] == [1, 0, 0, 1]
    image = read_image(splits["test"][2], channels=1)
    assert np.array_equal(np.asarray(image), arrays["test_images"][2])
    assert summarise_images(splits).sizes == {(28, 28): 10}


def test_grey_and_rgb_files_load_with_the_requested_channels(tmp_path):
    Image.fromarray(np.full((10, 12, 3), (200, 100, 0), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((10, 12), 77, dtype=np.uint8)).save(tmp_path / "grey.png")
    assert read_image(tmp_path / "rgb.png", 1).mode == "L" and read_image(tmp_path / "grey.png", 3).mode == "RGB"
    assert np.asarray(read_image(tmp_path / "grey.png", 3))[0, 0].tolist() == [77, 77, 77]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.png"):
        read_image(tmp_path / "broken.png")


def test_transforms_give_normalised_tensors_of_the_input_size(tmp_path):
    root = write_class_folders(tmp_path / "pool", patients=3)
    splits = load_image_splits(root)
    preprocessing = ImagePreprocessing.imagenet((16, 24), 3)
    train = ImageDataset(splits["train"], train_transform(preprocessing, AugmentConfig()), 3, cache_size=(20, 30))
    evaluation = ImageDataset(splits["train"], eval_transform(preprocessing), 3)
    sample = train[0]
    assert tuple(sample.image.shape) == (3, 16, 24) and sample.label == splits["train"][0].label
    assert evaluation[0].image.dtype.is_floating_point and tuple(evaluation[0].image.shape) == (3, 16, 24)
    assert np.allclose(evaluation[0].image.numpy(), evaluation[0].image.numpy())  # deterministic
    assert abs(float(evaluation[0].image.mean())) < 3


def test_missing_or_empty_data_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image_splits(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no class folders"):
        load_image_splits(tmp_path / "empty")


def test_real_oct_split_by_patient_has_no_patient_in_two_splits():
    root = shared_path("oct")
    splits = load_image_splits(root, seed=0)
    assert splits.class_names == ("CNV", "DME", "DRUSEN", "NORMAL")
    assert sum(len(v) for v in splits.splits.values()) == 499
    assert splits.unmatched_names == 0
    assert splits.patient_leaks() == {}
    patients = {name: {r.patient_id for r in records} for name, records in splits.splits.items()}
    assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    # a patient with images in two classes (CNV and NORMAL) still sits in a single split
    split_of = {p: name for name, ids in patients.items() for p in ids}
    classes_of_1256555 = {splits.class_names[r.label] for rs in splits.splits.values() for r in rs
                          if r.patient_id == "1256555"}
    assert classes_of_1256555 == {"CNV", "NORMAL"} and "1256555" in split_of
