"""``medcad detect`` and ``medcad models``: what a person sees, what files come out, errors in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from medcad.findings import read_findings
from medcad.io import Scan, write_scan
from medcad.pipeline import load_detect_models
from tests.pipeline.helpers import scan_with_blobs, write_models


def medcad(*args, check=True):
    """``medcad ...`` in a new process: what a person sees, exit code and stderr included."""
    result = subprocess.run([sys.executable, "-m", "medcad", *map(str, args)], capture_output=True, text=True,
                            timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def run(*args):
    """``medcad ...`` in this process (no interpreter start-up); must succeed."""
    from typer.testing import CliRunner

    from medcad.cli import _register, app

    if not app.registered_commands:
        _register()
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = write_models(tmp_path_factory.mktemp("models"), malignancy=True)
    load_detect_models(folder, backend="onnx")  # export the ONNX graphs once
    return folder


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    write_scan(scan_with_blobs(shape=(40, 64, 64), blobs=((10, 20, 20), (30, 40, 44))), folder / "blobs.mha")
    write_scan(Scan.from_array(np.full((8, 32, 32), -1000, dtype=np.int16)), folder / "air.nii.gz")
    return folder


def test_detect_prints_findings_and_writes_json(models_dir, scans, tmp_path):
    out = tmp_path / "found.json"
    result = run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--out", out)
    assert "2 finding(s) with nodule probability > 0.0" in result.stdout
    assert "2 candidates" in result.stdout and "segment" in result.stdout
    findings = read_findings(out)
    assert sorted(tuple(f.center_irc) for f in findings) == [(10.0, 20.0, 20.0), (30.0, 40.0, 44.0)]
    assert all(f.malignancy_prob is not None for f in findings)


def test_detect_on_the_cpu_never_imports_pytorch(models_dir, scans, tmp_path):
    """ONNX Runtime runs both models once their exports exist: no 2 s PyTorch import per run."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "medcad", "detect", scans / "blobs.mha",
                             "--models", models_dir, "--backend", "onnx", "--out", tmp_path / "found.json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(read_findings(tmp_path / "found.json")) == 2
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "onnxruntime" in imported and "torch" not in imported


def test_mirror_views_rescore_the_same_candidates(models_dir, scans, tmp_path):
    run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--out", tmp_path / "one.json")
    run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--mirror-views",
        "--out", tmp_path / "eight.json")
    one, eight = (sorted(read_findings(tmp_path / name), key=lambda f: f.center_irc) for name in ("one.json", "eight.json"))
    assert [f.center_irc for f in one] == [f.center_irc for f in eight]
    assert all(0 <= f.nodule_prob <= 1 for f in eight)
    assert [f.nodule_prob for f in one] != [f.nodule_prob for f in eight]


def test_lungs_only_without_lungs_runs_on_the_whole_scan_and_says_so(models_dir, scans, tmp_path):
    result = run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--lungs-only",
                 "--out", tmp_path / "found.json")
    assert "U-Net ran on the whole scan (no lungs found)" in result.stdout
    assert len(read_findings(tmp_path / "found.json")) == 2


def test_no_findings_prints_an_empty_table_and_an_empty_file(models_dir, scans, tmp_path):
    out = tmp_path / "air.json"
    result = run("detect", scans / "air.nii.gz", "--models", models_dir, "--out", out)
    assert "0 finding(s)" in result.stdout
    document = json.loads(out.read_text())
    assert document["findings"] == [] and document["series_uid"] == "air"


def test_threshold_and_all_candidates_choose_what_is_written(models_dir, scans, tmp_path):
    run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "1", "--out", tmp_path / "none.csv")
    assert read_findings(tmp_path / "none.csv") == []
    run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "1", "--all-candidates",
           "--out", tmp_path / "all.csv")
    assert len(read_findings(tmp_path / "all.csv")) == 2


def test_batch_mode_writes_one_file_per_scan(models_dir, scans, tmp_path):
    run("detect", scans, "--models", models_dir, "--out", tmp_path / "batch", "--format", "csv", "--all-candidates")
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["air.csv", "blobs.csv"]
    assert len(read_findings(tmp_path / "batch" / "blobs.csv")) == 2


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "nodule" / "model.safetensors").write_bytes(b"garbage"), "corrupt or unreadable weights"),
    (lambda folder: (folder / "segmentation" / "model.json").unlink(), "not a medcad model folder"),
])
def test_bad_models_are_one_line_errors(scans, tmp_path, damage, message):
    folder = write_models(tmp_path / "models")
    damage(folder)
    result = medcad("detect", scans / "air.nii.gz", "--models", folder, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_core_threshold_keeps_separate_blobs_and_is_checked(models_dir, scans, tmp_path):
    out = tmp_path / "split.json"
    run("detect", scans / "blobs.mha", "--models", models_dir, "--threshold", "0", "--core-threshold", "0.9",
        "--out", out)
    assert sorted(tuple(f.center_irc) for f in read_findings(out)) == [(10.0, 20.0, 20.0), (30.0, 40.0, 44.0)]
    result = medcad("detect", scans / "air.nii.gz", "--models", models_dir, "--core-threshold", "0.2", check=False)
    assert result.returncode == 2 and "the core threshold must lie in [0.5, 1)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_models_folder_says_how_to_make_one(scans, tmp_path):
    result = medcad("detect", scans / "air.nii.gz", "--models", tmp_path / "none", check=False)
    assert result.returncode == 2 and "medcad models import-dlwpt" in result.stderr


@pytest.mark.realdata
def test_import_the_books_checkpoints_and_list_them(dlwpt_dir, tmp_path):
    for source, role in ((next(dlwpt_dir.glob("seg_*.state")), "segmentation"),
                         (next(dlwpt_dir.glob("cls_*.state")), "nodule")):
        result = run("models", "import-dlwpt", source, "--out", tmp_path / role)
        assert f"wrote {tmp_path / role}" in result.stdout and "exported" in result.stdout
        assert list((tmp_path / role).glob("model-*.onnx"))
    listing = run("models", "list", tmp_path).stdout
    assert "nodule_unet2d" in listing and "nodule_cnn3d" in listing and "slice_context" in listing
    assert "nodule_cnn3d" in run("models", "list").stdout.split()


def test_import_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.state").write_text("hello")
    result = medcad("models", "import-dlwpt", tmp_path / "x.state", "--out", tmp_path / "m", check=False)
    assert result.returncode == 2 and "not a readable PyTorch checkpoint" in result.stderr
    assert not (tmp_path / "m").exists()
