"""Scan cache for training: each scan converted once to an uncompressed ``.npy`` + JSON geometry.

An epoch cuts thousands of small crops from a few hundred scans; re-reading (and decompressing)
whole volumes for each crop is what makes the book's first training loop slow. Here each scan is
read once with :func:`medcad.io.read_scan` and stored as ``<series_uid>.npy`` (int16 or float32
HU, axes z, y, x) beside ``<series_uid>.json`` (geometry and where it came from). Training opens
the array memory-mapped, so a crop reads only its own pages and DataLoader workers share the
operating system's page cache.

Safety:
- Concurrent builders (DataLoader workers, DDP ranks) take a per-entry lock file (``flock``) and
  write the array then the JSON to temporary names renamed into place, so readers see a whole
  entry or none; the JSON is written last and is the entry's commit mark.
- An entry is *stale* when its source file's size or modification time changed, and *corrupt*
  when the array file is missing, its ``.npy`` header does not match the JSON, or its length is
  wrong (a truncated write); either is rebuilt on the next open. ``verify(deep=True)`` also
  compares a SHA-256 of the array bytes with the one stored at build time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.geometry import VolumeGeometry
from medcad.io.atomic import atomic_path, write_text_atomic
from medcad.io.scan import AIR_HU

FORMAT_NAME = "medcad-scan-cache"
FORMAT_VERSION = 1
#: Volume files a LUNA16-layout folder may hold (the series UID is the file name without them).
SCAN_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nii.gz", ".nii")
DEFAULT_CACHE_NAME = ".medcad-cache"


def find_scans(data_dir: str | Path) -> dict[str, Path]:
    """Series UID -> volume file for every scan under a LUNA16-layout folder (``subset*/<uid>.mhd``)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(root, "data folder not found")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if DEFAULT_CACHE_NAME in path.parts or not path.is_file():
            continue
        suffix = next((s for s in SCAN_SUFFIXES if path.name.lower().endswith(s)), None)
        if suffix is None:
            continue
        uid = path.name[: -len(suffix)]
        if uid in found:
            raise InputError(path, f"series {uid} is stored twice (also {found[uid]})")
        found[uid] = path
    return found


@dataclass(frozen=True, eq=False)
class CachedScan:
    """A cached scan: memory-mapped HU (z, y, x) and its geometry."""

    series_uid: str
    hu: np.ndarray
    geometry: VolumeGeometry

    def crop(self, center_irc, shape_irc) -> tuple[np.ndarray, tuple[int, int, int]]:
        """A box of ``shape_irc`` around ``center_irc``, shifted to lie inside the volume (as the book).

        Axes shorter than the box are padded with air. Returns (copy of the crop, start_irc).
        """
        return crop_inside(self.hu, center_irc, shape_irc)


def crop_inside(volume: np.ndarray, center_irc, shape_irc) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The book's crop: window centred on the rounded centre, moved inside the volume at the borders."""
    starts, slices, pads = [], [], []
    for center, width, size in zip(center_irc, shape_irc, volume.shape):
        start = int(round(float(center))) - width // 2
        start = max(0, min(start, size - width))
        stop = min(start + width, size)
        starts.append(start)
        slices.append(slice(start, stop))
        pads.append((0, width - (stop - start)))
    crop = np.array(volume[tuple(slices)])
    if any(after for _, after in pads):
        crop = np.pad(crop, pads, constant_values=AIR_HU)
    return crop, tuple(starts)


@dataclass(frozen=True)
class SourceStamp:
    """What identifies a source file's version: size, modification time, and a hash of its header."""

    size: int
    mtime_ns: int
    header_sha256: str

    @classmethod
    def of(cls, path: Path) -> "SourceStamp":
        stat = path.stat()
        with path.open("rb") as handle:  # the first 64 KiB: the whole .mhd / NIfTI / NRRD header
            head = hashlib.sha256(handle.read(65536)).hexdigest()
        return cls(int(stat.st_size), int(stat.st_mtime_ns), head)

    def same_file(self, path: Path) -> bool:
        """Cheap check: size and modification time unchanged."""
        try:
            stat = path.stat()
        except OSError:
            return False
        return int(stat.st_size) == self.size and int(stat.st_mtime_ns) == self.mtime_ns


class ScanCache:
    """The cache folder of one data set; :meth:`open` returns a valid entry, building it when needed.

    Args:
        root: the cache folder (created on demand).
        sources: series UID -> scan file (see :func:`find_scans`).
    """

    def __init__(self, root: str | Path, sources: dict[str, Path]):
        self.root = Path(root)
        self.sources = dict(sources)
        self._open: dict[str, CachedScan] = {}

    @classmethod
    def for_data(cls, data_dir: str | Path, cache_dir: str | Path | None = None) -> "ScanCache":
        """The cache of a LUNA16-layout folder (default: ``DATA/.medcad-cache``)."""
        root = Path(cache_dir) if cache_dir is not None else Path(data_dir) / DEFAULT_CACHE_NAME
        return cls(root, find_scans(data_dir))

    def _paths(self, series_uid: str) -> tuple[Path, Path, Path]:
        base = self.root / series_uid
        return base.with_name(series_uid + ".npy"), base.with_name(series_uid + ".json"), \
            base.with_name(series_uid + ".lock")

    def _source(self, series_uid: str) -> Path:
        if series_uid not in self.sources:
            raise InputError(self.root, f"series {series_uid} is not in the data folder")
        return self.sources[series_uid]

    def status(self, series_uid: str, deep: bool = False) -> str:
        """``"ok"``, ``"missing"``, ``"stale"`` (source changed) or ``"corrupt"`` (damaged entry)."""
        array_path, meta_path, _ = self._paths(series_uid)
        if not meta_path.is_file():
            return "missing"
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
                return "stale"
            stamp = SourceStamp(**meta["source_stamp"])
            if not stamp.same_file(self._source(series_uid)):
                return "stale"
            array = np.load(array_path, mmap_mode="r")
            if list(array.shape) != meta["shape_irc"] or str(array.dtype) != meta["dtype"]:
                return "corrupt"
            if deep and _array_sha256(array) != meta["array_sha256"]:
                return "corrupt"
        except (OSError, ValueError, KeyError, TypeError):
            return "corrupt"  # unreadable JSON, truncated .npy (np.load refuses a short file), ...
        return "ok"

    def open(self, series_uid: str) -> CachedScan:
        """The entry of a series, (re)built first when missing, stale or corrupt."""
        if series_uid in self._open:
            return self._open[series_uid]
        if self.status(series_uid) != "ok":
            with self._lock(series_uid):
                if self.status(series_uid) != "ok":  # another process may have built it meanwhile
                    self._build(series_uid)
        array_path, meta_path, _ = self._paths(series_uid)
        meta = json.loads(meta_path.read_text())
        geometry = VolumeGeometry(meta["shape_irc"], meta["origin_xyz"], meta["spacing_xyz"], meta["direction"])
        entry = CachedScan(series_uid, np.load(array_path, mmap_mode="r"), geometry)
        self._open[series_uid] = entry
        return entry

    def build(self, series_uids=None, deep: bool = False, progress=None) -> dict[str, str]:
        """Builds every missing / stale / corrupt entry; returns each series' status before the build."""
        before: dict[str, str] = {}
        uids = sorted(self.sources) if series_uids is None else list(series_uids)
        for number, uid in enumerate(uids, 1):
            before[uid] = self.status(uid, deep=deep)
            if before[uid] != "ok":
                with self._lock(uid):
                    if self.status(uid, deep=deep) != "ok":
                        self._build(uid)
            if progress:
                progress(number, len(uids))
        return before

    @contextlib.contextmanager
    def _lock(self, series_uid: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        _, _, lock_path = self._paths(series_uid)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _build(self, series_uid: str) -> None:
        from medcad.io import read_scan

        source = self._source(series_uid)
        stamp = SourceStamp.of(source)
        scan = read_scan(source)
        hu = np.ascontiguousarray(scan.hu)
        array_path, meta_path, _ = self._paths(series_uid)
        self._open.pop(series_uid, None)
        with atomic_path(array_path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, hu)  # a file object: np.save would append ".npy" to a bare temp name
        geometry = scan.geometry
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "series_uid": series_uid, "source": str(source),
                "source_stamp": stamp.__dict__, "shape_irc": list(hu.shape), "dtype": str(hu.dtype),
                "origin_xyz": geometry.origin_xyz.tolist(), "spacing_xyz": geometry.spacing_xyz.tolist(),
                "direction": geometry.direction.tolist(), "array_sha256": _array_sha256(hu)}
        write_text_atomic(meta_path, json.dumps(meta, indent=1))


def _array_sha256(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, 1 << 24):
        digest.update(flat[start:start + (1 << 24)])
    return digest.hexdigest()
