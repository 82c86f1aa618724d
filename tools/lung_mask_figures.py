"""Draws the lung-mask overlays of the docs: an axial and a coronal slice of LIDC-IDRI-0001 through the LUNA16 nodule.

    .venv/bin/python tools/lung_mask_figures.py [--scan ../shared/data/lidc/LIDC-IDRI-0001] [--out docs/images]

Writes ``lung_mask_axial.png`` and ``lung_mask_coronal.png``: the CT in the lung window, the two
lungs' outlines (red / cyan), the body outline (yellow) and the LUNA16 nodule centre (green cross).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
LUNA_NODULE_XYZ = (56.21, 86.34, -115.87)


def main() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from medcad.io import read_scan
    from medcad.transforms.lung_mask import segment_lungs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "lidc" / "LIDC-IDRI-0001")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    args = parser.parse_args()

    scan = read_scan(args.scan)
    lungs = segment_lungs(scan)
    irc = scan.xyz_to_irc(LUNA_NODULE_XYZ, round=True)
    spacing_zyx = scan.spacing_xyz[::-1]
    # axial: rows y, columns x; coronal: the row through the nodule, head up (superior z on top)
    views = {
        "axial": (lambda a: a[irc[0]], spacing_zyx[1] / spacing_zyx[2], (irc[2], irc[1]),
                  f"axial slice {irc[0]} (z = {LUNA_NODULE_XYZ[2]} mm)"),
        "coronal": (lambda a: a[::-1, irc[1]], spacing_zyx[0] / spacing_zyx[2], (irc[2], scan.shape_irc[0] - 1 - irc[0]),
                    f"coronal row {irc[1]} (y = {LUNA_NODULE_XYZ[1]} mm)"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (cut, aspect, point, title) in views.items():
        figure = Figure(figsize=(6.4, 6.4 if name == "axial" else 4.2), dpi=110)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.imshow(cut(scan.hu), cmap="gray", vmin=-1000, vmax=400, aspect=aspect, interpolation="nearest")
        for mask, colour in ((lungs.labels == 1, "red"), (lungs.labels == 2, "cyan"), (lungs.body, "yellow")):
            axes.contour(cut(mask).astype(np.uint8), levels=[0.5], colors=colour, linewidths=0.8)
        axes.plot(*point, "+", color="lime", markersize=14, markeredgewidth=2)
        axes.set_title(f"LIDC-IDRI-0001 {title}\nlungs {lungs.volume_ml / 1000:.2f} l "
                       f"({' + '.join(f'{v / 1000:.2f}' for v in lungs.lung_volumes_ml)}); + LUNA16 nodule",
                       fontsize=9)
        axes.set_axis_off()
        figure.tight_layout()
        figure.savefig(args.out / f"lung_mask_{name}.png")
        print(args.out / f"lung_mask_{name}.png")


if __name__ == "__main__":
    main()
