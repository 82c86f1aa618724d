"""``medcad detect SCAN``: the nodule CAD on a CT (or on every volume file of a folder)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

DEFAULT_MODELS = Path(os.environ.get("MEDCAD_MODELS", "models"))


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


def detect(
    scan_path: Path = typer.Argument(..., help="DICOM folder or file, .mhd, .mha, .nrrd, .nii(.gz); or a folder of "
                                               "volume files (e.g. a LUNA16 subset) for batch mode."),
    models: Path = typer.Option(DEFAULT_MODELS, "--models",
                                help="Folder with segmentation/, nodule/ and optional malignancy/ models "
                                     "(default $MEDCAD_MODELS or ./models)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Nodule probability above which a candidate is a finding."),
    seg_threshold: float = typer.Option(0.5, "--seg-threshold", help="Segmentation probability for the voxel mask."),
    core_threshold: float = typer.Option(None, "--core-threshold",
                                         help="Split mask components at this higher probability: one candidate per "
                                              "core (e.g. 0.99; default: no split, the book)."),
    erosion: str = typer.Option("3d", "--erosion", help="Erosion of the mask: 3d (the book), 2d (in-plane only, "
                                                        "thick slices) or none (coarse grids)."),
    mirror_views: bool = typer.Option(False, "--mirror-views",
                                      help="Average the classifiers over the 8 mirror images of each crop "
                                           "(test-time augmentation; 8x the classify time; default off, the book)."),
    lungs_only: bool = typer.Option(False, "--lungs-only",
                                    help="Run the U-Net only in the lungs (found by thresholds) and classify only "
                                         "candidates near them: about 2x faster on a CPU, nothing outside the lungs "
                                         "is proposed (default off, the book)."),
    out: Path = typer.Option(None, "--out", help="Findings file (.json or .csv); in batch mode a folder."),
    file_format: str = typer.Option("json", "--format", help="Batch mode: json or csv, one file per scan."),
    all_candidates: bool = typer.Option(False, "--all-candidates", help="Write every candidate, not only findings."),
    backend: str = typer.Option("auto", "--backend", help="auto (GPU: PyTorch; CPU: ONNX Runtime for the U-Net, "
                                                          "PyTorch for the classifiers), onnx or torch."),
    series: str = typer.Option(None, "--series", help="SeriesInstanceUID when a DICOM folder holds several."),
    masks: Path = typer.Option(None, "--masks",
                               help="Label map of the findings on the scan's grid (.nii.gz, .nrrd, .mhd, ...; label k = "
                                    "finding k of the table, at most 100); in batch mode a folder (<uid>.nii.gz each)."),
    report: Path = typer.Option(None, "--report",
                                help="Folder for the HTML report (<uid>.html: views, table, 3D viewer; opens offline); "
                                     "in batch mode one per scan and index.html."),
    dicom_out: Path = typer.Option(None, "--dicom-out",
                                   help="Folder for a DICOM Segmentation (seg.dcm) and a TID 1500 Structured Report "
                                        "(sr.dcm) of the findings; needs a DICOM series as input."),
    annotations: Path = typer.Option(None, "--annotations",
                                     help="LUNA16 annotations.csv: the report draws the reference nodules, hit or missed."),
) -> None:
    """Find lung nodules: segment, group, classify; print the findings and write them."""
    from rich.console import Console

    from medcad.errors import InputError, MedcadError
    from medcad.io.volume_files import volume_suffix
    from medcad.pipeline import load_detect_models

    console = Console()
    batch = sorted(p for p in scan_path.iterdir() if volume_suffix(p)) if scan_path.is_dir() else []
    if batch and out is not None and out.suffix.lower() in (".json", ".csv"):
        raise InputError(out, "batch mode writes one file per scan: give a folder to --out")
    if file_format not in ("json", "csv"):
        raise InputError(None, f"--format must be json or csv, not {file_format!r}")
    from medcad.pipeline.segment import check_core_threshold, erosion_axes

    erosion_axes(erosion)  # bad values fail before any model loads
    check_core_threshold(seg_threshold, core_threshold)
    _check_output_options(scan_path, bool(batch), masks, report, dicom_out)
    references = _read_references(annotations)
    detect_models = load_detect_models(models, backend=backend)
    failed, summaries = [], []
    for path in batch or [scan_path]:
        try:
            scan, detection = _detect_one(console, path, series, detect_models, seg_threshold, erosion, core_threshold,
                                          mirror_views, lungs_only, threshold)
        except MedcadError as error:
            if not batch:
                raise
            console.print(f"[red]skipped[/red] {error}")  # one bad file does not stop a batch
            failed.append(path.name)
            continue
        findings = detection.findings if all_candidates else detection.above(threshold)
        _print_findings(console, detection, threshold)
        target = (out or Path("findings")) / f"{detection.series_uid}.{file_format}" if batch else out
        if target is not None:
            from medcad.findings import write_findings

            write_findings(target, findings, series_uid=detection.series_uid, source=str(path),
                           models=detect_models.identities)
            console.print(f"wrote {target} ({len(findings)} {'candidates' if all_candidates else 'findings'})")
        uid = detection.series_uid
        targets = _targets(uid, bool(batch), masks, report, dicom_out)
        if targets:
            from medcad.reports.outputs import write_outputs

            written = write_outputs(targets, scan, detection.above(threshold), detection.masks,
                                    detect_models.identities, references.for_series(uid) if references else (),
                                    threshold, dicom_series=path if dicom_out is not None else None)
            _print_written(console, written)
            if written.report is not None:
                summaries.append(written.report)
    if batch and report is not None and summaries:
        from medcad.reports.html_report import write_report_index

        console.print(f"wrote {write_report_index(report, summaries)}")
    if failed:
        raise MedcadError(f"{len(failed)} of {len(batch)} scans could not be read: {', '.join(failed)}")


def _check_output_options(scan_path: Path, batch: bool, masks: Path | None, report: Path | None,
                          dicom_out: Path | None) -> None:
    """Bad output options fail before any model loads (one line, nothing written)."""
    from medcad.io.atomic import check_output_folder
    from medcad.reports.outputs import check_dicom_target, check_mask_file

    if masks is not None:
        check_output_folder(masks, "--masks") if batch else check_mask_file(masks)
    if report is not None:
        check_output_folder(report, "--report")
    if dicom_out is not None:
        check_dicom_target(scan_path, dicom_out, batch)


def _read_references(annotations: Path | None):
    if annotations is None:
        return None
    from medcad.io.luna import read_annotations

    return read_annotations(annotations)


def _targets(uid: str, batch: bool, masks: Path | None, report: Path | None, dicom_out: Path | None):
    from medcad.reports.outputs import BATCH_MASK_SUFFIX, OutputTargets

    return OutputTargets(masks=(masks / f"{uid}{BATCH_MASK_SUFFIX}" if batch else masks) if masks else None,
                         report=report / f"{uid}.html" if report else None, dicom_dir=dicom_out)


def _print_written(console, written) -> None:
    for name, target in written.paths.items():
        console.print(f"wrote {target} ({name.replace('_', ' ')})")
    if written.seconds:
        console.print("  " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in written.seconds.items()))


def _detect_one(console, path: Path, series: str | None, detect_models, seg_threshold: float, erosion: str,
                core_threshold: float | None = None, mirror_views: bool = False, lungs_only: bool = False,
                masks_above: float | None = 0.5):
    """Reads one scan and runs the CAD with a progress bar per stage; returns (scan, detection)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medcad.io import read_scan
    from medcad.pipeline import detect

    with Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        reading = progress.add_task("read", total=1)
        scan = read_scan(path, series_uid=series)
        progress.update(reading, completed=1)
        tasks = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=max(total, 1))
            progress.update(tasks[stage], completed=done if total else 1)

        detection = detect(scan, detect_models, segmentation_threshold=seg_threshold, erosion=erosion, progress=report,
                           core_threshold=core_threshold, mirror_views=mirror_views, lungs_only=lungs_only,
                           masks_above=masks_above)
    timing = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in detection.seconds.items())
    console.print(f"{path.name}: {len(detection.candidates)} candidates ({timing}; backend {detect_models.backend})")
    if lungs_only:
        region = detection.region
        console.print(f"  U-Net ran on {region.share():.0%} of the scan (the lungs' windows)" if region
                      else "  U-Net ran on the whole scan (no lungs found)")
    return scan, detection


def _print_findings(console, detection, threshold: float) -> None:
    from rich.table import Table

    findings = detection.above(threshold)
    table = Table(title=f"{detection.series_uid}: {len(findings)} finding(s) with nodule probability > {threshold}")
    for column in ("nodule prob", "malignancy prob", "centre xyz (mm)", "centre irc", "diameter (mm)", "voxels"):
        table.add_column(column, justify="right")
    for f in findings:
        table.add_row(f"{f.nodule_prob:.3f}", "-" if f.malignancy_prob is None else f"{f.malignancy_prob:.3f}",
                      ", ".join(f"{v:.2f}" for v in f.center_xyz), ", ".join(f"{v:.1f}" for v in f.center_irc),
                      f"{f.diameter_mm:.1f}", str(f.voxel_count))
    console.print(table)
