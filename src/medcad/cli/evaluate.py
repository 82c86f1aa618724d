"""``medcad evaluate``: scores CAD findings against a reference (FROC / CPM, the book's confusion matrix),
or, with ``--baseline diameter``, prints the malignancy baseline of a nodule table.

The scans evaluated are the scans the findings files name (each finding's series, and a JSON
file's own ``series_uid``, so a scan where nothing was found still counts) plus those of
``--series-list``; a CSV file has no row for a scan without findings, so list such scans there.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    findings: Path = typer.Argument(None, help="Findings file (.json / .csv from medcad detect) or a folder of them."),
    annotations: Path = typer.Option(None, "--annotations", help="Reference nodules (LUNA16 annotations.csv)."),
    malignancy: Path = typer.Option(None, "--malignancy",
                                    help="annotations_with_malignancy.csv: Benign / Malignant rows of the confusion matrix."),
    excluded: Path = typer.Option(None, "--excluded", help="annotations_excluded.csv: marks that count neither way."),
    series_list: Path = typer.Option(None, "--series-list",
                                     help="More scans to evaluate: a text file of series UIDs, or a splits .json with --split."),
    split: str = typer.Option(None, "--split", help="The split of a splits .json given to --series-list."),
    max_per_scan: int = typer.Option(100, "--max-per-scan", help="Most probable findings kept per scan (0: all)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples of scans for the CI (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    nodule_threshold: float = typer.Option(0.5, "--nodule-threshold", help="Confusion matrix: nodule probability cut."),
    malignancy_threshold: float = typer.Option(0.5, "--malignancy-threshold",
                                               help="Confusion matrix: malignancy probability cut."),
    per_scan: bool = typer.Option(False, "--per-scan", help="Also print each scan's confusion matrix (book layout)."),
    baseline: str = typer.Option(None, "--baseline", help="Print a baseline instead: 'diameter'."),
    table: Path = typer.Option(None, "--table", help="With --baseline: the nodule table (annotations_with_malignancy.csv)."),
    method: str = typer.Option("exact", "--method",
                               help="With --baseline: exact (every diameter a threshold), book (100 thresholds), both."),
    out: Path = typer.Option(None, "--out",
                             help="Folder for the JSON and PNG plots (findings: default ./evaluation; baseline: none)."),
) -> None:
    """Score findings against reference nodules: FROC / CPM with bootstrap CI and the book's confusion matrix."""
    from rich.console import Console

    from medcad.errors import MedcadError

    console = Console()
    series = _series_list(series_list, split)
    if baseline is not None:
        if baseline != "diameter":
            raise MedcadError(f"unknown baseline {baseline!r} (there is: diameter)")
        _diameter_baseline(console, table, method, series, out)
        return
    if findings is None or annotations is None:
        raise MedcadError("give a findings file or folder and --annotations (or --baseline diameter --table ...)")
    _evaluate_findings(console, findings, annotations, malignancy, excluded, series, max_per_scan, bootstrap, seed,
                       nodule_threshold, malignancy_threshold, per_scan, out or Path("evaluation"))


def _series_list(series_list: Path | None, split: str | None) -> list[str] | None:
    from medcad.data.splits import read_series_list
    from medcad.errors import MedcadError

    if series_list is None:
        if split is not None:
            raise MedcadError("--split names a split of the splits file given to --series-list")
        return None
    return read_series_list(series_list, split)


def _evaluate_findings(console, findings_path, annotations, malignancy, excluded, series, max_per_scan, bootstrap,
                       seed, nodule_threshold, malignancy_threshold, per_scan, out) -> None:
    from medcad.findings import read_findings_by_series
    from medcad.io.luna import read_annotations, read_malignancy
    from medcad.reports.evaluation import evaluate_findings, write_report
    from medcad.reports.tables import book_confusion_text, confusion_table, froc_table

    findings_by_series = read_findings_by_series(findings_path)
    uids = list(dict.fromkeys([*findings_by_series, *(series or [])]))
    settings = {
        "findings": str(findings_path), "annotations": str(annotations),
        "malignancy": None if malignancy is None else str(malignancy),
        "excluded": None if excluded is None else str(excluded),
        "max_findings_per_scan": max_per_scan, "bootstrap": bootstrap, "seed": seed,
        "nodule_threshold": nodule_threshold, "malignancy_threshold": malignancy_threshold,
    }
    with console.status(f"scoring {len(uids)} scans"):
        report = evaluate_findings(
            findings_by_series, read_annotations(annotations), uids,
            malignancy_nodules=None if malignancy is None else read_malignancy(malignancy),
            excluded=() if excluded is None else read_annotations(excluded),
            max_findings=max_per_scan or None, n_bootstrap=bootstrap, seed=seed,
            nodule_threshold=nodule_threshold, malignancy_threshold=malignancy_threshold, settings=settings)
    if per_scan:
        for uid, counts in report.confusion.per_scan.items():
            typer.echo(book_confusion_text(uid, counts, report.confusion.with_malignancy_model,
                                           report.confusion.malignancy_known))
    console.print(froc_table(report.detection))
    console.print(confusion_table(report.confusion))
    if report.malignancy_roc is not None:
        console.print(f"malignancy AUC of the detected nodules: {report.malignancy_roc.auc:.3f} "
                      f"(diameter baseline on the same nodules: {report.malignancy_baseline.auc:.3f})")
    for path in write_report(report, out):
        console.print(f"wrote {path}", highlight=False)


def _diameter_baseline(console, table, method, series, out) -> None:
    import json

    from medcad.errors import MedcadError
    from medcad.io.atomic import write_text_atomic
    from medcad.io.luna import read_malignancy
    from medcad.metrics.diameter_baseline import METHODS, diameter_baseline
    from medcad.reports.plots import MarkedPoint, plot_roc
    from medcad.reports.tables import baseline_table

    if table is None:
        raise MedcadError("--baseline diameter needs --table annotations_with_malignancy.csv")
    methods = METHODS if method == "both" else (method,)
    nodules = read_malignancy(table)
    baselines = [diameter_baseline(nodules, m, series_uids=series) for m in methods]
    console.print(baseline_table(baselines))
    for result in baselines:
        console.print(f"diameter baseline AUC ({result.method}): {result.auc:.3f}", highlight=False)
    if out is None:
        return
    document = {
        "table": str(table), "series": None if series is None else len(series),
        "baselines": [{"method": b.method, "auc": b.auc, "malignant": b.n_malignant, "benign": b.n_benign,
                       "operating_points": [vars(p) for p in b.operating_points]} for b in baselines],
    }
    write_text_atomic(out / "baseline_diameter.json", json.dumps(document, indent=1) + "\n")
    plot_path = plot_roc([(f"diameter baseline ({b.method})", b.roc) for b in baselines], out / "roc_diameter.png",
                         title="Malignancy baseline: diameter",
                         points=[MarkedPoint(f"{p.threshold_mm:g} mm", p.fpr, p.tpr) for p in baselines[0].operating_points])
    console.print(f"wrote {out / 'baseline_diameter.json'}\nwrote {plot_path}", highlight=False)
