"""Phantom generation speed: seconds per scan for each scan size (and for writing it).

    .venv/bin/python benchmarks/synth.py [--repeats 3] [--sizes small,medium,full,full300]

``full300`` is a 512 x 512 x 300 chest (the issue's reference size); ``full`` draws its slice
count from coverage / thickness like a real scan. Prints a table: shape, generation seconds
(wall, median of the repeats, each a different scan), CPU seconds of this process (all threads:
on a busy machine wall time overstates the work), writing seconds (.mhd/.raw), voxels per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from medcad.data.synthetic import PhantomOptions, generate_phantom
from medcad.io import write_scan

CASES = {
    "small": PhantomOptions(size="small"),
    "medium": PhantomOptions(size="medium"),
    "full": PhantomOptions(size="full"),
    "full300": PhantomOptions(size="full", slices=300),
    "full300-abdomen": PhantomOptions(size="full", slices=300, abdomen=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="small,medium,full300")
    args = parser.parse_args()
    generate_phantom(0, 0, CASES["small"])  # imports and caches outside the timings
    print(f"{'case':<16} {'shape (z,y,x)':<16} {'generate s':>10} {'cpu s':>6} {'write s':>8} {'Mvoxel/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            generate_s, cpu_s, write_s, shapes = [], [], [], []
            for repeat in range(args.repeats):
                start, cpu = time.perf_counter(), time.process_time()
                phantom = generate_phantom(1000 + repeat, repeat, CASES[name])
                generate_s.append(time.perf_counter() - start)
                cpu_s.append(time.process_time() - cpu)
                start = time.perf_counter()
                write_scan(phantom.scan, Path(tmp) / f"{name}{repeat}.mhd")
                write_s.append(time.perf_counter() - start)
                shapes.append(phantom.scan.shape_irc)
            voxels = float(np.mean([np.prod(s) for s in shapes]))
            seconds = statistics.median(generate_s)
            shape = "x".join(map(str, shapes[0])) + ("" if len(set(shapes)) == 1 else " ~")
            print(f"{name:<16} {shape:<16} {seconds:>10.2f} {statistics.median(cpu_s):>6.2f} "
                  f"{statistics.median(write_s):>8.2f} {voxels / seconds / 1e6:>9.1f}")


if __name__ == "__main__":
    main()
