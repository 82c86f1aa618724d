"""``medcad synth``: write a phantom CT cohort in the LUNA16 layout; ``medcad synth-chests``: small
chests with / without a nodule in class folders."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("synth-chests")(synth_chests)


def synth(
    out: Path = typer.Option(..., "--out", help="Folder for the cohort (subset0/ and the CSV tables)."),
    scans: int = typer.Option(10, "--scans", help="Number of scans."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives byte-identical files."),
    size: str = typer.Option("full", "--size", help="small (128x128x64), medium (256^2) or full (512^2)."),
    file_format: str = typer.Option("mhd", "--format", help="mhd (.mhd/.raw), dicom (a series folder per scan) or nifti."),
    abdomen: bool = typer.Option(False, "--abdomen", help="Cover the abdomen down past L5 (for L3 localisation)."),
    negatives: int = typer.Option(None, "--negatives", help="Non-nodule candidates per scan (default by size)."),
    nodules: int = typer.Option(None, "--nodules", help="Nodules per scan (default: 0-5 at random, like LUNA16)."),
    slices: int = typer.Option(None, "--slices", help="Fixed slice count (default: coverage / slice thickness)."),
    min_nodule_mm: float = typer.Option(None, "--min-nodule-mm", help="Nodule diameters from the real histogram "
                                                                      "above this size only (default: all, 3-32 mm)."),
    clear_fraction: float = typer.Option(0.0, "--clear-fraction", help="Share of scans without any nodule "
                                                                       "(e.g. 0.5 for a nodule / clear task)."),
) -> None:
    """Write synthetic chest CTs with nodules, candidates, malignancy and vertebra levels."""
    from medcad.data.synthetic import SIZES
    from medcad.errors import InputError

    if size not in SIZES:
        raise InputError(None, f"unknown --size {size!r}; choose one of {', '.join(SIZES)}")
    if slices is not None and slices < 2:
        raise InputError(None, f"--slices must be at least 2, got {slices}")
    if (nodules is not None and nodules < 0) or (negatives is not None and negatives < 0):
        raise InputError(None, "--nodules and --negatives cannot be negative")
    if not 0.0 <= clear_fraction <= 1.0:
        raise InputError(None, f"--clear-fraction must lie in [0, 1], got {clear_fraction}")
    if min_nodule_mm is not None and not 0.0 <= min_nodule_mm < 32.0:
        raise InputError(None, f"--min-nodule-mm must lie in [0, 32), got {min_nodule_mm}")
    from medcad.data.synthetic import PhantomOptions

    options = PhantomOptions(size=size, abdomen=abdomen, negatives=negatives, nodules=nodules, slices=slices,
                             min_nodule_mm=min_nodule_mm, clear_fraction=clear_fraction)
    print_cohort(synthesize(out, scans, seed, options, file_format), out)


def synth_chests(
    out: Path = typer.Option(..., "--out", help="Folder for the class folders clear/ and nodule/."),
    per_class: int = typer.Option(120, "--per-class", help="Chests per class."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives byte-identical files."),
) -> None:
    """Write small chests (24x48x48, .nii.gz) with / without a solid nodule, for volume classification."""
    from rich.progress import Progress

    from medcad.data.synthetic import write_chests

    with Progress(transient=True) as progress:
        task = progress.add_task(f"writing {2 * per_class} chests", total=2 * per_class)
        paths = write_chests(out, per_class, seed, on_scan=lambda _: progress.advance(task))
    print(f"wrote {len(paths)} chests ({per_class} per class) to {out}/clear and {out}/nodule")


def synthesize(out: Path, scans: int, seed: int, options, file_format: str = "mhd") -> list:
    """Writes the cohort (``options``: a PhantomOptions) with a progress bar; returns the per-scan summaries."""
    from rich.progress import Progress

    from medcad.data.synthetic import write_cohort

    with Progress(transient=True) as progress:
        task = progress.add_task(f"synthesising {scans} {options.size} scan(s)", total=scans)
        return write_cohort(out, scans, seed, options, file_format, on_scan=lambda _: progress.advance(task))


def print_cohort(summaries: list, out: Path) -> None:
    """Prints one row per scan (shape, spacing, flipped axes, nodules, candidates) and the totals."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"phantom cohort in {out}")
    for column in ("scan", "shape (z,y,x)", "spacing (x,y,z) mm", "flipped", "nodules", "candidates"):
        table.add_column(column, justify="right" if column in ("nodules", "candidates") else "left", no_wrap=True)
    for index, s in enumerate(summaries):
        table.add_row(str(index), "x".join(map(str, s.shape_irc)), "x".join(f"{v:.2f}" for v in s.spacing_xyz),
                      s.flipped_axes or "-", str(s.nodules), str(s.candidates))
    table.add_row("total", "", "", "", str(sum(s.nodules for s in summaries)),
                  str(sum(s.candidates for s in summaries)), style="bold")
    Console().print(table)
