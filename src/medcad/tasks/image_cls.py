"""2D image classification by transfer learning: config -> data (split by patient) -> torchvision
backbone with a new head -> the shared fit loop -> test metrics; prediction and evaluation of a saved model.

A run folder holds ``config.yaml`` (resolved), ``split.json`` (image keys per split), ``model/``
(best weights as a medcad model folder: ``model.safetensors`` + ``model.json`` with class names and
preprocessing, plus ``split.json``), ``checkpoints/`` (for ``--resume``), ``history.csv`` /
``history.png``, ``tensorboard/`` and ``test_metrics.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from medcad.data.images import KERMANY_PATTERN, AugmentConfig, ImagePreprocessing, ImageRecord, ImageSplits
from medcad.errors import InputError, MedcadError
from medcad.training.config import EarlyStoppingConfig, FitConfig, OptimizerConfig, SchedulerConfig

MODEL_NAME = "torchvision"
SPLIT_FILE = "split.json"
TEST_METRICS = "test_metrics.json"


@dataclass(frozen=True)
class ImageDataConfig:
    """Where the images are, how they are split and what the network sees.

    Attributes:
        source: a folder (class folders, or train/ val/ test/ of class folders) or an ``.npz`` archive.
        patient_pattern: regular expression with a ``patient`` group, matched on file stems.
        fractions: train / val / test shares when medcad splits by patient.
        class_names: names of an archive's integer labels.
        split_file: reuse this splits file instead of making a split.
        image_size: network input (height, width).
        channels: 1 (greyscale) or 3 (RGB; what ImageNet weights expect).
        cache_scale: training images are decoded once and kept at this multiple of the input size
            (evaluation images at the input size; 0: no cache).
    """

    source: str = ""
    patient_pattern: str | None = KERMANY_PATTERN
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    class_names: tuple[str, ...] = ()
    split_file: str | None = None
    image_size: tuple[int, int] = (224, 224)
    channels: int = 3
    batch_size: int = 32
    workers: int = 0
    cache_scale: float = 1.25


@dataclass(frozen=True)
class BackboneConfig:
    """The torchvision backbone, its pretrained weights, freezing and head (see ``TorchvisionClassifier``)."""

    arch: str = "vgg16"
    weights: str | None = "DEFAULT"
    freeze: str = "features"
    head_hidden: int = 0
    dropout: float = 0.0


def _default_fit() -> FitConfig:
    return FitConfig(epochs=30, optimizer=OptimizerConfig(name="adam", lr=1e-3),
                     scheduler=SchedulerConfig(name="plateau", factor=0.1, patience=3),
                     early_stopping=EarlyStoppingConfig(patience=8), monitor="val_loss")


@dataclass(frozen=True)
class ImageClsConfig:
    """Everything ``medcad train image-cls`` uses; loadable from YAML, saved with the run.

    ``label_smoothing`` softens the cross-entropy targets; ``mixup_alpha`` > 0 trains on mixes of
    image pairs (:mod:`medcad.training.mixup`); ``tta`` averages the predictions of each image and
    its horizontal mirror at evaluation.
    """

    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)
    fit: FitConfig = field(default_factory=_default_fit)
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    tta: bool = False


@dataclass(frozen=True)
class ImageEvaluation:
    """Predictions on a set of images with their labels, and the metrics computed from them.

    Attributes:
        probabilities: (n, n_classes) class probabilities.
        report: :class:`medcad.metrics.classification.MulticlassReport` (accuracy, per-class recall,
            confusion with rows = truth, top-k).
        precision: per-class precision (a class never predicted has precision 0).
        auc: ROC AUC of the second class (two-class problems), else None.
    """

    class_names: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray
    records: tuple[ImageRecord, ...]
    report: object
    precision: tuple[float, ...]
    auc: float | None

    def to_dict(self) -> dict:
        report = self.report
        return {"images": int(len(self.labels)), "accuracy": report.accuracy, "auc": self.auc,
                "macro_f1": report.macro_f1,
                "per_class": {name: {"recall": report.per_class_accuracy[i], "precision": self.precision[i],
                                     "images": int(sum(report.confusion[i]))}
                              for i, name in enumerate(self.class_names)},
                "confusion": [list(row) for row in report.confusion],
                "top_k_accuracy": {str(k): v for k, v in report.top_k_accuracy.items()}}


@dataclass(frozen=True, eq=False)
class LoadedClassifier:
    """A saved image classifier ready to predict: network (eval mode), class names, preprocessing."""

    model: object
    class_names: tuple[str, ...]
    preprocessing: ImagePreprocessing
    folder: Path
    tta: bool = False


@dataclass(frozen=True)
class ImagePrediction:
    """The top-k classes of one image, most probable first, as (class name, probability) pairs."""

    path: str
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True, eq=False)
class TrainedImageClassifier:
    """What a training run produced: the fit result, the data split, the parameter counts and test metrics."""

    fit: object
    splits: ImageSplits
    parameters: object
    test: ImageEvaluation | None
    run_dir: Path | None


def validate_config(config: ImageClsConfig) -> ImageClsConfig:
    from medcad.training.config import validate_fit_config

    validate_fit_config(config.fit)
    if config.data.channels not in (1, 3):
        raise MedcadError(f"channels must be 1 or 3, got {config.data.channels}")
    if any(s < 8 for s in config.data.image_size):
        raise MedcadError(f"image size {config.data.image_size} is too small (at least 8 x 8)")
    if abs(sum(config.data.fractions) - 1) > 1e-6:
        raise MedcadError(f"split fractions must sum to 1, got {config.data.fractions}")
    if config.mixup_alpha < 0:
        raise MedcadError(f"mixup alpha must be >= 0, got {config.mixup_alpha}")
    return config


def load_splits(data: ImageDataConfig, seed: int) -> ImageSplits:
    """The images and their split as configured; a patient in two splits made by medcad is an error."""
    from medcad.data.images import load_image_splits

    splits = load_image_splits(data.source, patient_pattern=data.patient_pattern,
                               fractions=dict(zip(("train", "val", "test"), data.fractions)), seed=seed,
                               class_names=data.class_names, split_file=data.split_file)
    leaks = splits.patient_leaks()
    if leaks and splits.made_by.startswith("medcad"):
        patient, names = next(iter(leaks.items()))
        raise MedcadError(f"patient {patient} is in splits {' and '.join(names)} (a bug in the patient split)")
    return splits


def make_loader(records: Sequence[ImageRecord], preprocessing: ImagePreprocessing, data: ImageDataConfig, *,
                augment: AugmentConfig | None = None, shuffle: bool = False):
    """A DataLoader of :class:`~medcad.data.images.ImageSample` (augmented when ``augment`` is given)."""
    import torch

    from medcad.data.images import ImageDataset, eval_transform, train_transform

    transform = train_transform(preprocessing, augment) if augment is not None else eval_transform(preprocessing)
    # Training crops from a slightly larger cached image; evaluation caches exactly what prediction computes.
    scale = data.cache_scale if augment is not None else 1.0
    cache = tuple(round(s * scale) for s in preprocessing.image_size) if data.cache_scale else None
    dataset = ImageDataset(records, transform, preprocessing.channels, cache)
    return torch.utils.data.DataLoader(dataset, batch_size=data.batch_size, shuffle=shuffle, num_workers=data.workers,
                                       drop_last=shuffle and len(records) > data.batch_size,
                                       persistent_workers=data.workers > 0)


def _description(config: ImageClsConfig, splits: ImageSplits, preprocessing: ImagePreprocessing):
    from medcad.models.store import ModelDescription
    from medcad.training.config import config_to_dict

    kwargs = {"arch": config.model.arch, "num_classes": len(splits.class_names),
              "in_channels": preprocessing.channels, "head_hidden": config.model.head_hidden,
              "dropout": config.model.dropout, "freeze": config.model.freeze}
    return ModelDescription(MODEL_NAME, kwargs, preprocessing=preprocessing.to_dict(),
                            provenance={"trained_by": "medcad train image-cls", "data": str(splits.root),
                                        "initial_weights": config.model.weights or "none"},
                            extra={"class_names": list(splits.class_names), "tta": config.tta,
                                   "config": config_to_dict(config)})


def build_classifier(config: ImageClsConfig, num_classes: int):
    """The torchvision classifier of the config (pretrained weights loaded, freezing applied)."""
    from medcad.models import create

    return create(MODEL_NAME, arch=config.model.arch, num_classes=num_classes, in_channels=config.data.channels,
                  head_hidden=config.model.head_hidden, dropout=config.model.dropout, freeze=config.model.freeze,
                  weights=config.model.weights)


def train_image_classifier(config: ImageClsConfig, run_dir: str | Path | None = None, *, resume: bool = False,
                           logger=None) -> TrainedImageClassifier:
    """Trains a classifier as configured, restores the best weights and evaluates them on the test split."""
    import torch

    from medcad.data.images import write_image_splits
    from medcad.models.torchvision_backbones import count_parameters
    from medcad.training.config import config_to_dict, save_config_yaml
    from medcad.training.loop import BEST_MODEL_DIR, fit, seed_everything
    from medcad.training.metrics import ClassifierMetrics
    from medcad.training.mixup import mixup_step

    validate_config(config)
    seed_everything(config.fit.seed)
    splits = load_splits(config.data, config.fit.seed)
    if not splits.splits.get("val"):
        raise MedcadError(f"{splits.root}: the validation split is empty (early stopping needs one)")
    preprocessing = ImagePreprocessing.imagenet(config.data.image_size, config.data.channels)
    model = build_classifier(config, len(splits.class_names))
    parameters = count_parameters(model)
    if logger is not None:
        logger.message(f"{config.model.arch}: {parameters}; trainable backbone blocks: "
                       f"{', '.join(model.trainable_blocks) or 'none (head only)'}")
        logger.message(f"data {splits.root}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.splits.items())
                       + f" images; split by {splits.made_by}")
    run_path = None if run_dir is None else Path(run_dir)
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        save_config_yaml(config, run_path / "config.yaml")
        write_image_splits(splits, run_path / SPLIT_FILE, config.fit.seed)
    loaders = {"train": make_loader(splits["train"], preprocessing, config.data, augment=config.augment, shuffle=True),
               "val": make_loader(splits["val"], preprocessing, config.data)}
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    description = _description(config, splits, preprocessing)
    result = fit(model, loaders["train"], loaders["val"], loss_fn, config.fit, run_dir=run_path,
                 metrics=ClassifierMetrics(), description=description, step_fn=mixup_step(config.mixup_alpha),
                 extra={"class_names": list(splits.class_names)}, config_dict=config_to_dict(config),
                 resume=resume, logger=logger)
    test = None
    if splits.splits.get("test"):
        loader = make_loader(splits["test"], preprocessing, config.data)
        test = evaluate_loader(result.model, loader, splits.class_names, tta=config.tta)
    if run_path is not None:
        from medcad.io.atomic import write_text_atomic

        write_image_splits(splits, run_path / BEST_MODEL_DIR / SPLIT_FILE, config.fit.seed)
        if test is not None:
            write_text_atomic(run_path / TEST_METRICS, json.dumps(test.to_dict(), indent=1) + "\n")
    return TrainedImageClassifier(result, splits, parameters, test, run_path)


def predict_probabilities(model, images, tta: bool = False):
    """Softmax probabilities of a batch of input tensors (mean with the mirrored images when ``tta``)."""
    import torch

    with torch.no_grad():
        probs = torch.softmax(model(images), dim=1)
        if tta:
            probs = (probs + torch.softmax(model(images.flip(-1)), dim=1)) / 2
    return probs


def evaluate_loader(model, loader, class_names: Sequence[str], tta: bool = False) -> ImageEvaluation:
    """Predicts every image of ``loader`` and computes accuracy, per-class recall / precision, confusion, AUC."""
    import torch

    from medcad.metrics.classification import multiclass_report, roc_curve

    device = next(model.parameters()).device
    model.eval()
    labels, probs = [], []
    for batch in loader:
        probs.append(predict_probabilities(model, batch.image.to(device), tta).cpu())
        labels.append(torch.as_tensor(batch.label))
    y = torch.cat(labels).numpy().astype(int)
    p = torch.cat(probs).numpy().astype(np.float64)
    report = multiclass_report(y, p, top_k=tuple(range(2, len(class_names))))
    confusion = np.asarray(report.confusion)
    predicted = confusion.sum(axis=0)
    precision = tuple(float(confusion[i, i] / predicted[i]) if predicted[i] else 0.0 for i in range(len(class_names)))
    auc = roc_curve(y, p[:, 1]).auc if len(class_names) == 2 and len(np.unique(y)) == 2 else None
    return ImageEvaluation(tuple(class_names), y, p, tuple(loader.dataset.records), report, precision, auc)


def load_image_classifier(folder: str | Path, device: str = "cpu") -> LoadedClassifier:
    """A model folder written by ``medcad train image-cls`` (a run folder, its ``model/``, or a checkpoint)."""
    from medcad.models.store import DESCRIPTION_NAME, load_model
    from medcad.training.loop import BEST_MODEL_DIR

    folder = Path(folder)
    if not (folder / DESCRIPTION_NAME).is_file() and (folder / BEST_MODEL_DIR / DESCRIPTION_NAME).is_file():
        folder = folder / BEST_MODEL_DIR  # a run folder: its best model
    model, description = load_model(folder, map_location=device)
    names = description.extra.get("class_names")
    if description.name != MODEL_NAME or not names or description.preprocessing.get("task") != "image-classification":
        raise InputError(folder, "not an image classifier made by medcad train image-cls")
    return LoadedClassifier(model, tuple(names), ImagePreprocessing.from_dict(description.preprocessing), folder,
                            bool(description.extra.get("tta", False)))


def predict_files(classifier: LoadedClassifier, paths: Sequence[str | Path], top_k: int = 4,
                  tta: bool = False) -> list[ImagePrediction]:
    """Top-k classes with probabilities for each image file."""
    import torch

    from medcad.data.images import eval_transform, read_image

    transform = eval_transform(classifier.preprocessing)
    k = max(1, min(top_k, len(classifier.class_names)))
    predictions = []
    for path in paths:
        image = transform(read_image(path, classifier.preprocessing.channels)).unsqueeze(0)
        probs = predict_probabilities(classifier.model, image.to(next(classifier.model.parameters()).device), tta)[0]
        values, indices = torch.topk(probs.cpu(), k)
        predictions.append(ImagePrediction(str(path), tuple((classifier.class_names[int(i)], float(v))
                                                            for v, i in zip(values, indices))))
    return predictions


def evaluation_records(classifier: LoadedClassifier, source: str | Path, split: str = "test",
                       split_file: str | Path | None = None, patient_pattern: str | None = KERMANY_PATTERN,
                       class_names: Sequence[str] = ()) -> tuple[ImageRecord, ...]:
    """The images of ``source`` to evaluate, with labels re-indexed to the classifier's classes.

    A folder of class folders is split as in training: by ``split_file`` or, by default, the
    ``split.json`` saved in the model folder. ``split="all"`` takes every image of ``source``.
    """
    from medcad.data.images import load_image_splits

    saved = classifier.folder / SPLIT_FILE
    root = Path(source)
    pool = root.is_dir() and not any((root / name).is_dir() for name in ("train", "val", "test"))
    if split_file is None and pool and split != "all" and saved.is_file():
        split_file = saved
    if split == "all" and pool:
        splits = load_image_splits(root, patient_pattern=patient_pattern, fractions={"all": 1.0},
                                   class_names=class_names)
    else:
        splits = load_image_splits(root, patient_pattern=patient_pattern, class_names=class_names,
                                   split_file=split_file)
    records = [r for records in splits.splits.values() for r in records] if split == "all" else list(splits[split])
    index = {name: i for i, name in enumerate(classifier.class_names)}
    unknown = sorted({splits.class_names[r.label] for r in records} - set(index))
    if unknown and (class_names or root.is_dir()):
        raise InputError(root, f"classes {', '.join(unknown)} are not classes of the model "
                               f"({', '.join(classifier.class_names)})")
    if unknown:  # an archive without names: its integer labels are the model's class indices
        return tuple(records)
    return tuple(replace(r, label=index[splits.class_names[r.label]]) for r in records)


def evaluate_records(classifier: LoadedClassifier, records: Sequence[ImageRecord], batch_size: int = 32,
                     tta: bool = False) -> ImageEvaluation:
    """Evaluates a loaded classifier on labelled records."""
    data = ImageDataConfig(batch_size=batch_size, cache_scale=0)
    loader = make_loader(records, classifier.preprocessing, data)
    return evaluate_loader(classifier.model, loader, classifier.class_names, tta)


def config_with_overrides(config_file: str | Path | None, overrides: Mapping[str, object]) -> ImageClsConfig:
    """Defaults <- YAML file <- command-line overrides (dotted keys; None means "not given")."""
    from medcad.training.config import apply_overrides, load_config

    config = load_config(ImageClsConfig, config_file) if config_file else ImageClsConfig()
    return validate_config(apply_overrides(config, overrides))
