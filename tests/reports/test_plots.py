"""Plots are real PNG images with something drawn on them."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from medcad.findings import Finding
from medcad.io.luna import LunaNodule
from medcad.metrics.classification import roc_curve
from medcad.metrics.detection import evaluate_detection
from medcad.reports.plots import MarkedPoint, plot_froc, plot_roc


def assert_drawn_png(path, min_bytes=10_000):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes
    pixels = imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400
    # many distinct colours: axes, text, curves and the band, not a blank canvas
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50
    assert not list(path.parent.glob(".*.tmp"))


def test_froc_plot(tmp_path):
    rng = np.random.default_rng(0)
    findings, nodules = {}, []
    for s in range(20):
        uid = f"S{s}"
        nodules.append(LunaNodule(uid, (0.0, 0.0, 0.0), 10.0))
        findings[uid] = [Finding(uid, (float(rng.normal(0, 3)), 0.0, 0.0), float(rng.random()))] + [
            Finding(uid, (float(rng.uniform(20, 80)), 0.0, 0.0), float(rng.random())) for _ in range(6)]
    evaluation = evaluate_detection(findings, nodules, n_bootstrap=200)
    assert_drawn_png(plot_froc(evaluation, tmp_path / "froc.png"))


def test_roc_plot_with_points(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.random(200) < 0.3
    curve = roc_curve(labels, labels + rng.normal(0, 0.8, 200))
    path = plot_roc([("model", curve)], tmp_path / "roc.png", points=[MarkedPoint("t", 0.2, 0.7)])
    assert_drawn_png(path)
