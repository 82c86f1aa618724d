"""Volume classification: a volume table -> split by patient -> ResNet3D -> imbalance-aware loss -> fit.

Wires :mod:`medcad.data.volumes` (table, splits, dataset, balanced sampler),
:mod:`medcad.transforms.augment3d` (batched augmentation inside the training step, on the
training device), :mod:`medcad.models.resnet`, :mod:`medcad.losses` and the shared loop
:func:`medcad.training.loop.fit` (gradient clipping, ReduceLROnPlateau, early stopping, the best
model by a validation value). Metrics per epoch: accuracy and weighted precision / recall / F1
and AUC; at the end, the same per class on validation and test.

A run folder holds ``model/`` (the best weights + ``model.json`` with the class names and the
preprocessing, loadable by :func:`medcad.models.store.load_model`), ``checkpoints/``,
``history.csv``, ``history.png`` (2 x 2: loss, accuracy, F1, AUC), ``metrics.json``,
``split.csv`` and ``config.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from medcad.data.volume_cache import VolumePreprocessConfig
from medcad.data.volumes import DEFAULT_FRACTIONS, VolumeTable
from medcad.errors import MedcadError
from medcad.training.config import EarlyStoppingConfig, FitConfig, SchedulerConfig
from medcad.training.loop import StepOutput
from medcad.transforms.augment3d import Augment3dConfig

SAMPLERS = ("none", "balanced")
HISTORY_QUANTITIES = ("loss", "accuracy", "f1", "auc")


def _default_fit() -> FitConfig:
    return FitConfig(epochs=30, grad_clip_norm=1.0, scheduler=SchedulerConfig(name="plateau", factor=0.5, patience=3),
                     early_stopping=EarlyStoppingConfig(patience=8), monitor="val_loss")


@dataclass(frozen=True)
class VolumeClsConfig:
    """Everything a volume-classification run needs (saved as ``config.yaml`` in the run folder).

    Attributes:
        model: registry name (``resnet10_3d`` ... ``resnet50_3d``).
        width: channels of the first ResNet stage (64 as published; 16-32 train fast on a CPU).
        global_pool: ``avg`` (as published) or ``max`` (better when the label is one small finding
            anywhere in the volume, e.g. a nodule).
        batch_size: volumes per batch.
        loss: ``ce``, ``focal``, ``dice``, ``focal_dice`` or ``asymmetric`` (:func:`medcad.losses.make_loss`).
        class_weighting: ``none``, ``inverse`` or ``effective`` (from the training split's counts).
        beta: for ``effective``.
        gamma: focal strength.
        sampler: ``balanced`` oversamples rare classes (use instead of class weights).
        augment: run the 3D augmentation on training batches; ``augmentation`` says how.
        fractions: train / val / test fractions for rows without a split.
        workers: DataLoader worker processes.
    """

    model: str = "resnet10_3d"
    width: int = 64
    global_pool: str = "avg"
    batch_size: int = 4
    loss: str = "ce"
    class_weighting: str = "none"
    beta: float = 0.999
    gamma: float = 2.0
    sampler: str = "none"
    augment: bool = True
    augmentation: Augment3dConfig = field(default_factory=Augment3dConfig)
    preprocess: VolumePreprocessConfig = field(default_factory=VolumePreprocessConfig)
    fractions: dict = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    workers: int = 0
    fit: FitConfig = field(default_factory=_default_fit)


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall, F1 and support of one class."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class VolumeClsReport:
    """Classification quality on one split.

    ``auc``: ROC AUC of the positive class (two classes) or the macro one-vs-rest AUC; NaN where a
    class is missing from the split.
    """

    split: str
    count: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    auc: float
    per_class: tuple[ClassScores, ...]
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def classification_scores(labels: Sequence[int], probs: np.ndarray, class_names: Sequence[str],
                          split: str = "") -> VolumeClsReport:
    """Accuracy, support-weighted precision / recall / F1, per-class scores and AUC from probabilities."""
    from sklearn import metrics

    from medcad.metrics.classification import multiclass_report, roc_curve

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    n_classes = len(class_names)
    if len(y) == 0:
        raise MedcadError(f"no volumes to score in the {split or 'given'} split")
    classes = list(range(n_classes))
    predicted = p.argmax(axis=1)
    report = multiclass_report(y, p, top_k=())
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=classes, zero_division=0)
    weights = support / max(support.sum(), 1)
    present = np.unique(y)
    if len(present) < 2:
        auc = float("nan")
    elif n_classes == 2:
        auc = roc_curve(y, p[:, 1]).auc
    else:
        auc = float(metrics.roc_auc_score(y, p, multi_class="ovr", labels=classes)) if len(present) == n_classes \
            else float("nan")
    per_class = tuple(ClassScores(str(name), float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
                      for i, name in enumerate(class_names))
    return VolumeClsReport(split, len(y), report.accuracy, float(weights @ precision), float(weights @ recall),
                           float(weights @ f1), auc, per_class, report.confusion)


class VolumeClsMetrics:
    """The fit loop's metrics accumulator: accuracy, weighted precision / recall / F1, AUC per epoch."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        self._labels: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self._probs.append(torch.softmax(outputs.detach().float(), dim=1).cpu().numpy())
        self._labels.append(targets.detach().cpu().numpy())

    def compute(self) -> Mapping[str, float]:
        report = classification_scores(np.concatenate(self._labels), np.concatenate(self._probs), self.class_names)
        return {"accuracy": report.accuracy, "precision": report.precision, "recall": report.recall,
                "f1": report.f1, "auc": report.auc}


def volume_step(augmenter=None):
    """The fit loop's step for :class:`VolumeSample` batches; augments on the device while training."""

    def step(model, batch, loss_fn, device) -> StepOutput:
        image = batch.image.to(device, non_blocking=True)
        labels = batch.label.to(device, non_blocking=True)
        if augmenter is not None and model.training:
            image = augmenter(image).image
        outputs = model(image)
        return StepOutput(loss_fn(outputs, labels), outputs, labels, len(labels))

    return step


def prepare_table(table: VolumeTable, fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                  source: str | Path | None = None) -> VolumeTable:
    """The table with every row in a split (70 / 15 / 15 by patient where none is given), checked."""
    from medcad.data.volumes import check_splits, split_by_patient

    prepared = replace(table, records=split_by_patient(table.records, fractions))
    check_splits(prepared, source)
    return prepared


def _loader(dataset, batch_size: int, shuffle: bool, sampler=None, workers: int = 0):
    from torch.utils.data import DataLoader

    from medcad.data.volumes import collate_volumes

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=collate_volumes, pin_memory=torch.cuda.is_available())


@dataclass(frozen=True, eq=False)
class VolumeClsRun:
    """What training produced: the fit result and the reports of the best model on val / test."""

    fit: object
    reports: dict
    class_weights: tuple[float, ...] | None
    run_dir: Path | None


def build_model(config: VolumeClsConfig, num_classes: int):
    """The registry model for ``config`` with one input channel."""
    from medcad.models import create

    return create(config.model, **model_kwargs(config, num_classes))


def model_kwargs(config: VolumeClsConfig, num_classes: int) -> dict:
    kwargs = {"in_channels": 1, "num_classes": num_classes, "width": config.width}
    if config.global_pool != "avg":  # only when set: model.json of avg-pooled models stays as it was
        kwargs["global_pool"] = config.global_pool
    return kwargs


def predict_probabilities(model, loader, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(labels, softmax probabilities) of every volume of ``loader`` (eval mode, no gradients)."""
    model.eval()
    labels, probs = [], []
    with torch.no_grad():
        for batch in loader:
            outputs = model(batch.image.to(device))
            probs.append(torch.softmax(outputs.float(), dim=1).cpu().numpy())
            labels.append(batch.label.numpy())
    return np.concatenate(labels), np.concatenate(probs)


def train_volume_classifier(table: VolumeTable, config: VolumeClsConfig = VolumeClsConfig(),
                            run_dir: str | Path | None = None, logger=None,
                            source: str | Path | None = None) -> VolumeClsRun:
    """Splits, trains with the shared fit loop, and scores the best model on val and test."""
    from medcad.data.volume_cache import cached_config
    from medcad.data.volumes import VolumeDataset, balanced_sampler, class_counts, write_volume_table
    from medcad.losses import class_weights, make_loss
    from medcad.models.store import ModelDescription
    from medcad.training.config import config_to_dict, save_config_yaml, validate_fit_config
    from medcad.training.loop import fit, resolve_device
    from medcad.transforms.augment3d import RandomAugment3d

    if config.sampler not in SAMPLERS:
        raise MedcadError(f"unknown sampler {config.sampler!r}: use one of {', '.join(SAMPLERS)}")
    from medcad.models.resnet import GLOBAL_POOLS

    if config.global_pool not in GLOBAL_POOLS:
        raise MedcadError(f"unknown global_pool {config.global_pool!r}: use one of {', '.join(GLOBAL_POOLS)}")
    validate_fit_config(config.fit)
    table = prepare_table(table, config.fractions, source)
    cached = cached_config(r.path for r in table.records)
    if cached is not None:  # volumes from medcad preprocess: the model is described by their settings
        config = replace(config, preprocess=cached)
    names = table.class_names
    datasets = {split: VolumeDataset(table.subset(split), names, config.preprocess) for split in ("train", "val", "test")}
    counts = class_counts(table, "train")
    weight = None if config.class_weighting == "none" else class_weights(counts, config.class_weighting, config.beta)
    loss_fn = make_loss(config.loss, weight, config.gamma)
    sampler = balanced_sampler(datasets["train"].labels) if config.sampler == "balanced" else None
    train_loader = _loader(datasets["train"], config.batch_size, True, sampler, config.workers)
    val_loader = _loader(datasets["val"], config.batch_size, False, workers=config.workers)
    model = build_model(config, len(names))
    augmenter = RandomAugment3d(config.augmentation, seed=None) if config.augment else None
    description = ModelDescription(
        config.model, model_kwargs(config, len(names)), preprocessing=config.preprocess.to_dict(),
        provenance={"trained_by": "medcad train volume-cls"}, extra={"class_names": list(names)})
    run_path = None if run_dir is None else Path(run_dir)
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        save_config_yaml(config, run_path / "config.yaml")
        write_volume_table(table, run_path / "split.csv")
    result = fit(model, train_loader, val_loader, loss_fn.to(resolve_device(config.fit.device)), config.fit,
                 run_dir=run_path, metrics=VolumeClsMetrics(names), step_fn=volume_step(augmenter),
                 description=description, extra={"class_names": list(names)}, config_dict=config_to_dict(config),
                 logger=logger)
    device = next(result.model.parameters()).device
    reports = {}
    for split in ("val", "test"):
        if len(datasets[split]):
            labels, probs = predict_probabilities(result.model, _loader(datasets[split], config.batch_size, False), device)
            reports[split] = classification_scores(labels, probs, names, split)
    if run_path is not None:
        from medcad.io.atomic import write_text_atomic
        from medcad.training.logging import plot_history

        document = {"best_epoch": result.best_epoch, "monitor": config.fit.monitor, "best_score": result.best_score,
                    "class_names": list(names), "train_class_counts": counts,
                    "class_weights": None if weight is None else weight.tolist(),
                    "reports": {k: v.to_dict() for k, v in reports.items()}}
        write_text_atomic(run_path / "metrics.json", json.dumps(document, indent=2, allow_nan=True))
        if result.history:
            plot_history(result.history, run_path / "history.png", quantities=HISTORY_QUANTITIES, columns=2)
    return VolumeClsRun(result, reports, None if weight is None else tuple(weight.tolist()), run_path)


@dataclass(frozen=True)
class VolumePrediction:
    """Class probabilities of one volume."""

    path: str
    predicted: str
    probabilities: dict


def predict_volumes(model_dir: str | Path, paths: Sequence[str | Path], batch_size: int = 2,
                    device: str = "cpu") -> list[VolumePrediction]:
    """Loads a trained model folder and classifies scans or cached ``.safetensors`` volumes."""
    from medcad.data.volumes import VolumeDataset, VolumeRecord
    from medcad.models.store import load_model

    model, description = load_model(model_dir, map_location=device)
    names = tuple(description.extra.get("class_names") or ())
    if not names:
        raise MedcadError(f"{model_dir}: model.json names no classes (not a volume classifier?)")
    preprocess = VolumePreprocessConfig.from_dict(description.preprocessing)
    records = [VolumeRecord(str(p), "", None, str(p)) for p in paths]
    dataset = VolumeDataset(records, names, preprocess, in_memory=False)
    _, probs = predict_probabilities(model, _loader(dataset, batch_size, False), device)
    return [VolumePrediction(str(path), names[int(row.argmax())], {n: float(v) for n, v in zip(names, row)})
            for path, row in zip(paths, probs)]
