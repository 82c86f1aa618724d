"""Soft anatomy of the phantom: body outline, fat, muscle, mediastinum, organs and the lungs.

The body and the lungs are implicit shapes: functions of world mm returning an approximate signed
distance (negative inside), evaluated on a coarse grid for the image and at single points for
placing vessels, nodules and candidates, so both always agree. The tissue map (everything but
lungs, bone, airways and vessels) is painted on a coarse grid (about 2 mm) and interpolated up.
"""

from __future__ import annotations

import numpy as np

from medcad.data.synthetic.canvas import Canvas
from medcad.data.synthetic.patient import Patient

#: Tissue HU (non-contrast CT).
FAT_HU = -100.0
MUSCLE_HU = 45.0
BLOOD_HU = 40.0
LIVER_HU = 58.0
AIR_HU = -1000.0


def _superellipse_mm(u: np.ndarray, v: np.ndarray, half_u, half_v, exponent: float) -> np.ndarray:
    """Approximate signed distance (mm) to a superellipse |u/a|^p + |v/b|^p = 1."""
    p = np.float32(exponent)
    rho = (np.abs(u / half_u) ** p + np.abs(v / half_v) ** p) ** (1 / p)
    return (rho - 1.0) * np.minimum(half_u, half_v)


def body_field(patient: Patient, z, y, x) -> np.ndarray:
    """Signed distance to the body outline (add a thickness to get the layer beneath, e.g. fat)."""
    scale = patient.body_scale(z)
    return _superellipse_mm(x - np.float32(patient.center_x_mm), y - np.float32(patient.center_y_mm),
                            patient.half_width_mm * scale, patient.half_depth_mm * scale, patient.exponent)


def diaphragm_z_mm(patient: Patient, y, x) -> np.ndarray:
    """World z of the diaphragm under each lung: a dome, lowest at the back and the sides."""
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    left = x > patient.center_x_mm
    side = np.where(left, np.float32(1), np.float32(-1))
    dome = np.where(left, np.float32(patient.dome_z_mm[1]), np.float32(patient.dome_z_mm[0]))
    dx = (x - (patient.center_x_mm + side * 0.5 * cavity_w)) / np.float32(0.6 * cavity_w)
    dy = y - np.float32(patient.center_y_mm - 0.05 * cavity_d)
    dy = dy / np.where(dy > 0, np.float32(0.8 * cavity_d), np.float32(1.2 * cavity_d))
    return dome - (dome - np.float32(patient.recess_z_mm)) * np.clip(dx * dx + dy * dy, 0.0, 1.0)


def lung_field(patient: Patient, z, y, x) -> np.ndarray:
    """Signed distance (mm, negative inside) to the lungs, both sides; broadcastable inputs."""
    z, y, x = (np.asarray(a, dtype=np.float32) for a in (z, y, x))
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    cx, cy = np.float32(patient.center_x_mm), np.float32(patient.center_y_mm)
    scale = patient.body_scale(z)
    wall = _superellipse_mm(x - cx, y - cy, cavity_w * scale, cavity_d * scale, patient.exponent) + 1.5
    # the mediastinum bulges forwards (heart, great vessels); behind, the lungs reach round the spine
    bulge = 1.0 + 0.35 * np.tanh((cy - y) / np.float32(0.4 * cavity_d))
    mediastinum = np.float32(patient.mediastinum_half_width_mm) * bulge - np.abs(x - cx)
    side = np.where(x > cx, np.float32(1), np.float32(-1))
    apex_dx = x - (cx + side * np.float32(0.45 * cavity_w))
    apex_dy = y - (cy + np.float32(0.2 * cavity_d))
    apex = z - (np.float32(patient.lung_apex_z_mm) - 0.018 * (apex_dx * apex_dx + apex_dy * apex_dy))
    base = diaphragm_z_mm(patient, y, x) - z
    field = np.maximum(np.maximum(wall, mediastinum), np.maximum(apex, base))

    hx, hy, hz = patient.heart_center_xyz
    rx, ry, rz = patient.heart_radii_mm
    heart_rho = np.sqrt(((x - hx) / rx) ** 2 + ((y - hy) / ry) ** 2 + ((z - hz) / rz) ** 2)
    field = np.maximum(field, (1.0 - heart_rho) * np.float32(min(rx, ry)) + 4.0)
    spine_y, spine_hw, spine_hd = patient.spine_at(z)
    spine_rho = np.sqrt(((x - patient.spine_x_mm) / (spine_hw + 14)) ** 2 + ((y - spine_y) / (spine_hd + 20)) ** 2)
    field = np.maximum(field, (1.0 - spine_rho) * (spine_hw + 14))
    aorta_x, aorta_y, aorta_r = aorta_line(patient, z)
    aorta = np.sqrt((x - aorta_x) ** 2 + (y - aorta_y) ** 2)
    field = np.maximum(field, np.where(z < patient.carina_z_mm + 20, aorta_r + 3.0 - aorta, -1e3))
    for kx, ky, kz, phase, amplitude in patient.lung_waves:
        phase_at = np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(phase)
        field = field + np.float32(amplitude) * np.sin(phase_at)
    return field


def aorta_line(patient: Patient, z) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre (x, y) and radius of the descending aorta at height z: left-front of the spine."""
    spine_y, spine_hw, spine_hd = patient.spine_at(z)
    return (np.float32(patient.spine_x_mm) + spine_hw + 6.0, spine_y - spine_hd - 4.0, 11.0)


def lung_hu(patient: Patient, y: np.ndarray) -> np.ndarray:
    """Parenchyma HU at world y: denser towards the back (dependent lung)."""
    depth = patient.half_depth_mm
    fraction = np.clip((y - (patient.center_y_mm - depth)) / (2 * depth), 0.0, 1.0)
    return (patient.lung_hu + patient.lung_gradient_hu * fraction * fraction).astype(np.float32)


def paint_tissue(canvas: Canvas, patient: Patient, rng: np.random.Generator, abdomen: bool) -> None:
    """Paints air, table, fat, muscle, mediastinum and abdominal organs (no lungs or bone)."""
    box = canvas.whole()
    z, y, x = box.z, box.y, box.x
    _paint_table(canvas, patient, rng)
    outline = body_field(patient, z, y, x)
    canvas.paint(box, outline, FAT_HU + rng.uniform(-15, 10), "set")
    muscle = outline + np.float32(patient.fat_mm)
    canvas.paint(box, muscle, MUSCLE_HU, "set")
    cavity = muscle + np.float32(patient.muscle_mm)
    canvas.paint(box, cavity, FAT_HU + 10.0, "set")

    spine_y, spine_hw, _ = patient.spine_at(z)
    for side in (-1.0, 1.0):  # paraspinal muscles behind the spine, in and behind the chest wall
        rho = np.sqrt(((x - (patient.spine_x_mm + side * (spine_hw + 14))) / (spine_hw + 8)) ** 2
                      + ((y - (spine_y + 45.0)) / 32.0) ** 2)
        canvas.paint(box, np.maximum((rho - 1.0) * 25.0, muscle), MUSCLE_HU + 5, "set")

    canvas.paint_ellipsoid(patient.heart_center_xyz, patient.heart_radii_mm, BLOOD_HU, "set")
    _paint_aorta(canvas, patient)
    canvas.paint(box, _liver_field(patient, rng, z, y, x, cavity), LIVER_HU + rng.uniform(-8, 8), "set")
    _paint_left_upper_abdomen(canvas, patient, rng)
    _paint_retroperitoneum(canvas, patient, rng)
    if abdomen:
        _paint_bowel(canvas, patient, rng)


def _liver_field(patient: Patient, rng: np.random.Generator, z, y, x, cavity) -> np.ndarray:
    """The liver: a large ellipsoid in the right upper abdomen, under the right dome, inside the cavity."""
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    top = patient.dome_z_mm[0]
    bottom = patient.vertebra("L2").z_center_mm + rng.uniform(-20, 10)
    center = (patient.center_x_mm - 0.35 * cavity_w, patient.center_y_mm - 0.05 * cavity_d, 0.5 * (top + bottom))
    radii = (0.85 * cavity_w, 1.0 * cavity_d, 0.55 * (top - bottom))
    rho = np.sqrt(sum(((a - c) / r) ** 2 for a, c, r in zip((x, y, z), center, radii)))
    below_right = z - (diaphragm_z_mm(patient, y, x) - 5.0)
    return np.maximum(np.maximum((rho - 1.0) * radii[0] * 0.5, below_right), cavity + 3.0)


def _paint_table(canvas: Canvas, patient: Patient, rng: np.random.Generator) -> None:
    """The patient table under the back: two thin dense shells around a foam core."""
    top = patient.center_y_mm + patient.half_depth_mm + rng.uniform(0.5, 6.0)
    box = canvas.whole()
    half_width = patient.half_width_mm * 1.3
    across = np.abs(box.x - patient.center_x_mm) - half_width
    sag = 0.0006 * (box.x - patient.center_x_mm) ** 2  # the table curves up at the sides
    y = box.y + 0 * box.z
    # shells thicker than two coarse voxels, so their interpolated peak is the same everywhere
    for low, high, hu in ((0.0, 4.5, 150.0), (4.5, 30.0, -850.0), (30.0, 34.5, 150.0)):
        slab = np.maximum(np.maximum(top + low - sag - y, y - (top + high - sag)), across)
        canvas.paint(box, slab, hu, "set")


def _paint_aorta(canvas: Canvas, patient: Patient) -> None:
    """Ascending aorta, arch and descending aorta (to L4) as a chain of tubes."""
    hx, hy, hz = patient.heart_center_xyz
    arch_z = patient.carina_z_mm + 28.0
    z_low = patient.vertebra("L4").z_center_mm
    zs = np.linspace(arch_z - 5.0, z_low, 12)
    desc_x, desc_y, _ = aorta_line(patient, zs)
    path = [(hx - 25.0, hy - 5.0, hz + 20.0), (patient.center_x_mm - 5.0, hy - 10.0, arch_z - 10.0),
            (patient.center_x_mm + 5.0, hy + 5.0, arch_z + 8.0), (desc_x[0] - 5.0, desc_y[0] - 15.0, arch_z + 8.0)]
    path += list(zip(desc_x, desc_y, zs))
    path = np.asarray(path)
    radii = np.concatenate([[15.0, 14.0, 13.0, 12.0], np.linspace(11.5, 9.0, len(zs))])
    canvas.paint_capsules(path[:-1], path[1:], radii[:-1], radii[1:], BLOOD_HU, "set")


def _paint_left_upper_abdomen(canvas: Canvas, patient: Patient, rng: np.random.Generator) -> None:
    """Spleen and stomach (with its gas bubble) under the left dome."""
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    cx, cy = patient.center_x_mm, patient.center_y_mm
    dome = patient.dome_z_mm[1]
    t11 = patient.vertebra("T11").z_center_mm
    canvas.paint_ellipsoid((cx + 0.72 * cavity_w, cy + 0.4 * cavity_d, min(t11, dome - 40)), (22, 42, 50), 48.0, "set")
    stomach = np.array([cx + 0.4 * cavity_w, cy - 0.35 * cavity_d, dome - 45.0])
    canvas.paint_ellipsoid(stomach, (45.0, 35.0, 40.0), 30.0, "set")
    canvas.paint_ellipsoid(stomach + (0.0, -12.0, 22.0), np.array([28.0, 16.0, 12.0]) * rng.uniform(0.5, 1.0), AIR_HU, "set")


def _paint_retroperitoneum(canvas: Canvas, patient: Patient, rng: np.random.Generator) -> None:
    """Kidneys beside L1-L2 and the psoas muscles along the lumbar spine."""
    l1, l5 = patient.vertebra("L1"), patient.vertebra("L5")
    for side in (-1.0, 1.0):
        kidney_z = l1.z_bottom_mm + rng.uniform(-15, 15) - (10.0 if side < 0 else 0.0)  # right kidney lower
        center = (patient.spine_x_mm + side * (l1.half_width_mm + 45.0), l1.center_y_mm + 5.0, kidney_z)
        canvas.paint_ellipsoid(center, (28.0, 22.0, 55.0), 32.0, "set")
        start = (patient.spine_x_mm + side * (l1.half_width_mm + 8), l1.center_y_mm, l1.z_top_mm)
        end = (patient.spine_x_mm + side * (l5.half_width_mm + 22), l5.center_y_mm - 15.0, l5.z_bottom_mm - 20)
        canvas.paint_capsules([start], [end], 9.0, 22.0, MUSCLE_HU, "set")


def _paint_bowel(canvas: Canvas, patient: Patient, rng: np.random.Generator) -> None:
    """Bowel loops in the lower abdomen: soft-tissue blobs, some holding gas."""
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    top = patient.vertebra("L1").z_center_mm
    bottom = patient.vertebra("S1").z_bottom_mm
    for _ in range(int(rng.integers(25, 40))):
        center = (patient.center_x_mm + rng.uniform(-0.7, 0.7) * cavity_w,
                  patient.center_y_mm + rng.uniform(-0.75, 0.1) * cavity_d, rng.uniform(bottom, top))
        radii = rng.uniform(10.0, 22.0, 3)
        canvas.paint_ellipsoid(center, radii, rng.uniform(20.0, 45.0), "set")
        if rng.random() < 0.35:
            canvas.paint_ellipsoid(center, radii * rng.uniform(0.3, 0.6), AIR_HU, "set")
