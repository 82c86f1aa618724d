"""``medcad evaluate-images DATA --model RUN``: accuracy, per-class recall / precision, confusion matrix
(printed and PNG) and a figure of sample images with true and top-k predicted labels.

A separate command from ``medcad evaluate`` (which scores CAD findings) until the CLI merges them.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("evaluate-images")(evaluate_images)


def evaluate_images(
    data: Path = typer.Argument(..., help="Class folders (or train/ val/ test/ of class folders), or an .npz archive."),
    model: Path = typer.Option(..., "--model", help="Model folder (or run folder) from medcad train image-cls."),
    split: str = typer.Option("test", "--split", help="test, val, train, or all (every image of DATA)."),
    split_file: Path = typer.Option(None, "--split-file",
                                    help="Split of a folder of class folders (default: the model's split.json)."),
    patient_pattern: str = typer.Option(None, "--patient-pattern", help="Regex with a (?P<patient>...) group."),
    class_names: str = typer.Option(None, "--class-names", help="Names of an .npz archive's labels: a,b,..."),
    out: Path = typer.Option(Path("evaluation-images"), "--out", help="Folder for metrics.json and the PNGs."),
    samples: int = typer.Option(12, "--samples", help="Images in the sample figure."),
    top_k: int = typer.Option(3, "--top-k", help="Predicted classes shown per sample image."),
    tta: bool = typer.Option(None, "--tta/--no-tta", help="Average with mirrored images (default: as trained)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    seed: int = typer.Option(0, "--seed", help="Which sample images are shown."),
) -> None:
    """Evaluate an image classifier on labelled images: metrics, confusion matrix, sample predictions."""
    import json

    import numpy as np
    from rich.console import Console

    from medcad.cli.image_options import parse_names
    from medcad.data.images import KERMANY_PATTERN, read_image
    from medcad.io.atomic import write_text_atomic
    from medcad.reports.image_cls import confusion_table, metrics_table, plot_confusion_matrix, plot_predictions
    from medcad.tasks.image_cls import evaluate_records, evaluation_records, load_image_classifier

    classifier = load_image_classifier(model)
    use_tta = classifier.tta if tta is None else tta
    records = evaluation_records(classifier, data, split, split_file, patient_pattern or KERMANY_PATTERN,
                                 parse_names(class_names) or ())
    evaluation = evaluate_records(classifier, records, batch_size, use_tta)
    console = Console()
    console.print(metrics_table(evaluation, title=f"{data} ({split}, {len(records)} images)"))
    console.print(confusion_table(evaluation.report.confusion, evaluation.class_names))
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(evaluation.to_dict(), indent=1) + "\n")
    plot_confusion_matrix(evaluation.report.confusion, evaluation.class_names, out / "confusion_matrix.png",
                          title=f"{split} ({len(records)} images)")
    chosen = np.random.default_rng(seed).choice(len(records), size=min(samples, len(records)), replace=False)
    k = max(1, min(top_k, len(evaluation.class_names)))
    tops = [[(evaluation.class_names[j], float(evaluation.probabilities[i, j]))
             for j in np.argsort(-evaluation.probabilities[i])[:k]] for i in chosen]
    plot_predictions([read_image(records[i], classifier.preprocessing.channels) for i in chosen],
                     [evaluation.class_names[evaluation.labels[i]] for i in chosen], tops, out / "predictions.png",
                     title=f"{split} images: true and top-{k} predicted")
    console.print(f"wrote {out / 'metrics.json'}, {out / 'confusion_matrix.png'}, {out / 'predictions.png'}")
