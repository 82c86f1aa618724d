"""Volume classification speed: preprocessing a real CT, 3D augmentation, ResNet3D training steps.

    .venv/bin/python benchmarks/volume_cls.py [--scan DIR_OR_FILE] [--threads 2] [--repeats 3]
                                              [--batch 8] [--shape 64] [--device cpu]

Prints a Markdown table:

- **preprocessing**, seconds per CT (median of ``--repeats`` runs, wall and CPU): reading the
  DICOM series, the lung segmentation, resampling onto the 64^3 grid + window (the whole
  :func:`medcad.data.volume_cache.preprocess_scan` chain); default: the real LIDC-IDRI-0001.
- **augmentation**, volumes per second on batches of ``--batch`` 64^3 volumes: the default
  :class:`Augment3dConfig` (each step with its probability) and everything on (p = 1, elastic
  included), parameters drawn + applied.
- **training**, volumes per second of forward + backward + Adam step at 64^3 for resnet10_3d
  (width 64, 32, 16) and resnet18_3d, with augmentation in the step as ``medcad train volume-cls``
  runs it.

``--threads`` sets torch's intra-op threads (2 = the project's reference machine). On a shared
machine wall time includes waiting for other processes; the CPU column shows the work itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from timing import median_times

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def preprocessing_rows(scan_path: Path, repeats: int) -> list[tuple[str, str, str, str]]:
    from medcad.data.volume_cache import VolumePreprocessConfig, preprocess_scan
    from medcad.io import read_scan
    from medcad.transforms.lung_mask import segment_lungs

    scan = read_scan(scan_path)
    config = VolumePreprocessConfig()
    rows = []
    for name, step in (("read DICOM series", lambda: read_scan(scan_path)),
                       ("lung segmentation", lambda: segment_lungs(scan)),
                       ("whole chain (lungs + crop + resample 64^3 + window)", lambda: preprocess_scan(scan, config))):
        wall, cpu = median_times(step, repeats)
        rows.append(("preprocessing", name, f"{wall:.2f} s / CT", f"{cpu:.2f} s"))
    return rows


def augmentation_rows(batch: int, shape: int, device, repeats: int) -> list[tuple[str, str, str, str]]:
    import torch

    from medcad.transforms.augment3d import Augment3dConfig, RandomAugment3d

    image = torch.rand((batch, 1, shape, shape, shape), device=device)
    mask = (image > 0.5).to(torch.uint8)
    everything = Augment3dConfig(p_rotate=1, p_scale=1, p_shift=1, p_elastic=1, p_noise=1, p_brightness=1, p_contrast=1)
    rows = []
    for name, config in (("default probabilities", Augment3dConfig()), ("all on (elastic included)", everything)):
        augment = RandomAugment3d(config, seed=0)
        for with_mask in (False, True):
            def run():
                augment(image, mask if with_mask else None)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            wall, cpu = median_times(run, repeats, warmup=1)
            label = f"{name}{' + mask' if with_mask else ''}"
            rows.append(("augmentation", label, f"{batch / wall:.1f} vol/s", f"{cpu:.2f} s / batch"))
    return rows


def training_rows(batch: int, shape: int, device, repeats: int) -> list[tuple[str, str, str, str]]:
    import torch

    from medcad.data.volumes import VolumeSample
    from medcad.losses import WeightedCrossEntropyLoss
    from medcad.models import create
    from medcad.tasks.volume_cls import volume_step
    from medcad.transforms.augment3d import RandomAugment3d

    rows = []
    for name, width in (("resnet10_3d", 64), ("resnet10_3d", 32), ("resnet10_3d", 16), ("resnet18_3d", 64)):
        torch.manual_seed(0)
        model = create(name, width=width).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = volume_step(RandomAugment3d(seed=0))
        sample = VolumeSample(torch.rand((batch, 1, shape, shape, shape)), torch.zeros(1),
                              torch.randint(0, 2, (batch,)), torch.arange(batch))
        loss_fn = WeightedCrossEntropyLoss().to(device)

        def train_step():
            out = step(model, sample, loss_fn, device)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        wall, cpu = median_times(train_step, repeats, warmup=1)
        parameters = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(("training", f"{name} width {width} ({parameters:.1f} M parameters)", f"{batch / wall:.2f} vol/s",
                     f"{cpu:.2f} s / batch"))
    return rows


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, default=SHARED / "lidc" / "LIDC-IDRI-0001")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-preprocessing", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    if not args.skip_preprocessing:
        if args.scan.exists():
            rows += preprocessing_rows(args.scan, args.repeats)
        else:
            print(f"(no scan at {args.scan}: preprocessing skipped)")
    rows += augmentation_rows(args.batch, args.shape, device, args.repeats)
    rows += training_rows(args.batch, args.shape, device, args.repeats)
    print(f"\nvolume classification throughput: {args.threads} torch thread(s), device {device}, "
          f"batch {args.batch}, {args.shape}^3, median of {args.repeats}\n")
    print("| stage | what | throughput (wall) | CPU |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
