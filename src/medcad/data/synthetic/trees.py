"""Branching trees (vessels, airways) that fill a region, with radii tapering by Murray's law.

Growth by territory splitting: a branch owns a cloud of points of the organ; it grows part of the
way towards their centroid, then the cloud is cut in two across its longest axis and each half
feeds a child whose radius follows Murray's law (r^3 proportional to the territory it supplies).
The result fills the lung like real pulmonary trees and needs no collision checks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class TreeSegments:
    """Straight tube pieces of a tree (arrays with one row per segment).

    Attributes:
        start_xyz, end_xyz: (N, 3) world mm.
        start_radius_mm, end_radius_mm: (N,) radii at the ends.
    """

    start_xyz: np.ndarray
    end_xyz: np.ndarray
    start_radius_mm: np.ndarray
    end_radius_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.start_xyz)

    @classmethod
    def concatenate(cls, parts: list["TreeSegments"]) -> "TreeSegments":
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("start_xyz", "end_xyz", "start_radius_mm", "end_radius_mm")))

    def sample_points(self, rng: np.random.Generator, count: int, min_radius_mm: float = 0.0,
                      max_radius_mm: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Random points on segment axes whose radius lies in a range.

        Returns (points (n, 3), radii (n,), unit axis directions (n, 3)); n <= count.
        """
        mid_radius = 0.5 * (self.start_radius_mm + self.end_radius_mm)
        chosen = np.flatnonzero((mid_radius >= min_radius_mm) & (mid_radius <= max_radius_mm))
        if len(chosen) == 0 or count == 0:
            return np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3))
        lengths = np.linalg.norm(self.end_xyz[chosen] - self.start_xyz[chosen], axis=1) + 1e-6
        picks = chosen[rng.choice(len(chosen), size=count, p=lengths / lengths.sum())]
        t = rng.random(count)[:, None]
        axis = self.end_xyz[picks] - self.start_xyz[picks]
        points = self.start_xyz[picks] + t * axis
        radii = self.start_radius_mm[picks] + t[:, 0] * (self.end_radius_mm[picks] - self.start_radius_mm[picks])
        return points, radii, axis / (np.linalg.norm(axis, axis=1, keepdims=True) + 1e-9)


def grow_tree(rng: np.random.Generator, root_xyz, territory_xyz: np.ndarray, root_radius_mm: float,
              min_radius_mm: float, leaf_points: int = 2, reach: tuple[float, float] = (0.4, 0.65),
              wiggle: float = 0.12) -> TreeSegments:
    """Grows one tree from ``root_xyz`` into the points ``territory_xyz`` (N, 3).

    Args:
        root_radius_mm: radius where the tree enters (e.g. a main pulmonary artery).
        min_radius_mm: branches thinner than this end (e.g. half a voxel: invisible anyway).
        leaf_points: a territory this small ends the branch at one of its points.
        reach: fraction of the way to the territory's centroid a branch grows.
        wiggle: sideways jitter of branch ends, relative to their length (curved vessels).
    """
    territory = np.asarray(territory_xyz, dtype=float)
    starts, ends, r_start, r_end = [], [], [], []
    queue = deque([(np.asarray(root_xyz, dtype=float), np.arange(len(territory)), float(root_radius_mm))])
    while queue:
        point, members, radius = queue.popleft()
        cloud = territory[members]
        centroid = cloud.mean(axis=0)
        if len(members) <= leaf_points or radius < min_radius_mm:
            target = cloud[rng.integers(len(cloud))]
            starts.append(point), ends.append(target), r_start.append(radius), r_end.append(0.7 * radius)
            continue
        offset = centroid - point
        length = float(np.linalg.norm(offset))
        end = point + offset * rng.uniform(*reach) + rng.normal(scale=wiggle * length / np.sqrt(3), size=3)
        tapered = 0.96 * radius
        starts.append(point), ends.append(end), r_start.append(radius), r_end.append(tapered)
        halves = _split(rng, cloud, centroid)
        if halves is None:
            continue
        for half in halves:
            share = len(half) / len(members)
            queue.append((end, members[half], tapered * share ** (1 / 3)))
    return TreeSegments(np.asarray(starts).reshape(-1, 3), np.asarray(ends).reshape(-1, 3),
                        np.asarray(r_start), np.asarray(r_end))


def _split(rng: np.random.Generator, cloud: np.ndarray, centroid: np.ndarray):
    """Indices of the two halves of a point cloud cut across its longest axis (None if degenerate)."""
    centred = cloud - centroid
    scatter = centred.T @ centred
    axis = scatter[int(np.argmax(np.diag(scatter)))]
    for _ in range(4):  # power iteration: the principal axis of the cloud
        axis = scatter @ axis
        axis = axis / (np.abs(axis).max() + 1e-12)
    projection = centred @ axis
    if np.ptp(projection) < 1e-9:
        return None
    split = min(max(int(round(rng.uniform(0.3, 0.7) * len(cloud))), 1), len(cloud) - 1)
    order = np.argpartition(projection, split)
    return order[:split], order[split:]


def sample_inside(rng: np.random.Generator, field, low_xyz, high_xyz, count: int, margin_mm: float = 0.0,
                  batch: int = 4096, strict: bool = True, max_batches: int = 200) -> np.ndarray:
    """``count`` uniform random points of the box where ``field(z, y, x) < -margin_mm``.

    With ``strict=False`` it returns what it found (maybe fewer) instead of raising.
    """
    low, high = np.asarray(low_xyz, float), np.asarray(high_xyz, float)
    found, total = [], 0
    for _ in range(max_batches):
        points = low + (high - low) * rng.random((batch, 3))
        keep = points[field(points[:, 2], points[:, 1], points[:, 0]) < -margin_mm]
        found.append(keep)
        total += len(keep)
        if total >= count:
            break
    points = np.concatenate(found)[:count]
    if len(points) < count and strict:
        raise ValueError(f"found only {len(points)} of {count} points inside the shape")
    return points
