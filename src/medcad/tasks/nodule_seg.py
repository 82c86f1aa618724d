"""Segmentation training (the book's chapter 13): the 2D U-Net on 7-slice context crops around nodules.

Training samples: per nodule of the training split, a 96 x 96 window on its centre slice (with 3
context slices each side), then a random 64 x 64 sub-crop cut on the batch (torch's generator,
seeded per epoch by the loop) and the book's 2D augmentation. Validation: whole slices of the
validation scans that hold nodule voxels. Masks: the book's ``buildAnnotationMask`` (boxes grown
from each centre while HU > -700, intersected with HU > -700).

Loss: the book's Dice loss plus 8 x the Dice loss of the prediction restricted to the mask, which
punishes false negatives (missed nodule voxels) 8 times harder than false positives: the
classifier downstream removes false positives, nothing brings a missed nodule back. Model
selection is recall-driven: by default F2 (recall weighted 4x precision; pure recall, the book's
choice, with ``fit.monitor = val_recall``, also picks a model that marks everything).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from medcad.tasks.cad_training import CadRunConfig
from medcad.training.config import EarlyStoppingConfig, FitConfig, OptimizerConfig, SchedulerConfig
from medcad.training.loop import StepOutput

#: The book's weight of the false-negative Dice term.
FALSE_NEGATIVE_WEIGHT = 8.0


@dataclass(frozen=True)
class SegmentationConfig(CadRunConfig):
    """Settings of a segmentation run (besides those of :class:`CadRunConfig`).

    Attributes:
        context_slices: slices each side of the centre (the book: 3 -> 7 channels).
        window, crop: the book's 96 x 96 window and random 64 x 64 training crop.
        width, depth: U-Net size (the book: 16 filters, depth 3).
        val_slices_per_scan: cap on validation slices per scan (0: every slice with nodule voxels).
        false_negative_weight: weight of the Dice term inside the mask (the book: 8); lower values
            trade recall for precision and converge in fewer epochs.
        prior: initial output probability everywhere (the output bias starts at its logit, as
            RetinaNet's prior; 0: PyTorch's default, 0.5). Nodule voxels are ~1 % of a crop; from
            0.5 Adam needs hundreds of steps just to move the bias down.
        bce_weight: weight of an added voxel-wise binary cross-entropy (0: the book's loss). Dice's
            gradient on a background voxel shrinks with the square of the predicted area, so a
            U-Net that starts by marking most of the slice (as the false-negative term makes it)
            sheds false positives only over many epochs; cross-entropy charges each one directly.
        negative_fraction: share of training windows centred on the training scans' class-0
            candidates (vessels, airway walls, pleura) instead of on nodules (0: the book, nodules
            only). Around nodules alone the U-Net sees few vessels and marks many of them; their
            components then swallow nearby nodules and push the centroid off the nodule.
    """

    out: str = "runs/segmentation"
    context_slices: int = 3
    window: int = 96
    crop: int = 64
    width: int = 16
    depth: int = 3
    batch_size: int = 16
    val_slices_per_scan: int = 0
    false_negative_weight: float = FALSE_NEGATIVE_WEIGHT
    bce_weight: float = 0.0
    prior: float = 0.0
    negative_fraction: float = 0.0
    fit: FitConfig = field(default_factory=lambda: FitConfig(
        epochs=10, monitor="val_f2", optimizer=OptimizerConfig("adam", 1e-3),
        scheduler=SchedulerConfig("none"), early_stopping=EarlyStoppingConfig(patience=0)))


def dice_loss(prediction: torch.Tensor, label: torch.Tensor, epsilon: float = 1.0) -> torch.Tensor:
    """The book's soft Dice loss per sample: 1 - (2 |p l| + e) / (|p| + |l| + e)."""
    dims = tuple(range(1, prediction.ndim))
    intersection = (prediction * label).sum(dim=dims)
    return 1 - (2 * intersection + epsilon) / (prediction.sum(dim=dims) + label.sum(dim=dims) + epsilon)


def book_segmentation_loss(prediction: torch.Tensor, label: torch.Tensor,
                           false_negative_weight: float = FALSE_NEGATIVE_WEIGHT, bce_weight: float = 0.0) -> torch.Tensor:
    """Dice loss + ``false_negative_weight`` x Dice loss of the prediction inside the mask (batch mean),
    + ``bce_weight`` x voxel-mean binary cross-entropy of the probabilities (0: the book's loss)."""
    prediction = prediction.float()
    loss = dice_loss(prediction, label).mean() + false_negative_weight * dice_loss(prediction * label, label).mean()
    if bce_weight:
        loss = loss + bce_weight * F.binary_cross_entropy(prediction.clamp(1e-6, 1 - 1e-6), label.float())
    return loss


class SegmentationMetrics:
    """Voxel counts at probability 0.5 -> recall, precision, F1 (Dice) and recall-weighted F2."""

    def reset(self) -> None:
        self.tp = self.fp = self.fn = 0.0

    def __init__(self):
        self.reset()

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        predicted, truth = outputs > 0.5, targets > 0.5
        self.tp += float((predicted & truth).sum())
        self.fp += float((predicted & ~truth).sum())
        self.fn += float((~predicted & truth).sum())

    def compute(self) -> Mapping[str, float]:
        recall = self.tp / max(self.tp + self.fn, 1.0)
        precision = self.tp / max(self.tp + self.fp, 1.0)

        def f_beta(beta: float) -> float:
            denominator = beta ** 2 * precision + recall
            return (1 + beta ** 2) * precision * recall / denominator if denominator else 0.0

        return {"recall": recall, "precision": precision, "f1": f_beta(1.0), "f2": f_beta(2.0)}


def set_output_prior(model, prior: float) -> None:
    """Starts the U-Net's output near probability ``prior`` everywhere: output weights scaled by 0.1, bias = logit(prior)."""
    import math

    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must lie in (0, 1), got {prior}")
    with torch.no_grad():
        model.out_conv.weight.mul_(0.1)
        model.out_conv.bias.fill_(math.log(prior / (1 - prior)))


def random_subcrops(images: torch.Tensor, masks: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``size`` x ``size`` window per sample (offsets from torch's global generator)."""
    height, width = images.shape[-2:]
    if height <= size and width <= size:
        return images, masks
    rows = torch.randint(0, height - size + 1, (images.shape[0],)).tolist()
    cols = torch.randint(0, width - size + 1, (images.shape[0],)).tolist()
    image_crops = torch.stack([im[:, r:r + size, c:c + size] for im, r, c in zip(images, rows, cols)])
    mask_crops = torch.stack([m[:, r:r + size, c:c + size] for m, r, c in zip(masks, rows, cols)])
    return image_crops, mask_crops


def segmentation_step(crop: int, augment):
    """The fit-loop step: sub-crop and augment in training, whole slices in validation."""
    from medcad.transforms.augment import apply_params, draw_params

    def step(model, batch, loss_fn, device) -> StepOutput:
        images, masks = batch.image.to(device, non_blocking=True), batch.mask.to(device, non_blocking=True)
        if model.training:
            images, masks = random_subcrops(images, masks, crop)
            if augment is not None:
                params = draw_params(images.shape[0], (1, *images.shape[2:]), augment, None)
                images, masks = apply_params(images, params, masks, augment.padding_mode)
        outputs = model(images)
        return StepOutput(loss_fn(outputs, masks), outputs, masks, int(images.shape[0]))

    return step


def segmentation_description(kwargs: dict, context_slices: int, provenance: dict):
    """The model.json of a segmenter: what ``medcad detect`` needs to feed it."""
    from medcad.data.nodule_samples import HU_CLAMP
    from medcad.models.store import ModelDescription

    preprocessing = {"kind": "slice_context", "context_slices": context_slices, "hu_clamp": list(HU_CLAMP),
                     "output": "sigmoid"}
    return ModelDescription("nodule_unet2d", kwargs, preprocessing, provenance)


def train_segmentation(config: SegmentationConfig, resume: bool = False, quiet: bool = False):
    """Trains ``nodule_unet2d`` on the training split's nodules; returns the fit result."""
    from medcad.data.nodule_samples import BalancedSampler, SegmentationCropDataset, SegmentationSliceDataset, \
        load_candidate_records
    from medcad.errors import InputError
    from medcad.models import create
    from medcad.tasks.cad_training import open_cache, prepare_splits, run_fit
    from medcad.training.config import config_to_dict
    from medcad.training.loop import seed_everything
    from medcad.transforms.augment import BookAugmentConfig

    cache = open_cache(config.data, config.cache_dir)
    splits, splits_path = prepare_splits(config.data, config.splits, list(cache.sources), config.split_fractions)
    records = [r for r in load_candidate_records(config.data) if r.series_uid in cache.sources]
    nodules = [r for r in records if r.is_nodule]
    train_series, val_series = set(splits["train"]), set(splits["val"])
    train_nodules = [r for r in nodules if r.series_uid in train_series]
    if not train_nodules:
        raise InputError(config.data, "no nodules in the training split")
    if not 0.0 <= config.negative_fraction < 1.0:
        raise InputError(config.data, f"negative_fraction must lie in [0, 1), got {config.negative_fraction}")
    negatives = [r for r in records if not r.is_nodule and r.series_uid in train_series] \
        if config.negative_fraction > 0 else []
    if config.negative_fraction > 0 and not negatives:
        raise InputError(config.data, "negative_fraction > 0 but the training split has no class-0 candidates")
    train = SegmentationCropDataset(cache, train_nodules, config.context_slices, config.window, config.crop,
                                    centres=train_nodules + negatives)
    val = SegmentationSliceDataset(cache, [r for r in nodules if r.series_uid in val_series],
                                   list(splits["val"]), config.context_slices, config.val_slices_per_scan or None)
    kwargs = {"in_channels": 2 * config.context_slices + 1, "width": config.width, "depth": config.depth}
    seed_everything(config.fit.seed)
    model = create("nodule_unet2d", **kwargs)
    if config.prior:
        set_output_prior(model, config.prior)
    description = segmentation_description(kwargs, config.context_slices,
                                           {"source": "medcad train segmentation", "data": str(config.data)})
    labels = [0] * len(train_nodules) + [1] * len(negatives)
    fractions = (1.0 - config.negative_fraction, config.negative_fraction) if negatives else None
    sampler = BalancedSampler(labels, fractions, config.epoch_samples or len(train_nodules))
    augment = BookAugmentConfig.segmentation() if config.augment else None
    weight, bce_weight = config.false_negative_weight, config.bce_weight

    def loss_fn(prediction, label):
        return book_segmentation_loss(prediction, label, weight, bce_weight)

    return run_fit(model, train, sampler, val, loss_fn, config.fit, out=config.out,
                   step_fn=segmentation_step(config.crop, augment), metrics=SegmentationMetrics(),
                   description=description, batch_size=config.batch_size, workers=config.workers,
                   extra={"splits_file": str(splits_path), "train_nodules": len(train_nodules),
                          "train_negative_centres": len(negatives), "val_slices": len(val)},
                   config_dict=config_to_dict(config), resume=resume, quiet=quiet)
