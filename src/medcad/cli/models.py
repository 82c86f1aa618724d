"""``medcad models``: the registered networks, stored models, and the one-time import of the book's checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

models_app = typer.Typer(help="Registered networks and stored models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("import-dlwpt")
def import_dlwpt(
    checkpoint: Path = typer.Argument(..., help="A checkpoint of the book (seg_*.state or cls_*.state)."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (e.g. models/segmentation, models/nodule)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also export the ONNX graph the CPU backend runs."),
) -> None:
    """Convert a checkpoint of *Deep Learning with PyTorch* into a medcad model folder (one time).

    The .state file is a pickle: it is read once, here, with PyTorch's restricted unpickler
    (weights_only=True); the folder written holds safetensors weights and a JSON description.
    """
    from medcad.models.dlwpt import import_book_checkpoint
    from medcad.models.store import read_description

    folder = import_book_checkpoint(checkpoint, out)
    description = read_description(folder)
    typer.echo(f"wrote {folder} ({description.name}, {description.preprocessing.get('kind')}, "
               f"{description.provenance.get('book_model_name')} epoch {description.provenance.get('epoch')})")
    if onnx:
        from medcad.pipeline.backends import load_predictor

        predictor = load_predictor(folder, backend="onnx", device="cpu")
        typer.echo(f"exported {predictor.onnx_path}")


@models_app.command("list")
def list_stored(
    folder: Path = typer.Argument(None, help="A models folder: list the stored models in it (default: the architectures)."),
) -> None:
    """List registered architectures, or the stored models under FOLDER."""
    from rich.console import Console
    from rich.table import Table

    from medcad.errors import InputError

    if folder is None:
        from medcad.models import list_models as registered

        for name in registered():
            typer.echo(name)
        return
    if not folder.is_dir():
        raise InputError(folder, "no such models folder")
    table = Table(title=str(folder))
    for column in ("model", "architecture", "input", "source", "sha256"):
        table.add_column(column)
    for description_path in sorted(folder.rglob("model.json")):
        table.add_row(*_model_row(folder, description_path.parent))
    Console().print(table)


def _model_row(root: Path, model_folder: Path) -> tuple[str, ...]:
    from medcad.errors import InputError
    from medcad.models.store import read_description

    name = str(model_folder.relative_to(root)) if model_folder != root else "."
    try:
        description = read_description(model_folder)
    except InputError as error:
        return name, "[red]unreadable[/red]", error.problem, "", ""
    provenance = description.provenance
    return (name, description.name, str(description.preprocessing.get("kind", "")),
            str(provenance.get("file", "")), str(provenance.get("sha256", ""))[:12])
