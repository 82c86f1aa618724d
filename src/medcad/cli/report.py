"""``medcad report SCAN FINDINGS``: the HTML report (and optional DICOM results) of findings already written.

The same outputs as ``medcad detect --report / --masks / --dicom-out``, from a scan and the
findings file ``detect`` wrote (and its ``--masks`` label map for the outlines), without running
the models again. A folder of volume files with a folder of findings files gives one report per
scan (findings matched by series UID, ``<uid>.json``) and ``index.html``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    scan_path: Path = typer.Argument(..., help="The scan (DICOM folder or file, .mhd, .nii.gz, ...), or a folder of "
                                               "volume files for batch mode."),
    findings_path: Path = typer.Argument(..., help="Findings file from medcad detect (.json or .csv); in batch mode "
                                                   "a folder of <uid>.json / <uid>.csv."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for <uid>.html (and index.html in batch mode)."),
    masks: Path = typer.Option(None, "--masks", help="The label map from detect --masks (in batch mode its folder): "
                                                     "outlines in the views and the viewer."),
    annotations: Path = typer.Option(None, "--annotations", help="LUNA16 annotations.csv: reference nodules drawn, "
                                                                 "hit or missed."),
    threshold: float = typer.Option(0.5, "--threshold", help="Findings with nodule probability above this are shown."),
    dicom_out: Path = typer.Option(None, "--dicom-out", help="Also write seg.dcm + sr.dcm here (needs a DICOM "
                                                             "series and --masks)."),
    series: str = typer.Option(None, "--series", help="SeriesInstanceUID when a DICOM folder holds several."),
) -> None:
    """Write a self-contained HTML report (views, sortable table, 3D viewer) of a scan's findings."""
    from rich.console import Console

    from medcad.cli.detect import _print_written, _read_references
    from medcad.errors import InputError
    from medcad.io.volume_files import volume_suffix
    from medcad.io.atomic import check_output_folder
    from medcad.reports.outputs import check_dicom_target

    console = Console()
    batch = sorted(p for p in scan_path.iterdir() if volume_suffix(p)) if scan_path.is_dir() else []
    check_output_folder(out, "--out")
    if dicom_out is not None:
        if masks is None:
            raise InputError(None, "--dicom-out needs --masks (the label map from medcad detect --masks)")
        check_dicom_target(scan_path, dicom_out, bool(batch))
    if batch and not findings_path.is_dir():
        raise InputError(findings_path, "batch mode (a folder of scans) needs a folder of findings files")
    references = _read_references(annotations)
    summaries = []
    for path in batch or [scan_path]:
        written = _report_one(path, findings_path, masks, out, dicom_out, threshold, series, references, bool(batch))
        _print_written(console, written)
        summaries.append(written.report)
    if batch:
        from medcad.reports.html_report import write_report_index

        console.print(f"wrote {write_report_index(out, summaries)}")


def _report_one(scan_path: Path, findings_path: Path, masks_path: Path | None, out: Path, dicom_out: Path | None,
                threshold: float, series: str | None, references, batch: bool):
    from medcad.findings import read_findings_by_series, read_findings_models
    from medcad.io import read_scan
    from medcad.pipeline.detect import scan_name
    from medcad.reports.outputs import BATCH_MASK_SUFFIX, OutputTargets, write_outputs

    scan = read_scan(scan_path, series_uid=series)
    uid = scan.series_uid or scan_name(str(scan_path))
    findings_file = _findings_file(findings_path, uid) if batch else findings_path
    by_series = read_findings_by_series(findings_file)
    found = by_series.get(uid, [] if by_series else [])
    if not found and len(by_series) == 1 and not batch:
        found = next(iter(by_series.values()))  # one scan's file, named by its stem rather than a UID
    findings = sorted((f for f in found if f.nodule_prob > threshold), key=lambda f: -f.nodule_prob)
    masks_file = (masks_path / f"{uid}{BATCH_MASK_SUFFIX}" if batch else masks_path) if masks_path else None
    masks = _read_masks(masks_file, scan, len(findings)) if masks_file else None
    targets = OutputTargets(report=out / f"{uid}.html", dicom_dir=dicom_out)
    return write_outputs(targets, scan, findings, masks, read_findings_models(findings_file),
                         references.for_series(uid) if references else (), threshold,
                         dicom_series=scan_path if dicom_out is not None else None)


def _findings_file(folder: Path, uid: str) -> Path:
    from medcad.errors import InputError

    for suffix in (".json", ".csv"):
        if (folder / f"{uid}{suffix}").is_file():
            return folder / f"{uid}{suffix}"
    raise InputError(folder, f"no findings file {uid}.json or {uid}.csv for the scan {uid}")


def _read_masks(path: Path, scan, n_findings: int):
    """The label map of ``detect --masks``, checked against the scan's grid."""
    import numpy as np

    from medcad.errors import InputError
    from medcad.findings import FindingMasks
    from medcad.io import read_scan

    labels = read_scan(path, padding_to_air=False)
    same_grid = all(np.allclose(a, b, atol=1e-3) for a, b in (
        (labels.origin_xyz, scan.origin_xyz), (labels.spacing_xyz, scan.spacing_xyz), (labels.direction, scan.direction)))
    if labels.shape_irc != scan.shape_irc or not same_grid:
        raise InputError(path, f"the label map's grid {labels.shape_irc} does not match the scan's {scan.shape_irc}")
    if labels.hu.min() < 0:
        raise InputError(path, "not a findings label map (negative labels)")
    masks = FindingMasks.from_label_map(labels.hu)
    if len(masks) > n_findings:
        masks = FindingMasks(masks.shape_irc, masks.voxels[:n_findings])
    return masks
