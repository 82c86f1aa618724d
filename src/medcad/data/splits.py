"""Train / validation / test splits by series (never by nodule), the same on every machine.

The book's leakage lesson (section 14.2): the segmenter, the nodule classifier and the malignancy
classifier must all hold out the same scans, or the end-to-end numbers are measured on scans a
model has seen. So a split is made once, written to a JSON file, and every model reads that file.

A series' split depends only on a hash of its UID (or of its group, e.g. the patient, so that all
scans of a patient stay together) and a salt: not on the order of the input, on random-number
state, or on which other series exist, so adding scans never moves one already placed. The
fractions are therefore met on average, not exactly (with 888 LUNA16 scans, 10 % is 89 +- 9).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from medcad.errors import InputError, MedcadError
from medcad.io.atomic import write_text_atomic

FORMAT_NAME = "medcad-splits"
FORMAT_VERSION = 1
DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
DEFAULT_SALT = "medcad-splits-v1"


@dataclass(frozen=True)
class Leak:
    """A series found in more than one split."""

    series_uid: str
    splits: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class SeriesSplits:
    """Series UIDs per split (each sorted), with how they were made."""

    splits: Mapping[str, tuple[str, ...]]
    fractions: Mapping[str, float]
    salt: str

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if name not in self.splits:
            raise MedcadError(f"no split named {name!r} (there are {', '.join(self.splits)})")
        return self.splits[name]

    def split_of(self, series_uid: str) -> str | None:
        """The split holding a series (None when in none)."""
        return next((name for name, uids in self.splits.items() if series_uid in uids), None)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "salt": self.salt,
            "fractions": dict(self.fractions), "splits": {k: list(v) for k, v in self.splits.items()},
        }, indent=1)


def hash_unit(key: str, salt: str = DEFAULT_SALT) -> float:
    """A number in [0, 1) fixed by ``key`` and ``salt`` alone (SHA-256), the same on any machine."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def make_splits(series_uids: Iterable[str], fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
                salt: str = DEFAULT_SALT, group_of: Mapping[str, str] | None = None,
                exact: bool = False) -> SeriesSplits:
    """Assigns each series to a split by the hash of its UID (or of ``group_of[uid]``, e.g. its patient).

    By default a hash value falls into the split whose share of [0, 1) holds it: fractions are met
    on average and adding series never moves one. ``exact=True`` ranks the groups by hash and cuts
    the ranking into counts that match the fractions (largest remainders; every split with a
    non-zero fraction gets at least one group when there are enough): for small cohorts, where
    the plain rule can leave a split empty. Both depend on the UIDs and salt only.
    """
    names = list(fractions)
    if not names or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise MedcadError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    uids = sorted(set(series_uids))
    group = {uid: group_of.get(uid, uid) if group_of else uid for uid in uids}
    units = {key: hash_unit(key, salt) for key in set(group.values())}
    if exact:
        ranked = sorted(units, key=lambda key: (units[key], key))
        split_of_group = dict(zip(ranked, _ranked_names(names, fractions, len(ranked))))
    else:
        bounds = [sum(fractions[n] for n in names[:i + 1]) for i in range(len(names))]
        split_of_group = {key: next((n for n, bound in zip(names, bounds) if u < bound), names[-1])
                          for key, u in units.items()}
    assigned: dict[str, list[str]] = {name: [] for name in names}
    for uid in uids:
        assigned[split_of_group[group[uid]]].append(uid)
    return SeriesSplits({n: tuple(v) for n, v in assigned.items()}, dict(fractions), salt)


def _ranked_names(names: list[str], fractions: Mapping[str, float], count: int) -> list[str]:
    """Split names for ``count`` ranked groups: counts by largest remainder, at least one per used split."""
    wanted = {n: fractions[n] * count for n in names}
    counts = {n: int(wanted[n]) for n in names}
    for n in sorted(names, key=lambda n: wanted[n] - counts[n], reverse=True)[:count - sum(counts.values())]:
        counts[n] += 1
    for n in names:
        donor = max(names, key=lambda d: counts[d])
        if fractions[n] > 0 and counts[n] == 0 and counts[donor] > 1:
            counts[n], counts[donor] = 1, counts[donor] - 1
    return [n for n in names for _ in range(counts[n])]


def find_leaks(splits: Mapping[str, Iterable[str]]) -> tuple[Leak, ...]:
    """Every series that stands in more than one split (sorted by UID)."""
    where: dict[str, list[str]] = {}
    for name, uids in splits.items():
        for uid in dict.fromkeys(uids):
            where.setdefault(uid, []).append(name)
    return tuple(Leak(uid, tuple(names)) for uid, names in sorted(where.items()) if len(names) > 1)


def write_splits(splits: SeriesSplits, path: str | Path) -> Path:
    """Writes the splits file atomically."""
    target = Path(path)
    write_text_atomic(target, splits.to_json() + "\n")
    return target


def read_splits(path: str | Path) -> SeriesSplits:
    """Reads a splits file; a series in two splits is an error naming it."""
    source = Path(path)
    if not source.is_file():
        raise InputError(source, "splits file not found")
    try:
        document = json.loads(source.read_text())
        if document.get("format") != FORMAT_NAME:
            raise InputError(source, f"not a medcad splits file (no \"format\": \"{FORMAT_NAME}\")")
        splits = {str(name): tuple(str(uid) for uid in uids) for name, uids in document["splits"].items()}
        fractions = {str(k): float(v) for k, v in document.get("fractions", {}).items()}
        salt = str(document.get("salt", DEFAULT_SALT))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(source, f"malformed splits file ({error})") from error
    leaks = find_leaks(splits)
    if leaks:
        first = leaks[0]
        raise InputError(source, f"{len(leaks)} series in more than one split, e.g. {first.series_uid} "
                                 f"in {' and '.join(first.splits)}")
    return SeriesSplits(splits, fractions, salt)


def read_series_list(path: str | Path, split: str | None = None) -> list[str]:
    """Series UIDs from a text file (one a line, ``#`` comments) or from one split of a splits file."""
    source = Path(path)
    if source.suffix.lower() == ".json":
        if split is None:
            raise InputError(source, "a splits file needs the name of a split (e.g. --split val)")
        return list(read_splits(source)[split])
    if split is not None:
        raise InputError(source, "--split goes with a .json splits file, not a list of series")
    if not source.is_file():
        raise InputError(source, "series list not found")
    lines = (line.split("#", 1)[0].strip() for line in source.read_text().splitlines())
    return list(dict.fromkeys(line for line in lines if line))
