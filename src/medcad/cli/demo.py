"""``medcad demo``: medcad's main job on built-in data (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the demo's files.")) -> None:
    """Generate a small CT volume, write it as MetaImage and show what medcad reads from it."""
    import numpy as np

    from medcad.cli.info import info
    from medcad.io import Scan, write_scan

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:64, 0:128, 0:128]
    hu = np.full((64, 128, 128), -1000, dtype=np.int16)
    body = ((y - 64) / 56.0) ** 2 + ((x - 64) / 60.0) ** 2 < 1
    hu[body] = 40
    lungs = ((((y - 60) / 36.0) ** 2 + ((np.abs(x - 64) - 26) / 20.0) ** 2) < 1) & body
    hu[lungs] = -850
    nodule = (z - 32) ** 2 + (y - 55) ** 2 + (x - 40) ** 2 < 25
    hu[nodule] = 30
    hu = (hu + rng.normal(0, 15, hu.shape)).astype(np.int16)
    scan = Scan.from_array(hu, origin_xyz=(-160.0, -150.0, -300.0), spacing_xyz=(0.7, 0.7, 1.25))
    path = write_scan(scan, out / "demo_volume.mhd")
    typer.echo(f"wrote {path}")
    info(path, series=None, irregular="refuse", as_json=False)
