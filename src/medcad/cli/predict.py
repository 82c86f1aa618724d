"""``medcad predict ...``: a group of prediction commands (``image`` here; later tasks add theirs to ``predict_app``)."""

from __future__ import annotations

from pathlib import Path

import typer

predict_app = typer.Typer(help="Predict with a trained model (one sub-command per task).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    predict_app.command("image")(image)
    app.add_typer(predict_app, name="predict")


def image(
    images: list[Path] = typer.Argument(..., help="Image files (.jpeg, .png, ...)."),
    model: Path = typer.Option(..., "--model", help="Model folder (or run folder) from medcad train image-cls."),
    top_k: int = typer.Option(4, "--top-k", help="How many classes to show per image."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Average with the mirrored image (default: as trained)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Print the top-k classes of each image with their probabilities."""
    import json

    from rich.console import Console

    from medcad.reports.image_cls import prediction_table
    from medcad.tasks.image_cls import load_image_classifier, predict_files

    classifier = load_image_classifier(model)
    use_tta = classifier.tta if tta is None else tta
    predictions = predict_files(classifier, images, top_k=top_k, tta=use_tta)
    if as_json:
        typer.echo(json.dumps([{"path": p.path, "top": [{"class": c, "probability": v} for c, v in p.top]}
                               for p in predictions], indent=2))
        return
    console = Console()
    for prediction in predictions:
        console.print(prediction_table(prediction))
