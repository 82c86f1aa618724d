"""Two processes under torchrun (gloo, CPU) train the nodule classifier with DDP and end with identical weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from medcad.models.store import load_state_dict

pytestmark = pytest.mark.slow


def test_two_rank_ddp_run_keeps_the_ranks_identical(phantom_cohort, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun is installed with torch"
    out = tmp_path / "ddp"
    command = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "medcad", "train", "nodule",
               "--data", str(phantom_cohort), "--out", str(out), "--epochs", "2", "--epoch-samples", "64",
               "--batch-size", "8", "--crop", "8x16x16", "--width", "2", "--depth", "2", "--threads", "1",
               "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, timeout=600)
    rank0 = load_state_dict(out / "checkpoints" / "epoch-0002" / "model.safetensors")
    rank1 = load_state_dict(out / ".rank1" / "checkpoints" / "epoch-0002" / "model.safetensors")
    assert rank0.keys() == rank1.keys() and not any(k.startswith("module.") for k in rank0)
    for name in rank0:
        assert (rank0[name] == rank1[name]).all(), name
    first = load_state_dict(out / "checkpoints" / "epoch-0001" / "model.safetensors")
    assert any(not (first[k] == rank0[k]).all() for k in rank0)  # training moved the weights
