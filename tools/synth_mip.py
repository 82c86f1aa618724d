"""Draws the coronal and sagittal maximum-intensity projections of an abdomen-covering phantom.

    .venv/bin/python tools/synth_mip.py [--seed 3] [--out docs/images/synth_mip.png]

The picture in the docs that shows the phantom's skeleton: ribs, sternum, the spine T1-L5 with
its discs (each level labelled from the vertebra table), the iliac wings; L3 is marked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medcad.data.synthetic import PhantomOptions, generate_phantom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--size", default="full")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images" / "synth_mip.png")
    args = parser.parse_args()
    phantom = generate_phantom(args.seed, 0, PhantomOptions(size=args.size, abdomen=True, negatives=0))
    scan = phantom.scan
    hu = scan.hu
    for axis, sign in zip((2, 1, 0), scan.direction.diagonal()):  # show the patient head up, facing us
        if sign < 0:
            hu = np.flip(hu, axis)
    spacing = scan.spacing_xyz
    z_low = scan.origin_xyz[2] if scan.direction[2, 2] > 0 else scan.origin_xyz[2] - (hu.shape[0] - 1) * spacing[2]
    depth = hu.shape[0]

    def row_of(z_mm: float) -> float:
        return (depth - 1) - (z_mm - z_low) / spacing[2]

    figure, axes = plt.subplots(1, 2, figsize=(10, 8.5))
    for ax, axis, title in ((axes[0], 1, "coronal MIP"), (axes[1], 2, "sagittal MIP")):
        ax.imshow(hu.max(axis=axis)[::-1], cmap="gray", vmin=-200, vmax=1000, aspect=spacing[2] / spacing[0])
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    for level in phantom.vertebrae:
        row = row_of(0.5 * (level.z_top_mm + level.z_bottom_mm))
        color = "orange" if level.name == "L3" else "yellow"
        axes[1].text(3, row, level.name, color=color, fontsize=7, va="center")
        if level.name == "L3":
            for ax in axes:
                for z in (level.z_top_mm, level.z_bottom_mm):
                    ax.axhline(row_of(z), color="orange", linewidth=0.6)
    shape = "x".join(map(str, scan.shape_irc))
    figure.suptitle(f"medcad synth --abdomen phantom ({shape} voxels, {spacing[0]:.2f} x {spacing[1]:.2f} x "
                    f"{spacing[2]:.2f} mm); L3 between the orange lines")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
