"""``medcad synth`` and ``medcad demo`` on the command line."""

from __future__ import annotations

import json

import numpy as np

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


def _digests(folder):
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synth_chests_writes_seeded_class_folders_that_read_as_a_volume_table(tmp_path):
    from medcad.data.volumes import read_volume_table
    from medcad.io import read_scan

    for name, seed in (("a", "4"), ("b", "4"), ("c", "5")):
        result = runner.invoke(app, ["synth-chests", "--out", str(tmp_path / name), "--per-class", "2", "--seed", seed])
        assert result.exit_code == 0, result.output
    assert "wrote 4 chests (2 per class)" in result.output
    first = _digests(tmp_path / "a")
    assert sorted(first) == ["clear/chest000.nii.gz", "clear/chest002.nii.gz", "nodule/chest001.nii.gz",
                             "nodule/chest003.nii.gz"]
    assert first == _digests(tmp_path / "b")
    assert not set(first.values()) & set(_digests(tmp_path / "c").values())
    table = read_volume_table(tmp_path / "a")
    assert table.class_names == ("clear", "nodule") and len(table.records) == 4
    from medcad.data.synthetic import small_chest

    nodule = read_scan(tmp_path / "a" / "nodule" / "chest001.nii.gz")
    assert nodule.hu.shape == (24, 48, 48)
    assert np.array_equal(nodule.hu, small_chest((4, 1), nodule=True).hu)
    # The same chest without its nodule (same lungs, other noise): the nodule adds about 90 voxels
    # of solid tissue (60 HU) where the lung is (-850 HU).
    solid = (nodule.hu > -400).sum() - (small_chest((4, 1), nodule=False).hu > -400).sum()
    assert 40 < solid < 120

def test_synth_chests_refuses_bad_counts_and_other_cohorts_files(tmp_path):
    result = runner.invoke(app, ["synth-chests", "--out", str(tmp_path), "--per-class", "0"])
    assert result.exit_code != 0 and "--per-class must be at least 1" in str(result.exception)
    (tmp_path / "nodule").mkdir()
    (tmp_path / "nodule" / "mine.nii.gz").write_text("not a chest")
    result = runner.invoke(app, ["synth-chests", "--out", str(tmp_path), "--per-class", "1"])
    assert result.exit_code != 0 and "mine.nii.gz" in str(result.exception)
    assert not (tmp_path / "clear").exists()
