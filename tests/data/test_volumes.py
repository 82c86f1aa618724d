"""Volume tables, patient splits, LUNA16 scan labels, the preprocessing cache, the dataset and the sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from medcad.data.volume_cache import (
    VolumePreprocessConfig,
    preprocess_scan,
    preprocess_table,
    read_cached,
    write_cached,
)
from medcad.data.volumes import (
    VolumeDataset,
    VolumeRecord,
    VolumeTable,
    balanced_sampler,
    check_splits,
    class_counts,
    collate_volumes,
    read_volume_table,
    split_by_patient,
    table_from_luna,
)
from medcad.errors import InputError
from medcad.io import write_scan
from medcad.transforms.lung_mask import LungMaskConfig
from tests.transforms.phantoms import small_chest

SMALL = VolumePreprocessConfig(shape=(32, 32, 32), lungs=LungMaskConfig(min_lung_ml=5.0))


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_csv_table_relative_paths_optional_columns_and_class_order(tmp_path):
    for name in ("a.nii.gz", "b.nii.gz", "sub/c.mhd"):
        touch(tmp_path / name)
    (tmp_path / "table.csv").write_text("path,label,split,patient_id\na.nii.gz,10,train,p1\n"
                                        "b.nii.gz,2,,p2\nsub/c.mhd,2,test,\n")
    table = read_volume_table(tmp_path / "table.csv")
    assert table.class_names == ("2", "10")  # numeric order
    a, b, c = table.records
    assert a.path == str(tmp_path / "a.nii.gz") and a.split == "train" and a.patient_id == "p1"
    assert b.split is None and c.patient_id == "c"  # the file name stands in for a missing patient
    assert table.label_index(a) == 1


@pytest.mark.parametrize("content,message", [
    ("file,label\na.nii.gz,x\n", "missing column"),
    ("path,label\nmissing.nii.gz,x\n", "line 2: volume missing.nii.gz not found"),
    ("path,label,split\na.nii.gz,x,training\n", "split 'training'"),
    ("path,label\na.nii.gz,\n", "empty path or label"),
])
def test_bad_tables_name_the_file_and_the_problem(tmp_path, content, message):
    touch(tmp_path / "a.nii.gz")
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(InputError, match=message) as error:
        read_volume_table(tmp_path / "t.csv")
    assert "t.csv" in str(error.value)


def test_class_folders(tmp_path):
    touch(tmp_path / "normal" / "s1.nii.gz")
    touch(tmp_path / "normal" / "s2.mhd")
    touch(tmp_path / "normal" / "s2.raw")
    (tmp_path / "disease" / "dicom_series").mkdir(parents=True)
    table = read_volume_table(tmp_path)
    assert table.class_names == ("disease", "normal")
    assert sorted((r.label, r.patient_id) for r in table.records) == [
        ("disease", "dicom_series"), ("normal", "s1"), ("normal", "s2")]
    with pytest.raises(InputError, match="no class folders"):
        read_volume_table(tmp_path / "normal")


def make_records(n_per_class=(40, 20), scans_per_patient=2):
    records = []
    for label, n in zip(("a", "b"), n_per_class):
        for patient in range(n):
            for scan in range(scans_per_patient):
                records.append(VolumeRecord(f"/x/{label}{patient}_{scan}", label, None, f"{label}-p{patient}"))
    return records


def test_split_by_patient_is_stratified_exact_deterministic_and_leak_free():
    records = make_records()
    split = split_by_patient(records)
    assert split == split_by_patient(list(records))
    patients = {(r.label, r.split): set() for r in split}
    for r in split:
        patients[(r.label, r.split)].add(r.patient_id)
    assert [len(patients[("a", s)]) for s in ("train", "val", "test")] == [28, 6, 6]
    assert [len(patients[("b", s)]) for s in ("train", "val", "test")] == [14, 3, 3]
    table = VolumeTable(split, ("a", "b"))
    check_splits(table)
    assert class_counts(table, "val") == [12, 6]  # 2 scans per patient
    other_salt = split_by_patient(records, salt="another")
    assert [r.split for r in other_salt] != [r.split for r in split]


def test_given_splits_are_kept_and_leaks_are_reported():
    records = make_records((10, 10), 1)
    records[0] = VolumeRecord(records[0].path, "a", "test", records[0].patient_id)
    split = split_by_patient(records)
    assert split[0].split == "test"
    leaky = list(split) + [VolumeRecord("/x/again", "a", "train" if split[0].split != "train" else "val",
                                        split[0].patient_id)]
    with pytest.raises(InputError, match="more than one split"):
        check_splits(VolumeTable(tuple(leaky), ("a", "b")))
    with pytest.raises(InputError, match="val split is empty"):
        check_splits(VolumeTable(tuple(VolumeRecord(r.path, r.label, "train", r.patient_id) for r in records),
                                 ("a", "b")))


def test_scan_labels_from_a_luna_layout_cohort(tmp_path):
    uids = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    for index, uid in enumerate(uids):
        write_scan(small_chest(index, nodule=False, shape=(8, 16, 16)), tmp_path / "subset0" / f"{uid}.mhd")
    (tmp_path / "annotations.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3.1,1,2,3,10\n1.2.3.2,4,5,6,20\n")
    header = ("seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool,mal_details,bboxLowX,bboxLowY,bboxLowZ,"
              "bboxHighX,bboxHighY,bboxHighZ,len_mal_details\n")
    (tmp_path / "annotations_with_malignancy.csv").write_text(
        header + '1.2.3.1,1,2,3,10,False,"[2, 3]",0,0,0,1,1,1,2\n1.2.3.2,4,5,6,20,True,"[5, 4]",0,0,0,1,1,1,2\n')
    malignant = table_from_luna(tmp_path, "malignant")
    assert malignant.class_names == ("benign", "malignant")
    assert {r.patient_id: r.label for r in malignant.records} == {
        "1.2.3.1": "benign", "1.2.3.2": "malignant", "1.2.3.3": "benign"}
    nodule = table_from_luna(tmp_path, "nodule")
    assert {r.patient_id: r.label for r in nodule.records} == {
        "1.2.3.1": "nodule", "1.2.3.2": "nodule", "1.2.3.3": "clear"}


def test_preprocess_scan_shape_range_lungs_and_geometry():
    scan = small_chest(3, nodule=True)
    volume = preprocess_scan(scan, SMALL)
    assert volume.image.shape == volume.lungs.shape == (32, 32, 32)
    assert volume.image.dtype == np.float32 and 0.0 <= volume.image.min() and volume.image.max() <= 1.0
    assert set(np.unique(volume.lungs)) == {0, 1, 2}
    assert np.allclose(volume.geometry.spacing_xyz, volume.geometry.spacing_xyz[0])
    # cropped to the lungs' box: along its longest axis the lungs span the grid but for the margins
    spans = [np.ptp(np.nonzero(volume.lungs)[axis]) + 1 for axis in range(3)]
    assert 0.7 * 32 <= max(spans) <= 32 - 2
    assert 0.05 < (volume.lungs > 0).mean() < 0.6
    # a lung voxel of the grid maps back into the lungs' air in the scan
    lung_irc = np.argwhere(volume.lungs == 1)[len(np.argwhere(volume.lungs == 1)) // 2]
    back = scan.xyz_to_irc(volume.geometry.irc_to_xyz(lung_irc), round=True)
    assert scan.hu[tuple(back)] < -500
    assert volume.image[volume.lungs > 0].mean() < 0.2  # lung window: lung parenchyma is dark


def test_cache_round_trip_and_bad_files(tmp_path):
    volume = preprocess_scan(small_chest(1, nodule=False), SMALL)
    path = write_cached(volume, tmp_path / "v.safetensors")
    again = read_cached(path)
    assert np.array_equal(again.image, volume.image) and np.array_equal(again.lungs, volume.lungs)
    np.testing.assert_allclose(again.geometry.origin_xyz, volume.geometry.origin_xyz)
    assert again.config == SMALL and again.lung_volume_ml == pytest.approx(volume.lung_volume_ml)
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="unreadable preprocessed volume"):
        read_cached(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="must end in"):
        write_cached(volume, tmp_path / "v.npy")


def test_preprocess_table_writes_a_training_table_and_reuses_entries(tmp_path):
    folder = tmp_path / "scans"
    for index in range(4):
        label = "nodule" if index % 2 else "clear"
        write_scan(small_chest(index, nodule=index % 2 == 1), folder / label / f"s{index}.nii.gz")
    table = read_volume_table(folder)
    first = preprocess_table(table, SMALL, tmp_path / "cache")
    assert (first.written, first.reused) == (4, 0)
    cached = read_volume_table(first.table_path)
    assert cached.class_names == ("clear", "nodule")
    assert all(r.path.endswith(".safetensors") for r in cached.records)
    assert sorted(r.patient_id for r in cached.records) == ["s0", "s1", "s2", "s3"]
    second = preprocess_table(table, SMALL, tmp_path / "cache")
    assert (second.written, second.reused) == (0, 4)
    other = preprocess_table(table, VolumePreprocessConfig(shape=(16, 16, 16), lungs=SMALL.lungs), tmp_path / "cache")
    assert other.written == 4  # other settings: redone
    dataset = VolumeDataset(cached.records, cached.class_names, SMALL)
    with pytest.raises(InputError, match="expects"):
        dataset[0]


def test_dataset_samples_and_collation(tmp_path):
    paths = []
    for index in range(3):
        paths.append(write_cached(preprocess_scan(small_chest(index, index == 1), SMALL), tmp_path / f"{index}.safetensors"))
    records = [VolumeRecord(str(p), label, "train", str(i)) for i, (p, label) in enumerate(zip(paths, "aba"))]
    dataset = VolumeDataset(records, ("a", "b"), SMALL)
    sample = dataset[1]
    assert sample.image.shape == (1, 32, 32, 32) and sample.image.dtype == torch.float32
    assert sample.lungs.dtype == torch.uint8 and sample.label == 1 and sample.index == 1
    batch = collate_volumes([dataset[i] for i in range(3)])
    assert batch.image.shape == (3, 1, 32, 32, 32) and batch.label.tolist() == [0, 1, 0]
    # on-the-fly preprocessing of a scan file gives the cached arrays
    write_scan(small_chest(0, False), tmp_path / "raw.nii.gz")
    raw = VolumeDataset([VolumeRecord(str(tmp_path / "raw.nii.gz"), "a")], ("a", "b"), SMALL)[0]
    assert torch.allclose(raw.image, dataset[0].image, atol=1e-5)


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 90 + [1] * 10
    sampler = balanced_sampler(labels, seed=0, num_samples=4000)
    drawn = Counter(labels[i] for i in sampler)
    assert abs(drawn[1] / 4000 - 0.5) < 0.03
    torch.manual_seed(1)
    first = list(balanced_sampler(labels))
    torch.manual_seed(1)
    assert list(balanced_sampler(labels)) == first  # seeded from torch's generator
