"""Nodule classifier training (the book's chapters 11-12): nodule vs non-nodule on 32 x 48 x 48 crops.

Data: the reference nodules (positives) and the class-0 rows of ``candidates.csv`` (negatives) of
the training split, optionally with *hard negatives*: the segmenter's own candidates on training
scans that lie away from every nodule (the book's closing exercise). Balance by
:class:`~medcad.data.nodule_samples.BalancedSampler` (``negatives_per_positive``), the book's
augmentation on the batch, model selection by validation F1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcad.data.nodule_samples import CROP_IRC, HU_CLAMP, BalancedSampler, CandidateRecord, CropDataset, \
    load_candidate_records, ratio_fractions
from medcad.tasks.cad_training import CadRunConfig
from medcad.training.config import FitConfig, OptimizerConfig, SchedulerConfig, EarlyStoppingConfig


@dataclass(frozen=True)
class ClassifierConfig(CadRunConfig):
    """Settings of a nodule / malignancy classifier run (besides those of :class:`CadRunConfig`).

    Attributes:
        width, depth: ``nodule_cnn3d`` size (the book: 8, 4).
        crop_irc: crop shape (index, row, column); the book's 32 x 48 x 48 suits ~1 mm scans.
        negatives_per_positive: the book's ratio (1: balanced).
        label_smoothing: cross-entropy label smoothing.
        mixup_alpha: mixup Beta(alpha, alpha) (0: off).
        hard_negatives: findings folder / file of the segmenter's candidates on the training scans
            (``medcad detect --all-candidates``): those farther than a nodule's radius + 5 mm from
            every nodule join the negatives.
        fit: the loop's settings (epochs, optimiser, schedule, early stopping, seed, device).
    """

    out: str = "runs/nodule"
    width: int = 8
    depth: int = 4
    crop_irc: tuple[int, int, int] = CROP_IRC
    negatives_per_positive: float = 1.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    hard_negatives: str = ""
    fit: FitConfig = field(default_factory=lambda: FitConfig(
        epochs=10, monitor="val_f1", optimizer=OptimizerConfig("adam", 1e-3),
        scheduler=SchedulerConfig("plateau", factor=0.5, patience=3), early_stopping=EarlyStoppingConfig(patience=0)))


def crop_description(name: str, kwargs: dict, classes: list[str], provenance: dict):
    """The model.json of a crop classifier: what ``medcad detect`` needs to feed it."""
    from medcad.models.store import ModelDescription

    preprocessing = {"kind": "crop3d", "crop_irc": list(kwargs.get("input_shape", CROP_IRC)), "hu_clamp": list(HU_CLAMP), "output": "softmax",
                     "positive_class": len(classes) - 1}
    return ModelDescription(name, kwargs, preprocessing, provenance, {"classes": classes})


def book_init(model) -> None:
    """The book's ``LunaModel._init_weights``: Kaiming-normal (fan out, ReLU) weights, small normal biases.

    PyTorch's default initialisation shrinks the signal through the eight 3D convolutions until the
    logits barely differ (the loss sits at log 2 for epochs); this start trains at once.
    """
    import math

    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv3d, nn.Conv2d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight.data, a=0, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                _, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight.data)
                bound = 1 / math.sqrt(fan_out)
                nn.init.normal_(module.bias, -bound, bound)


def hard_negative_records(findings_path: str | Path, nodules: list[CandidateRecord], series: set[str],
                          clearance_mm: float = 5.0) -> list[CandidateRecord]:
    """Segmenter candidates on the given scans that lie away from every nodule, as negatives."""
    from medcad.findings import read_findings_by_series

    by_series: dict[str, list[CandidateRecord]] = {}
    for record in nodules:
        by_series.setdefault(record.series_uid, []).append(record)
    mined = []
    for uid, findings in read_findings_by_series(findings_path).items():
        if uid not in series:
            continue
        for finding in findings:
            point = np.asarray(finding.center_xyz)
            if all(np.linalg.norm(point - np.asarray(n.center_xyz)) > n.diameter_mm / 2 + clearance_mm
                   for n in by_series.get(uid, [])):
                mined.append(CandidateRecord(uid, tuple(map(float, finding.center_xyz)), False))
    return mined


def mine_segmenter_candidates(cache, segmentation_model: str | Path, series_uids, out_dir: str | Path,
                              threshold: float = 0.5, erosion: str = "3d", backend: str = "auto",
                              core_threshold: float | None = None) -> Path:
    """Runs the segmentation and grouping stages on scans of the cache and writes their candidates.

    One findings JSON per scan in ``out_dir`` (probabilities 0: not classified), the input of
    ``ClassifierConfig.hard_negatives``: the book's exercise of training the classifier on what
    the segmenter actually proposes, which candidates.csv's negatives do not resemble.
    """
    from medcad.findings import Finding, write_findings
    from medcad.pipeline.backends import load_predictor
    from medcad.pipeline.group import group
    from medcad.pipeline.segment import segment_masks

    predictor = load_predictor(segmentation_model, backend=backend)
    out = Path(out_dir)
    for uid in series_uids:
        scan = cache.open(uid)
        mask, core = segment_masks(scan.hu, predictor, threshold, core_threshold, 1, erosion)
        candidates = group(mask, scan.hu, scan.geometry, series_uid=uid, core=core)
        write_findings(out / f"{uid}.json", [Finding.from_candidate(c, 0.0) for c in candidates], series_uid=uid)
    return out


@dataclass(frozen=True, eq=False)
class ClassifierData:
    """Records and labels of the training and validation splits."""

    train: list[CandidateRecord]
    train_labels: list[int]
    val: list[CandidateRecord]
    val_labels: list[int]
    splits_path: Path
    cache: object


def nodule_data(config: ClassifierConfig, label_of, write_splits: bool = True) -> ClassifierData:
    """Splits, cache and records for a classifier; ``label_of(record)`` gives a class or None (dropped)."""
    from medcad.tasks.cad_training import open_cache, prepare_splits

    cache = open_cache(config.data, config.cache_dir)
    splits, splits_path = prepare_splits(config.data, config.splits, list(cache.sources), config.split_fractions,
                                         write=write_splits)
    records = [r for r in load_candidate_records(config.data) if r.series_uid in cache.sources]
    train_series, val_series = set(splits["train"]), set(splits["val"])
    train = [r for r in records if r.series_uid in train_series]
    if config.hard_negatives:
        train += hard_negative_records(config.hard_negatives, [r for r in train if r.is_nodule], train_series)
    val = [r for r in records if r.series_uid in val_series]
    picked = {}
    for name, part in (("train", train), ("val", val)):
        kept = [(r, label_of(r)) for r in part]
        kept = [(r, y) for r, y in kept if y is not None]
        picked[name] = ([r for r, _ in kept], [int(y) for _, y in kept])
    return ClassifierData(*picked["train"], *picked["val"], splits_path, cache)


def train_classifier(config: ClassifierConfig, model, data: ClassifierData, description, fractions, *,
                     resume: bool = False, quiet: bool = False, extra: dict | None = None):
    """Runs the classifier fit (shared by the nodule and malignancy tasks); returns the fit result."""
    from medcad.tasks.cad_training import classification_step, cross_entropy, run_fit
    from medcad.training.config import config_to_dict
    from medcad.training.tb_figures import ScoreRecorder, score_figures_callback
    from medcad.transforms.augment import BookAugmentConfig

    if not data.train or not data.val:
        from medcad.errors import InputError

        raise InputError(config.data, f"no {'training' if not data.train else 'validation'} samples for this "
                                      "task in the split (too few scans?)")
    sampler = BalancedSampler(data.train_labels, fractions, config.epoch_samples or None)
    recorder = ScoreRecorder()
    return run_fit(
        model, CropDataset(data.train, data.train_labels, data.cache, config.crop_irc), sampler,
        CropDataset(data.val, data.val_labels, data.cache, config.crop_irc), cross_entropy(config.label_smoothing), config.fit,
        out=config.out, step_fn=classification_step(BookAugmentConfig() if config.augment else None,
                                                     config.mixup_alpha),
        metrics=recorder, description=description, batch_size=config.batch_size, workers=config.workers,
        extra={"splits_file": str(data.splits_path), "train_samples": len(data.train),
               "val_samples": len(data.val), **(extra or {})},
        config_dict=config_to_dict(config), resume=resume, quiet=quiet,
        make_callbacks=lambda logger: [score_figures_callback(recorder, logger)])


def train_nodule_classifier(config: ClassifierConfig, resume: bool = False, quiet: bool = False):
    """Trains ``nodule_cnn3d`` to tell nodules (1) from other candidates (0); returns the fit result."""
    from medcad.models import create
    from medcad.training.loop import seed_everything

    data = nodule_data(config, lambda r: int(r.is_nodule))
    kwargs = {"width": config.width, "depth": config.depth, "num_classes": 2, "input_shape": list(config.crop_irc)}
    seed_everything(config.fit.seed)
    model = create("nodule_cnn3d", **kwargs)
    book_init(model)
    description = crop_description("nodule_cnn3d", kwargs, ["non-nodule", "nodule"],
                                   {"source": "medcad train nodule", "data": str(config.data)})
    return train_classifier(config, model, data, description, ratio_fractions(config.negatives_per_positive),
                            resume=resume, quiet=quiet)
