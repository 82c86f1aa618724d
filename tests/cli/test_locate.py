"""``medcad locate`` and ``medcad train l3`` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from medcad.io import Scan, write_scan
from medcad.models import create
from medcad.models.store import save_model
from medcad.tasks.l3 import L3Config, L3ModelConfig, model_description
from medcad.transforms.mip import MipConfig


def _medcad(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcad", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _medcad_here(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI run in this process (exit code, stdout, stderr): no interpreter start-up per call."""
    from medcad.cli import main

    with mock.patch.object(sys, "argv", ["medcad", *map(str, args)]):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def _untrained_model(folder):
    config = L3Config(model=L3ModelConfig(depth=3, width=4))
    network = create("nodule_unet2d", **config.model.kwargs())
    save_model(folder, network, model_description(config, "sagittal", MipConfig(pixel_mm=2.0, size=(64, 32)), {}))
    return folder


def _spine_scan(tmp_path):
    hu = np.full((50, 24, 24), -1000, dtype=np.int16)
    hu[:, 10:14, 10:14] = 400
    labels = np.zeros_like(hu)
    labels[30:35, 10:14, 10:14] = 29
    geometry = dict(origin_xyz=(-20.0, -30.0, 80.0), spacing_xyz=(2.0, 2.0, 3.0), direction=np.diag([1.0, 1.0, -1.0]))
    return (write_scan(Scan.from_array(hu, **geometry), tmp_path / "ct.mha"),
            write_scan(Scan.from_array(labels, **geometry), tmp_path / "labels.mha"))


def test_locate_prints_slice_z_confidence_and_writes_the_png(tmp_path, capsys):
    model = _untrained_model(tmp_path / "model")
    scan_path, labels_path = _spine_scan(tmp_path)
    png = tmp_path / "out" / "l3.png"
    result = _medcad_here(capsys, "locate", scan_path, "--model", model, "--png", png, "--labels", labels_path, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert 0 <= document["slice_index"] < 50 and 0.0 <= document["confidence"] <= 1.0
    # flipped z: slice k sits at z = 80 - 3 k
    assert document["z_mm"] == pytest.approx(80.0 - 3.0 * document["slice_index"], abs=1.5)
    assert document["reference"]["slice_index"] == 32 and document["reference"]["z_mm"] == pytest.approx(80 - 96.0)
    assert document["reference"]["error_mm"] == pytest.approx(abs(document["z_mm"] - (80 - 96.0)), abs=0.02)
    assert isinstance(document["low_confidence"], bool) and png.is_file() and png.stat().st_size > 1000
    text = _medcad_here(capsys, "locate", scan_path, "--model", model, "--png", png)
    assert text.returncode == 0 and "L3 slice index" in text.stdout and "confidence" in text.stdout


def test_locate_bad_inputs_give_one_line(tmp_path, capsys):
    model = _untrained_model(tmp_path / "model")
    flat = write_scan(Scan.from_array(np.zeros((1, 32, 32), dtype=np.int16)), tmp_path / "slice.mha")
    result = _medcad_here(capsys, "locate", flat, "--model", model, "--png", tmp_path / "x.png")
    assert result.returncode == 2 and "single image" in result.stderr and "Traceback" not in result.stderr
    scan_path, _ = _spine_scan(tmp_path)
    result = _medcad_here(capsys, "locate", scan_path, "--model", tmp_path)
    assert result.returncode == 2 and "no L3 model here" in result.stderr
    result = _medcad_here(capsys, "locate", scan_path, "--model", model, "--views", "frontal")
    assert result.returncode == 2 and "frontal" in result.stderr


@pytest.mark.slow
def test_synth_train_l3_then_locate_end_to_end(tmp_path):
    cohort, run = tmp_path / "cohort", tmp_path / "run"
    assert _medcad("synth", "--out", cohort, "--scans", "4", "--size", "small", "--abdomen", "--seed", "5").returncode == 0
    result = _medcad("train", "l3", cohort, "--out", run, "--folds", "2", "--epochs", "1", "--views", "sagittal",
                     "--width", "4", "--depth", "3", "--crops-per-case", "1", "--image-size", "320x128", "--crop", "64x64",
                     "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert "sagittal fold 1" in result.stdout and "median" in result.stdout
    cases = (run / "cases.csv").read_text().splitlines()
    assert len(cases) == 1 + 4 and (run / "summary.json").is_file() and any((run / "worst").iterdir())
    scan = next((cohort / "subset0").glob("*.mhd"))
    located = _medcad("locate", scan, "--model", run, "--png", tmp_path / "l3.png", "--json")
    assert located.returncode == 0, located.stderr
    document = json.loads(located.stdout)
    assert document["models"] == 2 and document["views"] == "sagittal" and (tmp_path / "l3.png").is_file()
