"""A phantom patient: body size, spine levels and organ landmarks in world mm (LPS).

Everything downstream (the anatomy fields, the skeleton, the trees, the scan's z coverage) reads
its positions from one :class:`Patient`, so the vertebra-level table and the image agree by
construction. Sizes are typical adult values with per-patient scale and jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Vertebral body heights (mm, adult average) and the disc below each, cranial to caudal.
_LEVELS = (
    ("C6", 13.0, 4.5), ("C7", 14.0, 5.0),
    ("T1", 16.0, 4.0), ("T2", 17.0, 4.0), ("T3", 17.5, 4.0), ("T4", 18.0, 4.5), ("T5", 18.5, 4.5),
    ("T6", 19.0, 4.5), ("T7", 19.5, 5.0), ("T8", 20.0, 5.0), ("T9", 20.5, 5.5), ("T10", 21.5, 6.0),
    ("T11", 22.5, 6.5), ("T12", 23.5, 7.0),
    ("L1", 25.0, 8.0), ("L2", 26.0, 9.0), ("L3", 27.0, 10.0), ("L4", 27.0, 10.0), ("L5", 27.0, 10.0),
    ("S1", 30.0, 0.0),
)
#: The levels of the vertebra table: T1..L5.
TABLE_LEVELS = tuple(name for name, _, _ in _LEVELS if name[0] in "TL")


@dataclass(frozen=True)
class Vertebra:
    """One vertebral body.

    Attributes:
        name: level (C6 ... L5, S1).
        z_top_mm, z_bottom_mm: world z of its upper and lower endplates (top > bottom).
        center_y_mm: world y of the body's centre (the spine's curve).
        half_width_mm, half_depth_mm: half the body's size left-right and front-back.
    """

    name: str
    z_top_mm: float
    z_bottom_mm: float
    center_y_mm: float
    half_width_mm: float
    half_depth_mm: float

    @property
    def z_center_mm(self) -> float:
        return 0.5 * (self.z_top_mm + self.z_bottom_mm)


@dataclass(frozen=True, eq=False)
class Patient:
    """The phantom's body plan (world mm, LPS: x to the left, y to the back, z to the head).

    Attributes:
        center_x_mm, center_y_mm: the body's axis.
        half_width_mm, half_depth_mm: chest cross-section (a superellipse).
        fat_mm, muscle_mm: subcutaneous fat and chest-wall muscle thickness.
        vertebrae: C6 to S1, cranial first.
        spine_x_mm: the spine's x (a slight scoliosis is in ``vertebrae`` y only).
        lung_apex_z_mm, carina_z_mm, hilum_z_mm: lung landmarks.
        dome_z_mm: top of the right and left diaphragm domes; ``recess_z_mm``: lowest lung point.
        heart_center_xyz, heart_radii_mm: an ellipsoid sitting on the left dome.
        lung_hu, lung_gradient_hu: parenchyma HU and its rise towards the back (dependent lung).
        lung_waves: (k, 5) low-frequency bumps of the lung surface: wave vector xyz (1/mm), phase,
            amplitude (mm).
        noise_hu: noise standard deviation at the reference voxel (0.7 x 0.7 x 1.25 mm).
    """

    center_x_mm: float
    center_y_mm: float
    half_width_mm: float
    half_depth_mm: float
    exponent: float
    fat_mm: float
    muscle_mm: float
    vertebrae: tuple[Vertebra, ...]
    spine_x_mm: float
    lung_apex_z_mm: float
    carina_z_mm: float
    hilum_z_mm: float
    dome_z_mm: tuple[float, float]
    recess_z_mm: float
    mediastinum_half_width_mm: float
    heart_center_xyz: tuple[float, float, float]
    heart_radii_mm: tuple[float, float, float]
    lung_hu: float
    lung_gradient_hu: float
    lung_waves: np.ndarray
    noise_hu: float

    def vertebra(self, name: str) -> Vertebra:
        return next(v for v in self.vertebrae if v.name == name)

    @property
    def cavity_half_axes_mm(self) -> tuple[float, float]:
        """Half-width and half-depth of the space inside the chest wall."""
        wall = self.fat_mm + self.muscle_mm
        return self.half_width_mm - wall, self.half_depth_mm - wall

    def body_scale(self, z_mm: np.ndarray) -> np.ndarray:
        """Cross-section scale along z: 1 from T5 down, narrowing up to T1 (the upper thorax is a
        cone), and more towards the neck."""
        t1, t5 = self.vertebra("T1").z_center_mm, self.vertebra("T5").z_center_mm
        z = np.asarray(z_mm)
        upper = np.clip((z - t5) / (t1 - t5), 0.0, 1.0)
        neck = np.clip((z - t1) / 60.0, 0.0, 1.0)
        return ((1.0 - 0.14 * upper ** 1.5) * (1.0 - 0.3 * neck * neck)).astype(np.float32)

    def spine_at(self, z_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The vertebral column at height z: centre y, half-width and half-depth (interpolated)."""
        z = np.array([v.z_center_mm for v in self.vertebrae])[::-1]
        return tuple(np.interp(z_mm, z, np.array([getattr(v, name) for v in self.vertebrae])[::-1]).astype(np.float32)
                     for name in ("center_y_mm", "half_width_mm", "half_depth_mm"))

    @property
    def lowest_lung_z_mm(self) -> float:
        return self.recess_z_mm


def sample_patient(rng: np.random.Generator, center_x_mm: float, center_y_mm: float,
                   t1_top_z_mm: float, half_width_mm: float) -> Patient:
    """Draws a patient whose body is centred at (x, y), with T1's top endplate at ``t1_top_z_mm``."""
    half_depth = half_width_mm * rng.uniform(0.62, 0.75)
    fat = rng.uniform(6.0, 0.16 * half_width_mm)
    muscle = rng.uniform(10.0, 18.0)
    scale = half_width_mm / 160.0 * rng.uniform(0.95, 1.08)
    spine_x = center_x_mm + rng.uniform(-4.0, 4.0)
    spine_back = center_y_mm + half_depth - fat - muscle - rng.uniform(30.0, 40.0)

    vertebrae = []
    z = t1_top_z_mm + sum(h + d for _, h, d in _LEVELS[:2]) * scale
    count = len(_LEVELS)
    for i, (name, height, disc) in enumerate(_LEVELS):
        h = height * scale * rng.uniform(0.94, 1.06)
        position = i / (count - 1)
        # kyphosis in the chest (centre moves back), lordosis in the lumbar spine (forward)
        kyphosis = 9.0 * np.sin(np.pi * np.clip(position / 0.7, 0, 1))
        curve = kyphosis - 14.0 * np.sin(np.pi * np.clip((position - 0.68) / 0.32, 0, 1))
        body_hw = (13.0 + 13.0 * position) * scale
        body_hd = (9.0 + 9.0 * position) * scale
        vertebrae.append(Vertebra(name, float(z), float(z - h), float(spine_back - body_hd + curve),
                                  float(body_hw), float(body_hd)))
        z -= h + disc * scale * rng.uniform(0.9, 1.1)
    vertebrae = tuple(vertebrae)
    level = {v.name: v for v in vertebrae}

    dome_right = level["T9"].z_center_mm + rng.uniform(-12.0, 12.0)
    dome_left = dome_right - rng.uniform(8.0, 22.0)
    cavity_w = half_width_mm - fat - muscle
    heart_radii = (cavity_w * rng.uniform(0.40, 0.46), half_depth * rng.uniform(0.42, 0.5), rng.uniform(48.0, 60.0) * scale)
    heart_center = (center_x_mm + cavity_w * rng.uniform(0.12, 0.2), center_y_mm - half_depth * rng.uniform(0.12, 0.22),
                    dome_left + heart_radii[2] * 0.75)
    carina = level["T5"].z_top_mm + rng.uniform(-8.0, 8.0)
    return Patient(
        center_x_mm=float(center_x_mm), center_y_mm=float(center_y_mm),
        half_width_mm=float(half_width_mm), half_depth_mm=float(half_depth), exponent=float(rng.uniform(2.1, 2.6)),
        fat_mm=float(fat), muscle_mm=float(muscle), vertebrae=vertebrae, spine_x_mm=float(spine_x),
        lung_apex_z_mm=float(level["T1"].z_top_mm + rng.uniform(8.0, 25.0)),
        carina_z_mm=float(carina), hilum_z_mm=float(carina - rng.uniform(15.0, 30.0)),
        dome_z_mm=(float(dome_right), float(dome_left)),
        recess_z_mm=float(level["T12"].z_bottom_mm - rng.uniform(0.0, 25.0)),
        mediastinum_half_width_mm=float(rng.uniform(22.0, 32.0) * scale),
        heart_center_xyz=tuple(float(v) for v in heart_center), heart_radii_mm=tuple(float(v) for v in heart_radii),
        lung_hu=float(rng.uniform(-875.0, -830.0)), lung_gradient_hu=float(rng.uniform(0.0, 45.0)),
        lung_waves=_waves(rng, count=5, wavelength_mm=(70.0, 200.0), amplitude_mm=(1.5, 4.5)),
        noise_hu=float(rng.uniform(20.0, 50.0)),
    )


def _waves(rng: np.random.Generator, count: int, wavelength_mm: tuple[float, float],
           amplitude_mm: tuple[float, float]) -> np.ndarray:
    """Random plane waves (wave vector xyz, phase, amplitude) for smooth shape irregularity."""
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    vectors = directions * (2 * np.pi / rng.uniform(*wavelength_mm, size=(count, 1)))
    waves = np.column_stack([vectors, rng.uniform(0, 2 * np.pi, count), rng.uniform(*amplitude_mm, count)])
    waves.setflags(write=False)
    return waves
