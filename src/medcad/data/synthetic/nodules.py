"""Lung nodules: size and malignancy from real LIDC statistics, shape and density by kind.

Attributes are drawn first (:func:`sample_nodule_traits`): the diameter from the real LUNA16
histogram, malignancy from the real diameter-malignancy relation, reader ratings consistent with
it; then kind (solid, part-solid, ground-glass, calcified) and margin (smooth, lobulated,
spiculated), malignant nodules being more often part-solid, lobulated or spiculated. Placement
(:func:`place_nodule`) puts some against the pleura or a vessel; no nodule is ever dropped, so the
written diameters follow the real distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from medcad.data.synthetic.anatomy import lung_field
from medcad.data.synthetic.canvas import Canvas
from medcad.data.synthetic.patient import Patient
from medcad.data.synthetic.statistics import NoduleStatistics
from medcad.data.synthetic.trees import TreeSegments, sample_inside
from medcad.data.synthetic.vessels import lung_box

KINDS = ("solid", "part-solid", "ground-glass", "calcified")
MARGINS = ("smooth", "lobulated", "spiculated")
ATTACHMENTS = ("isolated", "juxtapleural", "juxtavascular")
_KIND_P = {True: (0.62, 0.25, 0.13, 0.0), False: (0.73, 0.07, 0.13, 0.07)}
_MARGIN_P = {True: (0.2, 0.35, 0.45), False: (0.7, 0.22, 0.08)}
_ATTACHMENT_P = (0.55, 0.25, 0.2)
#: Nodules per scan: 0..5 (LUNA16: 1186 nodules in 601 scans that have any).
_COUNT_P = (0.1, 0.33, 0.27, 0.16, 0.09, 0.05)


@dataclass(frozen=True)
class NoduleTraits:
    """What a nodule is, before it is placed.

    Attributes:
        diameter_mm: equivalent diameter (the annotation's ``diameter_mm``).
        is_malignant: the consensus label (``mal_bool``).
        malignancy_ratings: per-reader ratings 1-5 (``mal_details``).
        kind, margin, attachment: one of KINDS, MARGINS, ATTACHMENTS.
    """

    diameter_mm: float
    is_malignant: bool
    malignancy_ratings: tuple[int, ...]
    kind: str
    margin: str
    attachment: str


@dataclass(frozen=True, eq=False)
class PlacedNodule:
    """A nodule drawn into a scan.

    Attributes:
        traits: size, malignancy and appearance.
        center_xyz: world mm of its centre (the annotation point).
        bbox_low_xyz, bbox_high_xyz: world box around its body (spicules excluded).
        hu: density of its solid part (or of the whole for ground-glass).
    """

    traits: NoduleTraits
    center_xyz: tuple[float, float, float]
    bbox_low_xyz: tuple[float, float, float]
    bbox_high_xyz: tuple[float, float, float]
    hu: float


def sample_nodule_count(rng: np.random.Generator) -> int:
    return int(rng.choice(len(_COUNT_P), p=_COUNT_P))


def sample_nodule_traits(rng: np.random.Generator, stats: NoduleStatistics, count: int,
                         min_diameter_mm: float | None = None) -> list[NoduleTraits]:
    """Draws ``count`` nodules' size (at least ``min_diameter_mm`` if given), malignancy, ratings and appearance."""
    diameters = stats.sample_diameters_mm(rng, count, min_diameter_mm)
    malignant = rng.random(count) < stats.malignancy_probability(diameters)
    traits = []
    for diameter, is_malignant in zip(diameters, malignant):
        is_malignant = bool(is_malignant)
        traits.append(NoduleTraits(
            diameter_mm=float(diameter), is_malignant=is_malignant,
            malignancy_ratings=stats.sample_ratings(rng, is_malignant),
            kind=KINDS[rng.choice(len(KINDS), p=_KIND_P[is_malignant])],
            margin=MARGINS[rng.choice(len(MARGINS), p=_MARGIN_P[is_malignant])],
            attachment=ATTACHMENTS[rng.choice(len(ATTACHMENTS), p=_ATTACHMENT_P)],
        ))
    return traits


def place_nodule(rng: np.random.Generator, patient: Patient, traits: NoduleTraits, vessels: TreeSegments,
                 taken: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """A centre for the nodule in a lung, touching the pleura or a vessel when asked.

    ``taken`` lists (centre, radius) of nodules already placed, which it keeps clear of. Falls back
    to looser placements rather than failing, so every drawn nodule appears.
    """
    radius = traits.diameter_mm / 2
    field = partial(lung_field, patient)

    def free(points: np.ndarray) -> np.ndarray:
        ok = np.ones(len(points), dtype=bool)
        for center, other in taken:
            ok &= np.linalg.norm(points - center, axis=1) > radius + other + 4.0
        return points[ok]

    side = -1.0 if rng.random() < 0.55 else 1.0  # the right lung is larger
    low, high = lung_box(patient, side)
    if traits.attachment == "juxtavascular":
        points, vessel_r, axes = vessels.sample_points(rng, 64, 0.6, 3.5)
        if len(points):
            across = np.cross(axes, rng.normal(size=axes.shape))
            across /= np.linalg.norm(across, axis=1, keepdims=True) + 1e-9
            centers = points + across * (0.85 * radius + 0.5 * vessel_r)[:, None]
            centers = free(centers[field(centers[:, 2], centers[:, 1], centers[:, 0]) < -0.6 * radius])
            if len(centers):
                return centers[0]
    if traits.attachment == "juxtapleural":
        points = sample_inside(rng, field, low, high, 256, margin_mm=0.55 * radius, strict=False, max_batches=8)
        near_wall = points[field(points[:, 2], points[:, 1], points[:, 0]) > -0.9 * radius]
        near_wall = free(near_wall)
        if len(near_wall):
            return near_wall[0]
    for margin in (radius + 3.0, 0.6 * radius, 0.0):
        points = free(sample_inside(rng, field, low, high, 64, margin_mm=margin, strict=False, max_batches=8))
        if len(points):
            return points[0]
    return sample_inside(rng, field, low, high, 1)[0]


def draw_nodule(canvas: Canvas, rng: np.random.Generator, traits: NoduleTraits, center_xyz: np.ndarray) -> PlacedNodule:
    """Paints a nodule of the given traits at ``center_xyz``; returns its record."""
    radius = traits.diameter_mm / 2
    shape = _NoduleShape.sample(rng, traits.margin)
    solid_hu = float(rng.uniform(-10.0, 60.0))
    if traits.kind == "calcified":
        solid_hu = float(rng.uniform(250.0, 700.0))
    edge = float(np.mean(canvas.spacing_xyz))
    if traits.kind in ("ground-glass", "part-solid"):
        glass_hu = float(rng.uniform(-650.0, -420.0) if traits.kind == "ground-glass" else rng.uniform(-560.0, -380.0))
        shape.paint(canvas, center_xyz, radius, glass_hu, edge + 0.8)
        if traits.kind == "part-solid":
            shape.paint(canvas, center_xyz, radius * rng.uniform(0.35, 0.6), solid_hu, edge)
        else:
            solid_hu = glass_hu
    else:
        shape.paint(canvas, center_xyz, radius, solid_hu, None)
    if traits.margin == "spiculated":
        shape.paint_spicules(canvas, rng, center_xyz, radius, solid_hu if traits.kind != "ground-glass" else solid_hu)
    low, high = shape.bounds(center_xyz, radius)
    return PlacedNodule(traits, tuple(float(v) for v in center_xyz), tuple(float(v) for v in low),
                        tuple(float(v) for v in high), solid_hu)


@dataclass(frozen=True, eq=False)
class _NoduleShape:
    """A lumpy, slightly elongated sphere: rotation, axis scales (volume-preserving) and lobes."""

    rotation: np.ndarray  # columns: the nodule's axes in world
    scales: np.ndarray  # (3,), product 1
    lobe_directions: np.ndarray  # (k, 3) unit, in the nodule's axes
    lobe_amplitudes: np.ndarray  # (k,)

    @classmethod
    def sample(cls, rng: np.random.Generator, margin: str) -> "_NoduleShape":
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        scales = np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.75, 1.0)])
        scales /= np.prod(scales) ** (1 / 3)
        count, amplitude = {"smooth": (2, (0.02, 0.07)), "lobulated": (5, (0.12, 0.28)), "spiculated": (4, (0.05, 0.15))}[margin]
        directions = rng.normal(size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        return cls(rotation, scales, directions, rng.uniform(*amplitude, count))

    def radius_factor(self, unit: np.ndarray) -> np.ndarray:
        """Surface radius / nominal radius for unit directions (..., 3) in the nodule's axes."""
        factor = np.ones(unit.shape[:-1], dtype=np.float32)
        for direction, amplitude in zip(self.lobe_directions, self.lobe_amplitudes):
            cosine = unit @ direction.astype(np.float32)
            factor += np.float32(amplitude) * (np.maximum(cosine, 0.0) ** 3 - 0.125)
        return factor

    def _reach(self, radius: float) -> float:
        return radius * float(self.scales.max()) * (1.0 + float(self.lobe_amplitudes.sum()))

    def paint(self, canvas: Canvas, center_xyz: np.ndarray, radius: float, hu: float, edge_mm: float | None) -> None:
        reach = self._reach(radius) + canvas.spacing_xyz
        box = canvas.box(center_xyz - reach, center_xyz + reach)
        if box is None:
            return
        offset = [box.x - np.float32(center_xyz[0]), box.y - np.float32(center_xyz[1]), box.z - np.float32(center_xyz[2])]
        rot = self.rotation.astype(np.float32)
        local = np.stack(np.broadcast_arrays(*[
            (rot[0, k] * offset[0] + rot[1, k] * offset[1] + rot[2, k] * offset[2]) / np.float32(self.scales[k])
            for k in range(3)]), axis=-1)
        distance = np.linalg.norm(local, axis=-1)
        unit = local / np.maximum(distance, 1e-6)[..., None]
        signed = distance - np.float32(radius) * self.radius_factor(unit)
        if edge_mm is None:
            length = np.sqrt(offset[0] ** 2 + offset[1] ** 2 + offset[2] ** 2)
            edge_mm = canvas.normal_edge_mm(offset[2], offset[1], offset[0], length)
        canvas.paint(box, signed, hu, "max", edge_mm)

    def paint_spicules(self, canvas: Canvas, rng: np.random.Generator, center_xyz: np.ndarray, radius: float, hu: float) -> None:
        """Thin tapering spikes radiating from the surface."""
        count = int(rng.integers(6, 16))
        directions = rng.normal(size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        surface = radius * self.radius_factor(directions.astype(np.float32))[:, None]
        world = (self.rotation @ (directions * self.scales).T).T
        starts = center_xyz + world * 0.7 * surface
        ends = center_xyz + world * (surface + radius * rng.uniform(0.4, 1.2, (count, 1)) + 2.0)
        canvas.paint_capsules(starts, ends, rng.uniform(0.5, 0.9, count), 0.25, hu, "max")

    def bounds(self, center_xyz: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box of the body (sampled over directions)."""
        golden = np.pi * (3.0 - np.sqrt(5.0))
        k = np.arange(400)
        z = 1 - 2 * (k + 0.5) / 400
        ring = np.sqrt(1 - z * z)
        unit = np.column_stack([ring * np.cos(golden * k), ring * np.sin(golden * k), z])
        surface = unit * self.scales * (radius * self.radius_factor(unit.astype(np.float32)))[:, None]
        world = center_xyz + surface @ self.rotation.T
        return world.min(axis=0), world.max(axis=0)
