"""Real LUNA16 / LIDC nodule statistics, shipped as a small resource, and sampling from them.

``resources/luna_nodule_statistics.json`` (built once by ``tools/build_luna_statistics.py`` from
the real tables, which never ship) holds the diameter histogram of the 1186 LUNA16 nodules, a
logistic fit of LIDC malignancy on log(diameter), and how many readers rated each nodule and how.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from medcad.io.luna import consensus_malignant

RESOURCE_NAME = "luna_nodule_statistics.json"


@dataclass(frozen=True)
class NoduleStatistics:
    """What the phantom draws nodule sizes and malignancy from.

    Attributes:
        diameter_edges_mm: histogram bin edges of the real diameters.
        diameter_counts: real nodules per bin.
        malignancy_intercept, malignancy_slope: P(malignant) = sigmoid(intercept + slope * ln d).
        reader_counts: how many nodules had 3, 4, ... readers (keys are reader counts).
        ratings_malignant, ratings_benign: counts of reader ratings 1..5 for each class.
    """

    diameter_edges_mm: np.ndarray
    diameter_counts: np.ndarray
    malignancy_intercept: float
    malignancy_slope: float
    reader_counts: dict[int, int]
    ratings_malignant: np.ndarray
    ratings_benign: np.ndarray

    def sample_diameters_mm(self, rng: np.random.Generator, count: int, min_mm: float | None = None) -> np.ndarray:
        """Diameters drawn from the real histogram (uniform within a bin); with ``min_mm``, from
        its part above ``min_mm`` (the histogram truncated there, the bin it cuts weighted by the
        share of it that is left)."""
        low_edges, high_edges = self.diameter_edges_mm[:-1], self.diameter_edges_mm[1:]
        weights = self.diameter_counts.astype(float)
        if min_mm is not None:
            low_edges = np.maximum(low_edges, min_mm)
            weights = weights * np.clip((high_edges - low_edges) / (high_edges - self.diameter_edges_mm[:-1]), 0.0, 1.0)
            if weights.sum() <= 0:
                raise ValueError(f"no real nodule diameter above {min_mm} mm")
        bins = rng.choice(len(weights), size=count, p=weights / weights.sum())
        low, high = low_edges[bins], high_edges[bins]
        return low + (high - low) * rng.random(count)

    def malignancy_probability(self, diameter_mm: np.ndarray | float) -> np.ndarray:
        """P(malignant | diameter) from the real logistic fit."""
        logit = self.malignancy_intercept + self.malignancy_slope * np.log(np.asarray(diameter_mm, dtype=float))
        return 1.0 / (1.0 + np.exp(-logit))

    def sample_ratings(self, rng: np.random.Generator, is_malignant: bool) -> tuple[int, ...]:
        """Per-reader malignancy ratings (1-5) whose consensus label equals ``is_malignant``."""
        sizes = np.array(sorted(self.reader_counts))
        size_p = np.array([self.reader_counts[s] for s in sizes], dtype=float)
        readers = int(rng.choice(sizes, p=size_p / size_p.sum()))
        counts = self.ratings_malignant if is_malignant else self.ratings_benign
        while True:  # rejection: a few tries at most, since the class-conditional ratings agree
            ratings = tuple(int(r) for r in rng.choice(np.arange(1, 6), size=readers, p=counts / counts.sum()))
            if consensus_malignant(ratings) == is_malignant:
                return ratings


@lru_cache(maxsize=1)
def load_statistics() -> NoduleStatistics:
    """Reads the packaged statistics resource (cached)."""
    text = resources.files("medcad").joinpath("resources", RESOURCE_NAME).read_text()
    raw = json.loads(text)
    histogram, logistic, ratings = raw["diameter_histogram"], raw["malignancy_logistic"], raw["reader_ratings"]
    return NoduleStatistics(
        diameter_edges_mm=np.asarray(histogram["edges_mm"], dtype=float),
        diameter_counts=np.asarray(histogram["counts"], dtype=float),
        malignancy_intercept=float(logistic["intercept"]),
        malignancy_slope=float(logistic["slope"]),
        reader_counts={int(k): int(v) for k, v in raw["reader_counts"].items()},
        ratings_malignant=np.asarray(ratings["malignant"], dtype=float),
        ratings_benign=np.asarray(ratings["benign"], dtype=float),
    )
