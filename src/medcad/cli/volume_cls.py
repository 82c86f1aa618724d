"""``medcad train volume-cls`` and ``medcad predict volume-cls``: 3D volume classification."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Adds ``volume-cls`` to the ``train`` and ``predict`` groups (registered by their own modules)."""
    from medcad.cli.predict import predict_app
    from medcad.cli.train import train_app

    train_app.command("volume-cls")(train_volume_cls)
    predict_app.command("volume-cls")(predict_volume_cls)


def train_volume_cls(
    data: Path = typer.Option(..., "--data", help="Volume table CSV (path,label[,split][,patient_id]; e.g. the "
                                                  "volumes.csv of medcad preprocess) or a folder of class folders."),
    out: Path = typer.Option(..., "--out", help="Run folder (model/, checkpoints/, history, metrics.json)."),
    config_file: Path = typer.Option(None, "--config", help="YAML file with VolumeClsConfig keys."),
    model: str = typer.Option(None, "--model", help="resnet10_3d (default), resnet18_3d, resnet34_3d, resnet50_3d."),
    width: int = typer.Option(None, "--width", help="Channels of the first ResNet stage (default 64)."),
    global_pool: str = typer.Option(None, "--global-pool", help="avg (default, as published) or max (for one small "
                                                                 "finding anywhere, e.g. a nodule)."),
    epochs: int = typer.Option(None, "--epochs", help="Most epochs (default 30; early stopping may end sooner)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Volumes per batch (default 4)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default 1e-3, Adam)."),
    loss: str = typer.Option(None, "--loss", help="ce, focal, dice, focal_dice or asymmetric."),
    class_weighting: str = typer.Option(None, "--class-weights", help="none, inverse or effective."),
    sampler: str = typer.Option(None, "--sampler", help="none or balanced (oversample rare classes)."),
    augment: bool = typer.Option(None, "--augment/--no-augment", help="3D augmentation of training batches."),
    monitor: str = typer.Option(None, "--monitor", help="Value choosing the best epoch: val_loss (default), val_auc..."),
    max_minutes: float = typer.Option(None, "--max-minutes", help="Stop after the epoch that crosses this budget."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default 0)."),
    device: str = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:1..."),
) -> None:
    """Train a 3D ResNet on labelled volumes; prints per-epoch rows and the final validation / test scores."""
    from medcad.data.volumes import read_volume_table
    from medcad.tasks.volume_cls import VolumeClsConfig, train_volume_classifier
    from medcad.training.config import apply_overrides, load_config
    from medcad.training.logging import RunLogger

    config = load_config(VolumeClsConfig, config_file) if config_file else VolumeClsConfig()
    config = apply_overrides(config, {
        "model": model, "width": width, "global_pool": global_pool, "batch_size": batch_size, "loss": loss,
        "class_weighting": class_weighting, "sampler": sampler, "augment": augment, "fit.epochs": epochs, "fit.optimizer.lr": lr,
        "fit.monitor": monitor, "fit.max_minutes": max_minutes, "fit.seed": seed, "fit.device": device})
    table = read_volume_table(data)
    logger = RunLogger(out, tensorboard=config.fit.tensorboard)
    run = train_volume_classifier(table, config, out, logger, source=data)
    print_reports(run.reports, run.fit.best_epoch)
    typer.echo(f"best model: {out / 'model'}")


def print_reports(reports: dict, best_epoch: int) -> None:
    """One table per split: overall scores, then precision / recall / F1 per class."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for split, report in reports.items():
        table = Table(title=f"{split} ({report.count} volumes, best epoch {best_epoch}): accuracy {report.accuracy:.3f}, "
                            f"AUC {report.auc:.3f}")
        for column in ("class", "precision", "recall", "F1", "support"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for scores in report.per_class:
            table.add_row(scores.name, f"{scores.precision:.3f}", f"{scores.recall:.3f}", f"{scores.f1:.3f}",
                          str(scores.support))
        table.add_row("weighted", f"{report.precision:.3f}", f"{report.recall:.3f}", f"{report.f1:.3f}",
                      str(report.count), style="bold")
        console.print(table)
        console.print(f"{split}_auc = {report.auc:.4f}")


def predict_volume_cls(
    volumes: list[Path] = typer.Argument(..., help="Scans (DICOM folder, .mhd, .nii.gz, ...) or cached .safetensors."),
    model_dir: Path = typer.Option(..., "--model", help="Model folder (RUN/model) or run folder of medcad train volume-cls."),
    out: Path = typer.Option(None, "--out", help="Also write the predictions as CSV."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda..."),
) -> None:
    """Classify volumes with a trained model: predicted class and the probability of each class."""
    from rich.console import Console
    from rich.table import Table

    from medcad.tasks.volume_cls import predict_volumes

    if not (model_dir / "model.json").is_file() and (model_dir / "model" / "model.json").is_file():
        model_dir = model_dir / "model"  # a run folder
    predictions = predict_volumes(model_dir, volumes, device=device)
    names = list(predictions[0].probabilities) if predictions else []
    table = Table(title=f"predictions of {model_dir}")
    for column in ("volume", "predicted", *(f"p({n})" for n in names)):
        table.add_column(column, justify="left" if column in ("volume", "predicted") else "right")
    for p in predictions:
        table.add_row(Path(p.path).name, p.predicted, *(f"{p.probabilities[n]:.3f}" for n in names))
    Console().print(table)
    if out is not None:
        write_predictions_csv(predictions, out)
        typer.echo(f"written: {out}")


def write_predictions_csv(predictions, path: Path) -> None:
    import csv
    import io

    from medcad.io.atomic import write_text_atomic

    names = list(predictions[0].probabilities) if predictions else []
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "predicted", *(f"p_{n}" for n in names)])
    for p in predictions:
        writer.writerow([p.path, p.predicted, *(f"{p.probabilities[n]:.6f}" for n in names)])
    write_text_atomic(path, buffer.getvalue())
