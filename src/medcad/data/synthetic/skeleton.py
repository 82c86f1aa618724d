"""Bone of the phantom at full resolution: vertebrae with discs, ribs, sternum and pelvis.

Vertebral bodies are elliptic cylinders with a dense cortex and endplates around cancellous bone,
separated by discs, so a maximum-intensity projection shows each level as a bright block with a
dark gap: what slice localisation (L3) learns from. Ribs run from the transverse processes around
the chest wall and drop towards the front. Returns points on bone surfaces for candidates.
"""

from __future__ import annotations

import numpy as np

from medcad.data.synthetic.canvas import Canvas
from medcad.data.synthetic.patient import Patient, Vertebra

CORTEX_HU = 750.0
CANCELLOUS_HU = 230.0
ARCH_HU = 520.0
RIB_HU = 480.0
DISC_HU = 90.0
CSF_HU = 15.0
CARTILAGE_HU = 110.0


def paint_skeleton(canvas: Canvas, patient: Patient, rng: np.random.Generator, abdomen: bool) -> np.ndarray:
    """Paints the bones; returns (N, 3) world points on bone (for bone candidates)."""
    points = []
    for upper, lower in zip(patient.vertebrae[:-1], patient.vertebrae[1:]):
        _paint_disc(canvas, patient, upper, lower)
    processes = _Tubes()
    for vertebra in patient.vertebrae:
        points.append(_paint_vertebra(canvas, patient, vertebra, processes))
    processes.paint(canvas, ARCH_HU)
    ribs, cartilage = _Tubes(), _Tubes()
    for number in range(1, 13):
        for side in (-1.0, 1.0):
            points.append(_add_rib(patient, rng, number, side, ribs, cartilage))
    ribs.paint(canvas, RIB_HU)
    cartilage.paint(canvas, CARTILAGE_HU)
    points.append(_paint_sternum(canvas, patient))
    if abdomen:
        for side in (-1.0, 1.0):
            points.append(_paint_ilium(canvas, patient, side))
    return np.concatenate(points)


class _Tubes:
    """Tube segments collected from many bones, painted in one call (one batch of boxes)."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, start_xyz, end_xyz, start_radius_mm, end_radius_mm) -> None:
        start, end = np.atleast_2d(np.asarray(start_xyz, float)), np.atleast_2d(np.asarray(end_xyz, float))
        count = len(start)
        self.parts.append((start, end, np.broadcast_to(np.asarray(start_radius_mm, float), (count,)),
                           np.broadcast_to(np.asarray(end_radius_mm, float), (count,))))

    def paint(self, canvas: Canvas, hu: float) -> None:
        if self.parts:
            canvas.paint_capsules(*(np.concatenate(column) for column in zip(*self.parts)), hu, "max")


def _cylinder_field(box, center_x, center_y, half_x, half_y, z_top, z_bottom) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances of an elliptic cylinder: across (in-plane) and along z."""
    rho = np.sqrt(((box.x - np.float32(center_x)) / np.float32(half_x)) ** 2
                  + ((box.y - np.float32(center_y)) / np.float32(half_y)) ** 2)
    across = (rho - 1.0) * np.float32(min(half_x, half_y))
    along = np.maximum(box.z - np.float32(z_top), np.float32(z_bottom) - box.z)
    return across, along


def _paint_cylinder(canvas: Canvas, center_x, center_y, half_x, half_y, z_top, z_bottom, hu, mode, inset=0.0) -> None:
    reach = np.array([half_x, half_y, 0.0]) + canvas.spacing_xyz
    box = canvas.box((center_x - reach[0], center_y - reach[1], z_bottom - canvas.spacing_xyz[2]),
                     (center_x + reach[0], center_y + reach[1], z_top + canvas.spacing_xyz[2]))
    if box is None:
        return
    across, along = _cylinder_field(box, center_x, center_y, half_x, half_y, z_top, z_bottom)
    edge = np.where(across > along, np.float32(canvas.spacing_xyz[0]), np.float32(canvas.spacing_xyz[2]))
    canvas.paint(box, np.maximum(across, along) + np.float32(inset), hu, mode, edge)


def _paint_vertebra(canvas: Canvas, patient: Patient, v: Vertebra, processes: _Tubes) -> np.ndarray:
    """Body (cortex + cancellous core), arch around the canal, spinous and transverse processes."""
    x = patient.spine_x_mm
    _paint_cylinder(canvas, x, v.center_y_mm, v.half_width_mm, v.half_depth_mm, v.z_top_mm, v.z_bottom_mm, CORTEX_HU, "max")
    _paint_cylinder(canvas, x, v.center_y_mm, v.half_width_mm, v.half_depth_mm, v.z_top_mm, v.z_bottom_mm,
                    CANCELLOUS_HU, "set", inset=1.8)
    if v.name == "S1":
        return np.array([[x, v.center_y_mm - v.half_depth_mm, v.z_center_mm]])
    canal_r = 0.55 * v.half_depth_mm + 3.0
    canal_y = v.center_y_mm + v.half_depth_mm + canal_r + 1.5
    height = v.z_top_mm - v.z_bottom_mm
    top, bottom = v.z_top_mm - 0.1 * height, v.z_bottom_mm + 0.1 * height
    _paint_cylinder(canvas, x, canal_y - 1.0, canal_r + 5.0, canal_r + 4.5, top, bottom, ARCH_HU, "max")
    _paint_cylinder(canvas, x, canal_y, canal_r, canal_r, top + 1.0, bottom - 1.0, CSF_HU, "set")
    thoracic = v.name.startswith("T")
    drop = 0.9 * height if thoracic else 0.2 * height
    spinous_end = (x, canal_y + canal_r + (32.0 if thoracic else 30.0), v.z_center_mm - drop)
    transverse_reach = v.half_width_mm + (16.0 if thoracic else 22.0)
    starts = [(x, canal_y + canal_r + 3.0, v.z_center_mm)] + [(x + s * canal_r, canal_y - 2.0, v.z_center_mm) for s in (-1, 1)]
    ends = [spinous_end] + [(x + s * transverse_reach, canal_y + (6.0 if thoracic else -2.0), v.z_center_mm) for s in (-1, 1)]
    processes.add(starts, ends, 4.5, 3.2)
    return np.array([[x, v.center_y_mm - v.half_depth_mm, v.z_center_mm],
                     [x + v.half_width_mm, v.center_y_mm, v.z_center_mm], spinous_end])


def _paint_disc(canvas: Canvas, patient: Patient, upper: Vertebra, lower: Vertebra) -> None:
    if upper.z_bottom_mm - lower.z_top_mm < 0.5:
        return
    _paint_cylinder(canvas, patient.spine_x_mm, 0.5 * (upper.center_y_mm + lower.center_y_mm),
                    0.5 * (upper.half_width_mm + lower.half_width_mm), 0.5 * (upper.half_depth_mm + lower.half_depth_mm),
                    upper.z_bottom_mm, lower.z_top_mm, DISC_HU, "set")


def _rib_path(patient: Patient, rng: np.random.Generator, number: int, side: float) -> np.ndarray:
    """World points (N, 3) along rib ``number`` (1-12) on one side, from the spine forwards."""
    v = patient.vertebra(f"T{number}")
    end_angle = np.deg2rad((145, 155, 160, 162, 162, 160, 158, 150, 140, 128, 100, 75)[number - 1] + rng.uniform(-5, 5))
    drop = (18, 35, 48, 58, 66, 72, 76, 78, 74, 66, 45, 30)[number - 1] * rng.uniform(0.85, 1.15)
    angles = np.linspace(np.deg2rad(14), end_angle, 28)
    fraction = (angles - angles[0]) / (angles[-1] - angles[0])
    z = v.z_center_mm + 6.0 * np.sin(np.pi * np.clip(fraction * 3, 0, 1)) - drop * fraction ** 1.6
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    scale = patient.body_scale(z)
    reach_w = (cavity_w + 0.4 * patient.muscle_mm) * scale
    reach_d = (cavity_d + 0.4 * patient.muscle_mm) * scale
    if number == 1:  # the first rib curls tightly under the clavicle
        reach_w, reach_d = reach_w * 0.72, reach_d * 0.8
    exponent = 2.0 / patient.exponent
    sin, cos = np.sin(angles), np.cos(angles)
    x = patient.center_x_mm + side * reach_w * np.abs(sin) ** exponent
    y = patient.center_y_mm + reach_d * np.sign(cos) * np.abs(cos) ** exponent
    head = np.array([[patient.spine_x_mm + side * (v.half_width_mm + 10.0), v.center_y_mm + v.half_depth_mm + 8.0,
                      v.z_center_mm]])
    return np.concatenate([head, np.column_stack([x, y, z])])


def _add_rib(patient: Patient, rng: np.random.Generator, number: int, side: float, ribs: _Tubes,
             cartilage: _Tubes) -> np.ndarray:
    """Adds one rib (and its costal cartilage for ribs 1-7); returns points on it."""
    path = _rib_path(patient, rng, number, side)
    radius = 4.0 if number > 1 else 3.5
    ribs.add(path[:-1], path[1:], radius, radius * 0.9)
    if number <= 7:
        sternum = (patient.center_x_mm + side * 12.0, path[-1, 1] - 4.0, path[-1, 2] + 6.0)
        cartilage.add(path[-1:], [sternum], 3.5, 3.5)
    return path[1::3]


def _paint_sternum(canvas: Canvas, patient: Patient) -> np.ndarray:
    """A flat bone plate at the front of the chest, from T2 down to T9."""
    cavity_d = patient.cavity_half_axes_mm[1]
    y = patient.center_y_mm - cavity_d - 0.2 * patient.muscle_mm
    top, bottom = patient.vertebra("T2").z_top_mm, patient.vertebra("T9").z_center_mm
    offsets = np.array([-7.0, 0.0, 7.0])
    starts = np.column_stack([patient.center_x_mm + offsets, np.full(3, y + 6.0), np.full(3, top)])
    ends = np.column_stack([patient.center_x_mm + offsets * 0.8, np.full(3, y), np.full(3, bottom)])
    canvas.paint_capsules(starts, ends, 5.5, 5.0, 380.0, "max")
    return 0.5 * (starts + ends)


def _paint_ilium(canvas: Canvas, patient: Patient, side: float) -> np.ndarray:
    """An iliac wing: a fan of bone from the sacroiliac joint up and out to the crest (at L4)."""
    s1, l4, l5 = patient.vertebra("S1"), patient.vertebra("L4"), patient.vertebra("L5")
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    joint = np.array([patient.spine_x_mm + side * (s1.half_width_mm + 12.0), s1.center_y_mm + 10.0, s1.z_center_mm])
    sweep = np.linspace(0.0, 1.0, 12)  # along the crest, from the back to the front
    crest = np.column_stack([
        patient.spine_x_mm + side * (35.0 + 0.55 * cavity_w * np.sin(np.pi / 2 * (0.35 + 0.65 * sweep))),
        s1.center_y_mm + 25.0 - 0.75 * cavity_d * sweep,
        l4.z_center_mm + (l5.z_center_mm - l4.z_center_mm) * sweep ** 2])
    canvas.paint_capsules(crest[:-1], crest[1:], 5.0, 4.0, 420.0, "max")
    canvas.paint_capsules(np.repeat(joint[None], len(crest), axis=0), crest, 6.0, 3.0, 380.0, "max")
    return np.concatenate([crest[::3], 0.5 * (joint + crest[::4])])
