"""Image-classification training throughput on 2D images: images/s per backbone and input size, and
the share of time spent decoding + augmenting.

Usage: .venv/bin/python benchmarks/image_cls.py [--data ../shared/data/oct] [--archs resnet18,regnet_x_400mf]
       [--sizes 160x160,128x256] [--batch-size 32] [--steps 3] [--threads 2] [--channels 1]

Per (arch, size): the median wall and CPU seconds of one training step (forward, backward, AdamW
step) on a batch from the task's own augmented loader, and of drawing one batch from that loader
(images cached in memory, as in training). An epoch of N images costs about N / batch x (step + data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from timing import median_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "oct")
    parser.add_argument("--archs", default="resnet18,regnet_x_400mf,mobilenet_v3_small")
    parser.add_argument("--sizes", default="160x160,128x256")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from medcad.cli.image_options import parse_image_size
    from medcad.data.images import AugmentConfig, ImagePreprocessing
    from medcad.models import create
    from medcad.tasks.image_cls import ImageDataConfig, load_splits, make_loader

    torch.set_num_threads(args.threads)
    splits = load_splits(ImageDataConfig(source=str(args.data)), seed=0)
    records = splits["train"][: args.batch_size * 2]
    table = Table(title=f"training throughput, {args.threads} threads, batch {args.batch_size}, {args.data}")
    for column in ("arch", "input", "images/s", "CPU ms / image", "data share"):
        table.add_column(column, justify="left" if column == "arch" else "right")
    for size_text in args.sizes.split(","):
        size = parse_image_size(size_text)
        preprocessing = ImagePreprocessing.imagenet(size, args.channels)
        data = ImageDataConfig(source=str(args.data), batch_size=args.batch_size)
        loader = make_loader(records, preprocessing, data, augment=AugmentConfig(), shuffle=True)
        batches = iter(())

        def next_batch():
            nonlocal batches
            try:
                return next(batches)
            except StopIteration:
                batches = iter(loader)
                return next(batches)

        data_wall, data_cpu = median_times(next_batch, args.steps, warmup=2)
        batch = next_batch()
        for arch in args.archs.split(","):
            model = create("torchvision", arch=arch, num_classes=len(splits.class_names), in_channels=args.channels)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            model.train()

            def step():
                loss = torch.nn.functional.cross_entropy(model(batch.image), batch.label)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            wall, cpu = median_times(step, args.steps, warmup=1)
            total = wall + data_wall
            table.add_row(arch, f"{size[0]}x{size[1]}", f"{args.batch_size / total:.1f}",
                          f"{1000 * (cpu + data_cpu) / args.batch_size:.0f}", f"{data_wall / total:.0%}")
    Console().print(table)


if __name__ == "__main__":
    main()
