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
from medcad.io.atomic import check_output_folder
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


def check_mask_file(path: Path) -> Path:
    """Fails now when ``path`` is not a label-map file medcad can write."""
    if volume_suffix(path) not in WRITE_SUFFIXES:
        raise InputError(path, f"--masks writes a label map: give a file ending in {', '.join(WRITE_SUFFIXES)}")
    if path.is_dir():
        raise InputError(path, "--masks must be a file name, and this is a folder")
    check_output_folder(path.parent, "--masks")
    return path


def check_dicom_target(scan_path: Path, folder: Path, batch: bool) -> Path:
    """Fails now when ``--dicom-out`` cannot work: the input is not one DICOM series, or the folder is bad."""
    if batch or not is_dicom_input(scan_path):
        raise InputError(scan_path, "--dicom-out needs a DICOM series (a DICOM folder or file) as input; "
                                    "for other formats use --masks for the label map")
    return check_output_folder(folder, "--dicom-out")


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
    masked = list(findings[: len(masks)]) if masks is not None else []
    jobs = {}
    if targets.masks is not None:
        jobs["masks"] = lambda: _write_label_map(targets.masks, scan, masks)
    if targets.dicom_dir is not None:
        if dicom_series is None:
            raise InputError(scan.source, "DICOM outputs need a DICOM series as input")
        jobs["dicom"] = lambda: _write_dicom(targets.dicom_dir, dicom_series, scan, masked, masks, models)
    if targets.report is not None:
        jobs["report"] = lambda: _write_report(targets.report, scan, findings, masks, models, annotations, threshold)
    # The outputs are independent; zlib, NumPy and SimpleITK release the GIL, so two threads
    # overlap much of the report's and the DICOM objects' work on a 2-core machine.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        running = {name: pool.submit(_timed, job) for name, job in jobs.items()}
        done = {name: future.result() for name, future in running.items()}
    return WrittenOutputs(paths={key: path for job in done.values() for key, path in job.paths.items()},
                          seconds={name: job.seconds for name, job in done.items()},
                          report=done["report"].summary if "report" in done else None)


@dataclass(frozen=True)
class _Written:
    """What one output job wrote (its paths by name), its report summary if any, and its seconds."""

    paths: dict[str, Path]
    summary: object | None = None
    seconds: float = 0.0


def _timed(job) -> _Written:
    start = time.perf_counter()
    written = job()
    return _Written(written.paths, written.summary, time.perf_counter() - start)


def _write_label_map(path: Path, scan: Scan, masks: FindingMasks | None):
    from medcad.io.volume_files import write_array_file

    labels = (masks or FindingMasks(scan.shape_irc)).label_map()
    return _Written({"masks": write_array_file(labels, scan.geometry, path)})


def _write_dicom(folder: Path, dicom_series: Path, scan: Scan, findings: list[Finding], masks: FindingMasks | None,
                 models: Sequence[ModelIdentity]):
    from medcad.io.dicom import series_slice_files
    from medcad.reports.dicom_results import write_dicom_results

    files = series_slice_files(dicom_series, scan.series_uid)
    written = write_dicom_results(files, scan, findings, masks or FindingMasks(scan.shape_irc), models, folder)
    paths = {"dicom_seg": written.segmentation_path} if written.segmentation_path is not None else {}
    return _Written({**paths, "dicom_sr": written.report_path})


def _write_report(path: Path, scan: Scan, findings: Sequence[Finding], masks: FindingMasks | None,
                  models: Sequence[ModelIdentity], annotations: Sequence, threshold: float | None):
    from medcad.reports.html_report import write_report

    summary = write_report(path, scan, list(findings), masks, models, annotations=annotations, threshold=threshold)
    return _Written({"report": path}, summary)
