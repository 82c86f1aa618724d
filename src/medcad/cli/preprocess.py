"""``medcad preprocess``: scans -> lung-cropped, windowed, fixed-shape volumes in a cache folder, once."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("preprocess")(preprocess)


def preprocess(
    data: Path = typer.Argument(..., help="Volume table (CSV path,label[,split][,patient_id]), a folder of class "
                                          "folders, or a LUNA16-layout cohort with --luna-label."),
    out: Path = typer.Option(..., "--out", help="Cache folder: one .safetensors per volume and volumes.csv."),
    luna_label: str = typer.Option(None, "--luna-label", help="DATA is a LUNA16-layout cohort; label scans by "
                                                               "'malignant' (any malignant nodule) or 'nodule'."),
    shape: int = typer.Option(64, "--shape", help="Edge of the cubic model input in voxels."),
    spacing: float = typer.Option(None, "--spacing", help="Isotropic voxel size in mm (default: fit the lungs)."),
    window: str = typer.Option("lung", "--window", help="HU window: lung, mediastinum, bone, ... or LOW,HIGH."),
    margin_mm: float = typer.Option(10.0, "--margin-mm", help="Margin around the lungs' bounding box."),
    closing_mm: float = typer.Option(0.0, "--closing-mm", help="Closing radius of the lung masks (0: none)."),
    whole_scan: bool = typer.Option(False, "--whole-scan", help="Fit the whole scan, not the lungs' box."),
    mask_outside_mm: float = typer.Option(None, "--mask-outside-mm",
                                          help="Zero the image farther than this from the lungs (default: keep all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo volumes already in the cache."),
) -> None:
    """Segment the lungs, crop, resample and window every volume once; write volumes.csv for training."""
    from medcad.data.volume_cache import VolumePreprocessConfig
    from medcad.data.volumes import read_volume_table, table_from_luna
    from medcad.transforms.intensity import resolve_window
    from medcad.transforms.lung_mask import LungMaskConfig

    resolve_window(window)  # a bad window fails before any work
    config = VolumePreprocessConfig(shape=(shape,) * 3, spacing_mm=spacing, window=window,
                                    crop_to_lungs=not whole_scan, margin_mm=margin_mm, mask_outside_mm=mask_outside_mm,
                                    lungs=LungMaskConfig(closing_mm=closing_mm))
    table = table_from_luna(data, luna_label) if luna_label else read_volume_table(data)
    summary = preprocess_table(table, config, out, overwrite)
    typer.echo(f"{summary.written} volume(s) preprocessed, {summary.reused} already cached; "
               f"table: {summary.table_path}")


def preprocess_table(table, config, out: Path, overwrite: bool = False):
    """Preprocesses every record with a progress bar; returns the library's summary."""
    from rich.progress import Progress

    from medcad.data.volume_cache import preprocess_table as run

    with Progress(transient=True) as progress:
        task = progress.add_task(f"preprocessing {len(table.records)} volume(s)", total=len(table.records))
        return run(table, config, out, overwrite, on_volume=lambda: progress.advance(task))
