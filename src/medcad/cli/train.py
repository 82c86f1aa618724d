"""``medcad train ...``: a group of training commands, one per task (``image-cls`` here).

Later tasks add their commands to ``train_app`` (``train_app.command("nodule")(fn)``) from their own
module's ``register``; the group itself is registered once, here.
"""

from __future__ import annotations

from pathlib import Path

import typer

train_app = typer.Typer(help="Train a model (one sub-command per task).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from medcad.cli import train_nodule

    train_app.command("image-cls")(image_cls)
    train_nodule.register(app)
    app.add_typer(train_app, name="train")


def image_cls(
    data: Path = typer.Argument(None, help="Class folders (or train/ val/ test/ of class folders), or an .npz archive."),
    out: Path = typer.Option(Path("runs/image-cls"), "--out", help="Run folder (model/, checkpoints/, history...)."),
    config: Path = typer.Option(None, "--config", help="YAML config (ImageClsConfig); options below override it."),
    arch: str = typer.Option(None, "--arch", help="torchvision model: vgg16 (default), resnet18, resnet50, ..."),
    weights: str = typer.Option(None, "--weights",
                                help="DEFAULT / IMAGENET1K_V1 (torchvision, downloaded), a local .pth/.safetensors "
                                     "state dict, or none (random initialisation)."),
    freeze: str = typer.Option(None, "--freeze", help="features (head only), none, or all-but-last-N."),
    head_hidden: int = typer.Option(None, "--head-hidden", help="Hidden width of the new head (0: one linear layer)."),
    dropout: float = typer.Option(None, "--dropout", help="Dropout in the head."),
    image_size: str = typer.Option(None, "--image-size", help="Network input: 224 or HEIGHTxWIDTH (e.g. 128x256)."),
    channels: int = typer.Option(None, "--channels", help="1 (greyscale) or 3 (RGB)."),
    batch_size: int = typer.Option(None, "--batch-size"),
    epochs: int = typer.Option(None, "--epochs"),
    optimizer: str = typer.Option(None, "--optimizer", help="adam (default), adamw or sgd."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (peak of the cosine / one-cycle schedules)."),
    weight_decay: float = typer.Option(None, "--weight-decay"),
    scheduler: str = typer.Option(None, "--scheduler", help="plateau (default), cosine, step, onecycle or none."),
    warmup_epochs: float = typer.Option(None, "--warmup-epochs", help="Linear warm-up of the cosine schedule."),
    patience: int = typer.Option(None, "--patience", help="Early stopping patience in epochs (0: never stop early)."),
    monitor: str = typer.Option(None, "--monitor", help="Value for early stopping / best weights: val_loss, val_accuracy..."),
    ema: float = typer.Option(None, "--ema", help="Keep an exponential moving average of the weights with this decay."),
    label_smoothing: float = typer.Option(None, "--label-smoothing"),
    mixup: float = typer.Option(None, "--mixup", help="Mixup alpha: train on Beta(alpha, alpha) mixes of image pairs (0: off)."),
    grad_clip: float = typer.Option(None, "--grad-clip", help="Clip the gradient norm to this value."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Average with mirrored images when evaluating."),
    seed: int = typer.Option(None, "--seed", help="Seed of the split, the initialisation and every epoch."),
    fractions: str = typer.Option(None, "--split-fractions", help="train,val,test shares when medcad splits."),
    patient_pattern: str = typer.Option(None, "--patient-pattern",
                                        help="Regex with a (?P<patient>...) group on file stems (default: Kermany)."),
    split_file: Path = typer.Option(None, "--split-file", help="Reuse a split.json instead of making a split."),
    class_names: str = typer.Option(None, "--class-names", help="Names of an .npz archive's labels: a,b,..."),
    workers: int = typer.Option(None, "--workers", help="DataLoader worker processes."),
    device: str = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda:0..."),
    max_minutes: float = typer.Option(None, "--max-minutes", help="Stop after the epoch that crosses this time."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or per-epoch table."),
) -> None:
    """Train an image classifier (transfer learning from a torchvision backbone) and test it on held-out patients."""
    from rich.console import Console

    from medcad.cli.image_options import parse_fractions, parse_image_size, parse_names
    from medcad.errors import MedcadError
    from medcad.reports.image_cls import confusion_table, metrics_table, plot_confusion_matrix
    from medcad.tasks.image_cls import config_with_overrides, train_image_classifier
    from medcad.training.logging import RunLogger

    if config is None and resume and (out / "config.yaml").is_file():
        config = out / "config.yaml"  # continue with the run's own settings
    overrides = {
        "data.source": None if data is None else str(data), "data.image_size": parse_image_size(image_size),
        "data.channels": channels, "data.batch_size": batch_size, "data.workers": workers,
        "data.fractions": parse_fractions(fractions), "data.patient_pattern": patient_pattern,
        "data.split_file": None if split_file is None else str(split_file), "data.class_names": parse_names(class_names),
        "model.arch": arch, "model.weights": weights, "model.freeze": freeze, "model.head_hidden": head_hidden,
        "model.dropout": dropout, "fit.epochs": epochs, "fit.optimizer.name": optimizer, "fit.optimizer.lr": lr,
        "fit.optimizer.weight_decay": weight_decay, "fit.scheduler.name": scheduler,
        "fit.scheduler.warmup_epochs": warmup_epochs, "fit.early_stopping.patience": patience, "fit.monitor": monitor,
        "fit.ema_decay": ema, "fit.grad_clip_norm": grad_clip, "fit.seed": seed, "fit.device": device,
        "fit.max_minutes": max_minutes, "label_smoothing": label_smoothing, "mixup_alpha": mixup,
        "tta": tta,
    }
    settings = config_with_overrides(config, overrides)
    if not settings.data.source:
        raise MedcadError("give the image data (a folder or .npz) as argument or as data.source in --config")
    console = Console()
    logger = RunLogger(out, tensorboard=settings.fit.tensorboard, quiet=quiet, console=console)
    trained = train_image_classifier(settings, out, resume=resume, logger=logger)
    fit = trained.fit
    console.print(f"best epoch {fit.best_epoch} ({settings.fit.monitor} {fit.best_score:.4f}); "
                  f"model saved in {out / 'model'}")
    if trained.test is not None:
        console.print(metrics_table(trained.test, title=f"test split ({trained.test.report.n_classes} classes)"))
        console.print(confusion_table(trained.test.report.confusion, trained.test.class_names))
        plot_confusion_matrix(trained.test.report.confusion, trained.test.class_names, out / "test_confusion.png",
                              title="test split")
