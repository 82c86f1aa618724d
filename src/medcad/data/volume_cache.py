"""Whole-volume preprocessing for classification, and its cache of small arrays.

The chain (each step from :mod:`medcad.transforms`): lung segmentation -> the lungs' bounding
box (+ a margin) -> one resampling onto an isotropic grid of the model's input shape centred on
that box (linear with block-average antialiasing for the image, nearest for the lung labels) ->
HU window to [0, 1] -> optionally zero outside the (dilated) lungs. The grid keeps its world
geometry, so a point in mm still maps to its voxel in the small array.

A cache entry is one safetensors file (``image`` float32 (D, H, W), ``lungs`` uint8 (D, H, W):
0 outside, 1 / 2 the lungs) whose header metadata holds JSON: the geometry (origin, spacing,
direction), the lung volume, the source and the preprocessing settings. Written atomically, read
without unpickling. ``medcad preprocess`` fills a cache once, so training reads 1 MB arrays
instead of 100 MB scans.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.geometry import VolumeGeometry
from medcad.io.atomic import atomic_path
from medcad.io.scan import AIR_HU, Scan
from medcad.transforms.lung_mask import LungMaskConfig

CACHE_SUFFIX = ".safetensors"
FORMAT_NAME = "medcad-volume"


@dataclass(frozen=True)
class VolumePreprocessConfig:
    """How a scan becomes a model input.

    Attributes:
        shape: (D, H, W) of the model input.
        spacing_mm: isotropic voxel size; None fits the lungs' box into ``shape``.
        window: HU window by name or "LOW,HIGH" (:mod:`medcad.transforms.intensity`).
        crop_to_lungs: centre the grid on the lungs' box (else on the whole scan).
        margin_mm: margin around the lungs' box.
        mask_outside_mm: zero the image farther than this from the lungs (None: keep everything).
        lungs: the lung segmentation settings.
    """

    shape: tuple[int, int, int] = (64, 64, 64)
    spacing_mm: float | None = None
    window: str = "lung"
    crop_to_lungs: bool = True
    margin_mm: float = 10.0
    mask_outside_mm: float | None = None
    lungs: LungMaskConfig = field(default_factory=LungMaskConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "VolumePreprocessConfig":
        values = dict(values)
        lungs = LungMaskConfig(**values.pop("lungs", {}))
        values["shape"] = tuple(values.get("shape", cls.shape))
        return cls(lungs=lungs, **values)


@dataclass(frozen=True, eq=False)
class PreprocessedVolume:
    """A model-ready volume with its grid.

    Attributes:
        image: float32 (D, H, W) in [0, 1] (windowed HU).
        lungs: uint8 (D, H, W) lung labels on the same grid (0 outside, 1 / 2 the lungs).
        geometry: where the grid sits in the world (isotropic spacing).
        lung_volume_ml: lung volume measured on the original scan.
        source: the scan it came from.
        config: the settings used.
    """

    image: np.ndarray
    lungs: np.ndarray
    geometry: VolumeGeometry
    lung_volume_ml: float
    source: str
    config: VolumePreprocessConfig


def preprocess_scan(scan: Scan, config: VolumePreprocessConfig = VolumePreprocessConfig()) -> PreprocessedVolume:
    """Runs the chain of the module docstring on one scan."""
    from medcad.transforms.intensity import apply_window
    from medcad.transforms.lung_mask import segment_lungs
    from medcad.transforms.spatial import BoxIrc, bounding_box, box_grid, margin_irc_for_mm, resample_to_grid

    lungs = segment_lungs(scan, config.lungs)
    if config.crop_to_lungs:
        box = bounding_box(lungs.mask, margin_irc_for_mm(scan.geometry, config.margin_mm))
    else:
        box = BoxIrc((0, 0, 0), scan.shape_irc)
    grid = box_grid(scan.geometry, box, config.shape, config.spacing_mm)
    hu = resample_to_grid(scan.hu, scan.geometry, grid, "linear", AIR_HU, antialias=True)
    labels = resample_to_grid(lungs.labels, scan.geometry, grid, "nearest", 0)
    image = apply_window(hu, config.window)
    if config.mask_outside_mm is not None:
        image *= _near(labels > 0, config.mask_outside_mm / float(grid.spacing_xyz[0]))
    return PreprocessedVolume(image=image, lungs=labels.astype(np.uint8), geometry=grid,
                              lung_volume_ml=lungs.volume_ml, source=str(scan.source or ""), config=config)


def _near(mask: np.ndarray, distance_voxels: float) -> np.ndarray:
    """True within ``distance_voxels`` of ``mask``."""
    from scipy import ndimage

    if not mask.any():
        return np.ones_like(mask)
    return ndimage.distance_transform_edt(~mask) <= distance_voxels


def write_cached(volume: PreprocessedVolume, path: str | Path) -> Path:
    """Writes one cache entry (safetensors + JSON metadata) atomically."""
    import torch
    from safetensors.torch import save_file

    target = Path(path)
    if not target.name.endswith(CACHE_SUFFIX):
        raise InputError(target, f"a volume cache entry must end in {CACHE_SUFFIX}")
    geometry = volume.geometry
    header = {"format": FORMAT_NAME, "version": 1, "source": volume.source,
              "lung_volume_ml": volume.lung_volume_ml,
              "geometry": {"shape_irc": list(geometry.shape_irc), "origin_xyz": geometry.origin_xyz.tolist(),
                           "spacing_xyz": geometry.spacing_xyz.tolist(), "direction": geometry.direction.tolist()},
              "preprocessing": volume.config.to_dict()}
    tensors = {"image": torch.from_numpy(np.ascontiguousarray(volume.image, dtype=np.float32)),
               "lungs": torch.from_numpy(np.ascontiguousarray(volume.lungs, dtype=np.uint8))}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"medcad": json.dumps(header)})
    return target


def read_cached_config(path: str | Path) -> VolumePreprocessConfig:
    """The preprocessing settings a cache entry was made with (reads only its header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            header = json.loads((handle.metadata() or {}).get("medcad", "{}"))
        if header.get("format") != FORMAT_NAME:
            raise ValueError(f"not a {FORMAT_NAME} file")
        return VolumePreprocessConfig.from_dict(header.get("preprocessing", {}))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InputError(path, f"unreadable preprocessed volume ({str(error).splitlines()[0][:160]})") from error


def cached_config(paths) -> VolumePreprocessConfig | None:
    """The one preprocessing config of cache entries; None when no path is a cache entry.

    Entries made with different settings, or a mix of cache entries and raw scans, are an error:
    a model must see its inputs prepared one way.
    """
    paths = [str(p) for p in paths]
    cached = [p for p in paths if p.endswith(CACHE_SUFFIX)]
    if not cached:
        return None
    if len(cached) != len(paths):
        raise InputError(next(p for p in paths if not p.endswith(CACHE_SUFFIX)),
                         "a raw scan among preprocessed volumes; preprocess them all the same way")
    first = read_cached_config(cached[0])
    for path in cached[1:]:
        if read_cached_config(path) != first:
            raise InputError(path, f"preprocessed with other settings than {cached[0]}")
    return first


def read_cached(path: str | Path) -> PreprocessedVolume:
    """Reads a cache entry written by :func:`write_cached`; a clear error for anything else."""
    from safetensors import safe_open

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "preprocessed volume not found")
    try:
        with safe_open(str(source), framework="np") as handle:
            header = json.loads((handle.metadata() or {}).get("medcad", "{}"))
            if header.get("format") != FORMAT_NAME:
                raise ValueError(f"not a {FORMAT_NAME} file")
            image, lungs = handle.get_tensor("image"), handle.get_tensor("lungs")
        g = header["geometry"]
        geometry = VolumeGeometry(g["shape_irc"], g["origin_xyz"], g["spacing_xyz"], g["direction"])
        config = VolumePreprocessConfig.from_dict(header.get("preprocessing", {}))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InputError(source, f"unreadable preprocessed volume ({str(error).splitlines()[0][:160]})") from error
    if image.shape != tuple(geometry.shape_irc) or lungs.shape != image.shape:
        raise InputError(source, f"array shapes {image.shape} / {lungs.shape} do not match the geometry")
    return PreprocessedVolume(image=image, lungs=lungs, geometry=geometry, lung_volume_ml=float(header["lung_volume_ml"]),
                              source=str(header.get("source", "")), config=config)


@dataclass(frozen=True)
class CacheSummary:
    """What :func:`preprocess_table` did."""

    written: int
    reused: int
    table_path: Path


def cache_name(record_path: str, patient_id: str) -> str:
    """The cache file name of a volume: readable stem + a short hash of its full path (unique)."""
    import hashlib
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(record_path.rstrip("/")).name)[:60]
    digest = hashlib.sha256(f"{record_path}\0{patient_id}".encode()).hexdigest()[:10]
    return f"{stem}-{digest}{CACHE_SUFFIX}"


def preprocess_table(table, config: VolumePreprocessConfig, out: str | Path, overwrite: bool = False,
                     on_volume=None) -> CacheSummary:
    """Preprocesses every volume of a :class:`~medcad.data.volumes.VolumeTable` into ``out``.

    Writes one cache entry per volume (kept when present with the same settings, unless
    ``overwrite``) and ``out/volumes.csv`` (path, label, split, patient_id, lung_volume_ml) that
    ``medcad train volume-cls --data`` reads.
    """
    from dataclasses import replace

    from medcad.data.volumes import VolumeTable, write_volume_table
    from medcad.io import read_scan

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    records, volumes_ml = [], []
    written = reused = 0
    for record in table.records:
        target = folder / cache_name(record.path, record.patient_id)
        cached = None
        if target.is_file() and not overwrite:
            try:
                cached = read_cached(target)
            except InputError:
                cached = None
        if cached is not None and cached.config == config:
            reused += 1
        else:
            cached = preprocess_scan(read_scan(record.path), config)
            write_cached(cached, target)
            written += 1
        records.append(replace(record, path=str(target)))
        volumes_ml.append(f"{cached.lung_volume_ml:.1f}")
        if on_volume is not None:
            on_volume()
    table_path = write_volume_table(VolumeTable(tuple(records), table.class_names), folder / "volumes.csv",
                                    {"lung_volume_ml": volumes_ml})
    return CacheSummary(written, reused, table_path)
