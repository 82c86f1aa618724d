"""``medcad data ...``: look at a data set before training (``summary`` here)."""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(help="Inspect data sets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    data_app.command("summary")(summary)
    app.add_typer(data_app, name="data")


def summary(
    source: Path = typer.Argument(..., help="Class folders (or train/ val/ test/ of class folders), or an .npz archive."),
    figure: Path = typer.Option(Path("data_summary.png"), "--figure", help="Where to write the summary figure."),
    fractions: str = typer.Option("0.7,0.15,0.15", "--split-fractions", help="train,val,test shares when medcad splits."),
    patient_pattern: str = typer.Option(None, "--patient-pattern",
                                        help="Regex with a (?P<patient>...) group on file stems (default: Kermany)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient split (as in medcad train image-cls)."),
    class_names: str = typer.Option(None, "--class-names", help="Names of an .npz archive's labels: a,b,..."),
) -> None:
    """Images per class and split (split by patient as training would), patients, image sizes; table and figure."""
    from rich.console import Console

    from medcad.cli.image_options import parse_fractions, parse_names
    from medcad.data.images import KERMANY_PATTERN, load_image_splits, summarise_images
    from medcad.reports.image_cls import plot_data_summary, sizes_table, summary_table

    splits = load_image_splits(source, patient_pattern=patient_pattern or KERMANY_PATTERN,
                               fractions=dict(zip(("train", "val", "test"), parse_fractions(fractions))), seed=seed,
                               class_names=parse_names(class_names) or ())
    result = summarise_images(splits)
    console = Console()
    console.print(summary_table(result))
    console.print(sizes_table(result))
    if result.unmatched_names:
        console.print(f"{result.unmatched_names} file names do not match the patient pattern: each is its own patient")
    for patient, names in list(result.leaks.items())[:5]:
        console.print(f"[red]patient {patient} has images in {' and '.join(names)}[/red]")
    console.print(f"figure: {plot_data_summary(result, figure)}")
