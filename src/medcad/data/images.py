"""2D image classification data: class folders or ``.npz`` arrays, split by patient, as typed samples.

Sources (:func:`load_image_splits`):

- a folder with ``train/``, ``val/`` (optional) and ``test/`` (optional), each holding one folder per
  class: the splits come with the data (a missing ``val/`` is carved out of ``train/`` by patient);
- a folder of class folders: medcad splits it by patient (:func:`medcad.data.splits.make_splits`
  with the patient as the group), so no patient has images in two splits;
- a MedMNIST-style ``.npz`` file (``train_images`` / ``train_labels``, ``val_*``, ``test_*``).

The patient of an image comes from its file name by a regular expression with a ``patient`` group;
the default matches Kermany's ``CLASS-PATIENT-N.jpeg``. A name that does not match is its own
patient. Images load as greyscale (1 channel) or RGB (3 channels) whatever their stored mode.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from medcad.errors import InputError, MedcadError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff")
#: Kermany et al. 2018 file names: ``CNV-1016042-1.jpeg`` (class, patient, image number).
KERMANY_PATTERN = r"^(?P<label>[A-Za-z]+)-(?P<patient>[^-]+)-(?P<index>\d+)$"
SPLIT_NAMES = ("train", "val", "test")
#: ImageNet channel statistics (torchvision's pretrained weights expect them); greyscale uses their mean.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image.

    Attributes:
        source: the image file, or the ``.npz`` archive holding it.
        label: class index.
        patient_id: the patient (from the file name), so splits keep patients together.
        key: a stable identifier: the path relative to the data root, or ``split/index`` in an archive.
        array_index: position in the archive's split array (None for a file).
        array_split: which of the archive's splits holds it (None for a file).
    """

    source: Path
    label: int
    patient_id: str
    key: str
    array_index: int | None = None
    array_split: str | None = None


@dataclass(frozen=True, eq=False)
class ImageSplits:
    """Records per split with the class names; ``made_by`` says where the split came from."""

    root: Path
    class_names: tuple[str, ...]
    splits: Mapping[str, tuple[ImageRecord, ...]]
    made_by: str = "data"
    unmatched_names: int = 0

    def __getitem__(self, name: str) -> tuple[ImageRecord, ...]:
        if name not in self.splits:
            raise MedcadError(f"{self.root}: no {name!r} split (there are {', '.join(self.splits)})")
        return self.splits[name]

    def patient_leaks(self) -> dict[str, tuple[str, ...]]:
        """Patients with images in more than one split: patient -> the splits."""
        from medcad.data.splits import find_leaks

        patients = {name: [r.patient_id for r in records] for name, records in self.splits.items()}
        return {leak.series_uid: leak.splits for leak in find_leaks(patients)}


class ImageSample(NamedTuple):
    """What an image data set yields: the image tensor (C, H, W) and its class index."""

    image: object
    label: int


def patient_of(path: str | Path, pattern: str | None = KERMANY_PATTERN) -> str | None:
    """The patient id in a file name (the ``patient`` group of ``pattern``); None when it does not match."""
    if not pattern:
        return None
    match = re.match(pattern, Path(path).stem)
    if match is None:
        return None
    if "patient" not in match.re.groupindex:
        raise MedcadError(f"patient pattern {pattern!r} has no (?P<patient>...) group")
    return match.group("patient")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


def _folder_records(root: Path, folder: Path, class_index: Mapping[str, int], pattern: str | None
                    ) -> tuple[list[ImageRecord], int]:
    """Records of one class-folder tree; also how many names the patient pattern did not match."""
    records, unmatched = [], 0
    for class_dir in _class_folders(folder):
        for path in _images_in(class_dir):
            key = path.relative_to(root).as_posix()
            patient = patient_of(path, pattern)
            unmatched += patient is None
            records.append(ImageRecord(path, class_index[class_dir.name], patient or key, key))
    return records, unmatched


def _split_by_patient(records: Sequence[ImageRecord], fractions: Mapping[str, float], seed: int
                      ) -> dict[str, tuple[ImageRecord, ...]]:
    from medcad.data.splits import make_splits

    made = make_splits([r.key for r in records], fractions, salt=f"medcad-images-{seed}",
                       group_of={r.key: r.patient_id for r in records})
    by_key = {r.key: r for r in records}
    return {name: tuple(by_key[k] for k in keys) for name, keys in made.splits.items()}


def _npz_splits(path: Path, class_names: Sequence[str]) -> ImageSplits:
    archive = _open_npz(path)
    splits = {}
    for name in SPLIT_NAMES:
        if f"{name}_images" not in archive:
            continue
        if f"{name}_labels" not in archive:
            raise InputError(path, f"has {name}_images but no {name}_labels")
        labels = np.asarray(archive[f"{name}_labels"]).reshape(-1).astype(int)
        splits[name] = tuple(ImageRecord(path, int(label), f"{name}/{i}", f"{name}/{i}", i, name)
                             for i, label in enumerate(labels))
    if "train" not in splits:
        raise InputError(path, "an image archive needs train_images and train_labels arrays")
    n_classes = 1 + max(r.label for records in splits.values() for r in records)
    names = tuple(class_names) or tuple(str(i) for i in range(n_classes))
    if len(names) < n_classes:
        raise InputError(path, f"labels go up to {n_classes - 1} but only {len(names)} class names were given")
    return ImageSplits(path, names, splits, made_by="data")


def load_image_splits(source: str | Path, *, patient_pattern: str | None = KERMANY_PATTERN,
                      fractions: Mapping[str, float] | None = None, seed: int = 0,
                      class_names: Sequence[str] = (), split_file: str | Path | None = None) -> ImageSplits:
    """Finds the images and labels of ``source`` and their train / val / test split (see module docstring).

    Args:
        patient_pattern: regular expression on the file stem with a ``patient`` group (None: every
            image is its own patient).
        fractions: ``{"train": .7, "val": .15, "test": .15}`` for splits medcad makes.
        seed: changes the (deterministic, hash-based) assignment of patients to splits.
        class_names: names for an archive's integer labels.
        split_file: a splits file (``medcad-splits`` JSON of image keys) to reuse instead of making one.
    """
    root = Path(source)
    fractions = dict(fractions or {"train": 0.7, "val": 0.15, "test": 0.15})
    if not root.exists():
        raise InputError(root, "image data not found")
    if root.is_file():
        if root.suffix.lower() != ".npz":
            raise InputError(root, "expected a folder of class folders or an .npz archive of images and labels")
        return _npz_splits(root, class_names)
    provided = [name for name in SPLIT_NAMES if (root / name).is_dir()]
    class_dirs = {p.name for folder in ([root / n for n in provided] or [root]) for p in _class_folders(folder)}
    if not class_dirs:
        raise InputError(root, "no class folders (expected one folder of images per class, or train/ val/ test/)")
    names = tuple(sorted(class_dirs))
    index = {name: i for i, name in enumerate(names)}
    if provided:
        if "train" not in provided:
            raise InputError(root, "has val/ or test/ but no train/ folder")
        splits, unmatched = {}, 0
        for name in provided:
            records, missed = _folder_records(root, root / name, index, patient_pattern)
            splits[name], unmatched = tuple(records), unmatched + missed
        made_by = "data"
        if "val" not in splits:
            val_share = fractions.get("val", 0.15) / (fractions.get("train", 0.7) + fractions.get("val", 0.15))
            carved = _split_by_patient(splits["train"], {"train": 1 - val_share, "val": val_share}, seed)
            splits = {"train": carved["train"], "val": carved["val"], **{k: v for k, v in splits.items() if k != "train"}}
            made_by = "data (val carved out of train by patient)"
        result = ImageSplits(root, names, splits, made_by, unmatched)
    else:
        records, unmatched = _folder_records(root, root, index, patient_pattern)
        if split_file is not None:
            splits, made_by = _apply_split_file(records, split_file), f"split file {split_file}"
        else:
            splits, made_by = _split_by_patient(records, fractions, seed), f"medcad, by patient (seed {seed})"
        result = ImageSplits(root, names, splits, made_by, unmatched)
    if not result.splits.get("train"):
        raise InputError(root, "no training images found")
    return result


def _apply_split_file(records: Sequence[ImageRecord], split_file: str | Path) -> dict[str, tuple[ImageRecord, ...]]:
    from medcad.data.splits import read_splits

    made = read_splits(split_file)
    by_key = {r.key: r for r in records}
    missing = [k for keys in made.splits.values() for k in keys if k not in by_key]
    if missing:
        raise InputError(split_file, f"{len(missing)} images of the split file are not in the data, e.g. {missing[0]}")
    return {name: tuple(by_key[k] for k in keys) for name, keys in made.splits.items()}


def write_image_splits(splits: ImageSplits, path: str | Path, seed: int = 0) -> Path:
    """Writes the split as a ``medcad-splits`` file of image keys (reusable with ``split_file``)."""
    from medcad.data.splits import SeriesSplits, write_splits

    total = sum(len(v) for v in splits.splits.values()) or 1
    fractions = {name: len(records) / total for name, records in splits.splits.items()}
    keys = {name: tuple(sorted(r.key for r in records)) for name, records in splits.splits.items()}
    return write_splits(SeriesSplits(keys, fractions, f"medcad-images-{seed}"), path)


_NPZ_CACHE: dict[Path, Mapping[str, np.ndarray]] = {}


def _open_npz(path: Path) -> Mapping[str, np.ndarray]:
    """An archive's arrays (read once per process, without pickles)."""
    if path not in _NPZ_CACHE:
        try:
            with np.load(path, allow_pickle=False) as archive:
                _NPZ_CACHE[path] = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as error:
            raise InputError(path, f"cannot read the image archive ({error})") from error
    return _NPZ_CACHE[path]


def read_image(record: ImageRecord | str | Path, channels: int = 1):
    """The image as a PIL image in mode ``L`` (1 channel) or ``RGB`` (3 channels)."""
    from PIL import Image, UnidentifiedImageError

    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise MedcadError(f"images load with 1 or 3 channels, not {channels}")
    if isinstance(record, ImageRecord) and record.array_index is not None:
        array = _open_npz(record.source)[f"{record.array_split}_images"][record.array_index]
        return Image.fromarray(np.asarray(array, dtype=np.uint8)).convert(mode)
    path = record.source if isinstance(record, ImageRecord) else Path(record)
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(path, f"cannot read image ({error})") from error


@dataclass(frozen=True)
class ImagePreprocessing:
    """How images become network inputs (saved in ``model.json`` so prediction does the same).

    Attributes:
        image_size: (height, width) of the network input.
        channels: 1 (greyscale) or 3 (RGB).
        mean, std: per-channel normalisation of [0, 1] intensities.
    """

    image_size: tuple[int, int]
    channels: int = 1
    mean: tuple[float, ...] = (float(np.mean(IMAGENET_MEAN)),)
    std: tuple[float, ...] = (float(np.mean(IMAGENET_STD)),)

    @classmethod
    def imagenet(cls, image_size: tuple[int, int], channels: int) -> ImagePreprocessing:
        """ImageNet statistics (their mean for greyscale), as pretrained torchvision weights expect."""
        if channels == 3:
            return cls(tuple(image_size), 3, IMAGENET_MEAN, IMAGENET_STD)
        return cls(tuple(image_size), channels)

    def to_dict(self) -> dict:
        return {"task": "image-classification", "image_size": list(self.image_size), "channels": self.channels,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping) -> ImagePreprocessing:
        return cls(tuple(int(v) for v in data["image_size"]), int(data["channels"]),
                   tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation: random resized crop (area ``scale_min``..1, aspect ``ratio_jitter`` around
    the input's), rotation up to ``rotation_deg``, brightness / contrast jitter, horizontal flip."""

    scale_min: float = 0.6
    ratio_jitter: float = 0.25
    rotation_deg: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    hflip: bool = True


def eval_transform(preprocessing: ImagePreprocessing) -> Callable:
    """Resize to the input size (antialiased, on the uint8 tensor), scale to [0, 1], normalise.

    Takes a PIL image or a uint8 (C, H, W) tensor; an image already at the input size is not resampled,
    so a data set caching images at exactly that size (:func:`resize_to`) gives the same tensors as
    prediction from the file.
    """
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.Resize(list(preprocessing.image_size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(preprocessing.mean), list(preprocessing.std)), v2.ToPureTensor()])


def train_transform(preprocessing: ImagePreprocessing, augment: AugmentConfig) -> Callable:
    """Random resized crop, small rotation, brightness / contrast jitter, flip, then as :func:`eval_transform`."""
    import torch
    from torchvision.transforms import v2

    height, width = preprocessing.image_size
    ratio = width / height
    steps = [v2.ToImage(),
             v2.RandomResizedCrop([height, width], scale=(augment.scale_min, 1.0),
                                  ratio=(ratio * (1 - augment.ratio_jitter), ratio / (1 - augment.ratio_jitter)),
                                  antialias=True)]
    if augment.rotation_deg:
        steps.append(v2.RandomRotation(augment.rotation_deg))
    if augment.brightness or augment.contrast:
        steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
              v2.ToPureTensor()]
    return v2.Compose(steps)


def resize_to(image, size: tuple[int, int]):
    """A PIL image as a uint8 (C, H, W) tensor of ``size`` (height, width), resized as :func:`eval_transform` does."""
    from torchvision.transforms.v2 import functional

    return functional.resize(functional.pil_to_tensor(image), list(size), antialias=True)


class ImageDataset:
    """A map-style data set of :class:`ImageSample` over image records.

    Args:
        cache_size: when given as (height, width), each image is decoded once and kept in memory at
            this size (for training a little larger than the network input leaves room for cropping;
            for evaluation exactly the input size, which gives the tensors prediction from the file
            gives), so an epoch does not decode full-size files again.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable, channels: int = 1,
                 cache_size: tuple[int, int] | None = None):
        self.records = tuple(records)
        self.transform = transform
        self.channels = channels
        self.cache_size = cache_size
        self._cache: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int):
        """The PIL image of record ``index``, or its cached uint8 tensor at ``cache_size``."""
        if self.cache_size is None:
            return read_image(self.records[index], self.channels)
        if index not in self._cache:
            self._cache[index] = resize_to(read_image(self.records[index], self.channels), self.cache_size)
        return self._cache[index]

    def __getitem__(self, index: int) -> ImageSample:
        return ImageSample(self.transform(self.image(index)), self.records[index].label)


@dataclass(frozen=True)
class DataSummary:
    """What an image data set holds: images per class per split, patients, image sizes and modes."""

    root: str
    made_by: str
    class_names: tuple[str, ...]
    counts: Mapping[str, Mapping[str, int]]
    patients: Mapping[str, int]
    sizes: Mapping[tuple[int, int], int] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    leaks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unmatched_names: int = 0


def summarise_images(splits: ImageSplits) -> DataSummary:
    """Counts per class and split, distinct patients per split, (width, height) sizes and colour modes."""
    from PIL import Image

    counts = {name: {c: 0 for c in splits.class_names} for name in splits.splits}
    sizes: Counter = Counter()
    modes: Counter = Counter()
    for name, records in splits.splits.items():
        for record in records:
            counts[name][splits.class_names[record.label]] += 1
            if record.array_index is not None:
                shape = _open_npz(record.source)[f"{record.array_split}_images"].shape
                sizes[(int(shape[2]), int(shape[1]))] += 1
                modes["L" if len(shape) == 3 else "RGB"] += 1
                continue
            try:
                with Image.open(record.source) as image:
                    sizes[image.size] += 1
                    modes[image.mode] += 1
            except OSError as error:
                raise InputError(record.source, f"cannot read image ({error})") from error
    patients = {name: len({r.patient_id for r in records}) for name, records in splits.splits.items()}
    return DataSummary(str(splits.root), splits.made_by, splits.class_names, counts, patients, dict(sizes),
                       dict(modes), splits.patient_leaks(), splits.unmatched_names)
