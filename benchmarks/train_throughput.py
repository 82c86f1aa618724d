"""Nodule-classifier training throughput: samples/s and the share of time in data loading + augmentation.

Usage: .venv/bin/python benchmarks/train_throughput.py [--data DIR] [--steps 20] [--batch-size 32]
       [--workers 1] [--threads 2] [--crop 32x48x48]

Without --data a small phantom cohort is synthesised into a temporary folder. The loop is the
training task's own (scan cache -> balanced sampler -> DataLoader -> augmentation on the batch ->
forward / backward / step); each phase is timed separately. Target: data + augmentation under 20 %.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop", default="32x48x48")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from medcad.data.nodule_samples import BalancedSampler, CropDataset, ratio_fractions
    from medcad.models import create
    from medcad.tasks.cad_training import make_loader
    from medcad.tasks.nodule_cls import ClassifierConfig, book_init, nodule_data
    from medcad.transforms.augment import BookAugmentConfig, apply_params, draw_params

    torch.set_num_threads(args.threads)
    data = args.data
    if data is None:
        from medcad.data.synthetic import PhantomOptions, write_cohort

        data = Path(tempfile.mkdtemp(prefix="medcad-bench-")) / "cohort"
        write_cohort(data, 8, 0, PhantomOptions(size="small"))
    crop = tuple(int(n) for n in args.crop.split("x"))
    split = nodule_data(ClassifierConfig(data=str(data)), lambda r: int(r.is_nodule), write_splits=False)
    split.cache.build()
    dataset = CropDataset(split.train, split.train_labels, split.cache, crop)
    sampler = BalancedSampler(split.train_labels, ratio_fractions(1.0), args.steps * args.batch_size)
    model = create("nodule_cnn3d", input_shape=list(crop)).to(memory_format=torch.channels_last_3d)
    book_init(model)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    augment = BookAugmentConfig()
    loader = make_loader(dataset, args.batch_size, sampler, args.workers)
    timings = {"data loading": 0.0, "augmentation": 0.0, "forward + backward + step": 0.0}
    samples, started = 0, time.perf_counter()
    iterator = iter(loader)
    model.train()
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        t1 = time.perf_counter()
        crops = batch.crop.contiguous(memory_format=torch.channels_last_3d)
        crops, _ = apply_params(crops, draw_params(crops.shape[0], crop, augment, None))
        t2 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(crops), batch.label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t3 = time.perf_counter()
        timings["data loading"] += t1 - t0
        timings["augmentation"] += t2 - t1
        timings["forward + backward + step"] += t3 - t2
        samples += len(batch.label)
    total = time.perf_counter() - started
    table = Table(title=f"nodule classifier training, crop {args.crop}, batch {args.batch_size}, "
                        f"{args.threads} thread(s), {args.workers} worker(s)")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for name, seconds in timings.items():
        table.add_row(name, f"{seconds:.2f}", f"{seconds / total:.1%}")
    table.add_row("total", f"{total:.2f}", "100%", style="bold")
    console = Console()
    console.print(table)
    share = (timings["data loading"] + timings["augmentation"]) / total
    console.print(f"{samples / total:.1f} samples/s; data loading + augmentation: {share:.1%} (target < 20%)")


if __name__ == "__main__":
    main()
