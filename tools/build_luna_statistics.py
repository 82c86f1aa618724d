"""Summarises the real LUNA16 / LIDC nodule tables into the small resource the phantom uses.

Run once (the output is committed; the tables themselves never enter the repository):

    .venv/bin/python tools/build_luna_statistics.py [--luna ../shared/data/luna]

Writes ``src/medcad/resources/luna_nodule_statistics.json``: a 0.5 mm histogram of the 1186
``annotations.csv`` diameters, a logistic fit of ``mal_bool`` on log(diameter) from
``annotations_with_malignancy.csv`` (plus binned rates for reference), the distribution of reader
counts and of per-reader malignancy ratings for malignant and benign nodules.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LUNA = REPO_ROOT.parent / "shared" / "data" / "luna"
OUTPUT = REPO_ROOT / "src" / "medcad" / "resources" / "luna_nodule_statistics.json"
BIN_WIDTH_MM = 0.5
RATE_EDGES_MM = (0, 4, 5, 6, 8, 10, 15, 20, 40)


def build(luna_dir: Path) -> dict:
    """The statistics as a JSON-ready dict."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from medcad.io.luna import read_annotations, read_malignancy

    diameters = np.array([n.diameter_mm for n in read_annotations(luna_dir / "annotations.csv")])
    lower = np.floor(diameters.min() / BIN_WIDTH_MM) * BIN_WIDTH_MM
    upper = np.ceil(diameters.max() / BIN_WIDTH_MM) * BIN_WIDTH_MM
    edges = np.round(np.arange(lower, upper + BIN_WIDTH_MM / 2, BIN_WIDTH_MM), 3)
    counts, _ = np.histogram(diameters, edges)

    nodules = read_malignancy(luna_dir / "annotations_with_malignancy.csv")
    mal_diameters = np.array([n.diameter_mm for n in nodules])
    malignant = np.array([n.is_malignant for n in nodules])
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(np.log(mal_diameters)[:, None], malignant)
    binned = np.digitize(mal_diameters, RATE_EDGES_MM[1:-1])
    ratings = {label: Counter(r for n in nodules if n.is_malignant == flag for r in n.malignancy_ratings)
               for label, flag in (("malignant", True), ("benign", False))}
    readers = Counter(len(n.malignancy_ratings) for n in nodules)
    return {
        "source": "LUNA16 annotations.csv (1186 nodules) and the book's annotations_with_malignancy.csv (LIDC-IDRI); "
                  "built by tools/build_luna_statistics.py",
        "diameter_histogram": {"edges_mm": edges.tolist(), "counts": counts.tolist()},
        "malignancy_logistic": {
            "feature": "ln(diameter_mm)",
            "intercept": round(float(fit.intercept_[0]), 6),
            "slope": round(float(fit.coef_[0, 0]), 6),
        },
        "malignancy_by_diameter": {
            "edges_mm": list(RATE_EDGES_MM),
            "rates": [round(float(malignant[binned == i].mean()), 4) for i in range(len(RATE_EDGES_MM) - 1)],
            "counts": [int((binned == i).sum()) for i in range(len(RATE_EDGES_MM) - 1)],
        },
        "malignant_fraction": round(float(malignant.mean()), 4),
        "diameter_auc": round(float(roc_auc_score(malignant, mal_diameters)), 4),
        "reader_counts": {str(k): readers[k] for k in sorted(readers)},
        "reader_ratings": {label: [counter[r] for r in range(1, 6)] for label, counter in ratings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--luna", type=Path, default=DEFAULT_LUNA, help="folder with the two LUNA16 tables")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    stats = build(args.luna)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(stats, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)  # lists on one line
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}: {sum(stats['diameter_histogram']['counts'])} diameters, "
          f"real diameter AUC {stats['diameter_auc']}")


if __name__ == "__main__":
    main()
