"""Typed training configuration: dataclasses that load from YAML / dicts and take dotted overrides.

A config is a tree of frozen dataclasses. ``config_from_dict`` checks every key and value against
the annotations (an unknown key or a wrong type names the key and the file), ``apply_overrides``
replaces leaves by dotted names (``{"optimizer.lr": 0.01}``, what CLI options become), and
``config_to_dict`` gives back plain data to save next to every checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from medcad.errors import InputError

C = TypeVar("C")

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau", "step", "cosine", "onecycle")


@dataclass(frozen=True)
class OptimizerConfig:
    """Which optimiser and its settings (``momentum`` / ``nesterov`` apply to SGD only)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule.

    ``plateau``: multiply by ``factor`` after ``patience`` epochs without improvement of the monitored
    value; ``step``: multiply by ``factor`` every ``step_size`` epochs; ``cosine``: linear warm-up for
    ``warmup_epochs`` then cosine decay to ``min_lr`` (stepped every batch); ``onecycle``: torch's
    OneCycleLR with ``lr`` as the peak.
    """

    name: str = "plateau"
    factor: float = 0.1
    patience: int = 3
    step_size: int = 10
    warmup_epochs: float = 0.0
    min_lr: float = 0.0


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when the monitored value has not improved by ``min_delta`` for ``patience`` epochs (0: never)."""

    patience: int = 10
    min_delta: float = 0.0


@dataclass(frozen=True)
class FitConfig:
    """Everything the fit loop needs besides the model, the data and the loss.

    ``monitor`` names a logged value (``val_loss``, ``val_accuracy``, ``val_auc``, ...); ``mode`` is
    ``min`` / ``max`` / ``auto`` (min for names containing "loss"). ``amp`` turns on mixed precision on
    CUDA devices only. ``ema_decay`` keeps an exponential moving average of the weights, evaluated and
    saved instead of the raw weights (a cheap form of checkpoint averaging). ``max_minutes`` stops
    after the epoch that crosses the time budget.
    """

    epochs: int = 30
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    monitor: str = "val_loss"
    mode: str = "auto"
    grad_clip_norm: float | None = None
    amp: bool = True
    ema_decay: float | None = None
    seed: int = 0
    device: str = "auto"
    keep_checkpoints: int = 2
    max_minutes: float | None = None
    tensorboard: bool = True

    def monitor_mode(self) -> str:
        """``min`` or ``max`` for the monitored value."""
        if self.mode in ("min", "max"):
            return self.mode
        return "min" if "loss" in self.monitor else "max"


def _check_choice(value: str, choices: tuple[str, ...], key: str, source) -> None:
    if value not in choices:
        raise InputError(source, f"config key {key!r}: {value!r} is not one of {', '.join(choices)}")


def validate_fit_config(config: FitConfig, source: str | Path | None = None) -> FitConfig:
    """Checks the names and ranges a ``FitConfig`` must respect; returns it unchanged."""
    _check_choice(config.optimizer.name, OPTIMIZERS, "optimizer.name", source)
    _check_choice(config.scheduler.name, SCHEDULERS, "scheduler.name", source)
    _check_choice(config.mode, ("auto", "min", "max"), "mode", source)
    if config.epochs < 1:
        raise InputError(source, f"config key 'epochs': must be >= 1, got {config.epochs}")
    if config.optimizer.lr <= 0:
        raise InputError(source, f"config key 'optimizer.lr': must be > 0, got {config.optimizer.lr}")
    if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
        raise InputError(source, f"config key 'ema_decay': must lie in (0, 1), got {config.ema_decay}")
    return config


def _convert(value: Any, annotation: Any, key: str, source) -> Any:
    """``value`` checked (and, for dataclasses / tuples, built) against a type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(value, option, key, source)
            except InputError as error:
                errors.append(error)
        raise errors[0]
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise InputError(source, f"config key {key!r}: expected a mapping, got {value!r}")
        return config_from_dict(annotation, value, source, prefix=f"{key}.")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise InputError(source, f"config key {key!r}: expected a list, got {value!r}")
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise InputError(source, f"config key {key!r}: expected {len(item_types)} items, got {len(value)}")
        return tuple(_convert(v, t, f"{key}[{i}]", source) for i, (v, t) in enumerate(zip(value, item_types)))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise InputError(source, f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(source, f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if annotation in (int, bool, str):
        if type(value) is not annotation:
            raise InputError(source, f"config key {key!r}: expected {annotation.__name__}, got {value!r}")
        return value
    if annotation is Any:
        return value
    raise TypeError(f"config key {key!r}: unsupported annotation {annotation!r}")


def config_from_dict(cls: type[C], data: Mapping[str, Any], source: str | Path | None = None,
                     prefix: str = "") -> C:
    """Builds the dataclass ``cls`` from plain data; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(source, f"unknown config key {prefix + unknown[0]!r} (known: {', '.join(sorted(names))})")
    values = {name: _convert(value, hints[name], f"{prefix}{name}", source) for name, value in data.items()}
    return cls(**values)


def config_to_dict(config) -> dict[str, Any]:
    """Plain data (dicts, lists, numbers, strings) for YAML / JSON."""
    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def load_config(cls: type[C], path: str | Path) -> C:
    """Reads a YAML file into the dataclass ``cls`` (missing keys keep their defaults)."""
    import yaml

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "config file not found")
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(source, f"not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(data, Mapping):
        raise InputError(source, "a config file must hold a mapping of keys to values")
    return config_from_dict(cls, data, source)


def apply_overrides(config: C, overrides: Mapping[str, Any], source: str | None = "command line") -> C:
    """A copy of ``config`` with dotted keys replaced (``None`` values are skipped: "not given")."""
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        head, _, rest = dotted.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            nested[head] = value
    if not nested:
        return config
    names = {f.name for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for name, value in nested.items():
        if name not in names:
            raise InputError(source, f"unknown config key {name!r} (known: {', '.join(sorted(names))})")
        current = getattr(config, name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[name] = apply_overrides(current, value, source)
        else:
            changes[name] = _convert(value, hints[name], name, source)
    return dataclasses.replace(config, **changes)


def save_config_yaml(config, path: str | Path) -> Path:
    """Writes the resolved config as YAML, atomically."""
    import yaml

    from medcad.io.atomic import write_text_atomic

    target = Path(path)
    write_text_atomic(target, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return target
