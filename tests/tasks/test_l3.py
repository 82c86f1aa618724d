"""L3 task: folds by patient, the row rule, training crops and labels, a tiny training run, locate's flags."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medcad.data.l3 import L3Dataset, LabelConfig, save_dataset
from medcad.errors import InputError
from medcad.io import Scan
from medcad.tasks.l3 import L3Config, L3CropDataset, L3ModelConfig, cross_validate, patient_folds, prepare_dataset
from medcad.tasks.l3_locate import L3Model, estimate_row, locate, row_scores
from medcad.tasks.l3_report import summarize_errors
from medcad.training.config import FitConfig, OptimizerConfig, SchedulerConfig
from medcad.transforms.mip import VIEWS, AxisLine, MipConfig, place_projection


def test_patient_folds_keep_patients_together_and_balance():
    patients = [f"p{i // 2}" for i in range(22)]  # 11 patients, 2 scans each
    folds = patient_folds(patients, 5)
    for patient in set(patients):
        assert len({folds[i] for i, p in enumerate(patients) if p == patient}) == 1
    per_fold = np.bincount(folds, minlength=5) // 2
    assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == 11
    np.testing.assert_array_equal(folds, patient_folds(list(patients), 5))  # deterministic
    with pytest.raises(InputError, match="cannot make 5 folds"):
        patient_folds(["a", "b", "c"], 5)


def test_row_rule_peak_centroid_and_padding():
    scores = np.zeros(50)
    scores[20:23] = [0.5, 1.0, 0.5]
    estimate = estimate_row(scores)
    assert estimate.peak_row == 21 and estimate.row == pytest.approx(21.0) and estimate.confidence == 1.0
    scores[23] = 1.0  # a plateau over rows 21 and 23 (with 0.5 at 22): the centroid sits between them
    assert estimate_row(scores).row == pytest.approx((20 * 0.5 + 21 + 22 * 0.5 + 23) / 3.0)
    scores[45] = 2.0  # a stronger peak in the padding is ignored when the valid rows are given
    assert estimate_row(scores, valid_rows=(0, 40)).peak_row in (21, 23)
    assert estimate_row(scores).peak_row == 45
    confidence_map = np.zeros((50, 8))
    confidence_map[30, 2] = 0.9
    assert row_scores(confidence_map, "max")[30] == pytest.approx(0.9)
    assert row_scores(confidence_map, "mean")[30] == pytest.approx(0.9 / 8)


def _bar_dataset(count: int, rows: int = 96, cols: int = 32, seed: int = 0) -> L3Dataset:
    """MIP-like images with a bright bar at the 'L3' row among fainter bars; 2 mm pixels."""
    rng = np.random.default_rng(seed)
    config = MipConfig(pixel_mm=2.0, size=(rows, cols))
    images, geometries, z = {v: [] for v in VIEWS}, {v: [] for v in VIEWS}, []
    for _ in range(count):
        l3_slice = int(rng.integers(20, 60))
        projection = np.full((80, 20), -200.0, dtype=np.float32)
        projection[::6, 6:14] = 500.0  # faint "vertebrae"
        projection[l3_slice - 1:l3_slice + 2, 2:18] = 1500.0  # the landmark
        z_line = AxisLine(0, 300.0, -2.0, 80)  # head first, 2 mm slices
        column_line = AxisLine(1, -20.0, 2.0, 20)
        for view in VIEWS:
            mip = place_projection(projection, z_line, column_line, view, config)
            images[view].append(mip.image)
            geometries[view].append(mip.geometry)
        z.append(float(z_line.index_to_mm(l3_slice)))
    names = tuple(f"case{i}" for i in range(count))
    return L3Dataset(names, names, {v: np.stack(images[v]) for v in VIEWS}, {v: tuple(geometries[v]) for v in VIEWS},
                     np.array(z), config)


def test_prepare_dataset_reads_our_npz_and_refuses_other_files(tmp_path):
    dataset = _bar_dataset(2)
    saved = save_dataset(dataset, tmp_path / "mips.npz")
    again = prepare_dataset(saved, dataset.config)
    assert again.names == dataset.names and again.config == dataset.config
    (tmp_path / "notes.npz").write_text("not an archive")
    with pytest.raises(InputError, match="not an .npz file"):
        prepare_dataset(tmp_path / "notes.npz", dataset.config)
    with pytest.raises(InputError, match="no such cohort folder"):
        prepare_dataset(tmp_path / "missing", dataset.config)
    with pytest.raises(InputError, match="vertebra-level table not found"):
        prepare_dataset(tmp_path, dataset.config)  # a folder without vertebra_levels.csv


def test_training_crop_label_peaks_on_the_landmark():
    dataset = _bar_dataset(3)
    config = L3Config(crop=(48, 32), model=L3ModelConfig(depth=3, width=4), scale_jitter=0.2, coverage_jitter=0.0,
                      label=LabelConfig(kind="gaussian", sigma_rows=1.5))
    spine = np.array([g.spine_col for g in dataset.geometries["frontal"]])
    crops = L3CropDataset(dataset.images["frontal"], dataset.l3_rows("frontal"), spine, config, pixel_mm=2.0)
    torch.manual_seed(0)
    checked = 0
    for index in range(30):
        sample = crops[index]
        assert sample.image.shape == (1, 48, 32) and sample.label.shape == (1, 48, 32)
        label_row = int(sample.label[0].max(dim=1).values.argmax())
        if sample.label[0].max() < 0.5:  # a crop away from L3 (15 % of them): nothing to check
            continue
        image_profile = sample.image[0, :, 10:22].mean(dim=1)
        assert abs(int(image_profile.argmax()) - label_row) <= 1  # the label sits on the bright bar
        checked += 1
    assert checked >= 15


def _tiny_config(**changes) -> L3Config:
    fit = FitConfig(epochs=12, optimizer=OptimizerConfig(lr=0.01), scheduler=SchedulerConfig(name="step", step_size=8),
                    monitor="train_loss", amp=False, tensorboard=False, early_stopping=dataclasses.replace(
                        FitConfig().early_stopping, patience=0), keep_checkpoints=1)
    config = L3Config(views=("sagittal",), folds=2, crop=(48, 32), crops_per_case=4, batch_size=8,
                      model=L3ModelConfig(depth=3, width=4), label=LabelConfig(sigma_rows=1.5), coverage_jitter=0.0,
                      fit=fit, mip=MipConfig(pixel_mm=2.0, size=(96, 32)))
    return dataclasses.replace(config, **changes)


@pytest.mark.slow
def test_tiny_cross_validation_learns_the_landmark(tmp_path):
    torch.set_num_threads(1)
    dataset = _bar_dataset(16)
    cv = cross_validate(dataset, _tiny_config(), tmp_path)
    errors = np.array([r.error_mm for r in cv.results])
    assert len(cv.results) == 16 and {r.fold for r in cv.results} == {0, 1}
    assert np.median(errors) <= 4.0, errors  # 2 mm pixels: within two rows on held-out cases
    assert (tmp_path / "sagittal" / "fold-1" / "model" / "model.json").is_file()
    summary = summarize_errors(cv.results)
    assert [s.group for s in summary] == ["fold 0", "fold 1", "all"] and summary[-1].cases == 16


class _FixedMap(torch.nn.Module):
    """A stand-in network: the same confidence for every column, a chosen profile over rows."""

    def __init__(self, profile_of_rows):
        super().__init__()
        self.profile_of_rows = profile_of_rows
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        rows = torch.arange(x.shape[2], dtype=torch.float32)
        return self.profile_of_rows(rows)[None, None, :, None].expand(x.shape[0], 1, -1, x.shape[3]) + self.weight


def _model(profile, view="sagittal") -> L3Model:
    return L3Model(_FixedMap(profile), view, MipConfig(pixel_mm=2.0, size=(64, 32)), 1, "max", 0.3, None)


def _scan() -> Scan:
    hu = np.full((60, 20, 20), -1000, dtype=np.int16)
    hu[:, 8:12, 8:12] = 400
    return Scan.from_array(hu, origin_xyz=(0, 0, -100.0), spacing_xyz=(2.0, 2.0, 3.0))


def test_locate_maps_the_peak_to_a_slice_and_flags_weak_or_edge_peaks():
    scan = _scan()
    from medcad.transforms.mip import project

    geometry = project(scan, "sagittal", MipConfig(pixel_mm=2.0, size=None, multiple=32)).geometry
    peak_row = float(geometry.slice_to_row(25))
    sharp = _model(lambda r: torch.exp(-0.5 * ((r - peak_row) / 1.5) ** 2))
    location, mips = locate(scan, [sharp])
    assert location.slice_index == 25 and location.z_mm == pytest.approx(-100.0 + 75.0, abs=0.5)
    assert not location.low_confidence and location.confidence > 0.9
    weak, _ = locate(scan, [_model(lambda r: 0.1 * torch.exp(-0.5 * ((r - peak_row) / 1.5) ** 2))])
    assert weak.low_confidence and "confidence 0.10" in weak.reason
    edge_row = float(geometry.slice_to_row(1))
    edge, _ = locate(scan, [_model(lambda r: torch.exp(-0.5 * ((r - edge_row) / 1.5) ** 2))])
    assert edge.low_confidence and "end" in edge.reason
    both, _ = locate(scan, [sharp, _model(lambda r: torch.exp(-0.5 * ((r - peak_row - 2) / 1.5) ** 2), "frontal")])
    assert both.views == "frontal+sagittal" and both.row == pytest.approx(peak_row + 1, abs=0.3)
    assert not both.low_confidence  # 4 mm apart: the views agree
    apart, _ = locate(scan, [sharp, _model(lambda r: torch.exp(-0.5 * ((r - peak_row - 12) / 1.5) ** 2), "frontal")])
    assert apart.low_confidence and "views disagree by 24 mm" in apart.reason


def test_locate_refuses_a_single_image():
    with pytest.raises(InputError, match="single image"):
        locate(Scan.from_array(np.zeros((1, 64, 64), dtype=np.int16)), [_model(lambda r: r * 0)])
