"""``medcad synth`` and ``medcad demo`` on the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medcad.cli import _register, app

_register()
runner = CliRunner()


def test_synth_writes_a_luna16_layout_cohort(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--scans", "2", "--seed", "9", "--size", "small",
                                 "--negatives", "20", "--nodules", "3"])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "cohort.json").read_text())
    assert settings["seed"] == 9 and settings["size"] == "small" and len(settings["series_uids"]) == 2
    for uid in settings["series_uids"]:
        assert (tmp_path / "subset0" / f"{uid}.mhd").is_file() and (tmp_path / "subset0" / f"{uid}.raw").is_file()
    for name in ("annotations.csv", "candidates.csv", "annotations_with_malignancy.csv", "vertebra_levels.csv"):
        assert (tmp_path / name).is_file()
    levels = (tmp_path / "vertebra_levels.csv").read_text().splitlines()
    assert len(levels) == 1 + 2 * 17 and sum(",L3," in line for line in levels) == 2
    assert len((tmp_path / "annotations.csv").read_text().splitlines()) == 1 + 2 * 3
    assert len((tmp_path / "candidates.csv").read_text().splitlines()) <= 1 + 2 * (3 + 20)
    assert "64x128x128" in result.output and "candidates" in result.output


def test_synth_refuses_bad_options_and_foreign_folders(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--scans", "1", "--size", "huge"])
    assert result.exit_code != 0 and "huge" in str(result.exception or result.output)
    (tmp_path / "subset0").mkdir()
    (tmp_path / "subset0" / "1.2.3.mhd").write_text("not ours")
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--scans", "1", "--size", "small"])
    assert result.exit_code != 0 and "another cohort" in str(result.exception)
