"""One phantom CT: patient -> geometry -> soft tissue and lungs -> bone, vessels, airways,
nodules -> noise, with the nodule, candidate and vertebra records that describe it.

Determinism: every random draw comes from one generator seeded by (seed, scan index, options),
in a fixed order; nothing depends on time, threads or dict order, so a seed gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from medcad.data.synthetic.airways import grow_airways, paint_airways
from medcad.data.synthetic.anatomy import lung_field, lung_hu, paint_tissue
from medcad.data.synthetic.candidates import negative_candidates
from medcad.data.synthetic.canvas import Canvas, coarse_factors, coarse_shape, for_each_slab, upsample_linear
from medcad.data.synthetic.layout import SIZES, ScanLayout, sample_layout, scan_z_range
from medcad.data.synthetic.noise import noise_sigma_hu, quantise_with_noise
from medcad.data.synthetic.nodules import (PlacedNodule, draw_nodule, place_nodule, sample_nodule_count,
                                           sample_nodule_traits)
from medcad.data.synthetic.patient import TABLE_LEVELS, Patient, sample_patient
from medcad.data.synthetic.skeleton import paint_skeleton
from medcad.data.synthetic.statistics import load_statistics
from medcad.data.synthetic.vessels import grow_vessels, lung_box, paint_vessels
from medcad.io.dicom_writer import derived_uid
from medcad.io.scan import Scan

#: Coarse grid spacing (mm) for the smooth anatomy, interpolated up to the scan's grid.
COARSE_MM = 2.0
#: Below the largest real diameter (32.5 mm, the histogram's last edge): ``min_nodule_mm`` must be less.
MAX_NODULE_MM = 32.0


@dataclass(frozen=True)
class PhantomOptions:
    """What kind of scans to make.

    Attributes:
        size: a key of ``layout.SIZES`` (small 128x128x64, medium 256^2, full 512^2).
        abdomen: cover the abdomen down past L5 (for L3 localisation), not only the chest.
        negatives: class-0 candidates per scan (None: a default per size).
        slices: a fixed slice count (None: the size's, or coverage / slice thickness).
        nodules: nodules per scan (None: 0-5, as many as LUNA16 scans with nodules have).
        min_nodule_mm: draw nodule diameters from the real histogram above this size only (None:
            the whole histogram, 3-32 mm); for tasks that need nodules visible on a coarse grid.
        clear_fraction: share of scans drawn without any nodule (0: the count decides alone); e.g.
            0.5 for a balanced "nodule" / "clear" scan-classification cohort.
    """

    size: str = "small"
    abdomen: bool = False
    negatives: int | None = None
    slices: int | None = None
    nodules: int | None = None
    min_nodule_mm: float | None = None
    clear_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.slices is not None and self.slices < 2:
            raise ValueError(f"slices must be at least 2, got {self.slices}")
        if not 0.0 <= self.clear_fraction <= 1.0:
            raise ValueError(f"clear_fraction must lie in [0, 1], got {self.clear_fraction}")
        if self.min_nodule_mm is not None and not 0.0 <= self.min_nodule_mm < MAX_NODULE_MM:
            raise ValueError(f"min_nodule_mm must lie in [0, {MAX_NODULE_MM:g}), got {self.min_nodule_mm}")

    @property
    def negatives_per_scan(self) -> int:
        return self.negatives if self.negatives is not None else {"small": 120, "medium": 300}.get(self.size, 600)


@dataclass(frozen=True)
class VertebraLevel:
    """Where one vertebral body lies in a scan.

    Attributes:
        name: T1 ... L5.
        z_top_mm, z_bottom_mm: world z of its endplates.
        slice_first, slice_last: slice indices (of the written array) whose centres lie in the
            body, inclusive; -1 when none does.
    """

    name: str
    z_top_mm: float
    z_bottom_mm: float
    slice_first: int
    slice_last: int


@dataclass(frozen=True, eq=False)
class Phantom:
    """A generated scan and what is in it (world mm, LPS).

    Attributes:
        scan: int16 HU volume with its geometry and series UID.
        nodules: the nodules drawn.
        negatives_xyz: (n, 3) non-nodule candidate points.
        negative_sources: (n,) what each lies on: vessel, airway_wall, pleura, bone, parenchyma.
        vertebrae: T1 ... L5 levels.
        patient: the body plan it was drawn from (landmarks, vertebral bodies C6-S1).
    """

    scan: Scan
    nodules: tuple[PlacedNodule, ...]
    negatives_xyz: np.ndarray
    negative_sources: np.ndarray
    vertebrae: tuple[VertebraLevel, ...]
    patient: Patient


def phantom_series_uid(seed: int, index: int, options: PhantomOptions) -> str:
    """The DICOM-style series UID of phantom ``index`` of a cohort (digits and dots)."""
    return derived_uid(f"medcad-synth:{seed}:{index}:{options.size}:{int(options.abdomen)}")


def generate_phantom(seed: int, index: int, options: PhantomOptions = PhantomOptions()) -> Phantom:
    """Generates phantom number ``index`` of the cohort with ``seed``."""
    rng = np.random.default_rng([seed, index, list(SIZES).index(options.size), int(options.abdomen)])
    size = SIZES[options.size] if options.slices is None else replace(SIZES[options.size], slices=options.slices)
    half_width = rng.uniform(118.0, 182.0)
    fov_center = rng.uniform(-30.0, 30.0, 2)
    body_center = fov_center + np.array([rng.uniform(-10.0, 10.0), rng.uniform(-15.0, 5.0)])
    patient = sample_patient(rng, body_center[0], body_center[1], rng.uniform(-250.0, 250.0), half_width)
    layout = sample_layout(rng, patient, size, scan_z_range(patient, rng, options.abdomen), tuple(fov_center))
    geometry = layout.canonical
    canvas = Canvas(_soft_anatomy(patient, rng, layout, options.abdomen), geometry.origin_xyz, geometry.spacing_xyz)

    pixel = float(geometry.spacing_xyz[0])
    bone_xyz = paint_skeleton(canvas, patient, rng, options.abdomen)
    vessels = grow_vessels(patient, rng, {"small": 220, "medium": 1000}.get(options.size, 2000), max(0.35, 0.4 * pixel))
    paint_vessels(canvas, vessels, rng)
    airways = grow_airways(patient, rng, 70, max(0.8, 0.5 * pixel))
    paint_airways(canvas, airways)

    nodules: list[PlacedNodule] = []
    taken: list[tuple[np.ndarray, float]] = []
    count = sample_nodule_count(rng) if options.nodules is None else options.nodules
    if options.clear_fraction > 0 and rng.random() < options.clear_fraction:  # no draw at the default
        count = 0
    for traits in sample_nodule_traits(rng, load_statistics(), count, options.min_nodule_mm):
        center = place_nodule(rng, patient, traits, vessels, taken)
        nodules.append(draw_nodule(canvas, rng, traits, center))
        taken.append((center, traits.diameter_mm / 2))
    negatives, sources = negative_candidates(rng, patient, options.negatives_per_scan, vessels, airways, bone_xyz, nodules)

    sigma = noise_sigma_hu(patient.noise_hu, geometry.spacing_xyz)
    hu = quantise_with_noise(canvas.hu, sigma, rng, outside_circle=bool(rng.random() < 0.3))
    uid = phantom_series_uid(seed, index, options)
    scan = Scan(hu=layout.orient(hu), geometry=layout.geometry, series_uid=uid,
                metadata={"Modality": "CT", "Manufacturer": "medcad phantom"})
    return Phantom(scan, tuple(nodules), negatives, sources, _vertebra_levels(patient, layout), patient)


def _soft_anatomy(patient: Patient, rng: np.random.Generator, layout: ScanLayout, abdomen: bool) -> np.ndarray:
    """Tissue and lungs on the scan's grid (float32): painted coarse, interpolated, lungs blended sharp."""
    fine = layout.canonical
    factors = coarse_factors(fine.spacing_xyz, COARSE_MM)
    coarse = Canvas.filled(coarse_shape(fine.shape_irc, factors), fine.origin_xyz,
                           fine.spacing_xyz * np.asarray(factors[::-1]), -1000.0)
    paint_tissue(coarse, patient, rng, abdomen)
    box = coarse.whole()
    lungs = lung_field(patient, box.z, box.y, box.x)
    volume = np.empty(fine.shape_irc, dtype=np.float32)
    fine_canvas = Canvas(volume, fine.origin_xyz, fine.spacing_xyz)
    parenchyma = lung_hu(patient, fine_canvas.axis_mm(1))[None, :, None]
    edge = np.float32(fine.spacing_xyz[0])
    # the lungs are interpolated and blended only inside their bounding box (aligned to the coarse grid)
    (z0, r0, c0), (z1, r1, c1) = _lung_window(patient, fine, factors)
    lung_crop = lungs[:, r0 // factors[1]:, c0 // factors[2]:]
    window_shape = (fine.shape_irc[0], r1 - r0, c1 - c0)

    def render(start: int, stop: int) -> None:
        tissue = upsample_linear(coarse.hu, factors, fine.shape_irc, start, stop)
        low, high = max(start, z0), min(stop, z1)
        if low < high and r1 > r0 and c1 > c0:
            field = upsample_linear(lung_crop, factors, window_shape, low, high)
            region = tissue[low - start:high - start, r0:r1, c0:c1]
            occupancy = np.clip(0.5 - field / edge, 0.0, 1.0)
            region += occupancy * (parenchyma[:, r0:r1] - region)
        volume[start:stop] = tissue

    for_each_slab(fine.shape_irc[0], 4 * factors[0], render)
    return volume


def _lung_window(patient: Patient, fine, factors) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Fine voxel index box (low, high) around both lungs; in-plane lows are multiples of the factors."""
    low = np.minimum(lung_box(patient, -1.0)[0], lung_box(patient, 1.0)[0]) - 5.0
    high = np.maximum(lung_box(patient, -1.0)[1], lung_box(patient, 1.0)[1]) + 5.0
    low_irc = np.floor((low - fine.origin_xyz) / fine.spacing_xyz).astype(int)[::-1]
    high_irc = np.ceil((high - fine.origin_xyz) / fine.spacing_xyz).astype(int)[::-1] + 1
    low_irc = np.clip(low_irc, 0, fine.shape_irc) // factors * factors
    high_irc = np.clip(high_irc, 0, fine.shape_irc)
    return tuple(int(v) for v in low_irc), tuple(int(v) for v in high_irc)


def _vertebra_levels(patient: Patient, layout: ScanLayout) -> tuple[VertebraLevel, ...]:
    """T1 ... L5 z ranges and the written array's slice indices inside each."""
    geometry = layout.geometry
    depth = geometry.shape_irc[0]
    slice_z = geometry.irc_to_xyz(np.column_stack([np.arange(depth), np.zeros(depth), np.zeros(depth)]))[:, 2]
    levels = []
    for name in TABLE_LEVELS:
        v = patient.vertebra(name)
        inside = np.flatnonzero((slice_z >= v.z_bottom_mm) & (slice_z <= v.z_top_mm))
        first, last = (int(inside.min()), int(inside.max())) if len(inside) else (-1, -1)
        levels.append(VertebraLevel(name, round(v.z_top_mm, 3), round(v.z_bottom_mm, 3), first, last))
    return tuple(levels)
