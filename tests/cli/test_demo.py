"""``medcad demo``: the main job end to end on a tiny budget (slow: trains three models)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from medcad.cli import _register, app
from medcad.data.splits import find_leaks, read_splits

_register()


@pytest.mark.slow
def test_demo_trains_detects_and_reports_froc(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--scans", "12", "--epochs-scale", "0.1"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    match = re.fullmatch(r"FROC sensitivity at 4 FP/scan: (\d\.\d\d) \(CPM: (\d\.\d\d)\)", last)
    assert match, last
    document = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    at_four = document["froc"]["sensitivity"][list(document["froc"]["fp_rates"]).index(4.0)]
    assert match.group(1) == f"{at_four:.2f}"
    splits = read_splits(tmp_path / "cohort" / "splits.json")
    assert find_leaks(splits.splits) == () and all(splits.splits.values())
    # detect ran on exactly the held-out test scans
    assert {p.stem for p in (tmp_path / "findings").glob("*.json")} == set(splits["test"])
    for role in ("segmentation", "nodule", "malignancy"):
        assert (tmp_path / "models" / role / "model.safetensors").is_file()
    assert (tmp_path / "evaluation" / "froc.png").stat().st_size > 10_000
    # reports of the first test scans, linked from an index
    reports = sorted(p.name[: -len(".html")] for p in (tmp_path / "report").glob("*.html") if p.name != "index.html")
    assert reports == sorted(splits["test"])[:6]
    index = (tmp_path / "report" / "index.html").read_text()
    assert all(f'href="{uid}.html"' in index for uid in reports)


def test_the_documented_classifier_config_is_the_demos_recipe():
    """configs/demo-nodule-classifier.yaml (what the README's training commands use) resolves to the demo's settings."""
    from pathlib import Path

    import medcad.cli.demo as demo
    from medcad.cli.train_nodule import _resolve
    from medcad.tasks.nodule_cls import ClassifierConfig

    path = Path(__file__).resolve().parents[2] / "configs" / "demo-nodule-classifier.yaml"
    config = _resolve(ClassifierConfig, path, {"data": "cohort"})
    assert tuple(config.crop_irc) == demo.DEMO_CROP
    assert (config.fit.epochs, config.epoch_samples) == demo.NODULE_BUDGET
    assert config.fit.monitor == demo.NODULE_FIT["monitor"]
    assert config.fit.scheduler == demo.NODULE_FIT["scheduler"]
