"""A small phantom cohort shared by the nodule-CAD training tests (written once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    from medcad.data.cache import ScanCache
    from medcad.data.synthetic import PhantomOptions, write_cohort

    folder = tmp_path_factory.mktemp("cad_cohort")
    write_cohort(folder, 12, 11, PhantomOptions(size="small", negatives=40))
    ScanCache.for_data(folder).build()
    return folder
