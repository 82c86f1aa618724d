"""``medcad info SCAN``: what a scan is and where it sits."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    scan_path: Path = typer.Argument(..., help="DICOM folder or file, .mhd, .mha, .nrrd, .nii(.gz)."),
    series: str = typer.Option(None, "--series", help="SeriesInstanceUID when a folder holds several."),
    irregular: str = typer.Option("refuse", help="Irregular DICOM slice spacing: refuse or resample."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Print shape, spacing, origin, direction, HU range and series UID of a scan."""
    import json

    from medcad.io import read_scan
    from medcad.io.summary import summarise_scan

    summary = summarise_scan(read_scan(scan_path, series_uid=series, irregular=irregular))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(scan_path), show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in summary.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    Console().print(table)
