"""Shared fixtures: paths to the real data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDCAD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
LIDC_0001_SERIES_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a skip when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


@pytest.fixture(scope="session")
def lidc_dir() -> Path:
    """The LIDC-IDRI-0001 DICOM folder (with 069.xml inside its series folder)."""
    return shared_path("lidc", "LIDC-IDRI-0001")


@pytest.fixture(scope="session")
def lidc_scan(lidc_dir):
    """The real LIDC-IDRI-0001 CT, read once per test session (do not modify it)."""
    from medcad.io import read_scan

    return read_scan(lidc_dir)


@pytest.fixture(scope="session")
def luna_dir() -> Path:
    return shared_path("luna")


@pytest.fixture(scope="session")
def dlwpt_dir() -> Path:
    return shared_path("dlwpt")


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """A small phantom cohort (20 scans, LUNA16 layout, cache built) for the nodule-CAD training tests.

    128 slices of ~2.8 mm and nodules of 6 mm or more, as the demo's cohort (on the plain small
    size's ~5.5 mm slices a small nodule is one voxel and nothing learns it in a test's budget).
    """
    from medcad.data.cache import ScanCache
    from medcad.data.synthetic import PhantomOptions, write_cohort

    folder = tmp_path_factory.mktemp("cad_cohort")
    write_cohort(folder, 20, 11, PhantomOptions(size="small", negatives=40, slices=128, min_nodule_mm=6.0))
    ScanCache.for_data(folder).build()
    return folder
