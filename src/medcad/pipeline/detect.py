"""The whole nodule CAD on one scan: segment -> threshold + erode -> group -> classify -> findings."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from medcad.findings import MAX_MASKED_FINDINGS, Candidate, Finding, FindingMasks
from medcad.io.scan import Scan
from medcad.pipeline.classify import classify
from medcad.pipeline.group import candidates_of, mask_components
from medcad.pipeline.model_set import DetectModels
from medcad.pipeline.region import LungRegion, lung_region
from medcad.pipeline.segment import segment_masks

#: Stage names, in order, as reported to ``progress`` and in ``Detection.seconds``.
STAGES = ("segment", "group", "classify")
#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Detection:
    """What ``detect`` found in one scan.

    Attributes:
        series_uid: the scan's series UID (or its file stem).
        candidates: every connected component, in label order.
        findings: every candidate scored, highest nodule probability first.
        seconds: wall time per stage (``segment``, ``group``, ``classify``).
        cpu_seconds: CPU time of this process per stage (all threads).
        region: the lungs' windows the U-Net ran on and the candidate test (``lungs_only``), None
            for the whole scan.
        masks: the voxels of the findings above ``detect``'s ``masks_above`` (at most
            ``MAX_MASKED_FINDINGS``, the first findings of ``findings``); label k = ``findings[k - 1]``.
    """

    series_uid: str
    candidates: list[Candidate]
    findings: list[Finding]
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    region: LungRegion | None = None
    masks: FindingMasks | None = None

    def above(self, threshold: float) -> list[Finding]:
        """Findings with nodule probability above ``threshold``."""
        return [f for f in self.findings if f.nodule_prob > threshold]


def detect(scan: Scan, models: DetectModels, segmentation_threshold: float = 0.5, erosion_iterations: int = 1,
           erosion: str = "3d", progress: Progress | None = None, core_threshold: float | None = None,
           mirror_views: bool = False, lungs_only: bool = False, masks_above: float | None = 0.5) -> Detection:
    """Runs the CAD chain on a scan with the book's semantics (see the stage modules).

    Args:
        scan: the CT (read once; its array is not modified).
        models: the loaded predictors (:func:`medcad.pipeline.load_detect_models`).
        segmentation_threshold: probability above which a voxel is nodule-like (0.5, the book).
        erosion_iterations: erosions of the thresholded mask (1, the book).
        erosion: ``3d`` (the book's cross), ``2d`` (in-plane only) or ``none``.
        progress: called as ``progress(stage, done, total)`` while the stages run.
        core_threshold: split components at this more certain probability (None: the book, no split;
            see :func:`medcad.pipeline.segment.segment_masks`).
        mirror_views: average the classifiers over the eight mirror images of each crop (off in
            the book; see :func:`medcad.pipeline.classify.classify`).
        lungs_only: run the U-Net only in the lungs' windows and classify only candidates near
            the lungs (see :mod:`medcad.pipeline.region`; the whole scan when no lungs are
            found). Faster, and nothing outside the lungs is proposed; off in the book.
        masks_above: keep the component voxels of the findings with nodule probability above
            this (at most ``MAX_MASKED_FINDINGS``; the reported findings, so the probability
            volume itself is never kept); None keeps none.
    """
    series_uid = scan.series_uid or scan_name(scan.source)
    report = (lambda stage: (lambda done, total: progress(stage, done, total))) if progress else (lambda stage: None)
    clock = StageClock()

    with clock("segment"):
        region = lung_region(scan) if lungs_only else None
        mask, core = segment_masks(scan.hu, models.segmentation, segmentation_threshold, core_threshold,
                                   erosion_iterations, erosion, progress=report("segment"),
                                   region=region.windows if region else None)
    with clock("group"):
        components = mask_components(mask, core=core)
        del mask, core
        candidates = candidates_of(components, scan.hu, scan.geometry, series_uid=series_uid)
        kept = [i for i, c in enumerate(candidates) if region.holds(c.center_irc)] if region else range(len(candidates))
        candidates = [candidates[i] for i in kept]
    if progress:
        progress("group", len(candidates), len(candidates))
    with clock("classify"):
        predictors = [models.nodule] + ([models.malignancy] if models.malignancy else [])
        scores = classify(scan.hu, candidates, predictors, progress=report("classify"),
                          mirror_views=mirror_views) if candidates else []

    scored = [
        Finding.from_candidate(candidate, scores[0][i], scores[1][i] if len(scores) > 1 else None, series_uid)
        for i, candidate in enumerate(candidates)
    ]
    order = sorted(range(len(scored)), key=lambda i: -scored[i].nodule_prob)  # stable: ties keep label order
    findings = [scored[i] for i in order]
    masks = None
    if masks_above is not None:
        reported = [i for i in order if scored[i].nodule_prob > masks_above][:MAX_MASKED_FINDINGS]
        masks = FindingMasks(scan.shape_irc, tuple(components.voxels_of([kept[i] for i in reported])))
    return Detection(series_uid, candidates, findings, clock.wall, clock.cpu, region, masks)


class StageClock:
    """Wall and CPU seconds per stage: ``with clock("segment"): ...``."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[stage] = time.perf_counter() - wall
        self.cpu[stage] = time.process_time() - cpu


def scan_name(source: str | None) -> str:
    """A name for a scan without a series UID: its file name without the volume suffix."""
    from pathlib import Path

    from medcad.io.volume_files import volume_suffix

    if not source:
        return ""
    name = Path(source).name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else name
