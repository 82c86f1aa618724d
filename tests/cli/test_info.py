"""``medcad info``: the summary a person or a script reads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from medcad.io import Scan, write_scan


def test_info_json_reports_geometry_and_hu(tmp_path):
    hu = np.full((4, 5, 6), -1000, dtype=np.int16)
    hu[2, 3, 4] = 1234
    path = write_scan(Scan.from_array(hu, origin_xyz=(1.5, -2.0, 3.0), spacing_xyz=(0.7, 0.8, 2.5)),
                      tmp_path / "v.mha")
    result = subprocess.run([sys.executable, "-m", "medcad", "info", str(path), "--json"],
                            capture_output=True, text=True, timeout=60, check=True)
    summary = json.loads(result.stdout)
    assert summary["shape_irc"] == [4, 5, 6]
    assert summary["spacing_xyz_mm"] == [0.7, 0.8, 2.5]
    assert summary["origin_xyz_mm"] == [1.5, -2.0, 3.0]
    assert summary["hu_min"] == -1000 and summary["hu_max"] == 1234
    assert summary["slice_spacing"].startswith("regular")


def test_help_is_quick_and_lists_info():
    result = subprocess.run([sys.executable, "-m", "medcad", "--help"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert "info" in result.stdout
