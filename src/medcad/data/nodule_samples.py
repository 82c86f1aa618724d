"""Training samples of the nodule CAD: candidate records, crop datasets, the class-balancing sampler.

- :func:`load_candidate_records` reads a LUNA16-layout folder's tables into typed
  :class:`CandidateRecord` s (reference nodules with diameter and malignancy; class-0 candidates).
- :class:`CropDataset` cuts 3D crops (32 x 48 x 48 by default, HU clamped to [-1000, 1000]) from
  the scan cache for the nodule and malignancy classifiers; labels are given by the task.
- :class:`SegmentationCropDataset` / :class:`SegmentationSliceDataset`: the book's segmentation
  samples (7 context slices; 96 x 96 around a nodule then a random 64 x 64 sub-crop for training;
  whole slices for validation) with masks grown from the annotations by HU (:func:`annotation_boxes`).
- :class:`BalancedSampler`: a positive : negative (or per-class) ratio by sampling, not by a fake
  dataset length; seeded per epoch and split across DDP ranks.

Samples are NamedTuples so the default DataLoader collation batches them field by field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medcad.data.cache import CachedScan, ScanCache, crop_inside
from medcad.errors import InputError

#: The book's HU clamp for nodule crops and U-Net inputs.
HU_CLAMP = (-1000.0, 1000.0)
#: The book's threshold for growing a nodule's mask from its centre.
MASK_THRESHOLD_HU = -700.0
CROP_IRC = (32, 48, 48)


@dataclass(frozen=True)
class CandidateRecord:
    """A place in a scan the classifiers learn from.

    Attributes:
        series_uid: the scan.
        center_xyz: world mm (LPS).
        is_nodule: a reference nodule (annotations) or a class-0 candidate.
        diameter_mm: the nodule's diameter (0 for non-nodules).
        is_malignant: consensus malignancy of a nodule (None when unknown or not a nodule).
    """

    series_uid: str
    center_xyz: tuple[float, float, float]
    is_nodule: bool
    diameter_mm: float = 0.0
    is_malignant: bool | None = None


def load_candidate_records(data_dir: str | Path, series_uids: Iterable[str] | None = None) -> list[CandidateRecord]:
    """Nodules from ``annotations_with_malignancy.csv`` (else ``annotations.csv``) + class-0 rows of ``candidates.csv``."""
    from medcad.io.luna import read_annotations, read_candidates, read_malignancy

    root = Path(data_dir)
    wanted = None if series_uids is None else set(series_uids)
    keep = (lambda uid: True) if wanted is None else (lambda uid: uid in wanted)
    records: list[CandidateRecord] = []
    if (root / "annotations_with_malignancy.csv").is_file():
        for n in read_malignancy(root / "annotations_with_malignancy.csv"):
            if keep(n.series_uid):
                records.append(CandidateRecord(n.series_uid, n.center_xyz, True, n.diameter_mm, n.is_malignant))
    elif (root / "annotations.csv").is_file():
        records += [CandidateRecord(n.series_uid, n.center_xyz, True, n.diameter_mm)
                    for n in read_annotations(root / "annotations.csv") if keep(n.series_uid)]
    else:
        raise InputError(root, "no annotations.csv or annotations_with_malignancy.csv")
    candidates = next((root / n for n in ("candidates_V2.csv", "candidates.csv") if (root / n).is_file()), None)
    if candidates is None:
        raise InputError(root, "no candidates.csv (the non-nodule training samples)")
    records += [CandidateRecord(c.series_uid, c.center_xyz, False)
                for c in read_candidates(candidates) if not c.is_nodule and keep(c.series_uid)]
    return records


class CropSample(NamedTuple):
    """A classifier sample: ``crop`` (1, D, H, W) float32 clamped HU, ``label`` (int64), ``index`` in the dataset."""

    crop: torch.Tensor
    label: torch.Tensor
    index: int


class CropDataset(Dataset):
    """3D crops around candidate records, read from the scan cache on demand.

    Args:
        records: where to crop.
        labels: one class index per record (the task decides: nodule, malignancy, 3-way).
        cache: the scan cache the crops come from.
        crop_irc: crop shape (index, row, column).
    """

    def __init__(self, records: Sequence[CandidateRecord], labels: Sequence[int], cache: ScanCache,
                 crop_irc: tuple[int, int, int] = CROP_IRC, hu_clamp: tuple[float, float] = HU_CLAMP):
        if len(records) != len(labels):
            raise ValueError(f"{len(records)} records but {len(labels)} labels")
        self.records = list(records)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.cache = cache
        self.crop_irc = tuple(crop_irc)
        self.hu_clamp = hu_clamp

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> CropSample:
        record = self.records[index]
        scan = self.cache.open(record.series_uid)
        center_irc = scan.geometry.xyz_to_irc(np.asarray(record.center_xyz))
        crop, _ = scan.crop(center_irc, self.crop_irc)
        array = np.clip(crop.astype(np.float32), *self.hu_clamp)
        return CropSample(torch.from_numpy(array)[None], torch.tensor(self.labels[index]), index)


@dataclass(frozen=True)
class NoduleBox:
    """The book's annotation box: voxels from ``start_irc`` (included) to ``stop_irc`` (excluded)."""

    start_irc: tuple[int, int, int]
    stop_irc: tuple[int, int, int]


def annotation_boxes(hu: np.ndarray, centers_irc: np.ndarray, threshold_hu: float = MASK_THRESHOLD_HU) -> list[NoduleBox]:
    """The book's ``buildAnnotationMask`` boxes: from each centre, grow the radius along each axis
    (starting at 2) while both voxels at +-radius stay above ``threshold_hu``.

    The nodule mask is then ``inside a box and HU > threshold_hu`` (:func:`box_mask`).
    """
    boxes = []
    shape = hu.shape
    for center in np.rint(np.asarray(centers_irc, dtype=float)).astype(int).reshape(-1, 3):
        if np.any(center < 0) or np.any(center >= shape):
            continue
        radii = []
        for axis in range(3):
            radius = 2
            while True:
                low, high = center.copy(), center.copy()
                low[axis] -= radius
                high[axis] += radius
                if low[axis] < 0 or high[axis] >= shape[axis]:
                    radius -= 1  # the book stops one short when it runs off the volume
                    break
                if not (hu[tuple(low)] > threshold_hu and hu[tuple(high)] > threshold_hu):
                    break
                radius += 1
            radii.append(max(radius, 0))
        start = tuple(int(max(c - r, 0)) for c, r in zip(center, radii))
        stop = tuple(int(min(c + r + 1, n)) for c, r, n in zip(center, radii, shape))
        boxes.append(NoduleBox(start, stop))
    return boxes


def box_mask(hu_region: np.ndarray, region_start_irc: Sequence[int], boxes: Sequence[NoduleBox],
             threshold_hu: float = MASK_THRESHOLD_HU) -> np.ndarray:
    """The nodule mask of a region of the scan (``hu_region`` starting at ``region_start_irc``)."""
    inside = np.zeros(hu_region.shape, dtype=bool)
    start = np.asarray(region_start_irc)
    for box in boxes:
        low = np.maximum(np.asarray(box.start_irc) - start, 0)
        high = np.minimum(np.asarray(box.stop_irc) - start, hu_region.shape)
        if np.all(high > low):
            inside[tuple(slice(a, b) for a, b in zip(low, high))] = True
    return inside & (hu_region > threshold_hu)


class SegmentationSample(NamedTuple):
    """A segmentation sample: ``image`` (C, H, W) float32 clamped HU (C context slices), ``mask`` (1, H, W) float32."""

    image: torch.Tensor
    mask: torch.Tensor
    index: int


class _SegmentationData:
    """What both segmentation datasets share: scans, nodule boxes per scan, context slice cutting."""

    def __init__(self, cache: ScanCache, nodules: Sequence[CandidateRecord], context_slices: int):
        self.cache = cache
        self.context_slices = context_slices
        self.nodules_by_series: dict[str, list[CandidateRecord]] = {}
        for record in nodules:
            self.nodules_by_series.setdefault(record.series_uid, []).append(record)
        self._boxes: dict[str, list[NoduleBox]] = {}

    def centers_irc(self, scan: CachedScan) -> np.ndarray:
        points = [r.center_xyz for r in self.nodules_by_series.get(scan.series_uid, [])]
        return scan.geometry.xyz_to_irc(np.asarray(points).reshape(-1, 3)) if points else np.zeros((0, 3))

    def boxes(self, scan: CachedScan) -> list[NoduleBox]:
        if scan.series_uid not in self._boxes:
            self._boxes[scan.series_uid] = annotation_boxes(scan.hu, self.centers_irc(scan))
        return self._boxes[scan.series_uid]

    def sample(self, scan: CachedScan, slice_index: int, rows: slice, cols: slice, index: int) -> SegmentationSample:
        """Context slices (clamped at the volume ends, as the pipeline) and the centre slice's mask."""
        offsets = np.arange(-self.context_slices, self.context_slices + 1)
        indices = np.clip(slice_index + offsets, 0, scan.hu.shape[0] - 1)
        image = np.clip(scan.hu[indices, rows, cols].astype(np.float32), *HU_CLAMP)
        centre = scan.hu[slice_index:slice_index + 1, rows, cols]
        mask = box_mask(centre, (slice_index, rows.start or 0, cols.start or 0), self.boxes(scan))
        return SegmentationSample(torch.from_numpy(image), torch.from_numpy(mask.astype(np.float32)), index)


class SegmentationCropDataset(Dataset):
    """Training samples: per window centre, a 96 x 96 window on its slice, then a random 64 x 64 sub-crop.

    The centres are the nodules (the book) and, when given, other places such as the class-0
    candidates (vessels, airway walls, pleura): windows there show the U-Net what not to mark.
    Masks always come from the nodules, whatever the window's centre. The sub-crop offset is drawn
    from (seed, epoch, index): call :meth:`set_epoch` before each epoch for fresh but replayable crops.

    Args:
        nodules: the reference nodules of the scans (they make the masks).
        centres: the window centres (default: the nodules); item ``i`` is ``centres[i]``.
    """

    def __init__(self, cache: ScanCache, nodules: Sequence[CandidateRecord], context_slices: int = 3,
                 window: int = 96, crop: int = 64, seed: int = 0, centres: Sequence[CandidateRecord] | None = None):
        self.data = _SegmentationData(cache, nodules, context_slices)
        self.centres = list(nodules if centres is None else centres)
        self.window, self.crop, self.seed, self.epoch = window, crop, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, index: int) -> SegmentationSample:
        record = self.centres[index]
        scan = self.data.cache.open(record.series_uid)
        center = np.rint(scan.geometry.xyz_to_irc(np.asarray(record.center_xyz))).astype(int)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        _, rows, cols = scan.hu.shape
        starts = []
        for c, size in ((center[1], rows), (center[2], cols)):
            window = min(self.window, size)
            start = int(np.clip(c - window // 2, 0, size - window))
            starts.append(start + int(rng.integers(0, window - min(self.crop, window) + 1)))
        crop_rows, crop_cols = min(self.crop, rows), min(self.crop, cols)
        slice_index = int(np.clip(center[0], 0, scan.hu.shape[0] - 1))
        return self.data.sample(scan, slice_index, slice(starts[0], starts[0] + crop_rows),
                                slice(starts[1], starts[1] + crop_cols), index)


class SegmentationSliceDataset(Dataset):
    """Validation samples: whole slices (with context) of the given scans that hold nodule voxels."""

    def __init__(self, cache: ScanCache, nodules: Sequence[CandidateRecord], series_uids: Sequence[str],
                 context_slices: int = 3, max_slices_per_scan: int | None = None):
        self.data = _SegmentationData(cache, nodules, context_slices)
        self.slices: list[tuple[str, int]] = []
        for uid in series_uids:
            scan = cache.open(uid)
            wanted: set[int] = set()
            for box in self.data.boxes(scan):
                wanted.update(range(box.start_irc[0], box.stop_irc[0]))
            chosen = sorted(wanted)
            if max_slices_per_scan is not None:
                chosen = chosen[:max_slices_per_scan]
            self.slices += [(uid, s) for s in chosen]

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> SegmentationSample:
        uid, slice_index = self.slices[index]
        scan = self.data.cache.open(uid)
        return self.data.sample(scan, slice_index, slice(None), slice(None), index)


def ratio_fractions(negatives_per_positive: float) -> tuple[float, float]:
    """Class fractions (negative, positive) for the book's ``ratio_int``: one positive per N negatives."""
    if negatives_per_positive < 0:
        raise ValueError("the negative : positive ratio must be >= 0")
    positive = 1.0 / (1.0 + negatives_per_positive)
    return 1.0 - positive, positive


class BalancedSampler(Sampler[int]):
    """Draws each epoch's indices so that class ``k`` makes up ``fractions[k]`` of them.

    Each class's indices are walked in a fresh permutation (cycled when a class is smaller
    than its share), then the classes are interleaved in a seeded order. The epoch has
    ``num_samples`` draws (default: the dataset size); with ``world_size > 1`` rank ``r`` takes
    every ``world_size``-th draw starting at ``r`` (each rank the same count), like
    ``DistributedSampler``.

    Args:
        labels: class index per dataset item.
        fractions: share per class (default: equal shares); must sum to 1.
        seed: fixed seed, with :meth:`set_epoch` for a new order each epoch; None (default) draws
            each epoch's seed from torch's global generator, which the fit loop seeds per epoch,
            so every DDP rank draws the same order and a resumed epoch replays exactly.
    """

    def __init__(self, labels: Sequence[int], fractions: Sequence[float] | None = None,
                 num_samples: int | None = None, seed: int | None = None, rank: int = 0, world_size: int = 1):
        self.labels = np.asarray(labels, dtype=np.int64)
        classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.fractions = np.full(classes, 1.0 / max(classes, 1)) if fractions is None else np.asarray(fractions, float)
        if len(self.fractions) < classes or abs(self.fractions.sum() - 1) > 1e-6 or np.any(self.fractions < 0):
            raise ValueError(f"class fractions {self.fractions.tolist()} must cover {classes} classes and sum to 1")
        self.by_class = [np.flatnonzero(self.labels == k) for k in range(len(self.fractions))]
        for k, members in enumerate(self.by_class):
            if self.fractions[k] > 0 and len(members) == 0:
                raise ValueError(f"class {k} has a share of {self.fractions[k]:.2f} but no samples")
        self.num_samples = len(self.labels) if num_samples is None else int(num_samples)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self, seed: int) -> np.ndarray:
        """All ranks' draws of an epoch (length a multiple of ``world_size``)."""
        rng = np.random.default_rng([seed, self.epoch])
        total = -(-self.num_samples // self.world_size) * self.world_size
        counts = np.floor(self.fractions * total).astype(int)
        counts[np.argmax(self.fractions)] += total - counts.sum()
        drawn = []
        for k, count in enumerate(counts):
            members = self.by_class[k]
            if count == 0:
                continue
            cycles = -(-count // len(members))
            walk = np.concatenate([rng.permutation(members) for _ in range(cycles)])[:count]
            drawn.append(walk)
        indices = np.concatenate(drawn) if drawn else np.zeros(0, dtype=np.int64)
        return indices[rng.permutation(len(indices))]

    def __iter__(self) -> Iterator[int]:
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)))
        return iter(self.epoch_indices(seed)[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)
