"""The training loop as small functions with explicit arguments, plus one ``fit``.

``train_one_epoch`` and ``evaluate`` take a model, a loader, a loss and (for training) an optimiser;
``fit`` wires them with the optimiser / schedule / early stopping / EMA / checkpoints of a
:class:`~medcad.training.config.FitConfig`. A batch goes through ``step_fn(model, batch, loss_fn,
device) -> StepOutput``; the default ``supervised_step`` handles ``(image, label)`` samples, other
tasks pass their own (segmentation masks, mixup, ...).

Reproducibility: every epoch starts by seeding torch / NumPy / ``random`` from ``(seed, epoch)``,
so an epoch depends only on the weights and optimiser state it starts from; ``fit(resume=True)``
reloads those from the last checkpoint and continues exactly as an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from medcad.errors import MedcadError
from medcad.training.config import FitConfig, OptimizerConfig, SchedulerConfig, config_to_dict

CHECKPOINTS_DIR = "checkpoints"
BEST_MODEL_DIR = "model"


@dataclass(frozen=True, eq=False)
class StepOutput:
    """One batch through the model: the mean loss (graph attached in training), outputs and targets."""

    loss: torch.Tensor
    outputs: torch.Tensor
    targets: torch.Tensor
    batch_size: int


@dataclass(frozen=True)
class EpochResult:
    """Mean loss, metrics, number of samples and seconds of one pass over a loader."""

    loss: float
    metrics: Mapping[str, float]
    num_samples: int
    seconds: float


@dataclass(frozen=True, eq=False)
class FitResult:
    """What ``fit`` did: per-epoch history rows, the best epoch and its score, and the model (best weights)."""

    history: tuple[dict, ...]
    best_epoch: int
    best_score: float | None
    stopped_early: bool
    model: nn.Module = field(repr=False)


class Metrics(Protocol):
    """An accumulator of batch outputs: ``reset``, ``update(outputs, targets)``, ``compute() -> {name: value}``."""

    def reset(self) -> None: ...
    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None: ...
    def compute(self) -> Mapping[str, float]: ...


StepFn = Callable[[nn.Module, Any, Callable, torch.device], StepOutput]


def move_to(obj: Any, device: torch.device) -> Any:
    """Moves tensors (also inside tuples, NamedTuples, lists and dicts) to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(move_to(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    if isinstance(obj, Mapping):
        return {k: move_to(v, device) for k, v in obj.items()}
    return obj


def unpack_batch(batch: Any) -> tuple[Any, torch.Tensor]:
    """(inputs, targets) of a batch: a sample with ``image`` and ``label`` fields, such a mapping, or a pair."""
    if hasattr(batch, "image") and hasattr(batch, "label"):
        return batch.image, batch.label
    if isinstance(batch, Mapping) and "image" in batch and "label" in batch:
        return batch["image"], batch["label"]
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise MedcadError(f"cannot find inputs and targets in a batch of type {type(batch).__name__}; "
                      "give fit a step_fn for this kind of batch")


def supervised_step(model: nn.Module, batch: Any, loss_fn: Callable, device: torch.device) -> StepOutput:
    """The default step: ``outputs = model(inputs)``, ``loss = loss_fn(outputs, targets)``."""
    inputs, targets = move_to(unpack_batch(batch), device)
    outputs = model(inputs)
    return StepOutput(loss_fn(outputs, targets), outputs, targets, len(targets))


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: depends on the run seed and the epoch only."""
    return (seed * 1_000_003 + epoch * 7919 + 1) % 2**31


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Mixed precision on CUDA only: bfloat16 where supported, else float16; None elsewhere."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def train_one_epoch(model: nn.Module, loader, loss_fn: Callable, optimizer: torch.optim.Optimizer, *,
                    device: torch.device | str = "cpu", step_fn: StepFn = supervised_step,
                    amp_dtype: torch.dtype | None = None, scaler=None, grad_clip_norm: float | None = None,
                    batch_scheduler=None, ema=None, metrics: Metrics | None = None,
                    progress: Callable[[], None] | None = None) -> EpochResult:
    """One pass over ``loader`` updating the weights; returns the mean training loss and metrics.

    Args:
        amp_dtype: autocast dtype (None: full precision); ``scaler`` a GradScaler for float16.
        grad_clip_norm: clip the global gradient norm to this value.
        batch_scheduler: a learning-rate scheduler stepped after every batch (cosine, one-cycle).
        ema: a ``torch.optim.swa_utils.AveragedModel`` updated after every step.
    """
    device = torch.device(device)
    model.train()
    if metrics is not None:
        metrics.reset()
    total, count, start = 0.0, 0, time.perf_counter()
    for batch in loader:
        with _autocast(device, amp_dtype):
            step = step_fn(model, batch, loss_fn, device)
        if not torch.isfinite(step.loss):
            raise MedcadError(f"training loss became {step.loss.item()} (try a lower learning rate)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(step.loss).backward()
            scaler.unscale_(optimizer)
        else:
            step.loss.backward()
        if grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total += step.loss.item() * step.batch_size
        count += step.batch_size
        if metrics is not None:
            metrics.update(step.outputs.detach().float(), step.targets)
        if progress is not None:
            progress()
    return EpochResult(total / max(count, 1), dict(metrics.compute()) if metrics is not None and count else {},
                       count, time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn: Callable, *, device: torch.device | str = "cpu",
             step_fn: StepFn = supervised_step, amp_dtype: torch.dtype | None = None,
             metrics: Metrics | None = None, progress: Callable[[], None] | None = None) -> EpochResult:
    """One pass over ``loader`` in eval mode without gradients; returns the mean loss and metrics."""
    device = torch.device(device)
    model.eval()
    if metrics is not None:
        metrics.reset()
    total, count, start = 0.0, 0, time.perf_counter()
    for batch in loader:
        with _autocast(device, amp_dtype):
            step = step_fn(model, batch, loss_fn, device)
        total += step.loss.item() * step.batch_size
        count += step.batch_size
        if metrics is not None:
            metrics.update(step.outputs.float(), step.targets)
        if progress is not None:
            progress()
    return EpochResult(total / max(count, 1), dict(metrics.compute()) if metrics is not None and count else {},
                       count, time.perf_counter() - start)


def build_optimizer(parameters, config: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over ``parameters`` (pass only the trainable ones)."""
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise MedcadError("no trainable parameters (everything is frozen)")
    if config.name == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    raise MedcadError(f"unknown optimizer {config.name!r} (choose adam, adamw or sgd)")


@dataclass(frozen=True)
class WarmupCosine:
    """Learning-rate factor per step: linear warm-up, then cosine decay to ``floor`` (picklable, no state)."""

    warmup_steps: int
    total_steps: int
    floor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class WarmupEma:
    """EMA update for ``AveragedModel``: decay ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates.

    The warm-up (as in timm's model EMA) keeps the first epochs' average from being dominated by
    the random initialisation; integer buffers (batch-norm counters) follow the model.
    """

    decay: float

    @torch.no_grad()
    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = int(num_averaged)
        rate = min(self.decay, (1 + n) / (10 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - rate)
        else:
            for target, source in zip(averaged, current):
                target.copy_(source)


def build_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig, epochs: int, steps_per_epoch: int,
                    mode: str = "min"):
    """The schedule named in ``config``; returns ``(scheduler or None, stepped_per_batch)``."""
    sched = torch.optim.lr_scheduler
    if config.name == "none":
        return None, False
    if config.name == "plateau":
        return sched.ReduceLROnPlateau(optimizer, mode=mode, factor=config.factor, patience=config.patience,
                                       min_lr=config.min_lr), False
    if config.name == "step":
        return sched.StepLR(optimizer, step_size=config.step_size, gamma=config.factor), False
    if config.name == "cosine":
        base_lr = optimizer.param_groups[0]["lr"]
        rule = WarmupCosine(round(config.warmup_epochs * steps_per_epoch), epochs * steps_per_epoch,
                            config.min_lr / base_lr if base_lr else 0.0)
        return sched.LambdaLR(optimizer, rule), True
    if config.name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], epochs=epochs,
                                steps_per_epoch=steps_per_epoch), True
    raise MedcadError(f"unknown scheduler {config.name!r} (choose none, plateau, step, cosine or onecycle)")


class EarlyStopping:
    """Tracks the best monitored value; ``should_stop`` after ``patience`` epochs without improvement."""

    def __init__(self, mode: str = "min", patience: int = 10, min_delta: float = 0.0):
        self.mode, self.patience, self.min_delta = mode, patience, min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def update(self, value: float) -> bool:
        """Records an epoch's value; True when it is a new best."""
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.bad_epochs = float(value), 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping) -> None:
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))


def _state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _save_best(folder: Path, module: nn.Module, description, metrics: Mapping) -> None:
    """The best weights as a model folder (``model.json`` when the task describes its model)."""
    from dataclasses import replace

    from medcad.models.store import WEIGHTS_NAME, save_model

    if description is not None:
        save_model(folder, module, replace(description, extra={**description.extra, "metrics": dict(metrics)}))
        return
    from safetensors.torch import save_file

    from medcad.io.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file({k: v.contiguous() for k, v in _state_copy(module).items()}, str(tmp))


def fit(model: nn.Module, train_loader, val_loader, loss_fn: Callable, config: FitConfig, *,
        run_dir: str | Path | None = None, metrics: Metrics | None = None, step_fn: StepFn = supervised_step,
        description=None, extra: Mapping | None = None, config_dict: Mapping | None = None, resume: bool = False,
        logger=None, callbacks: Sequence[Callable[[dict, nn.Module], None]] = ()) -> FitResult:
    """Trains ``model`` for up to ``config.epochs`` epochs; returns the history and the model with the best weights.

    Args:
        run_dir: where checkpoints (``checkpoints/epoch-NNNN``), the best model (``model/``) and the
            history go; None keeps everything in memory.
        metrics: accumulator used for both training and validation metrics (``train_*`` / ``val_*``).
        description: a :class:`medcad.models.store.ModelDescription` making ``model/`` and every
            checkpoint loadable with ``medcad.models.store.load_model``.
        extra: task data saved in every checkpoint (class names, the data split...).
        config_dict: the task's whole resolved config to save (default: ``config`` itself).
        resume: continue from the latest checkpoint in ``run_dir`` (an error when there is none).
        logger: a :class:`medcad.training.logging.RunLogger` (default: a quiet one writing the history).
        callbacks: called after each epoch with the history row and the evaluated model.
    """
    from medcad.training.checkpoint import TrainingState, load_checkpoint, save_checkpoint
    from medcad.training.logging import RunLogger

    run_path = None if run_dir is None else Path(run_dir)
    logger = logger or RunLogger(run_path, tensorboard=config.tensorboard and run_path is not None, quiet=True)
    device = resolve_device(config.device)
    model.to(device)
    mode = config.monitor_mode()
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    steps_per_epoch = max(len(train_loader), 1)
    scheduler, per_batch = build_scheduler(optimizer, config.scheduler, config.epochs, steps_per_epoch, mode)
    amp_dtype = _amp_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = None
    if config.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(model, multi_avg_fn=WarmupEma(config.ema_decay), use_buffers=True)
    stopper = EarlyStopping(mode, config.early_stopping.patience, config.early_stopping.min_delta)
    history: list[dict] = []
    best_epoch, best_state, start_epoch = 0, None, 0
    saved_config = dict(config_dict) if config_dict is not None else config_to_dict(config)

    if resume:
        if run_path is None:
            raise MedcadError("resume needs the run folder of the interrupted run")
        state = load_checkpoint(run_path / CHECKPOINTS_DIR)
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        if ema is not None and state.ema is not None:
            ema.load_state_dict(state.ema)
        stopper.load_state_dict(state.early_stopping)
        history, start_epoch, best_epoch = list(state.history), state.epoch, int(state.best.get("epoch", 0))
        best_file = run_path / BEST_MODEL_DIR
        if best_epoch and (best_file / "model.safetensors").is_file():
            from medcad.models.store import load_state_dict

            best_state = load_state_dict(best_file / "model.safetensors")
        logger.message(f"resumed from epoch {start_epoch}")

    started = time.perf_counter()
    stopped_early = stopper.should_stop
    for epoch in range(start_epoch, config.epochs if not stopped_early else start_epoch):
        seed_everything(epoch_seed(config.seed, epoch))
        with logger.progress(len(train_loader), f"epoch {epoch + 1}/{config.epochs} train") as advance:
            trained = train_one_epoch(model, train_loader, loss_fn, optimizer, device=device, step_fn=step_fn,
                                      amp_dtype=amp_dtype, scaler=scaler, grad_clip_norm=config.grad_clip_norm,
                                      batch_scheduler=scheduler if per_batch else None, ema=ema,
                                      metrics=metrics, progress=advance)
        evaluated_model = ema.module if ema is not None else model
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": trained.loss,
                               **{f"train_{k}": v for k, v in trained.metrics.items()}}
        seconds = trained.seconds
        if val_loader is not None:
            with logger.progress(len(val_loader), f"epoch {epoch + 1}/{config.epochs} val") as advance:
                validated = evaluate(evaluated_model, val_loader, loss_fn, device=device, step_fn=step_fn,
                                     amp_dtype=amp_dtype, metrics=metrics, progress=advance)
            row.update({"val_loss": validated.loss, **{f"val_{k}": v for k, v in validated.metrics.items()}})
            seconds += validated.seconds
        row["seconds"] = round(seconds, 1)
        if config.monitor not in row:
            raise MedcadError(f"monitored value {config.monitor!r} is not logged (logged: {', '.join(row)})")
        value = float(row[config.monitor])
        if stopper.update(value):
            best_epoch, best_state = epoch + 1, _state_copy(evaluated_model)
            if run_path is not None:
                _save_best(run_path / BEST_MODEL_DIR, evaluated_model, description,
                           {k: v for k, v in row.items() if k != "seconds"})
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(value)
        elif scheduler is not None and not per_batch:
            scheduler.step()
        history.append(row)
        logger.epoch_end(row, history)
        if run_path is not None:
            save_checkpoint(run_path / CHECKPOINTS_DIR, TrainingState(
                epoch=epoch + 1, model=model.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                scaler=scaler.state_dict() if scaler is not None else None,
                ema=ema.state_dict() if ema is not None else None, early_stopping=stopper.state_dict(),
                best={"epoch": best_epoch, "score": stopper.best, "monitor": config.monitor}, history=history,
                config=saved_config, extra=dict(extra or {})), description, keep=config.keep_checkpoints)
        for callback in callbacks:
            callback(row, evaluated_model)
        if stopper.should_stop:
            stopped_early = True
            logger.message(f"early stopping after epoch {epoch + 1}: best {config.monitor} "
                           f"{stopper.best:.4f} at epoch {best_epoch}")
            break
        if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes:
            logger.message(f"time budget of {config.max_minutes:g} min used up after epoch {epoch + 1}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    logger.close(history)
    return FitResult(tuple(history), best_epoch, stopper.best, stopped_early, model)
