"""Typed configs: YAML in, checked keys and types, dotted overrides, plain data out."""

from __future__ import annotations

import pytest

from medcad.errors import InputError
from medcad.training.config import (
    FitConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config_yaml,
    validate_fit_config,
)


def test_yaml_round_trip_keeps_nested_values(tmp_path):
    path = tmp_path / "fit.yaml"
    path.write_text("epochs: 7\noptimizer:\n  name: sgd\n  lr: 0.05\nscheduler: {name: cosine, warmup_epochs: 1}\n"
                    "grad_clip_norm: 2\n")
    config = load_config(FitConfig, path)
    assert config.epochs == 7 and config.optimizer.name == "sgd" and config.optimizer.lr == 0.05
    assert config.scheduler.name == "cosine" and config.scheduler.warmup_epochs == 1.0
    assert config.grad_clip_norm == 2.0 and isinstance(config.grad_clip_norm, float)
    assert config.early_stopping.patience == FitConfig().early_stopping.patience  # default kept
    saved = save_config_yaml(config, tmp_path / "saved.yaml")
    assert load_config(FitConfig, saved) == config
    assert config_from_dict(FitConfig, config_to_dict(config)) == config


@pytest.mark.parametrize("text, key", [("epoch: 3\n", "epoch"), ("optimizer: {lr: fast}\n", "optimizer.lr"),
                                       ("amp: 1\n", "amp"), ("optimizer: {nme: adam}\n", "optimizer.nme")])
def test_bad_keys_and_values_name_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as error:
        load_config(FitConfig, path)
    assert str(path) in str(error.value) and repr(key) in str(error.value)


def test_overrides_replace_leaves_and_skip_none():
    config = apply_overrides(FitConfig(), {"optimizer.lr": 0.1, "epochs": 3, "ema_decay": None,
                                           "early_stopping.patience": 0})
    assert config.optimizer.lr == 0.1 and config.epochs == 3 and config.ema_decay is None
    assert config.early_stopping.patience == 0
    assert config.optimizer.name == FitConfig().optimizer.name
    with pytest.raises(InputError, match="unknown config key 'optimiser'"):
        apply_overrides(FitConfig(), {"optimiser.lr": 0.1})


def test_validation_rejects_unknown_names():
    with pytest.raises(InputError, match="optimizer.name"):
        validate_fit_config(apply_overrides(FitConfig(), {"optimizer.name": "lbfgs"}))
    assert FitConfig(monitor="val_accuracy").monitor_mode() == "max"
    assert FitConfig(monitor="val_loss").monitor_mode() == "min"
