"""Writing a phantom cohort in the LUNA16 layout, so every LUNA16 command runs on it unchanged.

``DIR/subset0/<series_uid>.mhd/.raw`` (or a DICOM series folder, or ``.nii.gz``) plus, in ``DIR``:

- ``annotations.csv``: ``seriesuid,coordX,coordY,coordZ,diameter_mm`` (world mm, LPS).
- ``candidates.csv``: ``seriesuid,coordX,coordY,coordZ,class`` (1 at each nodule, 0 elsewhere).
- ``annotations_with_malignancy.csv``: the book's columns (``mal_bool``, ``mal_details``, bounding
  box, ``len_mal_details``).
- ``vertebra_levels.csv``: ``seriesuid,vertebra,z_top_mm,z_bottom_mm,slice_first,slice_last`` for
  T1 ... L5 (slice indices of the written array; -1 when the level is outside the scan).
- ``phantom_nodules.csv``: what each nodule is (kind, margin, attachment), for analysis.
- ``cohort.json``: the generator settings (no time stamps: a seed gives identical bytes).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medcad.data.synthetic.phantom import Phantom, PhantomOptions, generate_phantom, phantom_series_uid
from medcad.errors import InputError
from medcad.io import write_scan
from medcad.io.atomic import write_text_atomic

FORMATS = ("mhd", "dicom", "nifti")
SUBSET = "subset0"


@dataclass(frozen=True)
class ScanSummary:
    """One written scan, for the summary table.

    Attributes:
        series_uid: the scan's UID (the file stem).
        path: the written file or DICOM folder.
        shape_irc: voxels along (z, y, x).
        spacing_xyz: mm.
        flipped_axes: names of the axes whose direction is -1 (e.g. "yz"), "" for none.
        nodules: nodules in the scan.
        candidates: candidate rows (nodules included).
    """

    series_uid: str
    path: Path
    shape_irc: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    flipped_axes: str
    nodules: int
    candidates: int


def write_cohort(out_dir: str | Path, scans: int, seed: int, options: PhantomOptions = PhantomOptions(),
                 file_format: str = "mhd", on_scan: Callable[[ScanSummary], None] | None = None) -> list[ScanSummary]:
    """Generates ``scans`` phantoms and writes them with their tables into ``out_dir``.

    Raises:
        InputError: for an unknown format, or when ``out_dir/subset0`` holds scans of another cohort.
    """
    if file_format not in FORMATS:
        raise InputError(None, f"unknown format {file_format!r}; choose one of {', '.join(FORMATS)}")
    if scans < 1:
        raise InputError(None, f"--scans must be at least 1, got {scans}")
    out = Path(out_dir)
    subset = out / SUBSET
    uids = [phantom_series_uid(seed, index, options) for index in range(scans)]
    _refuse_foreign_scans(subset, set(uids))

    tables = _Tables()
    summaries = []
    for index in range(scans):
        phantom = generate_phantom(seed, index, options)
        path = _write_scan(phantom, subset, file_format)
        tables.add(phantom)
        geometry = phantom.scan.geometry
        summary = ScanSummary(
            series_uid=phantom.scan.series_uid, path=path, shape_irc=geometry.shape_irc,
            spacing_xyz=tuple(round(float(s), 4) for s in geometry.spacing_xyz),
            flipped_axes="".join(axis for axis, d in zip("xyz", geometry.direction.diagonal()) if d < 0),
            nodules=len(phantom.nodules), candidates=len(phantom.nodules) + len(phantom.negatives_xyz))
        summaries.append(summary)
        if on_scan is not None:
            on_scan(summary)
    tables.write(out)
    settings = {"generator": "medcad synth", "seed": seed, "scans": scans, "size": options.size,
                "abdomen": options.abdomen, "negatives_per_scan": options.negatives_per_scan,
                "format": file_format, "series_uids": uids}
    if options.min_nodule_mm is not None:  # only when set: default cohorts keep their bytes
        settings["min_nodule_mm"] = options.min_nodule_mm
    if options.clear_fraction:
        settings["clear_fraction"] = options.clear_fraction
    write_text_atomic(out / "cohort.json", json.dumps(settings, indent=2) + "\n")
    return summaries


def _refuse_foreign_scans(subset: Path, uids: set[str]) -> None:
    if not subset.is_dir():
        return
    foreign = sorted(p.name for p in subset.iterdir() if not p.name.startswith(".") and _stem(p) not in uids)
    if foreign:
        raise InputError(subset, f"holds {len(foreign)} scan file(s) of another cohort (e.g. {foreign[0]}); "
                                 "write into an empty folder")


def _stem(path: Path) -> str:
    for suffix in (".mhd", ".raw", ".nii.gz"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _write_scan(phantom: Phantom, subset: Path, file_format: str) -> Path:
    uid = phantom.scan.series_uid
    if file_format == "dicom":
        from medcad.io.dicom_writer import write_dicom_series

        return write_dicom_series(phantom.scan, subset / uid, series_uid=uid, series_description="medcad phantom")
    suffix = ".mhd" if file_format == "mhd" else ".nii.gz"
    return write_scan(phantom.scan, subset / f"{uid}{suffix}")


def _mm(value: float) -> str:
    return f"{value:.4f}"


class _Tables:
    """Rows of the cohort's CSV tables, filled scan by scan."""

    def __init__(self) -> None:
        self.rows: dict[str, list[list[str]]] = {name: [] for name in _HEADERS}

    def add(self, phantom: Phantom) -> None:
        uid = phantom.scan.series_uid
        candidates = [[uid, *map(_mm, n.center_xyz), "1"] for n in phantom.nodules]
        candidates += [[uid, *map(_mm, point), "0"] for point in phantom.negatives_xyz]
        self.rows["candidates.csv"] += candidates
        for n in phantom.nodules:
            t = n.traits
            center, diameter = list(map(_mm, n.center_xyz)), _mm(t.diameter_mm)
            self.rows["annotations.csv"].append([uid, *center, diameter])
            self.rows["annotations_with_malignancy.csv"].append(
                [uid, *center, diameter, str(t.is_malignant), str(list(t.malignancy_ratings)),
                 *map(_mm, n.bbox_low_xyz), *map(_mm, n.bbox_high_xyz), str(len(t.malignancy_ratings))])
            self.rows["phantom_nodules.csv"].append(
                [uid, *center, diameter, t.kind, t.margin, t.attachment, str(t.is_malignant), f"{n.hu:.1f}"])
        for level in phantom.vertebrae:
            self.rows["vertebra_levels.csv"].append(
                [uid, level.name, _mm(level.z_top_mm), _mm(level.z_bottom_mm), str(level.slice_first), str(level.slice_last)])

    def write(self, out: Path) -> None:
        for name, header in _HEADERS.items():
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(self.rows[name])
            write_text_atomic(out / name, buffer.getvalue())


_HEADERS = {
    "annotations.csv": ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"),
    "candidates.csv": ("seriesuid", "coordX", "coordY", "coordZ", "class"),
    "annotations_with_malignancy.csv": ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "mal_bool", "mal_details",
                                        "bboxLowX", "bboxLowY", "bboxLowZ", "bboxHighX", "bboxHighY", "bboxHighZ",
                                        "len_mal_details"),
    "vertebra_levels.csv": ("seriesuid", "vertebra", "z_top_mm", "z_bottom_mm", "slice_first", "slice_last"),
    "phantom_nodules.csv": ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "kind", "margin", "attachment",
                            "malignant", "hu"),
}
