"""L3 slice localisation data: where L3 is, confidence-map labels, and MIP data sets on disk.

The L3 slice is the axial slice through the centre of the third lumbar vertebra: its world z
(mm) is the mean z of the vertebra's voxels in a segmentation, the centre of its z range in a
vertebra-level table, or the annotators' mean row in the reference ``.npz`` format.

Labels are confidence maps over a MIP image: a band of rows (1 within +-k rows of the L3 row) or
a Gaussian in the row direction, over every column or only those near the spine. An
:class:`L3Dataset` holds the MIPs (both views), their geometries and the L3 z of each case, and
is written as a ``.npz`` file without pickles (images as float16, geometries as JSON text).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.io.atomic import atomic_path
from medcad.io.scan import Scan
from medcad.transforms.mip import VIEWS, AxisLine, MipConfig, MipGeometry, axis_lines, place_projection

__all__ = ["L3_TOTALSEG_LABEL", "LabelConfig", "row_profile", "confidence_map", "l3_z_from_segmentation",
           "l3_z_from_range", "read_l3_levels", "L3Case", "cohort_cases", "build_dataset", "L3Dataset",
           "save_dataset", "load_dataset", "read_reference_npz"]

#: TotalSegmentator's label for the L3 vertebra (26 S1, 27 L5, 28 L4, 29 L3, 30 L2, ...).
L3_TOTALSEG_LABEL = 29
DATASET_FORMAT = "medcad-l3-mips"
LABEL_KINDS = ("gaussian", "band")


@dataclass(frozen=True)
class LabelConfig:
    """The confidence map a network learns to output around the L3 row.

    Attributes:
        kind: ``"gaussian"`` (exp(-d^2 / 2 sigma^2) in rows) or ``"band"`` (1 within +-half_width).
        sigma_rows: Gaussian width in rows.
        half_width_rows: band half width k in rows.
        half_width_cols: when set, only columns within this of the spine column are labelled (the
            rest are 0), so the network marks the L3 level on the spine, not across the air.
    """

    kind: str = "gaussian"
    sigma_rows: float = 3.0
    half_width_rows: float = 3.0
    half_width_cols: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"label kind must be one of {LABEL_KINDS}, got {self.kind!r}")
        if self.sigma_rows <= 0 or self.half_width_rows < 0:
            raise ValueError("sigma_rows must be positive and half_width_rows non-negative")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "sigma_rows": self.sigma_rows, "half_width_rows": self.half_width_rows,
                "half_width_cols": self.half_width_cols}


def row_profile(rows: int, l3_row: float, config: LabelConfig = LabelConfig()) -> np.ndarray:
    """The label of each row (float32, in [0, 1]) for an L3 at fractional row ``l3_row``."""
    distance = np.arange(rows, dtype=np.float64) - l3_row
    if config.kind == "band":
        return (np.abs(distance) <= config.half_width_rows + 1e-9).astype(np.float32)
    return np.exp(-0.5 * (distance / config.sigma_rows) ** 2).astype(np.float32)


def confidence_map(shape: tuple[int, int], l3_row: float, config: LabelConfig = LabelConfig(),
                   spine_col: float | None = None) -> np.ndarray:
    """The (rows, columns) label image: :func:`row_profile` repeated over the labelled columns."""
    rows, cols = shape
    label = np.repeat(row_profile(rows, l3_row, config)[:, None], cols, axis=1)
    if config.half_width_cols is not None:
        centre = (cols - 1) / 2 if spine_col is None else spine_col
        label[:, np.abs(np.arange(cols) - centre) > config.half_width_cols] = 0.0
    return label


def l3_z_from_segmentation(labels: Scan, label: int = L3_TOTALSEG_LABEL) -> float:
    """World z (mm) of the L3 slice: the mean z of the voxels carrying ``label`` (TotalSegmentator: 29)."""
    z_line = axis_lines(labels)[2]
    other_axes = tuple(a for a in range(3) if a != z_line.array_axis)
    counts = (np.asarray(labels.hu) == label).sum(axis=other_axes)
    if counts.sum() == 0:
        found = sorted(int(v) for v in np.unique(labels.hu) if v != 0)
        raise InputError(labels.source, f"no voxel labelled {label} (L3); labels present: {found[:12]}")
    return float(np.average(z_line.index_to_mm(np.arange(z_line.length)), weights=counts))


def l3_z_from_range(z_low_mm: float, z_high_mm: float) -> float:
    """World z (mm) of the L3 slice from the vertebra's z extent in a level table: its centre."""
    return (float(z_low_mm) + float(z_high_mm)) / 2


def read_l3_levels(path: str | Path) -> dict[str, float]:
    """Series UID -> L3 z (mm) from a vertebra-level table (the synthetic cohort's ``vertebra_levels.csv``).

    The table has ``seriesuid,vertebra,z_top_mm,z_bottom_mm`` (other columns are ignored); the L3
    slice is the centre of the L3 body. Series without an L3 row are left out.
    """
    import pandas as pd

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "vertebra-level table not found")
    try:
        frame = pd.read_csv(source, dtype={"seriesuid": str, "vertebra": str})
    except Exception as error:
        raise InputError(source, f"cannot read the CSV ({error})") from error
    missing = [c for c in ("seriesuid", "vertebra", "z_top_mm", "z_bottom_mm") if c not in frame.columns]
    if missing:
        raise InputError(source, f"CSV lacks the column(s) {', '.join(missing)}")
    rows = frame[frame["vertebra"].str.upper() == "L3"]
    if rows[["z_top_mm", "z_bottom_mm"]].isna().any().any():
        raise InputError(source, "empty z_top_mm / z_bottom_mm in an L3 row")
    return {str(uid): l3_z_from_range(bottom, top)
            for uid, top, bottom in zip(rows["seriesuid"], rows["z_top_mm"], rows["z_bottom_mm"])}


@dataclass(frozen=True)
class L3Case:
    """A scan and where its L3 slice is.

    Attributes:
        name: case identifier (the series UID for a cohort).
        patient: patient identifier (folds keep a patient's scans together).
        scan_path: the volume file or DICOM folder.
        l3_z_mm: world z of the L3 slice.
    """

    name: str
    patient: str
    scan_path: Path
    l3_z_mm: float


def cohort_cases(cohort_dir: str | Path, levels_name: str = "vertebra_levels.csv") -> list[L3Case]:
    """The cases of a synthetic cohort folder (``medcad synth --abdomen``): its scans with an L3 row.

    Each phantom is its own patient.
    """
    from medcad.data.cache import find_scans

    root = Path(cohort_dir)
    levels = read_l3_levels(root / levels_name)
    scans = find_scans(root)
    missing = sorted(set(levels) - set(scans))
    if missing:
        raise InputError(root, f"{len(missing)} series of {levels_name} have no scan file (e.g. {missing[0]})")
    if not levels:
        raise InputError(root / levels_name, "no L3 rows")
    return [L3Case(uid, uid, scans[uid], z) for uid, z in sorted(levels.items())]


def build_dataset(cases: Sequence[L3Case], config: MipConfig = MipConfig(), on_case=None) -> L3Dataset:
    """Reads each case's scan and makes its frontal and sagittal MIPs (``on_case(case)`` after each)."""
    from medcad.io import read_scan
    from medcad.transforms.mip import project_views

    images = {view: [] for view in VIEWS}
    geometries = {view: [] for view in VIEWS}
    for case in cases:
        mips = project_views(read_scan(case.scan_path), config)
        for view in VIEWS:
            images[view].append(mips[view].image)
            geometries[view].append(mips[view].geometry)
        if on_case is not None:
            on_case(case)
    if not cases:
        raise InputError(None, "no cases to build an L3 data set from")
    shapes = {image.shape for view in VIEWS for image in images[view]}
    if len(shapes) > 1:
        raise InputError(None, f"MIPs of different sizes {sorted(shapes)}: give the MIP config a fixed size")
    return L3Dataset(tuple(c.name for c in cases), tuple(c.patient for c in cases),
                     {v: np.stack(images[v]) for v in VIEWS}, {v: tuple(geometries[v]) for v in VIEWS},
                     np.array([c.l3_z_mm for c in cases], dtype=np.float64), config)


@dataclass(frozen=True, eq=False)
class L3Dataset:
    """MIPs of several cases with their L3 z.

    Attributes:
        names: case identifiers (N,).
        patients: patient of each case (N,): cross-validation folds never split a patient.
        images: per view, (N, rows, columns) float32 images in [0, 1].
        geometries: per view, the N :class:`MipGeometry` records (rows <-> z mm <-> slices).
        l3_z_mm: world z of the L3 slice per case (N,); NaN where unknown.
        config: how the MIPs were made.
    """

    names: tuple[str, ...]
    patients: tuple[str, ...]
    images: dict[str, np.ndarray]
    geometries: dict[str, tuple[MipGeometry, ...]]
    l3_z_mm: np.ndarray
    config: MipConfig

    def __post_init__(self) -> None:
        count = len(self.names)
        if len(self.patients) != count or len(self.l3_z_mm) != count:
            raise ValueError("names, patients and l3_z_mm must have one entry per case")
        for view in VIEWS:
            if self.images[view].shape[0] != count or len(self.geometries[view]) != count:
                raise ValueError(f"{view} images / geometries must have one entry per case")

    def __len__(self) -> int:
        return len(self.names)

    def l3_rows(self, view: str) -> np.ndarray:
        """The fractional L3 row of each case in the ``view`` images."""
        return np.array([g.z_mm_to_row(z) for g, z in zip(self.geometries[view], self.l3_z_mm)], dtype=np.float64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "L3Dataset":
        """The cases at ``indices`` (in that order)."""
        index = np.asarray(indices, dtype=np.int64)
        return L3Dataset(tuple(self.names[i] for i in index), tuple(self.patients[i] for i in index),
                         {v: self.images[v][index] for v in VIEWS},
                         {v: tuple(self.geometries[v][i] for i in index) for v in VIEWS},
                         self.l3_z_mm[index], self.config)


def save_dataset(dataset: L3Dataset, path: str | Path) -> Path:
    """Writes a data set as a compressed ``.npz`` (no pickled objects), atomically."""
    target = Path(path)
    arrays = {"format": np.array(DATASET_FORMAT), "config": np.array(json.dumps(dataset.config.to_dict())),
              "names": np.array(dataset.names, dtype=str), "patients": np.array(dataset.patients, dtype=str),
              "l3_z_mm": np.asarray(dataset.l3_z_mm, dtype=np.float64)}
    for view in VIEWS:
        arrays[f"images_{view}"] = dataset.images[view].astype(np.float16)
        arrays[f"geometry_{view}"] = np.array([json.dumps(g.to_dict()) for g in dataset.geometries[view]], dtype=str)
    with atomic_path(target) as tmp:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)
    return target


def load_dataset(path: str | Path) -> L3Dataset:
    """Reads a data set written by :func:`save_dataset`."""
    source = Path(path)
    if not source.is_file():
        raise InputError(source, "L3 data set file not found")
    try:
        with np.load(source, allow_pickle=False) as data:
            if str(data["format"]) != DATASET_FORMAT:
                raise InputError(source, f"not an L3 MIP data set (format {str(data['format'])!r})")
            config = MipConfig.from_dict(json.loads(str(data["config"])))
            images = {v: data[f"images_{v}"].astype(np.float32) for v in VIEWS}
            geometries = {v: tuple(MipGeometry.from_dict(json.loads(t)) for t in data[f"geometry_{v}"]) for v in VIEWS}
            return L3Dataset(tuple(str(n) for n in data["names"]), tuple(str(p) for p in data["patients"]),
                             images, geometries, np.asarray(data["l3_z_mm"], dtype=np.float64), config)
    except (KeyError, ValueError, TypeError, zipfile.BadZipFile, OSError) as error:
        raise InputError(source, f"unreadable L3 data set ({error})") from error


# --- the reference data set's .npz (Kanavati et al.'s ct-slice-detection) -------------------------

#: What a reference ``.npz`` may unpickle: numpy arrays, dtypes and scalars, nothing else.
_NUMPY_GLOBALS = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numpy", "ndarray"), ("numpy", "dtype")}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (object arrays of arrays, dicts, strings) and refuses any other class."""

    def find_class(self, module: str, name: str):
        short = module.rsplit(".", 1)[-1] if module.startswith("numpy") else module
        if (short, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if short == "multiarray":  # numpy.core (numpy 1) and numpy._core (numpy 2) pickles alike
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy 1
                from numpy.core import multiarray
            return getattr(multiarray, name)
        return super().find_class(module, name)


def _read_npz_member(archive: zipfile.ZipFile, name: str):
    """One array of an ``.npz``; object arrays go through the array-only unpickler."""
    from numpy.lib import format as npy_format

    with archive.open(f"{name}.npy") as handle:
        version = npy_format.read_magic(handle)
        header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = header(handle)
        if dtype.hasobject:
            return _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    with archive.open(f"{name}.npy") as handle:
        return npy_format.read_array(handle, allow_pickle=False)


def _annotator_mean(ydata, count: int, source: Path) -> np.ndarray:
    """The annotators' mean row per image: ydata is {annotator: rows} (0-d object array) or rows."""
    value = ydata.item() if isinstance(ydata, np.ndarray) and ydata.dtype.hasobject and ydata.ndim == 0 else ydata
    if isinstance(value, dict):
        per_annotator = [np.asarray(v, dtype=np.float64).reshape(-1) for v in value.values()]
    else:
        array = np.asarray(value, dtype=np.float64)
        per_annotator = [array] if array.ndim == 1 else list(array)
    if not per_annotator or any(len(v) != count for v in per_annotator):
        raise InputError(source, f"ydata does not hold one row per image for each annotator ({count} images)")
    return np.mean(per_annotator, axis=0)


def read_reference_npz(path: str | Path, config: MipConfig = MipConfig()) -> L3Dataset:
    """Reads the reference data set format into an :class:`L3Dataset` resampled as ``config`` says.

    The file holds ``images_f`` / ``images_s`` (frontal / sagittal MIPs in HU, rows = axial slices
    from the top), ``spacings`` ((x, y, z) mm per image: columns at x, rows at z), ``names`` and
    ``ydata`` (the L3 row from the top, in slices, per annotator; the annotators are averaged).
    World z is unknown there, so z_mm = -(slice index * z spacing): row 0 at z = 0, the head.
    """
    source = Path(path)
    if not source.is_file():
        raise InputError(source, "file not found")
    try:
        with zipfile.ZipFile(source) as archive:
            members = {n.removesuffix(".npy") for n in archive.namelist()}
            missing = {"images_f", "images_s", "ydata", "names", "spacings"} - members
            if missing:
                raise InputError(source, f"not a reference L3 .npz (missing {', '.join(sorted(missing))})")
            frontal, sagittal, ydata, names, spacings = (
                _read_npz_member(archive, n) for n in ("images_f", "images_s", "ydata", "names", "spacings"))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise InputError(source, f"unreadable reference .npz ({error})") from error
    names = tuple(str(n) for n in np.asarray(names).reshape(-1))
    spacings = np.asarray(spacings, dtype=np.float64).reshape(len(names), -1)
    if len(frontal) != len(names) or len(sagittal) != len(names):
        raise InputError(source, f"{len(names)} names but {len(frontal)} frontal and {len(sagittal)} sagittal images")
    rows_from_top = _annotator_mean(ydata, len(names), source)

    images = {view: [] for view in VIEWS}
    geometries = {view: [] for view in VIEWS}
    for index in range(len(names)):
        z_spacing, column_spacing = spacings[index][2], spacings[index][0]
        for view, stack in (("frontal", frontal), ("sagittal", sagittal)):
            projection = np.asarray(stack[index], dtype=np.float32)
            z_line = AxisLine(0, 0.0, -z_spacing, projection.shape[0])
            column_line = AxisLine(1, 0.0, column_spacing, projection.shape[1])
            mip = place_projection(projection, z_line, column_line, view, config)
            images[view].append(mip.image)
            geometries[view].append(mip.geometry)
    l3_z_mm = -rows_from_top * spacings[:, 2]
    return L3Dataset(names, names, {v: np.stack(images[v]) for v in VIEWS},
                     {v: tuple(geometries[v]) for v in VIEWS}, l3_z_mm, config)
