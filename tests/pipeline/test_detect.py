"""detect() end to end on small scans with a hand-wired segmenter, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.errors import InputError
from medcad.io import Scan
from medcad.models import create
from medcad.models.store import ModelDescription, save_model
from medcad.pipeline import detect, load_detect_models
from tests.pipeline.helpers import SEGMENTER_PREPROCESSING, scan_with_blobs, write_models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"), malignancy=True)


@pytest.fixture(scope="module", params=["onnx", "torch"])
def models(models_dir, request):
    return load_detect_models(models_dir, backend=request.param, device="cpu")


def test_bright_spheres_become_candidates_at_their_centres(models):
    scan = scan_with_blobs(direction=np.diag([-1.0, 1.0, 1.0]))
    stages = []
    result = detect(scan, models, progress=lambda stage, done, total: stages.append(stage))
    assert sorted(c.center_irc for c in result.candidates) == [(5.0, 28.0, 30.0), (6.0, 12.0, 14.0)]
    for candidate in result.candidates:
        assert candidate.center_xyz == pytest.approx(tuple(scan.irc_to_xyz(candidate.center_irc)))
        assert candidate.voxel_count == 27  # a radius-2.5 ball (81 voxels) after one erosion
    assert [f.nodule_prob for f in result.findings] == sorted((f.nodule_prob for f in result.findings), reverse=True)
    assert all(0 <= f.nodule_prob <= 1 and 0 <= f.malignancy_prob <= 1 for f in result.findings)
    assert {f.series_uid for f in result.findings} == {"1.2.3.test"}
    assert set(stages) == {"segment", "group", "classify"} and set(result.seconds) == {"segment", "group", "classify"}


def test_backends_give_the_same_findings(models_dir):
    scan = scan_with_blobs(shape=(40, 64, 64), blobs=((10, 20, 20), (30, 40, 44), (20, 50, 12)))
    onnx, eager = (detect(scan, load_detect_models(models_dir, backend=b, device="cpu")) for b in ("onnx", "torch"))
    assert [f.center_irc for f in onnx.findings] == [f.center_irc for f in eager.findings]
    np.testing.assert_allclose([f.nodule_prob for f in onnx.findings], [f.nodule_prob for f in eager.findings], atol=1e-5)
    np.testing.assert_allclose([f.malignancy_prob for f in onnx.findings], [f.malignancy_prob for f in eager.findings],
                               atol=1e-5)


def test_a_scan_thinner_than_the_context_still_works(models):
    scan = scan_with_blobs(shape=(3, 40, 40), blobs=((1, 20, 20),), radius=3)
    result = detect(scan, models)
    assert [c.center_irc for c in result.candidates] == [(1.0, 20.0, 20.0)]
    assert len(result.findings) == 1


def test_an_all_air_scan_gives_an_empty_result(models):
    scan = Scan.from_array(np.full((9, 32, 36), -1000, dtype=np.int16), series_uid="air")
    result = detect(scan, models)
    assert result.candidates == [] and result.findings == [] and result.above(0.5) == []


def test_odd_sized_slices_are_padded_for_the_unet(models):
    scan = scan_with_blobs(shape=(10, 37, 43), blobs=((5, 18, 21),))
    assert [c.center_irc for c in detect(scan, models).candidates] == [(5.0, 18.0, 21.0)]


def test_the_models_folder_must_hold_the_right_models(tmp_path, models_dir):
    with pytest.raises(InputError, match="models folder not found"):
        load_detect_models(tmp_path / "nothing")
    (tmp_path / "only_seg").mkdir()
    with pytest.raises(InputError, match="no segmentation/ model"):
        load_detect_models(tmp_path / "only_seg")
    swapped = tmp_path / "swapped"
    write_models(swapped)
    save_model(swapped / "segmentation", create("nodule_cnn3d", width=2),
               ModelDescription("nodule_cnn3d", {"width": 2}, {"kind": "crop3d", "crop_irc": [32, 48, 48]}))
    with pytest.raises(InputError, match="is not a segmentation model"):
        load_detect_models(swapped)


def test_the_malignancy_model_must_take_the_nodule_models_crop(tmp_path):
    write_models(tmp_path, malignancy=True)
    preprocessing = {"kind": "crop3d", "crop_irc": [16, 24, 24], "hu_clamp": [-1000, 1000]}
    save_model(tmp_path / "malignancy", create("nodule_cnn3d", width=2, input_shape=(16, 24, 24)),
               ModelDescription("nodule_cnn3d", {"width": 2, "input_shape": [16, 24, 24]}, preprocessing))
    with pytest.raises(InputError, match="both classify the same crops"):
        load_detect_models(tmp_path, device="cpu")


def test_weights_of_another_architecture_are_refused(tmp_path):
    write_models(tmp_path)
    save_model(tmp_path / "segmentation", create("nodule_unet2d", depth=2, width=4),
               ModelDescription("nodule_unet2d", {"depth": 3, "width": 4}, SEGMENTER_PREPROCESSING))
    with pytest.raises(InputError, match="weights do not fit the nodule_unet2d architecture"):
        load_detect_models(tmp_path, backend="onnx")


def test_masks_hold_each_reported_findings_component(models):
    """Label k = finding k: its voxels are the eroded sphere the finding's centre and count came from."""
    blobs = ((10, 20, 20), (30, 40, 44), (20, 50, 12))
    scan = scan_with_blobs(shape=(40, 64, 64), blobs=blobs, radius=3.5)
    result = detect(scan, models, masks_above=0.0)
    assert len(result.masks) == len(result.findings) == 3
    labels = result.masks.label_map()
    assert labels.dtype == np.uint16 and labels.max() == 3
    for k, finding in enumerate(result.findings, start=1):
        voxels = np.argwhere(labels == k)
        assert len(voxels) == finding.voxel_count
        np.testing.assert_allclose(voxels.mean(axis=0), finding.center_irc, atol=1e-6)  # uniform HU: same centre
        assert np.all(scan.hu[labels == k] == 800)
    again = type(result.masks).from_label_map(labels)
    assert all(np.array_equal(a, b) for a, b in zip(again.voxels, result.masks.voxels))


def test_masks_follow_the_threshold_and_the_lungs_only_filter(models):
    scan = scan_with_blobs(shape=(40, 64, 64), blobs=((10, 20, 20), (30, 40, 44)), radius=3.5)
    everything = detect(scan, models, masks_above=0.0)
    top = everything.findings[0].nodule_prob
    above_top = detect(scan, models, masks_above=top)
    assert len(above_top.masks) == 0
    assert detect(scan, models, masks_above=None).masks is None
    between = (everything.findings[0].nodule_prob + everything.findings[1].nodule_prob) / 2
    one = detect(scan, models, masks_above=between)
    assert everything.findings[0].nodule_prob > everything.findings[1].nodule_prob  # two blobs, two scores
    assert len(one.masks) == 1
    np.testing.assert_array_equal(one.masks.voxels[0], everything.masks.voxels[0])
