"""What ``medcad detect`` / ``medcad report`` write beside the findings file for one scan.

The findings' label map (``--masks``), the HTML report (``--report``) and the DICOM
Segmentation + Structured Report (``--dicom-out``), from one scan, its reported findings and
their masks. The CLI checks the targets before any model runs (:func:`check_targets`), so a bad
output path costs nothing and leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medcad.errors import InputError
from medcad.findings import Finding, FindingMasks, ModelIdentity
from medcad.io.scan import Scan
from medcad.io.volume_files import WRITE_SUFFIXES, volume_suffix

#: The label map's suffix in batch mode (one file per scan in the --masks folder).
BATCH_MASK_SUFFIX = ".nii.gz"


@dataclass(frozen=True)
class OutputTargets:
    """Where the outputs of one scan go (None: not wanted).

    Attributes:
        masks: the label map file (.nii.gz, .nii, .nrrd, .mhd, .mha).
        report: the HTML file.
        dicom_dir: the folder for ``seg.dcm`` and ``sr.dcm``.
    """

    masks: Path | None = None
    report: Path | None = None
    dicom_dir: Path | None = None

    def __bool__(self) -> bool:
        return any(p is not None for p in (self.masks, self.report, self.dicom_dir))


@dataclass(frozen=True)
class WrittenOutputs:
    """What was written for one scan, and how long each output took (seconds)."""

    paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    report: object | None = None  # the ReportSummary of the HTML report, for a batch index


def check_output_folder(path: Path, option: str) -> Path:
    """Fails now, with one line, when ``path`` cannot become a folder to write in."""
    if path.exists() and not path.is_dir():
        raise InputError(path, f"{option} must be a folder, and this is a file")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(path, f"{option}: {ancestor} is a file, so the folder cannot be created")
    import os

    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(path, f"{option}: the folder {ancestor} is not writable")
    return path


def check_mask_file(path: Path) -> Path:
    """Fails now when ``path`` is not a label-map file medcad can write."""
    if volume_suffix(path) not in WRITE_SUFFIXES:
        raise InputError(path, f"--masks writes a label map: give a file ending in {', '.join(WRITE_SUFFIXES)}")
    if path.is_dir():
        raise InputError(path, "--masks must be a file name, and this is a folder")
    check_output_folder(path.parent, "--masks")
    return path


def is_dicom_input(path: Path) -> bool:
    """True for a DICOM folder or file (what ``--dicom-out`` needs), False for a volume file."""
    from medcad.io import _is_dicom_file

    return path.is_dir() or (path.is_file() and volume_suffix(path) is None and _is_dicom_file(path))


def write_outputs(targets: OutputTargets, scan: Scan, findings: Sequence[Finding], masks: FindingMasks | None,
                  models: Sequence[ModelIdentity], annotations: Sequence = (), threshold: float | None = None,
                  dicom_series: Path | None = None) -> WrittenOutputs:
    """Writes the outputs ``targets`` asks for.

    Args:
        findings: the reported findings in table order (label k = ``findings[k - 1]``).
        masks: their voxels (at most as many as findings; the first ones).
        annotations: LUNA16 reference nodules of this scan, drawn in the report.
        dicom_series: the DICOM folder or file the scan was read from (for ``dicom_dir``).
    """
    paths, seconds, summary = {}, {}, None
    masked = list(findings[: len(masks)]) if masks is not None else []
    if targets.masks is not None:
        start = time.perf_counter()
        from medcad.io.volume_files import write_array_file

        labels = masks.label_map() if masks is not None else FindingMasks(scan.shape_irc).label_map()
        paths["masks"] = write_array_file(labels, scan.geometry, targets.masks)
        seconds["masks"] = time.perf_counter() - start
    if targets.dicom_dir is not None:
        if dicom_series is None:
            raise InputError(scan.source, "DICOM outputs need a DICOM series as input")
        start = time.perf_counter()
        from medcad.io.dicom import series_slice_files
        from medcad.reports.dicom_results import write_dicom_results

        files = series_slice_files(dicom_series, scan.series_uid)
        written = write_dicom_results(files, scan, masked, masks or FindingMasks(scan.shape_irc), models,
                                      targets.dicom_dir)
        if written.segmentation_path is not None:
            paths["dicom_seg"] = written.segmentation_path
        paths["dicom_sr"] = written.report_path
        seconds["dicom"] = time.perf_counter() - start
    if targets.report is not None:
        start = time.perf_counter()
        from medcad.reports.html_report import write_report

        summary = write_report(targets.report, scan, list(findings), masks, models, annotations=annotations,
                               threshold=threshold)
        paths["report"] = targets.report
        seconds["report"] = time.perf_counter() - start
    return WrittenOutputs(paths, seconds, summary)
