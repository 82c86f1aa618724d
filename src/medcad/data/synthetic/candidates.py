"""Candidate locations like LUNA16's ``candidates.csv``: class 1 at nodules, class 0 elsewhere.

Real candidates come from detectors that fire on anything nodule-like, so most negatives here sit
on vessels (the centre of a vessel 1-4 mm in radius), airway walls, the pleura and bone; a few lie
in plain parenchyma. None lies within a nodule's radius + 5 mm of its centre.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from medcad.data.synthetic.airways import wall_radius_mm
from medcad.data.synthetic.anatomy import lung_field
from medcad.data.synthetic.nodules import PlacedNodule
from medcad.data.synthetic.patient import Patient
from medcad.data.synthetic.trees import TreeSegments, sample_inside
from medcad.data.synthetic.vessels import lung_box

#: Share of negatives by source.
NEGATIVE_SOURCES = {"vessel": 0.5, "airway_wall": 0.14, "pleura": 0.16, "bone": 0.12, "parenchyma": 0.08}


def negative_candidates(rng: np.random.Generator, patient: Patient, count: int, vessels: TreeSegments,
                        airways: TreeSegments, bone_xyz: np.ndarray, nodules: list[PlacedNodule]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """World points (n, 3), n <= count, of non-nodule candidates in a shuffled order, and the
    source of each (a key of NEGATIVE_SOURCES)."""
    names = list(NEGATIVE_SOURCES)
    shares = np.array([NEGATIVE_SOURCES[n] for n in names])
    per_source = dict(zip(names, rng.multinomial(count, shares / shares.sum())))
    field = partial(lung_field, patient)
    parts = [vessels.sample_points(rng, per_source["vessel"], 1.0, 4.0)[0]]
    sources = [np.full(len(parts[0]), "vessel")]
    points, radii, axes = airways.sample_points(rng, per_source["airway_wall"], 0.8, 5.0)
    across = np.cross(axes, rng.normal(size=axes.shape))
    across /= np.linalg.norm(across, axis=1, keepdims=True) + 1e-9
    parts.append(points + across * wall_radius_mm(radii)[:, None] * 0.92)
    sources.append(np.full(len(points), "airway_wall"))
    for kind, margin in (("pleura", 0.0), ("parenchyma", 4.0)):
        side = np.where(rng.random(per_source[kind]) < 0.5, -1.0, 1.0)
        for s in (-1.0, 1.0):
            wanted = int((side == s).sum())
            if not wanted:
                continue
            low, high = lung_box(patient, s)
            inside = sample_inside(rng, field, low, high, 12 * wanted if kind == "pleura" else wanted, margin)
            if kind == "pleura":  # keep the points closest to the surface
                inside = inside[np.argsort(-field(inside[:, 2], inside[:, 1], inside[:, 0]), kind="stable")[:wanted]]
            parts.append(inside)
            sources.append(np.full(len(inside), kind))
    if len(bone_xyz) and per_source["bone"]:
        on_bone = bone_xyz[rng.choice(len(bone_xyz), per_source["bone"])]
        parts.append(on_bone + rng.normal(scale=1.0, size=on_bone.shape))
        sources.append(np.full(per_source["bone"], "bone"))
    points = np.concatenate([p.reshape(-1, 3) for p in parts])
    labels = np.concatenate(sources)
    keep = np.ones(len(points), dtype=bool)
    for nodule in nodules:
        clearance = nodule.traits.diameter_mm / 2 + 5.0
        keep &= np.linalg.norm(points - np.asarray(nodule.center_xyz), axis=1) > clearance
    order = rng.permutation(int(keep.sum()))
    return points[keep][order], labels[keep][order]
