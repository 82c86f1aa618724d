"""Pulmonary vessel trees: an artery and a vein tree per lung, tapering from hilum to periphery.

On one axial slice a vessel running across the slice is a small bright disc, the same size and
HU as a small solid nodule: the main source of false positives a nodule detector must learn to
reject (3D context tells them apart: a vessel continues on the next slices, a nodule ends).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from medcad.data.synthetic.anatomy import BLOOD_HU, lung_field
from medcad.data.synthetic.canvas import Canvas
from medcad.data.synthetic.patient import Patient
from medcad.data.synthetic.trees import TreeSegments, grow_tree, sample_inside


def lung_box(patient: Patient, side: float) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (low, high) of one lung (side -1 right, +1 left)."""
    cavity_w, cavity_d = patient.cavity_half_axes_mm
    cx, cy = patient.center_x_mm, patient.center_y_mm
    x_range = sorted((cx, cx + side * cavity_w))
    low = np.array([x_range[0], cy - cavity_d, patient.recess_z_mm - 2.0])
    high = np.array([x_range[1], cy + cavity_d, patient.lung_apex_z_mm + 2.0])
    return low, high


def sample_lung_points(patient: Patient, rng: np.random.Generator, side: float, count: int,
                       margin_mm: float = 1.0) -> np.ndarray:
    """Uniform random points inside one lung, at least ``margin_mm`` from its surface."""
    low, high = lung_box(patient, side)
    return sample_inside(rng, partial(lung_field, patient), low, high, count, margin_mm)


def grow_vessels(patient: Patient, rng: np.random.Generator, points_per_tree: int,
                 min_radius_mm: float) -> TreeSegments:
    """An artery and a vein tree for each lung."""
    trees = []
    for side in (-1.0, 1.0):
        for root_dz, root_dy, radius in ((12.0, -12.0, 8.5), (-22.0, 8.0, 7.5)):  # artery, vein
            root = (patient.center_x_mm + side * (patient.mediastinum_half_width_mm - 6.0),
                    patient.center_y_mm + root_dy, patient.hilum_z_mm + root_dz)
            territory = sample_lung_points(patient, rng, side, points_per_tree, margin_mm=1.5)
            trees.append(grow_tree(rng, root, territory, radius, min_radius_mm))
    return TreeSegments.concatenate(trees)


def paint_vessels(canvas: Canvas, vessels: TreeSegments, rng: np.random.Generator) -> None:
    """Paints the vessels as blood-density tubes (brightening only)."""
    hu = BLOOD_HU + rng.uniform(-10.0, 10.0)
    canvas.paint_capsules(vessels.start_xyz, vessels.end_xyz, vessels.start_radius_mm, vessels.end_radius_mm, hu, "max")
