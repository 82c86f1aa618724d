"""LUNA16 tables as typed records: annotations, candidates, annotations with malignancy.

Coordinates in these tables are world mm in the LPS frame of the scans (``center_xyz``).

- ``annotations.csv``: ``seriesuid,coordX,coordY,coordZ,diameter_mm`` (1186 reference nodules).
- ``annotations_excluded.csv`` (same columns; diameter -1 when unknown): findings that neither
  count as hits nor as false positives.
- ``candidates.csv`` / ``candidates_V2.csv``: ``seriesuid,coordX,coordY,coordZ,class``.
- ``annotations_with_malignancy.csv`` (the book's): adds ``mal_bool``, ``mal_details`` (a list of
  per-reader ratings 1-5), ``bboxLow{X,Y,Z}``, ``bboxHigh{X,Y,Z}``, ``len_mal_details``.

Each reader returns a :class:`LunaTable`: a tuple of records with ``for_series(uid)`` that groups
them by series on first use.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Generic, TypeVar

from medcad.errors import InputError

Record = TypeVar("Record")


@dataclass(frozen=True)
class LunaNodule:
    """A reference nodule (``annotations.csv``)."""

    series_uid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float


@dataclass(frozen=True)
class LunaCandidate:
    """A candidate location (``candidates.csv``); ``is_nodule`` is the ``class`` column."""

    series_uid: str
    center_xyz: tuple[float, float, float]
    is_nodule: bool


@dataclass(frozen=True)
class MalignancyNodule:
    """A reference nodule with LIDC malignancy (``annotations_with_malignancy.csv``).

    Attributes:
        is_malignant: ``mal_bool`` (malignant when >= 2 readers rated >= 4).
        malignancy_ratings: each reader's rating 1-5 (``mal_details``).
        bbox_low_xyz, bbox_high_xyz: the nodule's bounding box in world mm.
    """

    series_uid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float
    is_malignant: bool
    malignancy_ratings: tuple[int, ...]
    bbox_low_xyz: tuple[float, float, float]
    bbox_high_xyz: tuple[float, float, float]


class LunaTable(Sequence, Generic[Record]):
    """Records of one table, in file order, with per-series lookup."""

    def __init__(self, records: list[Record], source: str | None = None):
        self._records = tuple(records)
        self.source = source

    def __getitem__(self, index):
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    @cached_property
    def _by_series(self) -> dict[str, tuple[Record, ...]]:
        grouped: dict[str, list[Record]] = {}
        for record in self._records:
            grouped.setdefault(record.series_uid, []).append(record)
        return {uid: tuple(items) for uid, items in grouped.items()}

    def for_series(self, series_uid: str) -> tuple[Record, ...]:
        """The records of one series (empty when it has none)."""
        return self._by_series.get(series_uid, ())

    @property
    def series_uids(self) -> list[str]:
        """Series present in the table, in first-appearance order."""
        return list(self._by_series)


def _read_table(path: str | Path, required: Sequence[str]):
    """Reads a CSV with pandas and checks its columns; returns the DataFrame."""
    import pandas as pd

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "table not found")
    try:
        frame = pd.read_csv(source, dtype={"seriesuid": str})
    except Exception as error:
        raise InputError(source, f"cannot read the CSV ({error})") from error
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(source, f"CSV lacks the column(s) {', '.join(missing)} (has {', '.join(map(str, frame.columns))})")
    numeric = [c for c in required if c != "seriesuid" and c != "mal_details"]
    for column in numeric:
        if frame[column].isna().any():
            row = int(frame[column].isna().to_numpy().argmax()) + 2
            raise InputError(source, f"empty or non-numeric value in column {column} (line {row})")
    return frame


def _xyz(frame, prefix: str = "coord", suffix: str = "") -> list[tuple[float, float, float]]:
    columns = [f"{prefix}{axis}{suffix}" for axis in "XYZ"]
    return [tuple(map(float, row)) for row in frame[columns].to_numpy()]


def read_annotations(path: str | Path) -> LunaTable[LunaNodule]:
    """Reads ``annotations.csv`` (or ``annotations_excluded.csv``)."""
    frame = _read_table(path, ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"))
    records = [
        LunaNodule(uid, center, float(diameter))
        for uid, center, diameter in zip(frame["seriesuid"], _xyz(frame), frame["diameter_mm"])
    ]
    return LunaTable(records, str(path))


def read_candidates(path: str | Path) -> LunaTable[LunaCandidate]:
    """Reads ``candidates.csv`` / ``candidates_V2.csv``."""
    frame = _read_table(path, ("seriesuid", "coordX", "coordY", "coordZ", "class"))
    records = [
        LunaCandidate(uid, center, bool(int(label)))
        for uid, center, label in zip(frame["seriesuid"], _xyz(frame), frame["class"])
    ]
    return LunaTable(records, str(path))


def _parse_ratings(source: str | Path, text) -> tuple[int, ...]:
    try:
        ratings = ast.literal_eval(str(text))
        return tuple(int(r) for r in ratings)
    except (ValueError, SyntaxError, TypeError) as error:
        raise InputError(source, f"mal_details is not a list of ratings: {text!r}") from error


def read_malignancy(path: str | Path) -> LunaTable[MalignancyNodule]:
    """Reads the book's ``annotations_with_malignancy.csv``."""
    columns = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "mal_bool", "mal_details",
               "bboxLowX", "bboxLowY", "bboxLowZ", "bboxHighX", "bboxHighY", "bboxHighZ")
    frame = _read_table(path, columns)
    records = [
        MalignancyNodule(
            series_uid=uid, center_xyz=center, diameter_mm=float(diameter),
            is_malignant=str(mal).strip().lower() in ("true", "1", "1.0"),
            malignancy_ratings=_parse_ratings(path, details),
            bbox_low_xyz=low, bbox_high_xyz=high,
        )
        for uid, center, diameter, mal, details, low, high in zip(
            frame["seriesuid"], _xyz(frame), frame["diameter_mm"], frame["mal_bool"], frame["mal_details"],
            _xyz(frame, "bboxLow"), _xyz(frame, "bboxHigh"),
        )
    ]
    return LunaTable(records, str(path))


def consensus_malignant(ratings: Sequence[int], min_readers: int = 2, min_rating: int = 4) -> bool:
    """The book's malignancy label: malignant when at least ``min_readers`` rate >= ``min_rating``."""
    return sum(1 for r in ratings if r >= min_rating) >= min_readers
