"""Nodule CAD speed: ``medcad detect`` against the book's way of running the same models, same scan.

    .venv/bin/python benchmarks/cad_inference.py [--scan DIR_OR_FILE] [--dlwpt DIR] [--models DIR]
                                                 [--stack SLICES] [--skip-baseline]

Each side runs in its own child process (so each has its own peak RSS and start-up):

- **medcad**: ``medcad detect SCAN --models DIR`` as a person runs it (wall time including Python
  start-up, imports, reading the scan, loading the models), plus its per-stage seconds.
- **book way**: ``p2ch14/nodule_analysis.py`` rebuilt on the same imported weights: PyTorch eager,
  the U-Net fed one 7-slice sample at a time assembled as the book's dataset does, in batches of
  4; ``scipy.ndimage.binary_erosion``, ``label`` and ``center_of_mass`` per label; the classifier
  on crops cut one candidate at a time (xyz -> rounded irc, the book's shifting window), batches
  of 4.

The outputs a person reads (``--masks`` label map, ``--report`` HTML, ``--dicom-out`` SEG + SR) are
timed twice: inside the medcad child after ``detect`` (per output, on the same detection), and as a
second CLI run with all three options against the plain one (end to end, noisier).

Prints per stage: wall seconds, CPU seconds (all threads of the process; on a shared machine wall
time includes waiting for other processes), the ratio book / medcad, peak RSS and the candidate
and finding counts (both sides must agree). ``--stack 300`` repeats the scan's slices to 300
(a 512 x 512 x 300 volume) to check memory at that size. Defaults: the real LIDC-IDRI-0001 and
the book's checkpoints from ../shared/data, imported into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAGES = ("read", "load", "segment", "group", "classify")


# ---------------------------------------------------------------------------------- the two sides
def run_medcad_stages(scan_path: str, models: str, stack: int, lungs_only: bool = False) -> dict:
    """medcad's library calls, timed per stage (the CLI run is timed separately, end to end)."""
    from medcad.pipeline import detect, load_detect_models
    from medcad.pipeline.detect import StageClock
    from medcad.pipeline.region import LUNG_MARGIN_MM

    timer = StageClock()
    with timer("read"):
        scan = _read(scan_path, stack)
    with timer("load"):
        detect_models = load_detect_models(models)
    result = detect(scan, detect_models, lungs_only=lungs_only)
    timer.wall.update(result.seconds)
    timer.cpu.update(result.cpu_seconds)
    outputs = {} if stack else _time_outputs(scan_path, scan, result, detect_models)
    return {"seconds": timer.wall, "cpu": timer.cpu, "outputs": outputs, "candidates": len(result.candidates),
            "findings": len(result.above(0.5)), "backend": detect_models.backend,
            "top_xyz": [list(f.center_xyz) for f in result.above(0.5)],
            "share": result.region.share() if result.region else 1.0, "margin_mm": LUNG_MARGIN_MM}


def _time_outputs(scan_path: str, scan, result, detect_models) -> dict:
    """Seconds of each output of ``detect --masks --report --dicom-out`` on this detection."""
    from medcad.reports.outputs import OutputTargets, is_dicom_input, write_outputs

    with tempfile.TemporaryDirectory() as tmp:
        dicom = Path(scan_path) if is_dicom_input(Path(scan_path)) else None
        targets = OutputTargets(masks=Path(tmp) / "masks.nii.gz", report=Path(tmp) / "report.html",
                                dicom_dir=Path(tmp) / "dicom" if dicom else None)
        start = time.perf_counter()
        written = write_outputs(targets, scan, result.above(0.5), result.masks, detect_models.identities,
                                threshold=0.5, dicom_series=dicom)
        wall = time.perf_counter() - start
        return {"each": written.seconds, "wall": wall, "report_mb": written.paths["report"].stat().st_size / 1e6}


def run_book_way(scan_path: str, models: str, stack: int) -> dict:
    """The book's nodule_analysis.py, stage by stage, on medcad's copy of the same weights."""
    import numpy as np
    import torch
    from scipy import ndimage

    from medcad.models.store import load_model
    from medcad.pipeline.detect import StageClock

    timer = StageClock()
    with timer("read"):
        scan = _read(scan_path, stack)
        hu = scan.hu.astype(np.float32)  # the book's Ct keeps a float32 copy of the volume
    with timer("load"):
        seg_model, _ = load_model(Path(models) / "segmentation")
        cls_model, _ = load_model(Path(models) / "nodule")
    with timer("segment"), torch.no_grad():
        output = np.zeros_like(hu)
        for start in range(0, hu.shape[0], 4):  # DataLoader(batch_size=4) over per-slice samples
            samples = []
            for slice_index in range(start, min(start + 4, hu.shape[0])):
                sample = torch.zeros((7, *hu.shape[1:]))
                for i, context in enumerate(range(slice_index - 3, slice_index + 4)):
                    sample[i] = torch.from_numpy(hu[min(max(context, 0), hu.shape[0] - 1)])
                samples.append(sample.clamp_(-1000, 1000))
            prediction = seg_model(torch.stack(samples))
            for i, slice_index in enumerate(range(start, start + len(samples))):
                output[slice_index] = prediction[i].numpy()
        mask = ndimage.binary_erosion(output > 0.5, iterations=1)
    with timer("group"):
        labels, count = ndimage.label(mask)
        centres_irc = ndimage.center_of_mass(hu.clip(-1000, 1000) + 1001, labels=labels, index=np.arange(1, count + 1))
        centres_xyz = [scan.irc_to_xyz(c) for c in centres_irc]
    with timer("classify"), torch.no_grad():
        clipped = hu.clip(-1000, 1000)
        probabilities = []
        for first in range(0, len(centres_xyz), 4):
            crops = [torch.from_numpy(_book_crop(clipped, scan.xyz_to_irc(xyz, round=True))).unsqueeze(0)
                     for xyz in centres_xyz[first:first + 4]]
            probabilities += torch.softmax(cls_model(torch.stack(crops)), dim=1)[:, 1].tolist()
    return {"seconds": timer.wall, "cpu": timer.cpu, "candidates": int(count),
            "findings": int(sum(p > 0.5 for p in probabilities)), "backend": "torch eager"}


def _book_crop(hu, center_irc, width_irc=(32, 48, 48)):
    """The book's Ct.getRawCandidate window: start = round(centre - width / 2), shifted inside."""
    slices = []
    for axis, centre in enumerate(center_irc):
        start = int(round(centre - width_irc[axis] / 2))
        start = min(max(start, 0), hu.shape[axis] - width_irc[axis])
        slices.append(slice(start, start + width_irc[axis]))
    return hu[tuple(slices)]


def _read(scan_path: str, stack: int):
    import numpy as np

    from medcad.io import Scan, read_scan

    scan = read_scan(scan_path)
    if stack and stack != scan.shape_irc[0]:  # slices 0..n-1, n-1..0, 0..: no seams, one allocation
        period = np.arange(2 * scan.shape_irc[0])
        order = np.minimum(period, 2 * scan.shape_irc[0] - 1 - period)
        hu = scan.hu[order[np.arange(stack) % len(order)]]
        scan = Scan.from_array(hu, scan.origin_xyz, scan.spacing_xyz, scan.direction, series_uid=scan.series_uid)
    return scan


# ------------------------------------------------------------------------------------ the parent
def _child(args: list[str]) -> tuple[dict | None, float, float]:
    """Runs a child process; returns (its last stdout line as JSON or None, wall seconds, its peak RSS GiB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{stderr}")
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = None
    return result, wall, usage.ru_maxrss / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default=str(SHARED / "lidc" / "LIDC-IDRI-0001"))
    parser.add_argument("--dlwpt", default=str(SHARED / "dlwpt"), help="Folder of the book's .state checkpoints.")
    parser.add_argument("--models", help="An imported models folder (default: import --dlwpt into a temporary one).")
    parser.add_argument("--stack", type=int, default=0, help="Repeat the slices up to this many (memory check).")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--worker", choices=("medcad", "medcad-lungs", "book"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "book":
            result = run_book_way(args.scan, args.models, args.stack)
        else:
            result = run_medcad_stages(args.scan, args.models, args.stack, lungs_only=args.worker == "medcad-lungs")
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or _import_models(Path(args.dlwpt), Path(tmp) / "models")
        report(args, models, Path(tmp))


def _import_models(dlwpt: Path, folder: Path) -> str:
    from medcad.pipeline import load_detect_models

    for source in sorted(dlwpt.glob("*.state")):
        role = "segmentation" if source.name.startswith("seg_") else "nodule"
        subprocess.run([sys.executable, "-m", "medcad", "models", "import-dlwpt", str(source), "--out",
                        str(folder / role), "--no-onnx"], check=True, capture_output=True)
    load_detect_models(folder, backend="onnx")  # the one-time ONNX export, outside the timings
    return str(folder)


def report(args, models: str, tmp: Path) -> None:
    common = ["--scan", args.scan, "--models", models, "--stack", str(args.stack)]
    me = [__file__, "--worker", "medcad", *common]
    rows = {}
    if args.stack:  # the CLI reads the scan itself: time the stacked volume through the library only
        cli_wall = None
    else:
        cli = ["-m", "medcad", "detect", args.scan, "--models", models, "--out", str(tmp / "findings.json")]
        _, cli_wall, cli_rss = _child(cli)
        rows["cli"] = (cli_wall, cli_rss)
        _, rows["cli-lungs"], _ = _child([*cli, "--lungs-only"])
        outputs = ["--masks", str(tmp / "masks.nii.gz"), "--report", str(tmp / "report")]
        if Path(args.scan).is_dir():
            outputs += ["--dicom-out", str(tmp / "dicom")]
        _, rows["cli-outputs"], _ = _child([*cli, *outputs])
    medcad, medcad_wall, medcad_rss = _child(me)
    lungs, _, lungs_rss = _child([__file__, "--worker", "medcad-lungs", *common])
    book = book_wall = book_rss = None
    if not args.skip_baseline:
        book, book_wall, book_rss = _child([__file__, "--worker", "book", *common])

    print(f"scan {args.scan}{f' stacked to {args.stack} slices' if args.stack else ''}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    header = (f"{'stage':<10} {'book s':>8} {'book cpu':>9} {'medcad s':>9} {'medcad cpu':>11} {'ratio':>6}"
              f" {'lungs-only s':>12} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for stage in STAGES:
        m_wall, m_cpu = medcad["seconds"].get(stage, 0.0), medcad["cpu"].get(stage)
        line = f"{stage:<10} "
        if book:
            b_wall, b_cpu = book["seconds"][stage], book["cpu"].get(stage, 0.0)
            line += f"{b_wall:8.2f} {b_cpu:9.2f} "
        else:
            line += f"{'':8} {'':9} "
        line += f"{m_wall:9.2f} {'' if m_cpu is None else f'{m_cpu:11.2f}':>11}"
        line += f" {book['seconds'][stage] / max(m_wall, 1e-9):6.1f}" if book else f" {'':6}"
        l_wall = lungs["seconds"].get(stage, 0.0)
        line += f" {l_wall:12.2f}" + (f" {book['seconds'][stage] / max(l_wall, 1e-9):6.1f}" if book else "")
        print(line)
    m_total, l_total = sum(medcad["seconds"].values()), sum(lungs["seconds"].values())
    line = f"{'all stages':<10} "
    if book:
        b_total = sum(book["seconds"].values())
        line += (f"{b_total:8.2f} {'':9} {m_total:9.2f} {'':>11} {b_total / m_total:6.1f}"
                 f" {l_total:12.2f} {b_total / l_total:6.1f}")
    else:
        line += f"{'':8} {'':9} {m_total:9.2f} {'':>11} {'':6} {l_total:12.2f}"
    print(line)
    print(f"{'process':<10} {'' if book is None else f'{book_wall:8.2f}'} {'':9} {medcad_wall:9.2f} {'':>11} "
          f"{'' if book is None else f'{book_wall / medcad_wall:6.1f}'}   (child wall incl. start-up)")
    if cli_wall is not None:
        for name, wall in (("medcad detect", cli_wall), ("medcad detect --lungs-only", rows["cli-lungs"])):
            print(f"{name} CLI, end to end: {wall:.2f} s"
                  + (f" (book way / CLI: {book_wall / wall:.1f}x)" if book else ""))
    if medcad["outputs"]:
        detect_seconds = sum(medcad["seconds"].get(stage, 0.0) for stage in ("segment", "group", "classify"))
        outputs_run = medcad["outputs"]
        print("outputs after detect (library, two threads): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in outputs_run["each"].items())
              + f"; wall {outputs_run['wall']:.2f} s = {outputs_run['wall'] / detect_seconds:.1%} of detect's "
              f"{detect_seconds:.1f} s (segment + group + classify); report {outputs_run['report_mb']:.1f} MB")
    if cli_wall is not None:
        print(f"medcad detect CLI with {' '.join(o for o in outputs if o.startswith('--'))}: {rows['cli-outputs']:.2f} s"
              f" against {cli_wall:.2f} s without (+{rows['cli-outputs'] / cli_wall - 1:.0%})")
    print(f"peak RSS GiB: medcad {medcad_rss:.2f}, --lungs-only {lungs_rss:.2f}"
          + ("" if book is None else f", book way {book_rss:.2f}")
          + ("" if cli_wall is None else f", medcad detect CLI {rows['cli'][1]:.2f}"))
    print(f"candidates: medcad {medcad['candidates']}" + ("" if book is None else f", book way {book['candidates']}")
          + f"; findings > 0.5: medcad {medcad['findings']}" + ("" if book is None else f", book way {book['findings']}")
          + f"; medcad backend {medcad['backend']}")
    kept = sum(any(sum((a - b) ** 2 for a, b in zip(xyz, found)) <= 0.01 ** 2 for found in lungs["top_xyz"])
               for xyz in medcad["top_xyz"])
    print(f"--lungs-only: {lungs['candidates']} candidates, {lungs['findings']} findings > 0.5; "
          f"{kept} of medcad's {medcad['findings']} findings kept (same centre), the others lie farther than "
          f"{lungs['margin_mm']:g} mm from the lungs; U-Net on {lungs['share']:.0%} of the voxels")


if __name__ == "__main__":
    main()
