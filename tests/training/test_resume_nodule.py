"""Kill a nodule-classifier run mid-epoch, resume it: same weights as an uninterrupted run (tiny model, CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medcad.models.store import load_state_dict

pytestmark = pytest.mark.slow


def _command(cohort: Path, out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "medcad", "train", "nodule", "--data", str(cohort), "--out", str(out),
            "--epochs", "3", "--epoch-samples", "96", "--batch-size", "8", "--crop", "8x16x16", "--width", "2",
            "--depth", "2", "--seed", "3", "--threads", "1", "--quiet"] + (["--resume"] if resume else [])


def test_killed_and_resumed_run_ends_with_the_same_weights(phantom_cohort, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    straight = tmp_path / "straight"
    subprocess.run(_command(phantom_cohort, straight, False), check=True, env=env, timeout=600)

    broken = tmp_path / "broken"
    process = subprocess.Popen(_command(phantom_cohort, broken, False), env=env)
    deadline = time.time() + 300
    while not (broken / "checkpoints" / "epoch-0001").is_dir() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (broken / "checkpoints" / "epoch-0003").exists(), "the run ended before it could be killed"
    subprocess.run(_command(phantom_cohort, broken, True), check=True, env=env, timeout=600)

    final = "checkpoints/epoch-0003/model.safetensors"
    expected, resumed = load_state_dict(straight / final), load_state_dict(broken / final)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert (expected[name] == resumed[name]).all(), name
