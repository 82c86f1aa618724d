"""Volume classification data: the volume table, patient-level splits, the dataset, a balanced sampler.

A table is a CSV with columns ``path,label`` and optionally ``split`` (train / val / test) and
``patient_id`` (paths relative to the CSV's folder), or a folder with one sub-folder per class
holding scans (any format :func:`medcad.io.read_scan` reads, DICOM series folders included) or
preprocessed ``.safetensors`` entries. Rows without a split are split 70 / 15 / 15 by patient,
stratified by label: each class's patients are ordered by a hash of their id
(:func:`medcad.data.splits.hash_unit`, the same on every machine) and cut at the fractions, so
small cohorts get exact proportions and no patient falls into two splits.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medcad.errors import InputError, MedcadError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
_SCAN_SUFFIXES = (".safetensors", ".mhd", ".mha", ".nrrd", ".nii", ".nii.gz", ".dcm")


@dataclass(frozen=True)
class VolumeRecord:
    """One labelled volume: where it is, its class, its split and its patient."""

    path: str
    label: str
    split: str | None = None
    patient_id: str = ""


@dataclass(frozen=True)
class VolumeTable:
    """The records and the class names (index = class number)."""

    records: tuple[VolumeRecord, ...]
    class_names: tuple[str, ...]

    def label_index(self, record: VolumeRecord) -> int:
        return self.class_names.index(record.label)

    def subset(self, split: str) -> tuple[VolumeRecord, ...]:
        return tuple(r for r in self.records if r.split == split)


def _sorted_labels(labels) -> tuple[str, ...]:
    """Class names, numeric order when every label is an integer ("2" after "10" would surprise)."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def read_volume_table(source: str | Path) -> VolumeTable:
    """Reads a CSV table or a folder of class folders (see the module docstring)."""
    path = Path(source)
    if path.is_dir():
        records = _records_from_class_folders(path)
    elif path.is_file():
        records = _records_from_csv(path)
    else:
        raise InputError(path, "no such volume table (a CSV file or a folder of class folders)")
    if not records:
        raise InputError(path, "holds no volumes")
    return VolumeTable(tuple(records), _sorted_labels(r.label for r in records))


def _records_from_csv(path: Path) -> list[VolumeRecord]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)} (need path,label[,split][,patient_id])")
        records = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row["path"] or not row["label"]:
                raise InputError(path, f"line {line}: empty path or label")
            split = row.get("split") or None
            if split is not None and split not in SPLITS:
                raise InputError(path, f"line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
            volume = Path(row["path"])
            volume = volume if volume.is_absolute() else path.parent / volume
            if not volume.exists():
                raise InputError(path, f"line {line}: volume {row['path']} not found")
            records.append(VolumeRecord(str(volume), row["label"], split, row.get("patient_id") or _stem(volume)))
    return records


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _SCAN_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _records_from_class_folders(folder: Path) -> list[VolumeRecord]:
    records = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(class_dir.iterdir()):
            if entry.name.startswith(".") or entry.suffix.lower() == ".raw":
                continue
            if entry.is_dir() or entry.name.lower().endswith(_SCAN_SUFFIXES):
                records.append(VolumeRecord(str(entry), class_dir.name, None, _stem(entry)))
    if not records:
        raise InputError(folder, "no class folders with volumes inside (expected FOLDER/<class>/<scan>)")
    return records


#: How a LUNA16-layout cohort becomes scan labels: rule -> (negative class, positive class).
LUNA_LABEL_RULES = {"malignant": ("benign", "malignant"), "nodule": ("clear", "nodule")}


def table_from_luna(folder: str | Path, rule: str = "malignant") -> VolumeTable:
    """Scan-level labels for a LUNA16-layout cohort (``subset*/<uid>.mhd`` + the annotation CSVs).

    ``malignant``: the scan holds a nodule with ``mal_bool`` true in
    ``annotations_with_malignancy.csv`` (else "benign", scans without nodules included);
    ``nodule``: the scan holds any nodule of ``annotations.csv`` (else "clear").
    Each scan is its own patient (LUNA16 has one scan per patient).
    """
    from medcad.data.cache import find_scans
    from medcad.io.luna import read_annotations, read_malignancy

    if rule not in LUNA_LABEL_RULES:
        raise MedcadError(f"unknown label rule {rule!r}: use one of {', '.join(LUNA_LABEL_RULES)}")
    root = Path(folder)
    scans = find_scans(root)
    if not scans:
        raise InputError(root, "no scans (subset*/<series_uid>.mhd) in this folder")
    if rule == "malignant":
        positive = {n.series_uid for n in read_malignancy(root / "annotations_with_malignancy.csv") if n.is_malignant}
    else:
        positive = set(read_annotations(root / "annotations.csv").series_uids)
    negative_name, positive_name = LUNA_LABEL_RULES[rule]
    records = tuple(VolumeRecord(str(path), positive_name if uid in positive else negative_name, None, uid)
                    for uid, path in sorted(scans.items()))
    return VolumeTable(records, (negative_name, positive_name))


def write_volume_table(table: VolumeTable, path: str | Path, extra_columns: Mapping[str, Sequence] | None = None) -> Path:
    """Writes ``path,label,split,patient_id`` (+ extra columns) as CSV, paths relative to its folder."""
    import io
    import os

    from medcad.io.atomic import write_text_atomic

    target = Path(path)
    extra = dict(extra_columns or {})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label", "split", "patient_id", *extra])
    for index, record in enumerate(table.records):
        relative = os.path.relpath(Path(record.path).resolve(), target.parent.resolve())
        writer.writerow([relative, record.label, record.split or "", record.patient_id,
                         *(values[index] for values in extra.values())])
    write_text_atomic(target, buffer.getvalue())
    return target


def split_by_patient(records: Sequence[VolumeRecord], fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                     salt: str = "medcad-volumes-v1") -> tuple[VolumeRecord, ...]:
    """Gives every record without a split one, by patient, stratified by label (see module docstring).

    Records that already have a split keep it; their patients are not placed elsewhere.
    """
    from medcad.data.splits import hash_unit

    if abs(sum(fractions.values()) - 1) > 1e-9 or any(f < 0 for f in fractions.values()):
        raise MedcadError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    fixed = {r.patient_id: r.split for r in records if r.split}
    label_of: dict[str, str] = {}
    for record in records:
        if record.patient_id not in fixed:
            label_of.setdefault(record.patient_id, record.label)
    assigned = dict(fixed)
    names = list(fractions)
    for label in sorted(set(label_of.values())):
        patients = sorted((p for p, lab in label_of.items() if lab == label), key=lambda p: (hash_unit(p, salt), p))
        edges = np.round(np.cumsum([fractions[n] for n in names]) * len(patients)).astype(int)
        start = 0
        for name, stop in zip(names, edges):
            for patient in patients[start:stop]:
                assigned[patient] = name
            start = stop
    return tuple(r if r.split else replace(r, split=assigned[r.patient_id]) for r in records)


def check_splits(table: VolumeTable, source: str | Path | None = None) -> None:
    """Errors for a patient in two splits or an empty train / val split."""
    where: dict[str, set[str]] = {}
    for record in table.records:
        where.setdefault(record.patient_id, set()).add(str(record.split))
    leaks = sorted(p for p, s in where.items() if len(s) > 1)
    if leaks:
        raise InputError(source, f"patient {leaks[0]} is in more than one split ({', '.join(sorted(where[leaks[0]]))})")
    for split in ("train", "val"):
        if not table.subset(split):
            raise InputError(source, f"the {split} split is empty (too few volumes, or give a split column)")


def class_counts(table: VolumeTable, split: str = "train") -> list[int]:
    """Volumes per class (in class-name order) in one split."""
    counts = Counter(table.label_index(r) for r in table.subset(split))
    return [counts.get(i, 0) for i in range(len(table.class_names))]


@dataclass(frozen=True, eq=False)
class VolumeSample:
    """One training / evaluation item.

    Attributes:
        image: float32 tensor (1, D, H, W), windowed to [0, 1].
        lungs: uint8 tensor (1, D, H, W), lung labels on the same grid.
        label: class index (-1 when unknown).
        index: position in the dataset.
    """

    image: "torch.Tensor"  # noqa: F821 (torch is imported lazily)
    lungs: "torch.Tensor"  # noqa: F821
    label: int
    index: int


class VolumeDataset:
    """Volumes of a table as :class:`VolumeSample` items (a map-style torch dataset).

    Cached ``.safetensors`` entries are read directly; any other scan is read and preprocessed
    on the fly with ``config`` (slow: run ``medcad preprocess`` once instead). ``in_memory``
    keeps loaded samples (64^3 float32 is 1 MB a volume).
    """

    def __init__(self, records: Sequence[VolumeRecord], class_names: Sequence[str], config=None,
                 in_memory: bool = True):
        from medcad.data.volume_cache import VolumePreprocessConfig

        self.records = tuple(records)
        self.class_names = tuple(class_names)
        self.config = config or VolumePreprocessConfig()
        self.in_memory = in_memory
        self._memory: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [self.class_names.index(r.label) if r.label in self.class_names else -1 for r in self.records]

    def _arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._memory:
            return self._memory[index]
        from medcad.data.volume_cache import CACHE_SUFFIX, preprocess_scan, read_cached

        path = self.records[index].path
        if path.endswith(CACHE_SUFFIX):
            volume = read_cached(path)
            if tuple(volume.image.shape) != tuple(self.config.shape):
                raise InputError(path, f"preprocessed to shape {volume.image.shape}, the model expects "
                                       f"{tuple(self.config.shape)}")
        else:
            from medcad.io import read_scan

            volume = preprocess_scan(read_scan(path), self.config)
        arrays = (volume.image, volume.lungs)
        if self.in_memory:
            self._memory[index] = arrays
        return arrays

    def __getitem__(self, index: int) -> VolumeSample:
        import torch

        image, lungs = self._arrays(index)
        label = self.labels[index]
        return VolumeSample(torch.from_numpy(np.array(image, dtype=np.float32))[None],
                            torch.from_numpy(np.array(lungs, dtype=np.uint8))[None], label, index)


def collate_volumes(samples: Sequence[VolumeSample]) -> VolumeSample:
    """Stacks samples into one batch sample (image (B, 1, D, H, W), label a tensor (B,))."""
    import torch

    return VolumeSample(torch.stack([s.image for s in samples]), torch.stack([s.lungs for s in samples]),
                        torch.tensor([s.label for s in samples]), torch.tensor([s.index for s in samples]))


def balanced_sampler(labels: Sequence[int], seed: int | None = None, num_samples: int | None = None):
    """Oversampling: a ``WeightedRandomSampler`` drawing every class equally often (with replacement).

    ``seed`` None draws from torch's global generator, which the fit loop seeds every epoch (so a
    resumed run draws what an uninterrupted one would).
    """
    import torch
    from torch.utils.data import WeightedRandomSampler

    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.double)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples or len(labels), replacement=True, generator=generator)
