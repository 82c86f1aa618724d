"""L3 slice localisation: MIP data sets -> 2D U-Net confidence maps, trained with k-fold cross-validation.

Training (per view and per fold, through the shared :func:`medcad.training.loop.fit`): random
crops of the MIPs (most of them containing L3, some anywhere, with intensity and scale jitter)
and their confidence-map labels; BCE (or a squared-error heat-map loss) on the U-Net's logits;
Adam with a step schedule. The weights kept are those of the lowest training loss: the held-out
fold is never looked at until the fold's model is final, so its errors are honest estimates.

Folds are made by patient: each patient goes to one fold, in an order fixed by a hash of its
identifier, dealt round-robin so fold sizes differ by at most one.

Evaluation: every held-out case is located with its fold's model (row rule of
:mod:`medcad.tasks.l3_locate`); the error is the absolute difference in mm between the predicted
and the reference L3 z; mean / median / standard deviation per fold and overall, per view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from medcad.data.l3 import LabelConfig, L3Dataset, confidence_map
from medcad.data.splits import hash_unit
from medcad.errors import InputError
from medcad.training.config import EarlyStoppingConfig, FitConfig, OptimizerConfig, SchedulerConfig
from medcad.transforms.mip import VIEWS, MipConfig

__all__ = ["L3ModelConfig", "L3Config", "prepare_dataset", "patient_folds", "L3Sample", "L3CropDataset", "train_fold",
           "CaseResult", "evaluate_cases", "CrossValidation", "run_fold", "cross_validate"]

LOSSES = ("bce", "mse")
FOLDS_SALT = "medcad-l3-folds-v1"
#: Coverage jitter: mm kept above and below L3 (drawn uniformly).
_KEEP_ABOVE_MM = (60.0, 300.0)
_KEEP_BELOW_MM = (50.0, 250.0)
MODEL_NAME = "nodule_unet2d"  # the book's 2D U-Net, here with one input channel and more depth


@dataclass(frozen=True)
class L3ModelConfig:
    """The 2D U-Net (``nodule_unet2d`` from the registry).

    Attributes:
        in_channels: 1 (the MIP) or 3 (the MIP repeated, for networks made for RGB).
        depth: resolution levels; 5 gives a receptive field of about 180 px (360 mm at 2 mm pixels),
            enough to see the ribs or the pelvis that tell L3 from its neighbours.
        width: filters at the top level, doubling per level (the reference uses 64; 8 trains on CPU).
    """

    in_channels: int = 1
    depth: int = 5
    width: int = 8

    def kwargs(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": 1, "depth": self.depth, "width": self.width}


def _default_mip() -> MipConfig:
    return MipConfig(pixel_mm=2.0, size=(320, 192), sagittal_slab_mm=80.0)


def _default_fit() -> FitConfig:
    return FitConfig(epochs=30, optimizer=OptimizerConfig(name="adam", lr=2e-3),
                     scheduler=SchedulerConfig(name="step", step_size=15, factor=0.3),
                     early_stopping=EarlyStoppingConfig(patience=0), monitor="train_loss", amp=False,
                     keep_checkpoints=1, tensorboard=False)


@dataclass(frozen=True)
class L3Config:
    """Everything an L3 cross-validation needs besides the data.

    Attributes:
        views: which MIPs get a model ("frontal", "sagittal").
        folds: k of the k-fold cross-validation (by patient).
        mip: how MIPs are made from scans. The CPU default is 2 mm pixels, 320 x 192 (640 x 384 mm),
            an 80 mm sagittal slab; the reference's 1 mm, 512 x 512 is ``pixel_mm=1, size=[512, 512]``.
        label: the confidence map learnt.
        model: the U-Net.
        crop: training crop (rows, columns); evaluation uses the whole MIP.
        crops_per_case: training crops drawn from each case per epoch.
        batch_size: crops per batch.
        near_l3_fraction: share of crops that contain the L3 row (the rest anywhere).
        scale_jitter: crops are zoomed by a factor in [1 - s, 1 + s] (patient size).
        intensity_jitter: image values scaled by a factor in [1 - s, 1 + s].
        coverage_jitter: share of crops whose rows beyond a random 60-300 mm above / 50-250 mm below L3
            are blanked, as in scans of another range (so the network cannot count from the scan's end).
        loss: "bce" (binary cross-entropy on logits) or "mse" (heat-map regression on the sigmoid).
        reduce: column reduction of the row rule ("max" or "mean").
        low_confidence: peak scores below this are flagged at prediction time.
        fit: epochs, optimiser, schedule (shared training loop).
    """

    views: tuple[str, ...] = VIEWS
    folds: int = 5
    mip: MipConfig = field(default_factory=_default_mip)
    label: LabelConfig = field(default_factory=LabelConfig)
    model: L3ModelConfig = field(default_factory=L3ModelConfig)
    crop: tuple[int, int] = (128, 96)
    crops_per_case: int = 2
    batch_size: int = 8
    near_l3_fraction: float = 0.85
    scale_jitter: float = 0.1
    intensity_jitter: float = 0.15
    coverage_jitter: float = 0.5
    loss: str = "bce"
    reduce: str = "max"
    low_confidence: float = 0.3
    fit: FitConfig = field(default_factory=_default_fit)

    def __post_init__(self) -> None:
        if not self.views or any(v not in VIEWS for v in self.views):
            raise InputError(None, f"views must be among {', '.join(VIEWS)}, got {self.views}")
        if self.loss not in LOSSES:
            raise InputError(None, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.folds < 2:
            raise InputError(None, f"--folds must be at least 2, got {self.folds}")
        multiple = 2 ** (self.model.depth - 1)
        if any(c % multiple for c in self.crop):
            raise InputError(None, f"crop {self.crop} must be divisible by {multiple} for a depth-{self.model.depth} U-Net")


def prepare_dataset(source: str | Path, mip: MipConfig, cache: str | Path | None = None,
                    on_case: Callable | None = None) -> L3Dataset:
    """The L3 data set from a cohort folder (``medcad synth --abdomen``), an L3 MIP ``.npz`` written by
    :func:`medcad.data.l3.save_dataset`, or the reference data set's ``.npz``.

    A cohort's MIPs are written to ``cache`` and read from there next time when made the same way
    from the same cases.
    """
    from medcad.data.l3 import DATASET_FORMAT, build_dataset, cohort_cases, load_dataset, read_reference_npz, save_dataset

    path = Path(source)
    if path.is_dir():
        cases = cohort_cases(path)
        if cache is not None and Path(cache).is_file():
            cached = load_dataset(cache)
            if cached.config == mip and cached.names == tuple(c.name for c in cases) and np.array_equal(
                    cached.l3_z_mm, [c.l3_z_mm for c in cases]):
                return cached
        dataset = build_dataset(cases, mip, on_case=on_case)
        if cache is not None:
            save_dataset(dataset, cache)
        return dataset
    if not path.is_file():
        raise InputError(path, "no such cohort folder or .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            ours = "format" in data.files and str(data["format"]) == DATASET_FORMAT
    except (ValueError, OSError) as error:
        raise InputError(path, f"not an .npz file ({error})") from error
    return load_dataset(path) if ours else read_reference_npz(path, mip)


def patient_folds(patients: Sequence[str], folds: int, salt: str = FOLDS_SALT) -> np.ndarray:
    """The fold (0 .. folds-1) of each case: patients in hash order, dealt round-robin.

    Every case of a patient lands in the same fold; fold sizes (in patients) differ by at most one;
    the assignment depends only on the patient identifiers and the salt.
    """
    unique = sorted(set(patients), key=lambda p: (hash_unit(p, salt), p))
    if len(unique) < folds:
        raise InputError(None, f"{len(unique)} patients cannot make {folds} folds")
    fold_of = {patient: rank % folds for rank, patient in enumerate(unique)}
    return np.array([fold_of[p] for p in patients], dtype=np.int64)


class L3Sample(NamedTuple):
    """A training crop: image (channels, rows, columns) in [0, 1] and its label map (1, rows, columns)."""

    image: "torch.Tensor"  # noqa: F821 (torch is imported lazily)
    label: "torch.Tensor"  # noqa: F821


class L3CropDataset:
    """Random training crops of one view's MIPs with their confidence-map labels (a torch Dataset).

    Random draws use torch's generator, which the shared loop seeds per epoch (and DataLoader per
    worker), so a run is reproducible.
    """

    def __init__(self, images: np.ndarray, l3_rows: np.ndarray, spine_cols: np.ndarray, config: L3Config,
                 augment: bool = True, mirror: bool = False, pixel_mm: float = 1.0):
        self.pixel_mm = pixel_mm
        self.mirror = mirror  # left-right flips: realistic for frontal MIPs, not for sagittal ones
        self.images = np.asarray(images, dtype=np.float32)
        self.l3_rows = np.asarray(l3_rows, dtype=np.float64)
        self.spine_cols = np.asarray(spine_cols, dtype=np.float64)
        self.config = config
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images) * self.config.crops_per_case

    def _uniform(self, low: float, high: float) -> float:
        import torch

        return low + (high - low) * float(torch.rand(()))

    def __getitem__(self, index: int) -> L3Sample:
        import torch
        import torch.nn.functional as F

        case = index % len(self.images)
        config = self.config
        image, l3_row, spine_col = self.images[case], self.l3_rows[case], self.spine_cols[case]
        crop_rows, crop_cols = config.crop
        scale = self._uniform(1 - config.scale_jitter, 1 + config.scale_jitter) if self.augment else 1.0
        source_rows, source_cols = crop_rows / scale, crop_cols / scale  # image pixels the crop covers
        if self._uniform(0, 1) < config.near_l3_fraction:
            top = l3_row - self._uniform(0.15, 0.85) * source_rows
        else:
            top = self._uniform(0, max(image.shape[0] - source_rows, 0))
        left = spine_col - source_cols / 2 + self._uniform(-0.15, 0.15) * source_cols
        rows = top + (np.arange(crop_rows) + 0.5) / scale - 0.5
        cols = left + (np.arange(crop_cols) + 0.5) / scale - 0.5
        grid_y = torch.from_numpy(2 * (rows + 0.5) / image.shape[0] - 1).float()
        grid_x = torch.from_numpy(2 * (cols + 0.5) / image.shape[1] - 1).float()
        grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij")[::-1], dim=-1)[None]
        crop = F.grid_sample(torch.from_numpy(image)[None, None], grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)[0]
        if self.augment:
            crop = (crop * self._uniform(1 - config.intensity_jitter, 1 + config.intensity_jitter)).clamp(0, 1)
            if self._uniform(0, 1) < config.coverage_jitter:  # another scan range: cut rows far from L3
                above = self._uniform(*_KEEP_ABOVE_MM) / self.pixel_mm
                below = self._uniform(*_KEEP_BELOW_MM) / self.pixel_mm
                cut = torch.from_numpy((rows < l3_row - above) | (rows > l3_row + below))
                crop[:, cut, :] = 0.0
        label = confidence_map((crop_rows, crop_cols), (l3_row - top) * scale - 0.5 * (1 - scale),
                               config.label, spine_col=(spine_col - left) * scale - 0.5 * (1 - scale))
        label = torch.from_numpy(label)[None]
        if self.augment and self.mirror and float(torch.rand(())) < 0.5:
            crop, label = crop.flip(-1), label.flip(-1)
        return L3Sample(crop.expand(config.model.in_channels, -1, -1).contiguous(), label)


def _loss_fn(name: str) -> Callable:
    import torch.nn.functional as F

    if name == "bce":
        return F.binary_cross_entropy_with_logits
    return lambda logits, target: F.mse_loss(logits.sigmoid(), target)


def _logits_step(model, batch, loss_fn, device):
    """The shared loop's step for U-Nets with a ``logits`` method: loss on logits, not probabilities."""
    from medcad.training.loop import StepOutput, move_to

    image, label = move_to((batch.image, batch.label), device)
    logits = model.logits(image)
    return StepOutput(loss_fn(logits, label), logits, label, len(label))


def model_description(config: L3Config, view: str, mip_config, provenance: dict):
    """The ``model.json`` of an L3 fold model: architecture, MIP preprocessing, prediction rule."""
    from medcad.models.store import ModelDescription
    from medcad.training.config import config_to_dict

    return ModelDescription(MODEL_NAME, config.model.kwargs(),
                            preprocessing={"task": "l3", "view": view, "mip": mip_config.to_dict(),
                                           "channels": config.model.in_channels},
                            provenance=provenance,
                            extra={"prediction": {"reduce": config.reduce, "low_confidence": config.low_confidence},
                                   "label": config.label.to_dict(), "config": config_to_dict(config)})


def train_fold(dataset: L3Dataset, view: str, train_index: np.ndarray, config: L3Config,
               run_dir: str | Path | None = None, provenance: dict | None = None, logger=None):
    """Trains one view's U-Net on the cases at ``train_index``; returns the fit result (model inside)."""
    import torch

    from medcad.models import create
    from medcad.training.loop import fit, seed_everything

    seed_everything(config.fit.seed)
    subset = dataset.subset(train_index)
    spine_cols = np.array([g.spine_col for g in subset.geometries[view]])
    samples = L3CropDataset(subset.images[view], subset.l3_rows(view), spine_cols, config, mirror=view == "frontal",
                            pixel_mm=dataset.config.pixel_mm)
    loader = torch.utils.data.DataLoader(samples, batch_size=config.batch_size, shuffle=True, drop_last=False)
    model = create(MODEL_NAME, **config.model.kwargs())
    description = model_description(config, view, dataset.config, provenance or {})
    return fit(model, loader, None, _loss_fn(config.loss), config.fit, run_dir=run_dir, step_fn=_logits_step,
               description=description, logger=logger)


@dataclass(frozen=True)
class CaseResult:
    """One held-out case located by its fold's model.

    Attributes:
        name, patient: the case.
        view: the MIP used.
        fold: the fold that held it out.
        true_row, predicted_row: L3 rows in the MIP (sub-pixel).
        true_z_mm, predicted_z_mm: the same as world z.
        error_mm: |predicted - true| in mm.
        confidence: peak row score.
    """

    name: str
    patient: str
    view: str
    fold: int
    true_row: float
    predicted_row: float
    true_z_mm: float
    predicted_z_mm: float
    error_mm: float
    confidence: float


def evaluate_cases(dataset: L3Dataset, view: str, index: np.ndarray, networks: Sequence, config: L3Config,
                   fold: int) -> list[CaseResult]:
    """Locates the cases at ``index`` with ``networks`` (whole MIPs, row rule) and measures the error."""
    from medcad.tasks.l3_locate import estimate_row, predict_maps, row_scores

    subset = dataset.subset(index)
    maps = predict_maps(networks, subset.images[view], config.model.in_channels)
    results = []
    for i, geometry in enumerate(subset.geometries[view]):
        estimate = estimate_row(row_scores(maps[i], config.reduce), geometry.content_row_range())
        predicted_z = float(geometry.row_to_z_mm(estimate.row))
        true_z = float(subset.l3_z_mm[i])
        results.append(CaseResult(subset.names[i], subset.patients[i], view, fold, float(geometry.z_mm_to_row(true_z)),
                                  estimate.row, true_z, predicted_z, abs(predicted_z - true_z), estimate.confidence))
    return results


@dataclass(frozen=True, eq=False)
class CrossValidation:
    """What :func:`cross_validate` produced: per-case results, fold of each case, seconds per fold."""

    results: tuple[CaseResult, ...]
    folds: np.ndarray
    seconds: dict[str, float]


def run_fold(dataset: L3Dataset, view: str, fold: int, folds: np.ndarray, config: L3Config, out_dir: str | Path,
             threads: int | None = None) -> tuple[list[CaseResult], float]:
    """Trains ``view``'s model without fold ``fold``, then locates that fold's cases; returns (results, seconds)."""
    import time

    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    held_out = np.flatnonzero(folds == fold)
    provenance = {"trained_on": "L3 MIP data set", "view": view, "fold": fold, "folds": config.folds,
                  "held_out": [dataset.names[i] for i in held_out]}
    fitted = train_fold(dataset, view, np.flatnonzero(folds != fold), config, Path(out_dir) / view / f"fold-{fold}",
                        provenance)
    return evaluate_cases(dataset, view, held_out, [fitted.model], config, fold), time.perf_counter() - start


def cross_validate(dataset: L3Dataset, config: L3Config, out_dir: str | Path,
                   on_fold: Callable[[str, int, list[CaseResult], float], None] | None = None,
                   jobs: int = 1) -> CrossValidation:
    """k-fold cross-validation by patient for each view; fold models go to ``out_dir/<view>/fold-<k>/model``.

    With ``jobs > 1`` the (view, fold) runs go to that many worker processes (one torch thread each).
    """
    folds = patient_folds(dataset.patients, config.folds)
    runs = [(view, fold) for view in config.views for fold in range(config.folds)]
    done: dict[tuple[str, int], tuple[list[CaseResult], float]] = {}

    def record(run: tuple[str, int], outcome: tuple[list[CaseResult], float]) -> None:
        done[run] = outcome
        if on_fold is not None:
            on_fold(run[0], run[1], *outcome)

    if jobs <= 1:
        for view, fold in runs:
            record((view, fold), run_fold(dataset, view, fold, folds, config, out_dir))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_fold, dataset, view, fold, folds, config, out_dir, 1): (view, fold)
                       for view, fold in runs}
            for future in as_completed(futures):
                record(futures[future], future.result())
    results = [r for run in runs for r in done[run][0]]
    return CrossValidation(tuple(results), folds, {f"{view}/fold-{fold}": done[(view, fold)][1] for view, fold in runs})
