"""L3 cross-validation reports: error statistics per fold and view, a table, worst cases as PNGs."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcad.data.l3 import L3Dataset
from medcad.io.atomic import write_text_atomic
from medcad.tasks.l3 import CaseResult, CrossValidation
from medcad.transforms.mip import VIEWS

__all__ = ["ErrorSummary", "summarize_errors", "error_table", "write_evaluation"]


@dataclass(frozen=True)
class ErrorSummary:
    """Error statistics (mm) of a group of cases."""

    view: str
    group: str
    cases: int
    mean_mm: float
    median_mm: float
    std_mm: float
    max_mm: float
    within_5mm: float


def _summary(view: str, group: str, errors: Sequence[float]) -> ErrorSummary:
    values = np.asarray(errors, dtype=np.float64)
    return ErrorSummary(view, group, len(values), float(values.mean()), float(np.median(values)), float(values.std()),
                        float(values.max()), float((values <= 5.0).mean()))


def summarize_errors(results: Sequence[CaseResult]) -> list[ErrorSummary]:
    """Per view: one row per fold, then ``all`` (every held-out case)."""
    rows = []
    for view in VIEWS:
        of_view = [r for r in results if r.view == view]
        if not of_view:
            continue
        for fold in sorted({r.fold for r in of_view}):
            rows.append(_summary(view, f"fold {fold}", [r.error_mm for r in of_view if r.fold == fold]))
        rows.append(_summary(view, "all", [r.error_mm for r in of_view]))
    return rows


def error_table(results: Sequence[CaseResult], title: str = "L3 error on held-out folds (mm)"):
    """A rich table, frontal and sagittal together: per fold one row per view, then all cases."""
    from rich.table import Table

    summaries = summarize_errors(results)
    table = Table(title=title)
    for name in ("cases", "view", "n", "mean", "median", "std", "max", "<=5 mm"):
        table.add_column(name, justify="left" if name in ("cases", "view") else "right")
    for group in dict.fromkeys(s.group for s in summaries):
        for s in (s for s in summaries if s.group == group):
            table.add_row(group, s.view, str(s.cases), f"{s.mean_mm:.2f}", f"{s.median_mm:.2f}", f"{s.std_mm:.2f}",
                          f"{s.max_mm:.1f}", f"{100 * s.within_5mm:.0f}%", style="bold" if group == "all" else None,
                          end_section=s.view == summaries[-1].view)
    return table


def write_evaluation(cv: CrossValidation, dataset: L3Dataset, out_dir: str | Path, worst: int = 5) -> list[Path]:
    """Writes ``cases.csv``, ``summary.json`` and PNGs of the ``worst`` cases per view into ``out_dir``."""
    from medcad.tasks.l3_locate import MarkedRow, save_mip_png

    out = Path(out_dir)
    written = []
    buffer = io.StringIO()
    names = [f.name for f in CaseResult.__dataclass_fields__.values()]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for r in cv.results:
        writer.writerow([getattr(r, n) if not isinstance(getattr(r, n), float) else f"{getattr(r, n):.3f}" for n in names])
    write_text_atomic(out / "cases.csv", buffer.getvalue())
    written.append(out / "cases.csv")
    summary = {"summary": [_as_dict(s) for s in summarize_errors(cv.results)], "seconds": cv.seconds, "worst": []}
    index_of = {name: i for i, name in enumerate(dataset.names)}
    for view in VIEWS:
        ranked = sorted((r for r in cv.results if r.view == view), key=lambda r: -r.error_mm)[:worst]
        for rank, r in enumerate(ranked):
            i = index_of[r.name]
            path = out / "worst" / f"{view}_{rank + 1}_{_safe(r.name)}.png"
            save_mip_png({view: dataset.images[view][i]},
                         [MarkedRow(r.true_row, "reference L3", "lime"), MarkedRow(r.predicted_row, "predicted", "red")],
                         path, f"...{r.name[-14:]} (fold {r.fold})\nerror {r.error_mm:.1f} mm, conf {r.confidence:.2f}")
            summary["worst"].append({**_as_dict(r), "png": str(path.relative_to(out))})
            written.append(path)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    written.append(out / "summary.json")
    return written


def _as_dict(record) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in vars(record).items()}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[-40:]
