"""From confidence maps to the L3 slice: the row rule, fold-model ensembles, ``locate`` and PNGs.

The row rule (:func:`row_scores`, :func:`estimate_row`): each row of the network's confidence
map is scored by the maximum over its columns (``reduce="max"``; ``"mean"`` averages instead);
the peak is the arg-max row among the rows that show the scan (padding excluded), refined to a
sub-pixel row by the score-weighted centroid of the rows within +-3 of the peak. The confidence
is the peak's score in [0, 1]. Several models (the folds of a cross-validation, and the frontal
and sagittal views, whose rows share one z axis) are combined by averaging their row scores.

A result is flagged ``low_confidence`` when the peak score is below the models' threshold, when the
frontal and sagittal estimates lie more than 15 mm apart (about half a vertebra: they point at
different levels), or when the L3 row lies within 15 mm of the scan's top or bottom: a CT that
does not reach the lumbar spine gives a weak, split or edge peak, reported as such rather than
as a silent wrong slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from medcad.errors import InputError
from medcad.io.atomic import atomic_path
from medcad.io.scan import Scan
from medcad.transforms.mip import VIEWS, Mip, MipConfig, project_views

__all__ = ["REDUCTIONS", "RowEstimate", "row_scores", "estimate_row", "L3Model", "find_model_folders",
           "load_l3_models", "predict_maps", "L3Location", "locate", "save_mip_png"]

REDUCTIONS = ("max", "mean")
TASK_NAME = "l3"
#: Half width (rows) of the window whose centroid refines the peak row.
CENTROID_HALF_WIDTH = 3
#: An L3 closer than this to the scan's first or last slice is flagged: the vertebra is cut.
EDGE_MARGIN_MM = 15.0
#: Frontal and sagittal estimates farther apart than this (about half a vertebra) are flagged.
VIEWS_AGREE_MM = 15.0
#: U-Net inputs are padded to a multiple of this (depth <= 6 levels).
_PAD_MULTIPLE = 32


@dataclass(frozen=True)
class RowEstimate:
    """Where the confidence peaks.

    Attributes:
        row: sub-pixel row (centroid around the peak).
        peak_row: the arg-max row.
        confidence: the row score at the peak, in [0, 1].
    """

    row: float
    peak_row: int
    confidence: float


def row_scores(confidence_map: np.ndarray, reduce: str = "max") -> np.ndarray:
    """One score per row of a (rows, columns) map: its maximum (or mean) over the columns."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    values = np.asarray(confidence_map, dtype=np.float64)
    return values.max(axis=1) if reduce == "max" else values.mean(axis=1)


def estimate_row(scores: np.ndarray, valid_rows: tuple[int, int] | None = None,
                 half_width: int = CENTROID_HALF_WIDTH) -> RowEstimate:
    """The arg-max row of ``scores`` within ``valid_rows`` [first, stop), refined by a local centroid."""
    scores = np.asarray(scores, dtype=np.float64)
    first, stop = valid_rows if valid_rows is not None else (0, len(scores))
    first, stop = max(int(first), 0), min(int(stop), len(scores))
    if stop <= first:
        raise ValueError(f"no valid rows in [{first}, {stop})")
    peak = first + int(np.argmax(scores[first:stop]))
    low, high = max(peak - half_width, first), min(peak + half_width + 1, stop)
    weights = np.clip(scores[low:high], 0.0, None)
    row = float(np.dot(np.arange(low, high), weights) / weights.sum()) if weights.sum() > 0 else float(peak)
    return RowEstimate(row=row, peak_row=peak, confidence=float(scores[peak]))


@dataclass(frozen=True, eq=False)
class L3Model:
    """A trained L3 network and what it expects (from its ``model.json``).

    Attributes:
        network: the U-Net (eval mode), outputs a confidence map in [0, 1].
        view: the MIP it reads.
        mip: how its MIPs were made.
        channels: input channels (the MIP repeated).
        reduce: column reduction of the row rule.
        low_confidence: peak scores below this are flagged.
        folder: where it was loaded from.
    """

    network: object
    view: str
    mip: MipConfig
    channels: int
    reduce: str
    low_confidence: float
    folder: Path


def find_model_folders(path: str | Path) -> list[Path]:
    """Model folders at ``path``: itself when it holds ``model.json``, else the fold models of a run.

    A cross-validation run folder holds ``<view>/fold-<k>/model/``; those are returned sorted.
    """
    root = Path(path)
    if (root / "model.json").is_file():
        return [root]
    found = sorted(root.glob("*/fold-*/model/model.json")) + sorted(root.glob("fold-*/model/model.json"))
    if not found:
        raise InputError(root, "no L3 model here (expected model.json, or <view>/fold-<k>/model/ folders)")
    return [p.parent for p in found]


def load_l3_models(paths: Sequence[str | Path]) -> list[L3Model]:
    """Loads every L3 model under ``paths`` (see :func:`find_model_folders`)."""
    from medcad.models.store import load_model

    models = []
    for folder in (f for path in paths for f in find_model_folders(path)):
        network, description = load_model(folder)
        preprocessing = description.preprocessing
        if preprocessing.get("task") != TASK_NAME or preprocessing.get("view") not in VIEWS:
            raise InputError(folder, "not an L3 localisation model (preprocessing.task is not 'l3')")
        prediction = description.extra.get("prediction", {})
        models.append(L3Model(network, preprocessing["view"], MipConfig.from_dict(preprocessing["mip"]),
                              int(preprocessing.get("channels", 1)), str(prediction.get("reduce", "max")),
                              float(prediction.get("low_confidence", 0.3)), folder))
    return models


def predict_maps(networks: Sequence, images: np.ndarray, channels: int = 1, batch_size: int = 4) -> np.ndarray:
    """Confidence maps (N, rows, columns) of MIP images (N, rows, columns), averaged over ``networks``.

    Images are zero-padded to a multiple of 32 rows and columns (as the U-Net needs) and the maps
    cropped back.
    """
    import torch
    import torch.nn.functional as F

    images = np.asarray(images, dtype=np.float32)
    rows, cols = images.shape[1:]
    pad_rows, pad_cols = -rows % _PAD_MULTIPLE, -cols % _PAD_MULTIPLE
    total = np.zeros(images.shape, dtype=np.float64)
    with torch.inference_mode():
        for network in networks:
            network.eval()
            device = next(network.parameters()).device
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(images[start:start + batch_size]).to(device)[:, None]
                batch = F.pad(batch, (0, pad_cols, 0, pad_rows)).expand(-1, channels, -1, -1)
                maps = network(batch)[:, 0, :rows, :cols]
                total[start:start + batch_size] += maps.float().cpu().numpy()
    return (total / max(len(networks), 1)).astype(np.float32)


@dataclass(frozen=True)
class L3Location:
    """The located L3 slice.

    Attributes:
        slice_index: the slice (index along the scan's z axis) nearest to the L3 row.
        z_mm: world z of the L3 row (mm, LPS).
        row: sub-pixel row in the MIPs.
        confidence: peak row score in [0, 1].
        views: the views combined (``"frontal+sagittal"``, or one).
        models: number of networks averaged.
        low_confidence: True when the result should not be trusted (see ``reason``).
        reason: why it is flagged ("" when it is not).
        per_view: the estimate of each view alone.
    """

    slice_index: int
    z_mm: float
    row: float
    confidence: float
    views: str
    models: int
    low_confidence: bool
    reason: str = ""
    per_view: dict[str, RowEstimate] = field(default_factory=dict)


def _common_config(models: Sequence[L3Model]) -> MipConfig:
    configs = {m.mip for m in models}
    if len(configs) > 1:
        raise InputError(None, "the L3 models were trained on MIPs made differently; locate with one run's models")
    return configs.pop()


def locate(scan: Scan, models: Sequence[L3Model]) -> tuple[L3Location, dict[str, Mip]]:
    """Finds the L3 slice of ``scan`` with ``models`` (all folds and views averaged).

    The MIPs keep the scan's whole height (no crop): the U-Net is fully convolutional.
    Returns the location and the MIPs it was read from (for the PNG).
    """
    if not models:
        raise InputError(None, "no L3 models given")
    config = replace(_common_config(models), size=None, multiple=_PAD_MULTIPLE)
    mips = project_views(scan, config)
    per_view: dict[str, np.ndarray] = {}
    estimates: dict[str, RowEstimate] = {}
    for view in VIEWS:
        view_models = [m for m in models if m.view == view]
        if not view_models:
            continue
        maps = predict_maps([m.network for m in view_models], mips[view].image[None], view_models[0].channels)
        per_view[view] = row_scores(maps[0], view_models[0].reduce)
        estimates[view] = estimate_row(per_view[view], mips[view].geometry.content_row_range())
    geometry = mips[next(iter(per_view))].geometry  # frontal and sagittal rows share one z axis
    estimate = estimate_row(np.mean(list(per_view.values()), axis=0), geometry.content_row_range())
    z_mm = float(geometry.row_to_z_mm(estimate.row))
    threshold = min(m.low_confidence for m in models)
    reasons = []
    if estimate.confidence < threshold:
        reasons.append(f"confidence {estimate.confidence:.2f} is below {threshold:.2f}: the scan may not show L3")
    if len(estimates) > 1:
        spread_mm = (max(e.row for e in estimates.values()) - min(e.row for e in estimates.values())) * config.pixel_mm
        if spread_mm > VIEWS_AGREE_MM:
            reasons.append(f"the views disagree by {spread_mm:.0f} mm: " + ", ".join(
                f"{view} z {float(geometry.row_to_z_mm(e.row)):.1f} mm" for view, e in estimates.items()))
    slices = geometry.slices
    if min(z_mm - slices.low_mm, slices.high_mm - z_mm) < EDGE_MARGIN_MM:
        reasons.append(f"the L3 row lies within {EDGE_MARGIN_MM:.0f} mm of the scan's end: L3 may be cut or absent")
    location = L3Location(slice_index=int(geometry.nearest_slice(estimate.row)), z_mm=z_mm, row=estimate.row,
                          confidence=estimate.confidence, views="+".join(per_view), models=len(models),
                          low_confidence=bool(reasons), reason="; ".join(reasons), per_view=estimates)
    return location, mips


@dataclass(frozen=True)
class MarkedRow:
    """A horizontal line to draw on a MIP PNG."""

    row: float
    label: str
    color: str


def save_mip_png(images: dict[str, np.ndarray], marks: Sequence[MarkedRow], path: str | Path, title: str = "") -> Path:
    """Writes the MIPs side by side with horizontal lines at ``marks`` (atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    views = [v for v in VIEWS if v in images]
    height, width = next(iter(images.values())).shape
    figure = Figure(figsize=(3.2 * len(views) * width / max(height, 1) + 0.8, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    for index, view in enumerate(views):
        axis = figure.add_subplot(1, len(views), index + 1)
        axis.imshow(images[view], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for mark in marks:
            axis.axhline(mark.row, color=mark.color, linewidth=0.9, label=mark.label)
        axis.set_title(view, fontsize=9)
        axis.set_xticks([])
        axis.tick_params(labelsize=7)
    if marks:
        figure.axes[0].legend(loc="lower left", fontsize=7, framealpha=0.7)
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png")
    return target
