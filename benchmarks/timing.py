"""Timing helper shared by the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_times(function: Callable[[], object], repeats: int, warmup: int = 0) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of ``function()`` after ``warmup`` runs.

    CPU seconds count every thread of the process; on a shared machine the wall time also holds
    the time spent waiting for other processes.
    """
    for _ in range(warmup):
        function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)
