"""Airways: the trachea and a bronchial tree per lung, air lumen inside a soft-tissue wall.

Airway walls seen end-on are rings and, cut obliquely, bright crescents next to dark lumen: the
second source of false positives after vessels.
"""

from __future__ import annotations

import numpy as np

from medcad.data.synthetic.anatomy import AIR_HU
from medcad.data.synthetic.canvas import Canvas
from medcad.data.synthetic.patient import Patient
from medcad.data.synthetic.trees import TreeSegments, grow_tree
from medcad.data.synthetic.vessels import sample_lung_points

WALL_HU = 20.0


def wall_radius_mm(lumen_radius_mm: np.ndarray) -> np.ndarray:
    """Outer radius of the wall around a lumen (thicker walls on larger airways)."""
    return 1.2 * lumen_radius_mm + 0.5


def trachea_line(patient: Patient) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom (carina) of the trachea in world mm."""
    spine_y, _, spine_hd = patient.spine_at(np.float32(patient.carina_z_mm))
    y = float(spine_y - spine_hd - 22.0)
    top = patient.vertebrae[0].z_top_mm + 20.0
    return np.array([patient.center_x_mm, y, top]), np.array([patient.center_x_mm, y, patient.carina_z_mm])


def grow_airways(patient: Patient, rng: np.random.Generator, points_per_lung: int,
                 min_radius_mm: float) -> TreeSegments:
    """Trachea plus one bronchial tree per lung (lumen radii)."""
    top, carina = trachea_line(patient)
    radius = 8.0 * patient.half_width_mm / 160.0
    parts = [TreeSegments(top[None], carina[None], np.array([radius]), np.array([radius * 0.95]))]
    for side, main_radius in ((-1.0, 0.72 * radius), (1.0, 0.62 * radius)):
        territory = sample_lung_points(patient, rng, side, points_per_lung, margin_mm=3.0)
        parts.append(grow_tree(rng, carina, territory, main_radius, min_radius_mm, leaf_points=1,
                               reach=(0.35, 0.55), wiggle=0.05))
    return TreeSegments.concatenate(parts)


def paint_airways(canvas: Canvas, airways: TreeSegments) -> None:
    """Paints the walls (brightening) and then the air lumen (darkening)."""
    canvas.paint_capsules(airways.start_xyz, airways.end_xyz, wall_radius_mm(airways.start_radius_mm),
                          wall_radius_mm(airways.end_radius_mm), WALL_HU, "max")
    canvas.paint_capsules(airways.start_xyz, airways.end_xyz, airways.start_radius_mm, airways.end_radius_mm,
                          AIR_HU, "min")
