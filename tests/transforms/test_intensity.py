"""HU windows by name / numbers, windowing to [0, 1], normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.errors import MedcadError
from medcad.transforms.intensity import WINDOWS, HuWindow, apply_window, normalize, resolve_window


def test_named_windows_and_level_width():
    assert resolve_window("lung") == HuWindow(-1000, 400, "lung")
    mediastinum = resolve_window("Mediastinum")
    assert (mediastinum.low_hu, mediastinum.high_hu) == (-125, 225)
    assert (mediastinum.level, mediastinum.width) == (50, 350)
    assert resolve_window("bone").low_hu == 400 - 900
    assert set(WINDOWS) >= {"lung", "mediastinum", "bone", "soft_tissue"}


@pytest.mark.parametrize("spec", ["-500,300", "-500..300", (-500, 300), [-500.0, 300.0], HuWindow(-500, 300)])
def test_windows_by_numbers(spec):
    window = resolve_window(spec)
    assert (window.low_hu, window.high_hu) == (-500, 300)


@pytest.mark.parametrize("spec", ["lungs", "1,2,3", "400,-1000"])
def test_bad_windows_are_clear_errors(spec):
    with pytest.raises(MedcadError):
        resolve_window(spec)


def test_apply_window_clips_and_scales_linearly():
    hu = np.array([-3000, -1000, -300, 400, 2000], dtype=np.int16)
    out = apply_window(hu, "lung")
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(apply_window(np.array([0.0, 50.0]), (0, 100)), [0.0, 0.5])


def test_normalize_zscore_and_minmax_with_mask():
    rng = np.random.default_rng(0)
    volume = rng.normal(5.0, 3.0, size=(8, 8, 8)).astype(np.float32)
    z = normalize(volume)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4
    mask = np.zeros_like(volume, dtype=bool)
    mask[:4] = True
    inside = normalize(volume, "zscore", mask)[mask]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    scaled = normalize(volume, "minmax")
    assert scaled.min() == 0.0 and abs(scaled.max() - 1.0) < 1e-6
    with pytest.raises(MedcadError):
        normalize(volume, "robust")
    with pytest.raises(MedcadError):
        normalize(volume, mask=np.zeros_like(mask))
