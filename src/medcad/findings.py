"""Candidate and finding records of the nodule CAD, and the findings file format.

``medcad detect`` writes findings; ``medcad evaluate`` reads them. Two formats, one content:

- JSON: ``{"format": "medcad-findings", "version": 1, "series_uid": ..., "source": ...,
  "models": [{"role", "architecture", "source", "sha256"}, ...] (optional), "findings": [{"series_uid", "center_xyz", "center_irc", "nodule_prob", "malignancy_prob",
  "diameter_mm", "voxel_count"}, ...]}``.
- CSV: the LUNA16 submission columns ``seriesuid,coordX,coordY,coordZ,probability`` (so the file
  also goes into the LUNA16 evaluation script as it is) plus ``malignancy_probability,
  diameter_mm,voxel_count,index,row,col``; one file may hold many series.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.io.atomic import write_text_atomic

FORMAT_NAME = "medcad-findings"
FORMAT_VERSION = 1
CSV_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability", "malignancy_probability",
               "diameter_mm", "voxel_count", "index", "row", "col")
_LUNA_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability")
#: At most this many findings of a scan keep their voxels (LUNA16 scores the top 100 per scan too).
MAX_MASKED_FINDINGS = 100


@dataclass(frozen=True)
class Candidate:
    """A connected component of the segmentation: where something nodule-like might be.

    Attributes:
        series_uid: the scan it was found in (None when unknown).
        center_irc: voxel index (z, y, x), fractional: the HU-weighted centroid.
        center_xyz: the same point in world mm (LPS).
        voxel_count: voxels in the component.
        diameter_mm: diameter of the sphere with the component's volume.
    """

    series_uid: str | None
    center_irc: tuple[float, float, float]
    center_xyz: tuple[float, float, float]
    voxel_count: int
    diameter_mm: float


@dataclass(frozen=True)
class Finding:
    """A scored candidate: what the CAD reports.

    Attributes:
        series_uid: the scan (LUNA16 ``seriesuid``).
        center_xyz: world mm (LPS).
        nodule_prob: probability that this is a nodule.
        malignancy_prob: probability of malignancy (None without a malignancy model).
        center_irc: voxel index (z, y, x) in the scan it came from, when known.
        diameter_mm: equivalent diameter of the segmented component, when known.
        voxel_count: voxels in the segmented component, when known.
    """

    series_uid: str
    center_xyz: tuple[float, float, float]
    nodule_prob: float
    malignancy_prob: float | None = None
    center_irc: tuple[float, float, float] | None = None
    diameter_mm: float | None = None
    voxel_count: int | None = None

    @classmethod
    def from_candidate(cls, candidate: Candidate, nodule_prob: float,
                       malignancy_prob: float | None = None, series_uid: str | None = None) -> "Finding":
        return cls(
            series_uid=series_uid or candidate.series_uid or "",
            center_xyz=tuple(float(v) for v in candidate.center_xyz),
            nodule_prob=float(nodule_prob),
            malignancy_prob=None if malignancy_prob is None else float(malignancy_prob),
            center_irc=tuple(float(v) for v in candidate.center_irc),
            diameter_mm=float(candidate.diameter_mm),
            voxel_count=int(candidate.voxel_count),
        )


@dataclass(frozen=True)
class ModelIdentity:
    """Which model ran in a role: what reports and DICOM results name as the algorithm.

    Attributes:
        role: ``segmentation``, ``nodule`` or ``malignancy``.
        architecture: the registry name (e.g. ``nodule_unet2d``).
        source: where the weights came from (the provenance's ``source`` / ``trained_by``, else the folder name).
        sha256: SHA-256 of ``model.safetensors`` (hex).
    """

    role: str
    architecture: str
    source: str
    sha256: str


@dataclass(frozen=True, eq=False)
class FindingMasks:
    """The voxels of the connected component each reported finding came from.

    Label ``k`` (1-based) is finding ``k`` in the findings table's order (highest nodule
    probability first); components never overlap, so one label map holds them all.

    Attributes:
        shape_irc: the scan's shape (z, y, x).
        voxels: per finding, the ascending flat indices of its component's voxels in the scan.
    """

    shape_irc: tuple[int, int, int]
    voxels: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.voxels)

    def label_map(self) -> np.ndarray:
        """Labels (z, y, x), uint16: 0 background, k the voxels of finding k."""
        labels = np.zeros(self.shape_irc, dtype=np.uint16)
        for label, flat_index in enumerate(self.voxels, start=1):
            labels.ravel()[flat_index] = label
        return labels

    def mask(self, label: int) -> np.ndarray:
        """Boolean volume of finding ``label`` (1-based)."""
        mask = np.zeros(self.shape_irc, dtype=bool)
        mask.ravel()[self.voxels[label - 1]] = True
        return mask

    @classmethod
    def from_label_map(cls, labels: np.ndarray) -> "FindingMasks":
        """The inverse of :meth:`label_map` (labels 1..max; a missing label gives an empty set)."""
        flat = labels.ravel()
        where = np.flatnonzero(flat)
        values = flat[where].astype(np.int64)
        order = np.argsort(values, kind="stable")
        bounds = np.searchsorted(values[order], np.arange(1, int(values.max(initial=0)) + 2))
        return cls(tuple(int(v) for v in labels.shape),
                   tuple(where[order[bounds[k]:bounds[k + 1]]] for k in range(len(bounds) - 1)))


def findings_to_json(findings: list[Finding], series_uid: str | None = None, source: str | None = None,
                     models: Sequence[ModelIdentity] = ()) -> str:
    """Serialises findings of one scan (or several) to the JSON format."""
    return json.dumps({
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "series_uid": series_uid,
        "source": source,
        "models": [asdict(m) for m in models],
        "findings": [asdict(f) for f in findings],
    }, indent=1)


def findings_to_csv(findings: list[Finding]) -> str:
    """Serialises findings to the CSV format (LUNA16 submission columns first)."""
    buffer = _io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in findings:
        irc = f.center_irc or ("", "", "")
        writer.writerow([
            f.series_uid, *(repr(float(v)) for v in f.center_xyz), repr(f.nodule_prob),
            "" if f.malignancy_prob is None else repr(f.malignancy_prob),
            "" if f.diameter_mm is None else repr(f.diameter_mm),
            "" if f.voxel_count is None else f.voxel_count, *irc,
        ])
    return buffer.getvalue()


def write_findings(path: str | Path, findings: list[Finding], series_uid: str | None = None,
                   source: str | None = None, models: Sequence[ModelIdentity] = ()) -> Path:
    """Writes findings atomically as .json or .csv (by suffix; only JSON names the models)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".json":
        write_text_atomic(target, findings_to_json(findings, series_uid, source, models))
    elif suffix == ".csv":
        write_text_atomic(target, findings_to_csv(findings))
    else:
        raise InputError(target, "findings are written as .json or .csv")
    return target


def read_findings(path: str | Path) -> list[Finding]:
    """Reads a findings file (.json from medcad, or .csv in medcad's / LUNA16's submission format)."""
    return _read_file(Path(path))[1]


def read_findings_models(path: str | Path) -> list[ModelIdentity]:
    """The models a JSON findings file names (none for a CSV or an older JSON file)."""
    source = Path(path)
    if source.suffix.lower() != ".json":
        return []
    _read_file(source)  # the same checks and errors as the findings
    try:
        return [ModelIdentity(str(m["role"]), str(m["architecture"]), str(m["source"]), str(m["sha256"]))
                for m in json.loads(source.read_text()).get("models", [])]
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(source, f"malformed models list ({error})") from error


def read_findings_folder(path: str | Path) -> list[Finding]:
    """Reads one findings file, or every .json / .csv file in a folder (sorted by name)."""
    return [f for file in _findings_files(Path(path)) for f in _read_file(file)[1]]


def read_findings_by_series(path: str | Path) -> dict[str, list[Finding]]:
    """Findings of a file or folder grouped by scan.

    A JSON file's own ``series_uid`` names its scan even when nothing was found there, so an
    evaluation still counts that scan (a CSV cannot say so: it has no row for such a scan).
    """
    grouped: dict[str, list[Finding]] = {}
    for file in _findings_files(Path(path)):
        declared_uid, findings = _read_file(file)
        if declared_uid:
            grouped.setdefault(declared_uid, [])
        for finding in findings:
            grouped.setdefault(finding.series_uid, []).append(finding)
    return grouped


def _findings_files(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".json", ".csv"))
        if not files:
            raise InputError(source, "no .json or .csv findings files in the folder")
        return files
    return [source]


def _read_file(source: Path) -> tuple[str | None, list[Finding]]:
    """The file's own series UID (JSON only, else None) and its findings."""
    if not source.is_file():
        raise InputError(source, "findings file not found")
    suffix = source.suffix.lower()
    try:
        if suffix == ".json":
            return _read_json(source)
        if suffix == ".csv":
            return None, _read_csv(source)
    except (KeyError, ValueError, TypeError) as error:
        raise InputError(source, f"malformed findings file ({error})") from error
    raise InputError(source, "findings files are .json or .csv")


def _read_json(source: Path) -> tuple[str | None, list[Finding]]:
    document = json.loads(source.read_text())
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise InputError(source, f"not a medcad findings file (no \"format\": \"{FORMAT_NAME}\")")
    findings = []
    for item in document["findings"]:
        findings.append(Finding(
            series_uid=str(item.get("series_uid") or document.get("series_uid") or ""),
            center_xyz=_triple(item["center_xyz"]),
            nodule_prob=_probability(item["nodule_prob"]),
            malignancy_prob=None if item.get("malignancy_prob") is None else _probability(item["malignancy_prob"]),
            center_irc=None if item.get("center_irc") is None else _triple(item["center_irc"]),
            diameter_mm=None if item.get("diameter_mm") is None else float(item["diameter_mm"]),
            voxel_count=None if item.get("voxel_count") is None else int(item["voxel_count"]),
        ))
    declared_uid = document.get("series_uid")
    return (str(declared_uid) if declared_uid else None), findings


def _read_csv(source: Path) -> list[Finding]:
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _LUNA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(source, f"CSV lacks the column(s) {', '.join(missing)}")
        findings = []
        for row in reader:
            irc = (row.get("index"), row.get("row"), row.get("col"))
            findings.append(Finding(
                series_uid=row["seriesuid"],
                center_xyz=_triple((row["coordX"], row["coordY"], row["coordZ"])),
                nodule_prob=_probability(row["probability"]),
                malignancy_prob=_optional_probability(row.get("malignancy_probability")),
                center_irc=_triple(irc) if all(v not in (None, "") for v in irc) else None,
                diameter_mm=float(row["diameter_mm"]) if row.get("diameter_mm") else None,
                voxel_count=int(row["voxel_count"]) if row.get("voxel_count") else None,
            ))
    return findings


def _triple(values) -> tuple[float, float, float]:
    triple = tuple(float(v) for v in values)
    if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
        raise ValueError(f"expected three finite numbers, got {values!r}")
    return triple


def _probability(value) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"probability {number} outside [0, 1]")
    return number


def _optional_probability(value) -> float | None:
    return None if value in (None, "") else _probability(value)
