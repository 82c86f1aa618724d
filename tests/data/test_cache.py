"""The scan cache: one conversion per scan, memory-mapped reads, stale / corrupt entries rebuilt, safe under concurrency."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest

from medcad.data.cache import ScanCache, crop_inside, find_scans
from medcad.io import Scan, read_scan, write_scan

UID = "1.2.3.4"


def _write(folder, value: int = 0):
    hu = (np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8) + value).astype(np.int16)
    scan = Scan.from_array(hu, origin_xyz=(-10.0, 5.0, 30.0), spacing_xyz=(0.7, 0.8, 2.5),
                           direction=np.diag([-1.0, -1.0, 1.0]))
    return write_scan(scan, folder / "subset0" / f"{UID}.mhd")


def test_entry_matches_the_scan_and_is_memory_mapped(tmp_path):
    path = _write(tmp_path)
    cache = ScanCache.for_data(tmp_path)
    assert find_scans(tmp_path) == {UID: path}
    entry = cache.open(UID)
    original = read_scan(path)
    assert isinstance(entry.hu, np.memmap)
    np.testing.assert_array_equal(entry.hu, original.hu)
    np.testing.assert_allclose(entry.geometry.direction, original.geometry.direction)
    np.testing.assert_allclose(entry.geometry.irc_to_xyz([1, 2, 3]), original.geometry.irc_to_xyz([1, 2, 3]))
    assert ScanCache.for_data(tmp_path).build() == {UID: "ok"}  # nothing rebuilt the second time


def test_changed_source_is_stale_and_rebuilt(tmp_path):
    _write(tmp_path)
    ScanCache.for_data(tmp_path).build()
    time.sleep(0.01)
    path = _write(tmp_path, value=100)
    os.utime(path.with_suffix(".raw"), ns=(time.time_ns(), time.time_ns()))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    cache = ScanCache.for_data(tmp_path)
    assert cache.status(UID) == "stale"
    assert int(cache.open(UID).hu[0, 0, 0]) == 100


@pytest.mark.parametrize("damage", ["truncate", "json", "flip_bytes"])
def test_corrupt_entry_is_detected_and_rebuilt(tmp_path, damage):
    _write(tmp_path)
    cache = ScanCache.for_data(tmp_path)
    cache.build()
    array_path, meta_path = cache.root / f"{UID}.npy", cache.root / f"{UID}.json"
    if damage == "truncate":
        array_path.write_bytes(array_path.read_bytes()[:-50])
        assert cache.status(UID) == "corrupt"
    elif damage == "json":
        meta_path.write_text("{not json")
        assert cache.status(UID) == "corrupt"
    else:  # same length, other bytes: only the deep check sees it
        data = bytearray(array_path.read_bytes())
        data[-1] ^= 0xFF
        array_path.write_bytes(bytes(data))
        assert cache.status(UID) == "ok"
        assert cache.status(UID, deep=True) == "corrupt"
    fresh = ScanCache.for_data(tmp_path)
    assert fresh.build(deep=True)[UID] == "corrupt"
    assert fresh.status(UID, deep=True) == "ok"
    np.testing.assert_array_equal(fresh.open(UID).hu, read_scan(tmp_path / "subset0" / f"{UID}.mhd").hu)


def _open_in_process(folder, queue):
    entry = ScanCache.for_data(folder).open(UID)
    queue.put(int(np.asarray(entry.hu, dtype=np.int64).sum()))


def test_concurrent_openers_build_once_and_agree(tmp_path):
    path = _write(tmp_path)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_open_in_process, args=(tmp_path, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    sums = [queue.get(timeout=5) for _ in workers]
    assert sums == [int(read_scan(path).hu.astype(np.int64).sum())] * 4
    leftovers = [p.name for p in (tmp_path / ".medcad-cache").iterdir() if p.suffix not in (".npy", ".json", ".lock")]
    assert leftovers == []


def test_crop_shifts_inside_the_volume_and_pads_short_axes():
    volume = np.arange(10 * 12 * 14).reshape(10, 12, 14)
    crop, start = crop_inside(volume, (0.2, 11.0, 7.0), (4, 6, 6))
    assert start == (0, 6, 4)
    np.testing.assert_array_equal(crop, volume[0:4, 6:12, 4:10])
    padded, _ = crop_inside(volume, (5, 6, 7), (16, 4, 4))
    assert padded.shape == (16, 4, 4) and (padded[10:] == -1000).all()
