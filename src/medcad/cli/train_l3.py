"""``medcad train l3``: k-fold cross-validation of the L3 slice localiser, with its error in mm."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    from medcad.cli.train import train_app

    train_app.command("l3")(l3)


def l3(
    data: Path = typer.Argument(..., help="Cohort folder (medcad synth --abdomen), an L3 MIP .npz, or the reference .npz."),
    out: Path = typer.Option(Path("runs/l3"), "--out", help="Run folder: <view>/fold-<k>/model, cases.csv, summary.json, worst/."),
    config: Path = typer.Option(None, "--config", help="YAML config (L3Config); options below override it."),
    folds: int = typer.Option(None, "--folds", help="k of the k-fold cross-validation by patient (default 5)."),
    views: str = typer.Option(None, "--views", help="frontal,sagittal (default both)."),
    epochs: int = typer.Option(None, "--epochs"),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate."),
    step_size: int = typer.Option(None, "--step-size", help="Epochs between learning-rate drops (step schedule)."),
    batch_size: int = typer.Option(None, "--batch-size"),
    crops_per_case: int = typer.Option(None, "--crops-per-case", help="Training crops per case and epoch."),
    width: int = typer.Option(None, "--width", help="U-Net filters at the top level (doubling per level)."),
    depth: int = typer.Option(None, "--depth", help="U-Net resolution levels."),
    channels: int = typer.Option(None, "--channels", help="Input channels: 1, or 3 (the MIP repeated)."),
    pixel_mm: float = typer.Option(None, "--pixel-mm", help="MIP pixel size in mm (default 2; the reference uses 1)."),
    image_size: str = typer.Option(None, "--image-size", help="MIP size ROWSxCOLUMNS (default 320x192)."),
    crop: str = typer.Option(None, "--crop", help="Training crop ROWSxCOLUMNS (default 128x96)."),
    label: str = typer.Option(None, "--label", help="gaussian (default) or band."),
    loss: str = typer.Option(None, "--loss", help="bce (default) or mse (heat-map regression)."),
    seed: int = typer.Option(None, "--seed"),
    threads: int = typer.Option(1, "--threads", help="CPU threads for torch (1 is fastest on a busy 2-core machine)."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes training (view, fold) runs side by side (one thread each)."),
    worst: int = typer.Option(5, "--worst", help="PNGs of the worst held-out cases per view."),
) -> None:
    """Cross-validate the L3 localiser (MIP -> 2D U-Net -> arg-max row); print the error in mm per fold and view."""
    import time

    import torch
    from rich.console import Console

    from medcad.cli.image_options import parse_image_size, parse_names
    from medcad.tasks.l3 import L3Config, cross_validate, prepare_dataset
    from medcad.tasks.l3_report import error_table, write_evaluation
    from medcad.training.config import apply_overrides, load_config, save_config_yaml

    settings = load_config(L3Config, config) if config is not None else L3Config()
    settings = apply_overrides(settings, {
        "folds": folds, "views": parse_names(views),
        "fit.epochs": epochs, "fit.optimizer.lr": lr, "fit.scheduler.step_size": step_size, "fit.seed": seed,
        "batch_size": batch_size, "crops_per_case": crops_per_case, "model.width": width, "model.depth": depth,
        "model.in_channels": channels, "mip.pixel_mm": pixel_mm, "mip.size": parse_image_size(image_size),
        "crop": parse_image_size(crop), "label.kind": label, "loss": loss})
    torch.set_num_threads(max(threads, 1))
    console = Console()
    out.mkdir(parents=True, exist_ok=True)
    save_config_yaml(settings, out / "config.yaml")
    started = time.perf_counter()
    with console.status("making MIPs") as status:
        dataset = prepare_dataset(data, settings.mip, cache=out / "mips.npz",
                                  on_case=lambda case: status.update(f"making MIPs: {case.name[-16:]}"))
    console.print(f"{len(dataset)} cases, {len(set(dataset.patients))} patients, MIPs "
                  f"{'x'.join(map(str, dataset.images['frontal'].shape[1:]))} at {dataset.config.pixel_mm:g} mm "
                  f"({time.perf_counter() - started:.0f} s)")

    def report(view: str, fold: int, results: list, seconds: float) -> None:
        errors = sorted(r.error_mm for r in results)
        console.print(f"{view} fold {fold}: {len(results)} held out, median {errors[len(errors) // 2]:.1f} mm, "
                      f"max {errors[-1]:.1f} mm ({seconds:.0f} s)")

    cv = cross_validate(dataset, settings, out, on_fold=report, jobs=jobs)
    write_evaluation(cv, dataset, out, worst=worst)
    console.print(error_table(cv.results))
    console.print(f"total {time.perf_counter() - started:.0f} s ({max(jobs, 1)} process(es), "
                  f"{1 if jobs > 1 else threads} thread(s) each); fold models in "
                  f"{out}/<view>/fold-<k>/model; per-case errors in {out / 'cases.csv'}; worst cases in {out / 'worst'}")

