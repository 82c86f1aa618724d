"""``medcad train segmentation|nodule|malignancy``: the nodule CAD's three models on a LUNA16-layout folder.

Each command resolves a typed config (defaults <- ``--config file.yaml`` <- options), writes a run
folder (``model/`` = best weights, loadable by ``medcad detect`` once placed as
``MODELS/segmentation``, ``MODELS/nodule``, ``MODELS/malignancy``; ``checkpoints/``, history,
TensorBoard) and prints the per-epoch table. Under ``torchrun --nproc_per_node=N -m medcad train
...`` the same commands train with DistributedDataParallel.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    from medcad.cli.train import train_app

    train_app.command("segmentation")(segmentation)
    train_app.command("nodule")(nodule)
    train_app.command("malignancy")(malignancy)
    train_app.command("mine-negatives")(mine_negatives)


_DATA = typer.Option(None, "--data", help="LUNA16-layout folder (medcad synth output or real LUNA16).")
_CONFIG = typer.Option(None, "--config", help="YAML config; the options given here override it.")
_EPOCHS = typer.Option(None, "--epochs")
_LR = typer.Option(None, "--lr", help="Learning rate.")
_BATCH = typer.Option(None, "--batch-size")
_WORKERS = typer.Option(None, "--workers", help="DataLoader worker processes.")
_SAMPLES = typer.Option(None, "--epoch-samples", help="Samples drawn per epoch (0: the training set's size).")
_SPLITS = typer.Option(None, "--splits", help="Split file shared by the three models (default DATA/splits.json).")
_SEED = typer.Option(None, "--seed")
_DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda...")
_MONITOR = typer.Option(None, "--monitor", help="Logged value that picks the best epoch.")
_THREADS = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice).")
_RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")
_QUIET = typer.Option(False, "--quiet", help="No progress bar or per-epoch table.")


def _resolve(config_cls, config_file: Path | None, overrides: dict):
    """Defaults <- YAML file <- command-line overrides (None = not given), checked."""
    from medcad.training.config import apply_overrides, load_config, validate_fit_config

    config = load_config(config_cls, config_file) if config_file else config_cls()
    config = apply_overrides(config, {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()})
    if not config.data:
        from medcad.errors import InputError

        raise InputError(config_file, "give the data folder with --data (or `data:` in the config)")
    validate_fit_config(config.fit, config_file)
    return config


def _common(data, out, epochs, lr, batch_size, workers, splits, seed, device, monitor) -> dict:
    return {"data": data, "out": out, "fit.epochs": epochs, "fit.optimizer.lr": lr, "batch_size": batch_size,
            "workers": workers, "splits": splits, "fit.seed": seed, "fit.device": device, "fit.monitor": monitor}


def _finish(result, out) -> None:
    from rich.console import Console

    score = "-" if result.best_score is None else f"{result.best_score:.4f}"
    Console().print(f"best epoch {result.best_epoch} (score {score}); model in {Path(out) / 'model'}")


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def segmentation(
    data: Path = _DATA, out: Path = typer.Option(None, "--out", help="Run folder (default runs/segmentation)."),
    config: Path = _CONFIG, epochs: int = _EPOCHS, lr: float = _LR, batch_size: int = _BATCH, workers: int = _WORKERS,
    epoch_samples: int = _SAMPLES, splits: Path = _SPLITS, seed: int = _SEED, device: str = _DEVICE,
    monitor: str = _MONITOR, width: int = typer.Option(None, "--width", help="U-Net filters at the top (16)."),
    depth: int = typer.Option(None, "--depth", help="U-Net levels (3)."),
    augment: bool = typer.Option(None, "--augment/--no-augment"),
    fn_weight: float = typer.Option(None, "--fn-weight", help="Weight of the Dice term inside the mask (the book: 8)."),
    bce_weight: float = typer.Option(None, "--bce-weight", help="Weight of an added binary cross-entropy (0: the book)."),
    prior: float = typer.Option(None, "--prior", help="Initial output probability (e.g. 0.01; 0: PyTorch's init)."),
    negative_fraction: float = typer.Option(None, "--negative-fraction",
                                            help="Share of training windows centred on class-0 candidates (0: the book)."),
    threads: int = _THREADS, resume: bool = _RESUME, quiet: bool = _QUIET,
) -> None:
    """Train the 2D segmentation U-Net (7 context slices, 64x64 crops, Dice loss weighted against misses)."""
    from medcad.tasks.nodule_seg import SegmentationConfig, train_segmentation

    _threads(threads)
    resolved = _resolve(SegmentationConfig, config, {
        **_common(data, out, epochs, lr, batch_size, workers, splits, seed, device, monitor),
        "epoch_samples": epoch_samples, "width": width, "depth": depth, "augment": augment,
        "false_negative_weight": fn_weight, "bce_weight": bce_weight, "prior": prior,
        "negative_fraction": negative_fraction})
    _finish(train_segmentation(resolved, resume=resume, quiet=quiet), resolved.out)


def _classifier_overrides(width, depth, crop, ratio, epoch_samples, augment, label_smoothing, mixup,
                          hard_negatives) -> dict:
    crop_irc = None if crop is None else [int(n) for n in crop.lower().split("x")]
    return {"width": width, "depth": depth, "crop_irc": crop_irc, "negatives_per_positive": ratio,
            "epoch_samples": epoch_samples, "augment": augment, "label_smoothing": label_smoothing,
            "mixup_alpha": mixup, "hard_negatives": hard_negatives}


_CROP = typer.Option(None, "--crop", help="Crop DxHxW in voxels (default 32x48x48, the book's).")
_RATIO = typer.Option(None, "--ratio", help="Negatives per positive drawn by the sampler (1: balanced).")
_AUGMENT = typer.Option(None, "--augment/--no-augment", help="The book's flip / offset / scale / rotation / noise.")
_SMOOTH = typer.Option(None, "--label-smoothing")
_MIXUP = typer.Option(None, "--mixup", help="Mixup alpha (0: off).")
_HARD = typer.Option(None, "--hard-negatives",
                     help="Findings of the segmenter on the training scans (medcad detect --all-candidates): extra negatives.")


def nodule(
    data: Path = _DATA, out: Path = typer.Option(None, "--out", help="Run folder (default runs/nodule)."),
    config: Path = _CONFIG, epochs: int = _EPOCHS, lr: float = _LR, batch_size: int = _BATCH, workers: int = _WORKERS,
    epoch_samples: int = _SAMPLES, splits: Path = _SPLITS, seed: int = _SEED, device: str = _DEVICE,
    monitor: str = _MONITOR, width: int = typer.Option(None, "--width", help="Channels of the first block (8)."),
    depth: int = typer.Option(None, "--depth", help="Conv blocks (4)."), crop: str = _CROP, ratio: float = _RATIO,
    augment: bool = _AUGMENT, label_smoothing: float = _SMOOTH, mixup: float = _MIXUP, hard_negatives: Path = _HARD,
    threads: int = _THREADS, resume: bool = _RESUME, quiet: bool = _QUIET,
) -> None:
    """Train the 3D nodule classifier (balanced sampling, augmentation, best epoch by validation F1)."""
    from medcad.tasks.nodule_cls import ClassifierConfig, train_nodule_classifier

    _threads(threads)
    resolved = _resolve(ClassifierConfig, config, {
        **_common(data, out, epochs, lr, batch_size, workers, splits, seed, device, monitor),
        **_classifier_overrides(width, depth, crop, ratio, epoch_samples, augment, label_smoothing, mixup,
                                hard_negatives)})
    _finish(train_nodule_classifier(resolved, resume=resume, quiet=quiet), resolved.out)


def malignancy(
    data: Path = _DATA, init_from: Path = typer.Option(None, "--init-from", help="The nodule classifier's model folder."),
    out: Path = typer.Option(None, "--out", help="Run folder (default runs/malignancy)."),
    finetune_depth: int = typer.Option(None, "--finetune-depth", help="1: head only; 2: head + last conv block."),
    three_way: bool = typer.Option(None, "--three-way/--two-way", help="non-nodule / benign / malignant."),
    config: Path = _CONFIG, epochs: int = _EPOCHS, lr: float = _LR, batch_size: int = _BATCH, workers: int = _WORKERS,
    epoch_samples: int = _SAMPLES, splits: Path = _SPLITS, seed: int = _SEED, device: str = _DEVICE,
    monitor: str = _MONITOR, augment: bool = _AUGMENT, label_smoothing: float = _SMOOTH, mixup: float = _MIXUP,
    threads: int = _THREADS, resume: bool = _RESUME, quiet: bool = _QUIET,
) -> None:
    """Fine-tune the nodule classifier into the malignancy classifier (best epoch by validation AUC)."""
    from medcad.tasks.malignancy import MalignancyConfig, train_malignancy

    _threads(threads)
    resolved = _resolve(MalignancyConfig, config, {
        **_common(data, out, epochs, lr, batch_size, workers, splits, seed, device, monitor),
        **_classifier_overrides(None, None, None, None, epoch_samples, augment, label_smoothing, mixup, None),
        "init_from": init_from, "finetune_depth": finetune_depth, "three_way": three_way})
    _finish(train_malignancy(resolved, resume=resume, quiet=quiet), resolved.out)


def mine_negatives(
    data: Path = _DATA,
    segmentation_model: Path = typer.Option(..., "--segmentation", help="The segmenter's model folder."),
    out: Path = typer.Option(Path("runs/hard_negatives"), "--out", help="Folder for one candidates JSON per scan."),
    split: str = typer.Option("train", "--split", help="Which split's scans to mine."),
    splits: Path = _SPLITS,
    seg_threshold: float = typer.Option(0.5, "--seg-threshold"),
    erosion: str = typer.Option("3d", "--erosion", help="3d (the book), 2d or none, as medcad detect."),
    core_threshold: float = typer.Option(None, "--core-threshold", help="Split components at this probability, "
                                                                        "as medcad detect."),
) -> None:
    """Write the segmenter's candidates on a split's scans: the input of `train nodule --hard-negatives`."""
    from medcad.tasks.cad_training import open_cache, prepare_splits
    from medcad.tasks.nodule_cls import mine_segmenter_candidates

    if data is None:
        from medcad.errors import InputError

        raise InputError(None, "give the data folder with --data")
    cache = open_cache(data)
    chosen, _ = prepare_splits(data, splits, list(cache.sources))
    folder = mine_segmenter_candidates(cache, segmentation_model, chosen[split], out, seg_threshold, erosion,
                                       core_threshold=core_threshold)
    typer.echo(f"wrote the candidates of {len(chosen[split])} {split} scans to {folder}")
