"""What the three nodule-CAD training tasks share: the split file, the scan cache, loaders, the
classifier step (augmentation, label smoothing, mixup) and running ``fit`` under DDP or not.

One split for all three models (the book's leakage lesson): ``DATA/splits.json`` is made once by
:func:`medcad.data.splits.make_splits` (hash of each series UID) and read by every later run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from medcad.data.cache import ScanCache
from medcad.data.splits import SeriesSplits, make_splits, read_splits, write_splits
from medcad.errors import InputError
from medcad.training.distributed import DistContext, init_distributed, shutdown, wrap_model, device_for
from medcad.training.loop import StepOutput
from medcad.training.mixup import mixed_output
from medcad.transforms.augment import BookAugmentConfig, apply_params, draw_params

SPLITS_NAME = "splits.json"
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


@dataclass(frozen=True)
class CadRunConfig:
    """Settings every nodule-CAD training run has (YAML keys; CLI options override them).

    Attributes:
        data: LUNA16-layout folder (``subset*/<uid>.mhd`` and the CSV tables).
        out: run folder (checkpoints, best model in ``model/``, history, TensorBoard).
        splits: split file (default ``DATA/splits.json``, made on first use).
        cache_dir: scan cache folder (default ``DATA/.medcad-cache``).
        split_fractions: train / val / test shares when the split file is made.
        batch_size, workers: DataLoader settings.
        epoch_samples: draws per epoch (0: the training set's size).
        augment: the book's augmentation (flip, offset, scale, rotation, noise).
    """

    data: str = ""
    out: str = "runs/cad"
    splits: str = ""
    cache_dir: str = ""
    split_fractions: dict = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    batch_size: int = 32
    workers: int = 0
    epoch_samples: int = 0
    augment: bool = True


def prepare_splits(data_dir: str | Path, splits_path: str | Path | None, series_uids: Sequence[str],
                   fractions: Mapping[str, float] = DEFAULT_FRACTIONS, write: bool = True) -> tuple[SeriesSplits, Path]:
    """Reads the split file (default ``DATA/splits.json``), or makes and writes it on first use.

    Series of the data folder missing from an existing file are an error: a model trained on a
    split that does not cover the data would hide scans from every split.
    """
    path = Path(splits_path) if splits_path else Path(data_dir) / SPLITS_NAME
    if path.is_file():
        splits = read_splits(path)
        placed = {uid for uids in splits.splits.values() for uid in uids}
        missing = sorted(set(series_uids) - placed)
        if missing:
            raise InputError(path, f"{len(missing)} scan(s) of the data folder are in no split, e.g. {missing[0]}; "
                                   "delete the file to make a new split")
        return splits, path
    splits = make_splits(series_uids, fractions, exact=True)
    if write:
        write_splits(splits, path)
    return splits, path


def open_cache(data_dir: str | Path, cache_dir: str | Path | None = None) -> ScanCache:
    """The scan cache of a data folder (``DATA/.medcad-cache`` unless ``cache_dir``)."""
    return ScanCache.for_data(data_dir, cache_dir or None)


def make_loader(dataset, batch_size: int, sampler=None, workers: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` in the sampler's order (sequential without one)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                      persistent_workers=False, pin_memory=torch.cuda.is_available(), drop_last=False)


def classification_step(augment: BookAugmentConfig | None = None, mixup_alpha: float = 0.0) -> Callable:
    """A fit-loop step for :class:`~medcad.data.nodule_samples.CropSample` batches.

    In training mode the crops are augmented on the batch's device (parameters drawn from torch's
    global generator, which the fit loop seeds per epoch, so a resumed epoch replays exactly) and,
    with ``mixup_alpha > 0``, mixed pairwise (mixup: the loss is the same mix of both labels' losses).
    """

    def step(model: nn.Module, batch, loss_fn, device) -> StepOutput:
        crops, labels = batch.crop.to(device, non_blocking=True), batch.label.to(device, non_blocking=True)
        crops = crops.contiguous(memory_format=torch.channels_last_3d)  # 2-3x faster 3D convolutions on CPU
        if model.training and augment is not None:
            params = draw_params(crops.shape[0], tuple(crops.shape[2:]), augment, None)
            crops, _ = apply_params(crops, params, padding_mode=augment.padding_mode)
        return mixed_output(model, crops, labels, loss_fn, mixup_alpha)

    return step


def cross_entropy(label_smoothing: float = 0.0) -> Callable:
    """Cross-entropy on logits with optional label smoothing (picklable-free closure for the loop)."""

    def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)

    return loss


def run_fit(model: nn.Module, train_dataset, train_sampler, val_dataset, loss_fn, fit_config, *, out: str | Path,
            step_fn, metrics, description, batch_size: int, workers: int, extra: Mapping, config_dict: Mapping,
            resume: bool = False, context: DistContext | None = None, quiet: bool = False,
            callbacks: Sequence[Callable] = (), make_callbacks: Callable | None = None):
    """Runs :func:`medcad.training.loop.fit` on this rank: DDP-wrapped when distributed, output on rank 0 only.

    ``make_callbacks(logger)`` may build callbacks that need the run's logger (TensorBoard figures).
    Returns the fit result (the plain network, best weights loaded, in ``result.model``).
    """
    from dataclasses import replace

    from medcad.training.distributed import unwrap
    from medcad.training.logging import RunLogger
    from medcad.training.loop import fit

    context = context or init_distributed(fit_config.device)
    device = device_for(context, fit_config.device)
    fit_config = replace(fit_config, device=device)
    # Other ranks keep their own checkpoints (tiny next to the data) so that each can resume itself.
    run_dir = Path(out) if context.is_main else Path(out) / f".rank{context.rank}"
    logger = RunLogger(run_dir if context.is_main else None, tensorboard=fit_config.tensorboard and context.is_main,
                       quiet=quiet or not context.is_main)
    if hasattr(train_sampler, "rank"):
        train_sampler.rank, train_sampler.world_size = context.rank, context.world_size
    train_loader = make_loader(train_dataset, batch_size, train_sampler, workers)
    val_loader = make_loader(val_dataset, batch_size, None, workers) if val_dataset is not None and len(val_dataset) else None
    if any(p.ndim == 5 for p in model.parameters()):
        model.to(memory_format=torch.channels_last_3d)
    wrapped = wrap_model(model, context, device)
    all_callbacks = list(callbacks) + (list(make_callbacks(logger)) if make_callbacks and context.is_main else [])
    try:
        result = fit(wrapped, train_loader, val_loader, loss_fn, fit_config, run_dir=run_dir, metrics=metrics,
                     step_fn=step_fn, description=description, extra=extra, config_dict=config_dict,
                     resume=resume,
                     logger=logger, callbacks=all_callbacks)
    finally:
        shutdown(context)
    return replace(result, model=unwrap(result.model))

