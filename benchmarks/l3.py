"""L3 localisation speed: a training step per crop (1 vs 2 torch threads) and the stages of ``locate``.

    .venv/bin/python benchmarks/l3.py [--scan CT] [--repeats 3]

Prints two tables. Training: seconds per crop of a forward + backward + Adam step of the default
L3 U-Net (depth 5, width 8) on a batch of 8 crops of 128 x 96, with 1 and with 2 torch threads,
wall and CPU time (on a busy 2-core machine two threads wait for each other and run several times
slower than one). Locate: seconds to read the scan, make both MIPs (whole height, 2 mm) and run
one untrained network per view. The scan defaults to the shared abdominal CT, else a phantom.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from medcad.models import create
from medcad.tasks.l3 import L3Config

SHARED_CT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg" / "example_ct.nii.gz"


def _timed(function, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of ``function()``."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def bench_training(repeats: int) -> None:
    config = L3Config()
    batch = torch.rand(8, 1, *config.crop)
    target = (torch.rand(8, 1, *config.crop) > 0.95).float()
    print(f"{'training step':<22} {'threads':>7} {'wall s/crop':>12} {'cpu s/crop':>11}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model = create("nodule_unet2d", **config.model.kwargs())
        optimizer = torch.optim.Adam(model.parameters())

        def step():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(batch), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step()  # warm-up
        wall, cpu = _timed(step, repeats)
        print(f"{'depth 5, width 8':<22} {threads:>7} {wall / 8:>12.3f} {cpu / 8:>11.3f}")


def bench_locate(scan_path: Path | None, repeats: int) -> None:
    from dataclasses import replace

    from medcad.io import read_scan
    from medcad.tasks.l3_locate import predict_maps
    from medcad.transforms.mip import project_views

    torch.set_num_threads(1)
    if scan_path is None:
        from medcad.data.synthetic import PhantomOptions, generate_phantom

        scan, name = generate_phantom(0, 0, PhantomOptions(size="medium", abdomen=True)).scan, "phantom (medium)"
        read_seconds = (float("nan"), float("nan"))
    else:
        read_seconds = _timed(lambda: read_scan(scan_path), repeats)
        scan, name = read_scan(scan_path), scan_path.name
    config = replace(L3Config().mip, size=None)
    mips = project_views(scan, config)
    network = create("nodule_unet2d", **L3Config().model.kwargs()).eval()
    print(f"\nlocate on {name} {scan.shape_irc}, MIPs {mips['frontal'].image.shape} at {config.pixel_mm:g} mm")
    print(f"{'stage':<22} {'wall s':>8} {'cpu s':>8}")
    rows = {"read scan": read_seconds,
            "MIPs (both views)": _timed(lambda: project_views(scan, config), repeats),
            "U-Net, both views": _timed(lambda: [predict_maps([network], m.image[None]) for m in mips.values()], repeats)}
    for stage, (wall, cpu) in rows.items():
        print(f"{stage:<22} {wall:>8.3f} {cpu:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, default=SHARED_CT if SHARED_CT.exists() else None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench_training(args.repeats)
    bench_locate(args.scan, args.repeats)


if __name__ == "__main__":
    main()
