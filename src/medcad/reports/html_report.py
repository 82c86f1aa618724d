"""``medcad report``: one self-contained HTML file per scan showing the nodule CAD's findings.

The file works opened from disk, offline: the niivue viewer (vendored, BSD-2-Clause,
``medcad/resources/niivue``) is inlined in a ``<script>``, the images are ``data:`` URIs, the
volume is a gzipped NIfTI-1 in base64 inside the page, the CSS is inline; nothing is fetched.

It holds the scan summary (technical, whitelisted header fields only) and the models used, a
sortable findings table, per finding axial / coronal / sagittal views with the mask's outline
and a scale bar plus zoomed crops (:mod:`medcad.reports.report_views`), a coronal overview with
every finding numbered, the LUNA16 reference nodules (hit or missed) when given, and a niivue
viewer (three planes, window presets, the findings' label map as an overlay; clicking a table row
moves its crosshair to that finding).

The viewer's volume is reduced to keep the file small (see :func:`viewer_volume` and
``docs/report.md``): cropped to the body's bounding box, block-averaged down to at most
:data:`VIEWER_MAX_VOXELS` voxels, air and objects outside the body (the table) set to -1024 HU,
stored as uint8 in 8 HU steps over [-1024, 1016] HU (``scl_slope`` 8, ``scl_inter`` -1024, so
niivue shows HU). The PNG views are made from the full-resolution scan.

The page exposes ``window.medcadViewer = {nv, gotoFinding(k), currentFinding(), crosshairMM(),
crosshairRAS(), valuesAtCrosshair(), setWindow(name)}`` (``crosshairMM`` in world mm LPS, as the
findings; niivue itself works in RAS) and sets ``document.body.dataset.viewerReady = "1"`` once
the volumes are loaded, or ``data-viewer-error`` (and a message on the page) when WebGL2 is not
available.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import html
import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np

from medcad.errors import InputError, MedcadError
from medcad.findings import Finding, FindingMasks
from medcad.geometry import VolumeGeometry
from medcad.io.atomic import write_text_atomic
from medcad.io.luna import LunaNodule
from medcad.io.scan import Scan
from medcad.pipeline.model_set import ModelIdentity
from medcad.reports import report_views as views
from medcad.transforms.intensity import resolve_window

__all__ = ["ReportSummary", "write_report", "write_report_index", "viewer_volume", "ViewerVolume", "nifti1_bytes",
           "VIEWER_MAX_VOXELS", "MAX_FINDING_VIEWS", "METADATA_FIELDS"]

#: The viewer's volume is block-averaged until it has at most this many voxels.
VIEWER_MAX_VOXELS = 10_000_000
#: Viewer HU range and step: uint8 value v is 8 v - 1024 HU.
VIEWER_LOW_HU, VIEWER_STEP_HU = -1024.0, 8.0
#: Findings with static views (the first ones in table order); the others are in the table and viewer.
MAX_FINDING_VIEWS = 20
#: Header fields a report may show (technical, never patient-identifying); anything else is ignored.
METADATA_FIELDS = (
    ("Modality", "Modality"), ("Manufacturer", "Manufacturer"), ("ManufacturerModelName", "Model"),
    ("ConvolutionKernel", "Kernel"), ("KVP", "kVp"), ("BodyPartExamined", "Body part"),
    ("PatientPosition", "Patient position"), ("ReconstructionDiameter", "Recon. diameter mm"),
)
_BODY_HU = -500.0     # the body's bounding box: voxels above this
_CROP_MARGIN_MM = 5.0
_MARK_RADIUS_MM = 3.0  # label-map sphere for a finding without a mask, when its diameter is unknown
_VIEWER_WINDOWS = ("lung", "mediastinum")


@dataclass(frozen=True)
class ReportSummary:
    """One line of the batch index: where a scan's report is and what it found."""

    series_uid: str
    path: Path
    n_findings: int
    top_nodule_prob: float | None
    n_references: int
    n_references_hit: int


# --------------------------------------------------------------------------------------------
# The viewer's volume: reduced copy of the scan, NIfTI-1 bytes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ViewerVolume:
    """The reduced volume that the viewer shows.

    Attributes:
        hu: float32 (z, y, x) HU after cropping and block averaging, outside the body -1024.
        geometry: its placement in the world (the scan's direction, coarser spacing).
        crop_low, crop_high: the source voxel box (irc, high exclusive) it was made from.
        factors: block size (i, r, c) of the averaging.
        body: bool, the body (None when no body was found: nothing was masked).
        lungs: bool, the lungs with their vessels (None when not found).
    """

    hu: np.ndarray
    geometry: VolumeGeometry
    crop_low: tuple[int, int, int]
    crop_high: tuple[int, int, int]
    factors: tuple[int, int, int]
    body: np.ndarray | None
    lungs: np.ndarray | None

    def quantized(self) -> np.ndarray:
        """uint8 in 8 HU steps: value v stands for 8 v - 1024 HU."""
        return np.clip(np.rint((self.hu - VIEWER_LOW_HU) / VIEWER_STEP_HU), 0, 255).astype(np.uint8)

    def source_to_irc(self, points_irc: np.ndarray) -> np.ndarray:
        """Source voxel indices -> indices in this volume (fractional)."""
        low = np.asarray(self.crop_low, dtype=np.float64)
        factors = np.asarray(self.factors, dtype=np.float64)
        return (np.asarray(points_irc, dtype=np.float64) - low - (factors - 1) / 2) / factors


def _reduction_factors(shape: tuple[int, int, int], spacing_irc: np.ndarray) -> tuple[int, int, int]:
    """Block sizes (i, r, c): grow the finer of in-plane / slice direction until the budget holds."""
    f_plane, f_slice = 1, 1
    while (shape[0] / f_slice) * (shape[1] / f_plane) * (shape[2] / f_plane) > VIEWER_MAX_VOXELS:
        if min(spacing_irc[1:]) * f_plane <= spacing_irc[0] * f_slice or shape[0] // (f_slice + 1) < 8:
            f_plane += 1
        else:
            f_slice += 1
    return f_slice, f_plane, f_plane


def _body_box(scan: Scan, keep_irc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-plane bounding box of the body (largest blob of the >-500 HU projection), all slices."""
    from scipy import ndimage

    shape = np.asarray(scan.shape_irc)
    low, high = np.zeros(3, dtype=int), shape.copy()
    projection = (scan.hu > _BODY_HU).any(axis=0)
    labels, count = ndimage.label(projection)
    if count:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        rows, cols = np.nonzero(labels == int(np.argmax(sizes)))
        margin = np.ceil(_CROP_MARGIN_MM / np.asarray(scan.spacing_xyz[::-1])).astype(int)
        low[1:] = [rows.min() - margin[1], cols.min() - margin[2]]
        high[1:] = [rows.max() + 1 + margin[1], cols.max() + 1 + margin[2]]
    if len(keep_irc):  # findings and reference nodules stay inside, with room around them
        margin = np.ceil(25.0 / np.asarray(scan.spacing_xyz[::-1])).astype(int)
        low = np.minimum(low, np.floor(keep_irc.min(axis=0)).astype(int) - margin)
        high = np.maximum(high, np.ceil(keep_irc.max(axis=0)).astype(int) + 1 + margin)
    return np.clip(low, 0, shape), np.clip(high, 0, shape)


def viewer_volume(scan: Scan, keep_xyz: Sequence[Sequence[float]] = ()) -> ViewerVolume:
    """Crops the scan to the body's box (keeping ``keep_xyz`` inside), block-averages, masks the outside."""
    from scipy import ndimage

    from medcad.transforms.lung_mask import air_inside_body, fill_holes_slicewise

    keep = np.asarray(keep_xyz, dtype=np.float64).reshape(-1, 3)
    keep_irc = scan.xyz_to_irc(keep) if len(keep) else np.zeros((0, 3))
    low, high = _body_box(scan, keep_irc)
    spacing_irc = np.asarray(scan.spacing_xyz[::-1], dtype=np.float64)
    factors = np.asarray(_reduction_factors(tuple(int(n) for n in high - low), spacing_irc))
    size = np.maximum((high - low) // factors, 1)
    high = np.minimum(low + size * factors, np.asarray(scan.shape_irc))
    size = (high - low) // factors
    high = low + size * factors
    reduced = np.empty(tuple(int(n) for n in size), dtype=np.float32)
    fz, fy, fx = (int(f) for f in factors)
    chunk = max(1, 32 // fz) * fz
    for start in range(int(low[0]), int(high[0]), chunk):  # slabs: bounded memory for long scans
        stop = min(start + chunk, int(high[0]))
        block = scan.hu[start:stop, low[1]:high[1], low[2]:high[2]].astype(np.float32)
        block = block.reshape((stop - start) // fz, fz, size[1], fy, size[2], fx).mean(axis=(1, 3, 5))
        first = (start - int(low[0])) // fz
        reduced[first:first + block.shape[0]] = block
    origin = scan.irc_to_xyz(low + (factors - 1) / 2.0)
    geometry = VolumeGeometry(reduced.shape, origin, scan.spacing_xyz * factors[::-1], scan.direction)
    body = lungs = None
    try:
        air, body = air_inside_body(Scan(hu=reduced, geometry=geometry))
        lungs = fill_holes_slicewise(air)
    except MedcadError:
        pass
    if body is not None:
        reduced[~ndimage.binary_dilation(body, iterations=2)] = VIEWER_LOW_HU
    return ViewerVolume(reduced, geometry, tuple(int(v) for v in low), tuple(int(v) for v in high),
                        tuple(int(f) for f in factors), body, lungs)


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(qfac, b, c, d) of NIfTI's qform for a 3x3 matrix with unit columns (a possibly improper rotation)."""
    r = np.array(rotation, dtype=np.float64)
    qfac = 1.0
    if np.linalg.det(r) < 0:
        qfac = -1.0
        r[:, 2] = -r[:, 2]
    u, _, vt = np.linalg.svd(r)  # nearest proper rotation (headers round their cosines)
    r = u @ vt
    a = r[0, 0] + r[1, 1] + r[2, 2] + 1.0
    if a > 0.5:
        a = 0.5 * math.sqrt(a)
        b, c, d = 0.25 * (r[2, 1] - r[1, 2]) / a, 0.25 * (r[0, 2] - r[2, 0]) / a, 0.25 * (r[1, 0] - r[0, 1]) / a
    else:
        xd, yd, zd = 1.0 + r[0, 0] - (r[1, 1] + r[2, 2]), 1.0 + r[1, 1] - (r[0, 0] + r[2, 2]), 1.0 + r[2, 2] - (r[0, 0] + r[1, 1])
        if xd > 1.0:
            b = 0.5 * math.sqrt(xd)
            c, d, a = 0.25 * (r[0, 1] + r[1, 0]) / b, 0.25 * (r[0, 2] + r[2, 0]) / b, 0.25 * (r[2, 1] - r[1, 2]) / b
        elif yd > 1.0:
            c = 0.5 * math.sqrt(yd)
            b, d, a = 0.25 * (r[0, 1] + r[1, 0]) / c, 0.25 * (r[1, 2] + r[2, 1]) / c, 0.25 * (r[0, 2] - r[2, 0]) / c
        else:
            d = 0.5 * math.sqrt(zd)
            b, c, a = 0.25 * (r[0, 2] + r[2, 0]) / d, 0.25 * (r[1, 2] + r[2, 1]) / d, 0.25 * (r[1, 0] - r[0, 1]) / d
        if a < 0:
            b, c, d = -b, -c, -d
    return qfac, float(b), float(c), float(d)


_NIFTI_TYPES = {np.dtype(np.uint8): (2, 8), np.dtype(np.int16): (4, 16), np.dtype(np.uint16): (512, 16),
                np.dtype(np.float32): (16, 32)}


def nifti1_bytes(array: np.ndarray, geometry: VolumeGeometry, slope: float = 1.0, intercept: float = 0.0,
                 description: str = "medcad") -> bytes:
    """A single-file NIfTI-1 (``.nii``, little-endian) of an array (z, y, x) placed by ``geometry``.

    NIfTI stores RAS: the sform (and the equivalent qform) is the LPS voxel-to-world matrix with
    x and y negated, so a NIfTI reader (niivue, SimpleITK) puts every voxel where the Scan has it.
    """
    data = np.ascontiguousarray(array)
    if data.dtype not in _NIFTI_TYPES:
        raise ValueError(f"no NIfTI type for {data.dtype}")
    datatype, bitpix = _NIFTI_TYPES[data.dtype]
    nz, ny, nx = data.shape
    lps = geometry.direction * geometry.spacing_xyz[None, :]
    ras = np.diag([-1.0, -1.0, 1.0]) @ lps
    origin_ras = np.diag([-1.0, -1.0, 1.0]) @ geometry.origin_xyz
    qfac, b, c, d = _quaternion(ras / geometry.spacing_xyz[None, :])
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    header[38] = ord("r")
    struct.pack_into("<8h", header, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, qfac, *geometry.spacing_xyz, 0.0, 0.0, 0.0, 0.0)
    struct.pack_into("<3f", header, 108, 352.0, slope, intercept)
    header[123] = 2  # spatial units: mm
    text = description.encode("ascii", "replace")[:79]
    header[148:148 + len(text)] = text
    struct.pack_into("<hh", header, 252, 1, 1)  # qform_code, sform_code: scanner anatomical
    struct.pack_into("<6f", header, 256, b, c, d, *origin_ras)
    for row in range(3):
        struct.pack_into("<4f", header, 280 + 16 * row, *ras[row], origin_ras[row])
    header[344:348] = b"n+1\0"
    return bytes(header) + b"\0\0\0\0" + data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes()


def _label_volume(viewer: ViewerVolume, scan: Scan, findings: Sequence[Finding], masks: FindingMasks | None) -> np.ndarray:
    """The findings' labels on the viewer's grid: mask voxels, else a sphere of the finding's size."""
    labels = np.zeros(viewer.hu.shape, dtype=np.uint8 if len(findings) < 256 else np.uint16)
    shape = np.asarray(labels.shape)
    spacing_irc = np.asarray(viewer.geometry.spacing_xyz[::-1])
    for label, finding in enumerate(findings, start=1):
        voxels = masks.voxels[label - 1] if masks is not None and label <= len(masks) else None
        if voxels is not None and len(voxels):
            points = np.stack(np.unravel_index(voxels, scan.shape_irc), axis=1)
            reduced = np.floor((points - np.asarray(viewer.crop_low)) / np.asarray(viewer.factors)).astype(int)
            inside = np.all((reduced >= 0) & (reduced < shape), axis=1)
            reduced = reduced[inside]
            labels[reduced[:, 0], reduced[:, 1], reduced[:, 2]] = label
            continue
        centre = viewer.geometry.xyz_to_irc(finding.center_xyz)
        radius = (finding.diameter_mm / 2) if finding.diameter_mm else _MARK_RADIUS_MM
        reach = np.ceil(radius / spacing_irc).astype(int)
        low = np.clip(np.floor(centre).astype(int) - reach, 0, shape)
        high = np.clip(np.ceil(centre).astype(int) + reach + 1, 0, shape)
        if np.any(high <= low):
            continue
        grid = np.meshgrid(*[np.arange(lo, hi) for lo, hi in zip(low, high)], indexing="ij")
        distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing_irc))
        box = labels[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        box[(distance2 <= max(radius, 0.5 * spacing_irc.max()) ** 2) & (box == 0)] = label
    return labels


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _check_target(path: Path) -> Path:
    from medcad.io.atomic import check_output_folder

    target = Path(path)
    if target.is_dir():
        raise InputError(target, "is a folder; give the report's file name (e.g. report.html)")
    check_output_folder(target.parent, "the report's folder")
    return target


@lru_cache(maxsize=1)
def _niivue_bundle() -> str:
    bundle = resources.files("medcad").joinpath("resources", "niivue", "niivue.umd.js").read_text(encoding="utf-8")
    if "</script" in bundle.lower():  # would end the inline script early
        raise MedcadError("the vendored niivue bundle contains '</script'; it cannot be inlined")
    return bundle


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _fmt(value, digits: int = 3, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return f"{value:.{digits}f}"


def _triple(values, digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _colour_css(label: int) -> str:
    r, g, b = views.PALETTE_RGB[(label - 1) % len(views.PALETTE_RGB)]
    return f"rgb({r},{g},{b})"


def _orientation(scan: Scan) -> str:
    """Which patient direction each array axis runs along, e.g. 'axial: columns R→L, rows A→P, slices I→S'."""
    names = {(0, 1): "R→L", (0, -1): "L→R", (1, 1): "A→P", (1, -1): "P→A", (2, 1): "I→S", (2, -1): "S→I"}
    direction = scan.direction
    parts = []
    for axis, label in ((0, "columns"), (1, "rows"), (2, "slices")):
        column = direction[:, axis]
        world = int(np.argmax(np.abs(column)))
        parts.append(f"{label} {names[(world, 1 if column[world] > 0 else -1)]}")
    normal = int(np.argmax(np.abs(direction[:, 2])))
    plane = {0: "sagittal", 1: "coronal", 2: "axial"}[normal]
    oblique = "" if scan.geometry.is_axis_aligned else " (oblique)"
    return f"{plane}{oblique}: " + ", ".join(parts)


def _hits(findings: Sequence[Finding], annotations: Sequence[LunaNodule]) -> np.ndarray:
    """(references, findings) bool: the LUNA16 rule, a finding's centre within the nodule's radius."""
    from medcad.metrics.detection import hit_matrix

    if not findings or not annotations:
        return np.zeros((len(annotations), len(findings)), dtype=bool)
    return hit_matrix(list(annotations), list(findings))


def _img(view: views.PlaneView, alt: str, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return (f'<img{klass} src="data:image/png;base64,{_b64(view.png)}" width="{view.width}" '
            f'height="{view.height}" alt="{html.escape(alt)}">')


def write_report(path: Path, scan: Scan, findings: Sequence[Finding], masks: FindingMasks | None,
                 models: Sequence[ModelIdentity], annotations: Sequence[LunaNodule] = (), threshold: float | None = None,
                 title: str | None = None) -> ReportSummary:
    """Writes one self-contained HTML report of a scan's findings (atomically) and returns its summary line.

    Args:
        path: the ``.html`` file to write (its folder is created).
        scan: the scan the findings came from.
        findings: the reported findings, in table order (finding k is ``findings[k - 1]``).
        masks: the findings' voxels (label k = finding k; may cover fewer findings than given), or None.
        models: the models that ran (role, architecture, source, sha256).
        annotations: LUNA16 reference nodules of this scan, shown as hit or missed.
        threshold: the nodule probability threshold the findings passed (shown; None: not stated).
        title: the page's title (default "Nodule CAD report").
    Raises:
        InputError: ``path`` is a folder, or its folder cannot be created or written.
    """
    target = _check_target(path)
    findings = list(findings)
    annotations = list(annotations)
    if masks is not None and len(masks) > len(findings):
        raise MedcadError(f"{len(masks)} finding masks for {len(findings)} findings")
    hits = _hits(findings, annotations)
    document = _render(scan, findings, masks, list(models), annotations, hits, threshold, title or "Nodule CAD report")
    try:
        write_text_atomic(target, document)
    except OSError as error:
        raise InputError(target, f"cannot write the report ({error.strerror or error})") from error
    return ReportSummary(
        series_uid=scan.series_uid or "",
        path=target,
        n_findings=len(findings),
        top_nodule_prob=max((f.nodule_prob for f in findings), default=None),
        n_references=len(annotations),
        n_references_hit=int(hits.any(axis=1).sum()) if annotations else 0,
    )


def _render(scan: Scan, findings: list[Finding], masks: FindingMasks | None, models: list[ModelIdentity],
            annotations: list[LunaNodule], hits: np.ndarray, threshold: float | None, title: str) -> str:
    keep = [f.center_xyz for f in findings] + [a.center_xyz for a in annotations]
    viewer = viewer_volume(scan, keep)
    labels = _label_volume(viewer, scan, findings, masks)
    scan_nii = gzip.compress(nifti1_bytes(viewer.quantized(), viewer.geometry, VIEWER_STEP_HU, VIEWER_LOW_HU,
                                          "medcad report viewer volume"), compresslevel=1, mtime=0)
    labels_nii = gzip.compress(nifti1_bytes(labels, viewer.geometry, description="medcad findings"),
                               compresslevel=1, mtime=0)

    full = views.oriented(scan.hu, scan.direction, scan.spacing_xyz, scan.geometry.is_axis_aligned)
    reduced = views.oriented(viewer.hu, viewer.geometry.direction, viewer.geometry.spacing_xyz,
                             scan.geometry.is_axis_aligned)
    lungs = None if viewer.lungs is None else views.oriented(viewer.lungs, viewer.geometry.direction,
                                                               viewer.geometry.spacing_xyz).array
    finding_irc = [scan.xyz_to_irc(f.center_xyz) for f in findings]
    reference_hit = hits.any(axis=1) if len(annotations) else np.zeros(0, dtype=bool)
    marks = [views.OverviewMark(reduced.to_canonical(viewer.geometry.xyz_to_irc(f.center_xyz)),
                                (f.diameter_mm or 2 * _MARK_RADIUS_MM) / 2, str(k), "finding", k)
             for k, f in enumerate(findings, start=1)]
    marks += [views.OverviewMark(reduced.to_canonical(viewer.geometry.xyz_to_irc(a.center_xyz)), a.diameter_mm / 2,
                                 f"R{j}", "hit" if reference_hit[j - 1] else "missed")
              for j, a in enumerate(annotations, start=1)]
    overview = views.overview_image(reduced, lungs, marks)

    references_canonical = tuple(
        (full.to_canonical(scan.xyz_to_irc(a.center_xyz)), a.diameter_mm / 2, bool(reference_hit[j]))
        for j, a in enumerate(annotations))
    detail_cards = []
    for k, finding in enumerate(findings[:MAX_FINDING_VIEWS], start=1):
        points = None
        if masks is not None and k <= len(masks) and len(masks.voxels[k - 1]):
            source_points = np.stack(np.unravel_index(masks.voxels[k - 1], scan.shape_irc), axis=1)
            points = np.rint(full.to_canonical(source_points)).astype(np.int64)
        plane_views = views.finding_views(full, full.to_canonical(finding_irc[k - 1]), k, points, references_canonical)
        detail_cards.append(_detail_card(k, finding, finding_irc[k - 1], plane_views, hits[:, k - 1], scan))

    data = {
        "findings": [{"k": k, "xyz": [float(v) for v in f.center_xyz], "prob": f.nodule_prob,
                      "colour": list(views.PALETTE_RGB[(k - 1) % len(views.PALETTE_RGB)])}
                     for k, f in enumerate(findings, start=1)],
        "windows": {name: [resolve_window(name).low_hu, resolve_window(name).high_hu] for name in _VIEWER_WINDOWS},
        "hasLabels": bool(findings),
        "oblique": not scan.geometry.is_axis_aligned,
    }
    body = _page_body(scan, findings, models, annotations, hits, threshold, title, viewer, overview,
                      detail_cards, finding_irc)
    json_text = json.dumps(data).replace("</", "<\\/")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>{html.escape(title)} — {html.escape(scan.series_uid or 'scan')}</title>\n",
        f"<style>{_CSS}</style>\n</head>\n",
        body,
        f'<script type="application/json" id="medcad-data">{json_text}</script>\n',
        f'<script type="application/octet-stream" id="scan-nifti">{_b64(scan_nii)}</script>\n',
        f'<script type="application/octet-stream" id="labels-nifti">{_b64(labels_nii)}</script>\n',
        "<!-- niivue (BSD-2-Clause, Copyright (c) 2021, Niivue), vendored from @niivue/niivue -->\n",
        f"<script>{_niivue_bundle()}</script>\n",
        f"<script>{_JS}</script>\n</body>\n</html>\n",
    ])


def _summary_cards(scan: Scan, findings: list[Finding], models: list[ModelIdentity], annotations: list[LunaNodule],
                   hits: np.ndarray, threshold: float | None) -> str:
    e = html.escape
    spacing = scan.spacing_xyz
    shape = scan.shape_irc
    thickness = scan.metadata.get("SliceThickness")
    rows = [
        ("Series UID", f'<span class="mono">{e(scan.series_uid or "—")}</span>'),
        ("Matrix", f"{shape[2]} × {shape[1]} × {shape[0]} (columns × rows × slices)"),
        ("Orientation", e(_orientation(scan))),
        ("Voxel spacing", f"{spacing[0]:.3f} × {spacing[1]:.3f} × {spacing[2]:.3f} mm"),
        ("Slice thickness", f"{float(thickness):.2f} mm" if _is_number(thickness) else "—"),
        ("Field of view", "{:.0f} × {:.0f} × {:.0f} mm".format(*scan.geometry.extent_mm)),
    ]
    for key, label in METADATA_FIELDS:
        value = scan.metadata.get(key)
        if value not in (None, ""):
            rows.append((label, e(_plain_number(str(value)))))
    scan_card = "".join(f'<dt{" class=wide" if k in _WIDE_FACTS else ""}>{k}</dt><dd>{v}</dd>' for k, v in rows)
    top = max((f.nodule_prob for f in findings), default=None)
    stats = [("Findings", str(len(findings))), ("Top nodule probability", _fmt(top)),
             ("Threshold", _fmt(threshold, 2) if threshold is not None else "not stated")]
    if annotations:
        stats.append(("Reference nodules hit", f"{int(hits.any(axis=1).sum())} / {len(annotations)}"))
    stat_html = "".join(f'<div class="stat"><div class="value">{v}</div><div class="label">{k}</div></div>'
                        for k, v in stats)
    if models:
        model_rows = "".join(
            f"<tr><td>{e(m.role)}</td><td class=\"mono\">{e(m.architecture)}</td><td>{e(m.source)}</td>"
            f"<td class=\"mono sha\" title=\"{e(m.sha256)}\">{e(m.sha256[:16])}…</td></tr>" for m in models)
        model_html = (f'<table class="plain"><thead><tr><th>Role</th><th>Architecture</th><th>Source</th>'
                      f'<th>SHA-256</th></tr></thead><tbody>{model_rows}</tbody></table>')
    else:
        model_html = '<p class="muted">No model identities given.</p>'
    return (f'<section class="cards summary">'
            f'<div class="card"><h2>Scan</h2><dl class="facts">{scan_card}</dl></div>'
            f'<div class="card"><h2>Result</h2><div class="stats">{stat_html}</div>'
            f'<h3>Models</h3>{model_html}</div></section>')


_WIDE_FACTS = ("Series UID", "Matrix", "Orientation")


def _plain_number(text: str) -> str:
    """'360.000000' -> '360', '2.500000' -> '2.5'; other text as it is."""
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:g}" if math.isfinite(number) and abs(number) < 1e6 else text


def _is_number(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _findings_table(scan: Scan, findings: list[Finding], finding_irc: list[np.ndarray], annotations: list[LunaNodule],
                    hits: np.ndarray, threshold: float | None) -> str:
    voxel_mm3 = float(np.prod(scan.spacing_xyz))
    n_slices = scan.shape_irc[0]
    columns = [("#", "num"), ("Nodule p", "num"), ("Malignancy p", "num"), ("Diam. mm", "num"),
               ("Vol. mm³", "num"), ("Centre xyz mm", "num"), ("Centre irc", "num"), ("Slice", "num")]
    if annotations:
        columns.append(("LUNA16", "text"))
    head = "".join(f'<th data-sort="{kind}" scope="col">{name}</th>' for name, kind in columns)
    if not findings:
        level = f" ({_fmt(threshold, 2)})" if threshold is not None else ""
        body = ""
        note = f'<p class="empty">No findings above the threshold{level}.</p>'
    else:
        note = ""
        rows = []
        for k, (finding, irc) in enumerate(zip(findings, finding_irc), start=1):
            shown_irc = finding.center_irc if finding.center_irc is not None else irc
            volume = finding.voxel_count * voxel_mm3 if finding.voxel_count is not None else None
            slice_number = int(np.rint(irc[0])) + 1
            cells = [
                (k, f'<span class="swatch" style="background:{_colour_css(k)}"></span>{k}'),
                (finding.nodule_prob, _prob_cell(finding.nodule_prob)),
                (finding.malignancy_prob, _prob_cell(finding.malignancy_prob)),
                (finding.diameter_mm, _fmt(finding.diameter_mm, 1)),
                (volume, _fmt(volume, 0)),
                (finding.center_xyz[2], _triple(finding.center_xyz)),
                (shown_irc[0], _triple(shown_irc)),
                (slice_number, f"{slice_number} / {n_slices}"),
            ]
            if annotations:
                hit_refs = [f"R{j + 1}" for j in np.flatnonzero(hits[:, k - 1])]
                cells.append((1 if hit_refs else 0,
                              f'<span class="badge hit">hit {", ".join(hit_refs)}</span>' if hit_refs else
                              '<span class="muted">—</span>'))
            tds = "".join(f'<td data-value="{"" if v is None else v}">{text}</td>' for v, text in cells)
            hit_class = ' class="is-hit"' if annotations and hits[:, k - 1].any() else ""
            rows.append(f'<tr data-finding="{k}"{hit_class} tabindex="0" title="Show finding {k} in the viewer">{tds}</tr>')
        body = "".join(rows)
    hint = ('<p class="hint">Click a column header to sort; click a row to show the finding in the viewer.</p>'
            if findings else "")
    hidden = "" if findings else " hidden"
    return (f'<div class="card"><h2>Findings</h2>{note}{hint}<div class="table-wrap"{hidden}>'
            f'<table id="findings-table" class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'</div></div>')


def _prob_cell(value: float | None) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    return f'<span class="prob"><span style="width:{100 * value:.0f}%"></span></span>{value:.3f}'


def _references_table(findings: list[Finding], annotations: list[LunaNodule], hits: np.ndarray) -> str:
    if not annotations:
        return ""
    rows = []
    for j, nodule in enumerate(annotations, start=1):
        hit_by = [k + 1 for k in np.flatnonzero(hits[j - 1])]
        if findings:
            distances = [float(np.linalg.norm(np.subtract(f.center_xyz, nodule.center_xyz))) for f in findings]
            nearest = int(np.argmin(distances))
            nearest_text = f"{distances[nearest]:.1f} mm (finding {nearest + 1})"
        else:
            nearest_text = "—"
        status = (f'<span class="badge hit">hit by {", ".join(str(k) for k in hit_by)}</span>' if hit_by
                  else '<span class="badge missed">missed</span>')
        rows.append(f'<tr data-reference="{j}"><td>R{j}</td><td>{_triple(nodule.center_xyz)}</td>'
                    f'<td>{nodule.diameter_mm:.1f}</td><td>{status}</td><td>{nearest_text}</td></tr>')
    hit_count = int(hits.any(axis=1).sum())
    return (f'<div class="card"><h2>Reference nodules (LUNA16) <span class="count">{hit_count} / {len(annotations)} hit'
            f'</span></h2><p class="hint">A finding hits a reference nodule when its centre lies within the '
            f'nodule\'s radius (diameter / 2), the LUNA16 rule.</p><div class="table-wrap">'
            f'<table id="references-table" class="data plain-rows"><thead><tr><th>#</th><th>Centre xyz mm (LPS)</th>'
            f'<th>Diameter mm</th><th>Status</th><th>Nearest finding</th></tr></thead><tbody>{"".join(rows)}'
            f'</tbody></table></div></div>')


def _detail_card(k: int, finding: Finding, irc: np.ndarray, plane_views: list[views.PlaneView], hit_row: np.ndarray,
                 scan: Scan) -> str:
    facts = [f"nodule {finding.nodule_prob:.3f}"]
    if finding.malignancy_prob is not None:
        facts.append(f"malignancy {finding.malignancy_prob:.3f}")
    if finding.diameter_mm is not None:
        facts.append(f"{finding.diameter_mm:.1f} mm")
    facts.append(f"slice {int(np.rint(irc[0])) + 1} / {scan.shape_irc[0]}")
    badge = (f' <span class="badge hit">hit R{", R".join(str(j + 1) for j in np.flatnonzero(hit_row))}</span>'
             if hit_row.any() else "")
    figures = []
    for view in plane_views:
        if view.zoomed and not any("zoom" in f for f in figures):
            figures.append('<div class="sep"></div>')
        axis = {"axial": 2, "coronal": 1, "sagittal": 0}[view.plane]
        where = f'{"xyz"[axis]} {finding.center_xyz[axis]:.1f} mm'
        if view.plane == "axial" and scan.geometry.is_axis_aligned and abs(scan.direction[2, 2]) > 0.5:
            where += f" · slice {int(np.rint(irc[0])) + 1}"
        caption = (f"{view.plane.capitalize()} · {views.ZOOM_MM:g} mm crop" if view.zoomed
                   else f"{view.plane.capitalize()} · {where}")
        css = "zoom" if view.zoomed else "full"
        figures.append(f'<figure class="{css}">{_img(view, f"Finding {k}, {caption}")}<figcaption>{caption}'
                       f"</figcaption></figure>")
    return (f'<article class="card finding-card" id="finding-{k}"><header><h3><span class="swatch" '
            f'style="background:{_colour_css(k)}"></span>Finding {k}</h3><span class="facts-line">'
            f'{" · ".join(facts)}</span>{badge}<button type="button" class="goto" data-goto="{k}">Show in viewer'
            f'</button></header><div class="views">{"".join(figures)}</div>'
            f'<p class="caption">Centre {_triple(finding.center_xyz)} mm (LPS). Lung window '
            f"(-1000…400 HU); outline: the finding's segmented voxels in that plane; box: the crop.</p></article>")


def _page_body(scan: Scan, findings: list[Finding], models: list[ModelIdentity], annotations: list[LunaNodule],
               hits: np.ndarray, threshold: float | None, title: str, viewer: ViewerVolume,
               overview: views.PlaneView, detail_cards: list[str], finding_irc: list[np.ndarray]) -> str:
    from medcad import __version__

    e = html.escape
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    reduced_shape = viewer.hu.shape
    spacing = viewer.geometry.spacing_xyz
    low, high = views.MIP_WINDOW_HU
    overview_caption = (f"Coronal maximum-intensity projection of the lungs ({low:g}…{high:g} HU) over an average "
                        f"projection of the body (lung window)"
                        if viewer.lungs is not None and viewer.lungs.any()
                        else "Coronal average projection, lung window (no lungs found for a lung MIP)")
    legend = ('<span class="legend"><span class="ring"></span>finding (number)</span>'
              + ('<span class="legend"><span class="sq hit"></span>reference hit</span>'
                 '<span class="legend"><span class="sq missed"></span>reference missed</span>' if annotations else ""))
    more = ""
    if len(findings) > MAX_FINDING_VIEWS:
        more = (f'<p class="hint">Views are shown for the first {MAX_FINDING_VIEWS} findings; '
                f'the other {len(findings) - MAX_FINDING_VIEWS} are in the table and the viewer.</p>')
    details = (f'<section class="details"><h2 class="section">Findings in detail</h2>{more}{"".join(detail_cards)}'
               f'</section>' if detail_cards else "")
    window_buttons = "".join(
        f'<button type="button" class="win" data-window="{name}">{name.capitalize()}</button>' for name in _VIEWER_WINDOWS)
    return f"""<body>
<header class="top"><div><div class="kicker">medcad · computer-aided detection</div><h1>{e(title)}</h1></div>
<div class="meta"><div>Series <span class="mono">{e(scan.series_uid or "—")}</span></div>
<div>Generated {e(now)} · medcad {e(__version__)}</div></div></header>
<div class="notice">Research software: the findings are candidates for review by a qualified reader, not a diagnosis.</div>
<main>
{_summary_cards(scan, findings, models, annotations, hits, threshold)}
<section class="split">
<div class="col">
{_findings_table(scan, findings, finding_irc, annotations, hits, threshold)}
{_references_table(findings, annotations, hits)}
<div class="card overview"><h2>Overview</h2>{_img(overview, "Coronal overview with the findings numbered", "overview-img")}
<p class="caption">{overview_caption}. {legend}</p></div>
</div>
<div class="col viewer-col"><div class="card viewer-card"><h2>Viewer <span id="viewer-finding" class="count"></span></h2>
<div class="toolbar"><span class="group">Window {window_buttons}</span>
<span class="group"><button type="button" id="toggle-labels" aria-pressed="true">Findings overlay</button></span>
<span class="group"><button type="button" id="prev-finding">◀ Prev</button><button type="button" id="next-finding">Next ▶</button></span></div>
<div class="viewer-box"><canvas id="viewer-canvas"></canvas><div id="viewer-message" class="viewer-message" hidden></div></div>
<div id="viewer-status" class="status mono">Loading the viewer…</div>
<p class="caption">Scroll: change slice · click: move the crosshair · right-drag: adjust window. Viewer volume reduced for size:
{reduced_shape[2]} × {reduced_shape[1]} × {reduced_shape[0]} voxels of {spacing[0]:.2f} × {spacing[1]:.2f} × {spacing[2]:.2f} mm,
8 HU steps, outside the body blanked; the views below are at full resolution.</p></div></div>
</section>
{details}
<footer>LUNA16 hit rule: a finding's centre within a reference nodule's radius. Coordinates: world mm, patient LPS
(x to the patient's left, y posterior, z head); irc = (slice, row, column) voxel indices. Views in radiological convention.
Viewer: niivue (BSD-2-Clause, © 2021 Niivue), inlined; the page fetches nothing.</footer>
</main>
"""


_CSS = """
:root{--ink:#1b2333;--muted:#5d6778;--line:#dde2ea;--bg:#eef1f5;--card:#fff;--accent:#1f4e8c;--hit:#2e9e5b;--missed:#d9730d}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 "Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
.mono{font-family:"SFMono-Regular",Consolas,"Liberation Mono",Menlo,monospace;font-size:12px}
header.top{background:#14233c;color:#fff;padding:14px 28px 12px;display:flex;justify-content:space-between;align-items:flex-end;gap:24px;flex-wrap:wrap}
header.top h1{margin:2px 0 0;font-size:22px;font-weight:600;letter-spacing:.2px}
header.top .kicker{font-size:11px;text-transform:uppercase;letter-spacing:1.4px;color:#9fb3d1}
header.top .meta{font-size:12px;color:#c9d5e8;text-align:right}
header.top .meta .mono{color:#fff}
.notice{background:#fff6e0;border-bottom:1px solid #f0dfb0;color:#6b5310;padding:6px 28px;font-size:12.5px}
main{max-width:1480px;margin:0 auto;padding:18px 24px 32px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:14px 16px;margin-bottom:16px;box-shadow:0 1px 2px rgba(20,35,60,.05)}
.card h2,h2.section{margin:0 0 10px;font-size:13px;text-transform:uppercase;letter-spacing:1px;color:var(--accent);font-weight:700}
h2.section{margin:8px 0 12px}
.card h3{margin:14px 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.8px;color:var(--muted)}
.count{font-weight:600;color:var(--muted);text-transform:none;letter-spacing:0;margin-left:6px}
.cards.summary{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px}
.cards.summary .card{margin-bottom:0}
.cards.summary{margin-bottom:16px}
dl.facts{display:grid;grid-template-columns:max-content minmax(0,1fr) max-content minmax(0,1fr);gap:3px 14px;margin:0}
dl.facts dt.wide{grid-column:1}dl.facts dt.wide+dd{grid-column:span 3}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;white-space:nowrap}dl.facts dt.wide+dd{white-space:normal;overflow-wrap:anywhere}
a{color:var(--accent)}
.stats{display:flex;gap:10px;flex-wrap:wrap}
.stat{flex:1 1 120px;border:1px solid var(--line);border-radius:5px;padding:8px 10px;background:#f8fafc}
.stat .value{font-size:22px;font-weight:600;line-height:1.2}
.stat .label{font-size:11.5px;color:var(--muted)}
table{border-collapse:collapse;width:100%}
table.plain th,table.plain td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;font-size:12.5px}
table.plain th{color:var(--muted);font-weight:600}
.table-wrap{overflow-x:auto}
table.data th{position:sticky;top:0;background:#f3f5f9;color:#374258;font-weight:600;font-size:11.5px;text-align:right;padding:6px 6px;border-bottom:2px solid var(--line);white-space:nowrap;user-select:none}
table.data th[data-sort]{cursor:pointer}
table.data th[data-sort]:hover{background:#e7ebf2}
table.data th[aria-sort=ascending]::after{content:" ▲";font-size:9px}
table.data th[aria-sort=descending]::after{content:" ▼";font-size:9px}
table.data td{padding:5px 6px;border-bottom:1px solid #edf0f4;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums;font-size:12.5px}
table.data th:first-child,table.data td:first-child{text-align:left}
table.data tbody tr[data-finding]{cursor:pointer}
table.data tbody tr:hover{background:#f1f6ff}
table.data tbody tr.selected{background:#dbe8fb;box-shadow:inset 3px 0 0 var(--accent)}
table.data tbody tr.is-hit td:first-child{font-weight:600}
table.plain-rows td,table.plain-rows th{text-align:left}
.swatch{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;vertical-align:-1px;border:1px solid rgba(0,0,0,.25)}
.prob{display:inline-block;width:26px;height:6px;background:#e6eaf0;border-radius:3px;margin-right:6px;vertical-align:1px;overflow:hidden}
.prob>span{display:block;height:100%;background:var(--accent)}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:11.5px;font-weight:600}
.badge.hit{background:#e3f5ea;color:#1d7a44}.badge.missed{background:#fdeedd;color:#a4520a}
.muted{color:var(--muted)}
.hint{color:var(--muted);font-size:12px;margin:0 0 8px}
.empty{font-size:15px;font-weight:600;color:#374258;background:#f3f5f9;border:1px dashed #c8d0dc;border-radius:5px;padding:12px 14px;margin:0 0 10px}
.split{display:grid;grid-template-columns:minmax(0,1.12fr) minmax(0,1fr);gap:16px;align-items:start}
.viewer-col{position:sticky;top:10px}
.toolbar{display:flex;gap:14px;flex-wrap:wrap;align-items:center;margin-bottom:8px;font-size:12px;color:var(--muted)}
.toolbar .group{display:inline-flex;gap:4px;align-items:center}
button{font:inherit;font-size:12px;padding:3px 10px;border:1px solid #c5cdd9;border-radius:4px;background:#fff;color:var(--ink);cursor:pointer}
button:hover{background:#f0f4fa}button.active,button[aria-pressed=true]{background:var(--accent);border-color:var(--accent);color:#fff}
.viewer-box{position:relative;height:min(560px,72vh);min-height:380px;background:#0f1115;border-radius:4px;overflow:hidden}
.viewer-box canvas{width:100%;height:100%;display:block}
.viewer-message{position:absolute;inset:0;display:flex;align-items:center;justify-content:center;text-align:center;padding:24px;color:#ffd7a8;background:#1b1d22;font-size:14px}
.viewer-message[hidden]{display:none}
.status{margin-top:6px;color:var(--muted);min-height:18px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.caption{color:var(--muted);font-size:12px;margin:8px 0 0}
.overview{text-align:left}
.overview-img{display:block;max-width:100%;height:auto;margin:0 auto;background:#000;border-radius:3px}
.legend{display:inline-flex;align-items:center;gap:4px;margin-left:10px;white-space:nowrap}
.legend .ring{width:11px;height:11px;border:2px solid rgb(255,77,77);border-radius:50%}
.legend .sq{width:11px;height:11px;border:2px solid}.legend .sq.hit{border-color:rgb(46,204,113)}.legend .sq.missed{border-color:rgb(255,140,0)}
.finding-card header{display:flex;align-items:center;gap:12px;flex-wrap:wrap;margin-bottom:10px}
.finding-card h3{margin:0;font-size:15px;text-transform:none;letter-spacing:0;color:var(--ink)}
.finding-card .facts-line{color:var(--muted);font-variant-numeric:tabular-nums}
.finding-card .goto{margin-left:auto}
.views{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-end}
.views figure{margin:0;text-align:center;flex:0 0 auto}
.views img{display:block;height:220px;width:auto;max-width:100%;object-fit:contain;background:#000;border-radius:3px}
.views figure.zoom img{height:180px}
.views .sep{flex:0 0 1px;align-self:stretch;background:var(--line);margin:0 4px}
.views figcaption{font-size:11.5px;color:var(--muted);margin-top:3px}
footer{color:var(--muted);font-size:11.5px;border-top:1px solid var(--line);padding-top:10px;margin-top:8px}
@media (max-width:1100px){.split,.cards.summary{grid-template-columns:1fr}.viewer-col{position:static}.views{grid-template-columns:repeat(3,minmax(0,1fr))}}
@media print{.viewer-col,.toolbar{display:none}.split{grid-template-columns:1fr}body{background:#fff}}
"""

_JS = r"""
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('medcad-data').textContent);
  var findings = data.findings;
  var current = null;
  var state = { nv: null };

  function lpsToRas(p) { return [-p[0], -p[1], p[2]]; }

  // ---- sortable tables -------------------------------------------------------------------
  function cellValue(row, index) {
    var raw = row.cells[index].getAttribute('data-value');
    if (raw === null || raw === '' || raw === 'None') { return null; }
    var number = parseFloat(raw);
    return isNaN(number) ? raw : number;
  }
  function makeSortable(table) {
    if (!table) { return; }
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, index) {
      if (!th.hasAttribute('data-sort')) { return; }
      th.addEventListener('click', function () {
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(headers, function (other) { other.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var va = cellValue(a, index), vb = cellValue(b, index);
          if (va === null && vb === null) { return 0; }
          if (va === null) { return 1; }   // missing values last either way
          if (vb === null) { return -1; }
          var order = va < vb ? -1 : (va > vb ? 1 : 0);
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }
  makeSortable(document.getElementById('findings-table'));

  // ---- viewer ---------------------------------------------------------------------------
  function setStatus(text) { var el = document.getElementById('viewer-status'); if (el) { el.textContent = text; } }
  function showError(message) {
    document.body.dataset.viewerError = message;
    var box = document.getElementById('viewer-message');
    if (box) { box.textContent = message; box.hidden = false; }
    setStatus('Viewer unavailable; the tables and images of this report do not need it.');
    if (window.console && console.warn) { console.warn('medcad report: ' + message); }
  }
  function base64Buffer(id) {
    var text = document.getElementById(id).textContent.replace(/\s+/g, '');
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) { bytes[i] = binary.charCodeAt(i); }
    return bytes.buffer;
  }
  function labelColormap() {
    var cmap = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [''] };
    findings.forEach(function (f) {
      cmap.R.push(f.colour[0]); cmap.G.push(f.colour[1]); cmap.B.push(f.colour[2]); cmap.A.push(255);
      cmap.I.push(f.k); cmap.labels.push('finding ' + f.k);
    });
    return cmap;
  }
  function selectRow(k) {
    document.querySelectorAll('#findings-table tbody tr').forEach(function (row) {
      row.classList.toggle('selected', Number(row.getAttribute('data-finding')) === k);
    });
    var tag = document.getElementById('viewer-finding');
    if (tag) { tag.textContent = k ? ('· finding ' + k) : ''; }
  }
  function crosshairRAS() {
    var nv = state.nv;
    if (!nv) { return null; }
    var mm = nv.frac2mm(nv.scene.crosshairPos);
    return [mm[0], mm[1], mm[2]];
  }
  function crosshairMM() { var ras = crosshairRAS(); return ras ? lpsToRas(ras) : null; }
  function valuesAtCrosshair() {
    var nv = state.nv;
    if (!nv) { return null; }
    var vox = nv.frac2vox(nv.scene.crosshairPos, 0);  // both volumes share one grid
    var out = { voxelRAS: [vox[0], vox[1], vox[2]] };
    ['hu', 'label'].forEach(function (name, index) {
      if (index < nv.volumes.length) { out[name] = nv.volumes[index].getValue(vox[0], vox[1], vox[2]); }
    });
    return out;
  }
  function gotoFinding(k) {
    var finding = findings[k - 1];
    if (!finding) { return null; }
    current = k;
    selectRow(k);
    var nv = state.nv;
    if (nv) {
      nv.scene.crosshairPos = nv.mm2frac(lpsToRas(finding.xyz));
      nv.updateGLVolume();
      nv.drawScene();
    }
    setStatus('Finding ' + k + ' · p = ' + finding.prob.toFixed(3) + ' · ' +
              finding.xyz.map(function (v) { return v.toFixed(1); }).join(', ') + ' mm (LPS)');
    return finding.xyz.slice();
  }
  function setWindow(name) {
    var w = data.windows[name];
    var nv = state.nv;
    if (!w || !nv) { return; }
    nv.volumes[0].cal_min = w[0];
    nv.volumes[0].cal_max = w[1];
    nv.updateGLVolume();
    document.querySelectorAll('button.win').forEach(function (b) {
      b.classList.toggle('active', b.getAttribute('data-window') === name);
    });
  }
  window.medcadViewer = {
    nv: null, findings: findings, gotoFinding: gotoFinding, currentFinding: function () { return current; },
    crosshairMM: crosshairMM, crosshairRAS: crosshairRAS, valuesAtCrosshair: valuesAtCrosshair, setWindow: setWindow
  };

  document.querySelectorAll('#findings-table tbody tr[data-finding]').forEach(function (row) {
    row.addEventListener('click', function () { gotoFinding(Number(row.getAttribute('data-finding'))); });
    row.addEventListener('keydown', function (event) {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); gotoFinding(Number(row.getAttribute('data-finding'))); }
    });
  });
  document.querySelectorAll('button.goto').forEach(function (button) {
    button.addEventListener('click', function () {
      gotoFinding(Number(button.getAttribute('data-goto')));
      var card = document.querySelector('.viewer-card');
      if (card && card.scrollIntoView) { card.scrollIntoView({ behavior: 'smooth', block: 'center' }); }
    });
  });
  document.querySelectorAll('button.win').forEach(function (button) {
    button.addEventListener('click', function () { setWindow(button.getAttribute('data-window')); });
  });
  function step(delta) {
    if (!findings.length) { return; }
    var next = current === null ? (delta > 0 ? 1 : findings.length) : ((current - 1 + delta + findings.length) % findings.length) + 1;
    gotoFinding(next);
  }
  document.getElementById('prev-finding').addEventListener('click', function () { step(-1); });
  document.getElementById('next-finding').addEventListener('click', function () { step(1); });
  var toggle = document.getElementById('toggle-labels');
  toggle.addEventListener('click', function () {
    var nv = state.nv;
    if (!nv || nv.volumes.length < 2) { return; }
    var on = toggle.getAttribute('aria-pressed') !== 'true';
    toggle.setAttribute('aria-pressed', on ? 'true' : 'false');
    nv.setOpacity(1, on ? 0.55 : 0);
  });
  if (!findings.length) { toggle.disabled = true; document.getElementById('prev-finding').disabled = true; document.getElementById('next-finding').disabled = true; }

  async function start() {
    var probe = document.createElement('canvas');
    var gl = null;
    try { gl = probe.getContext('webgl2'); } catch (e) { gl = null; }
    if (!gl) { showError('The interactive viewer needs WebGL2, which this browser does not provide.'); return; }
    if (typeof niivue === 'undefined' || !niivue.Niivue) { showError('The viewer script did not load.'); return; }
    var lung = data.windows.lung;
    var nv = new niivue.Niivue({
      backColor: [0.06, 0.067, 0.082, 1], crosshairColor: [1, 0.82, 0.1, 1], crosshairWidth: 1,
      show3Dcrosshair: false, isColorbar: false, isOrientCube: false, isRadiologicalConvention: true,
      sagittalNoseLeft: true, multiplanarShowRender: niivue.SHOW_RENDER.NEVER, dragAndDropEnabled: false,
      multiplanarPadPixels: 4,
      logLevel: 'warn', isResizeCanvas: true
    });
    await nv.attachToCanvas(document.getElementById('viewer-canvas'));
    state.nv = nv;
    window.medcadViewer.nv = nv;
    var scan = await niivue.NVImage.loadFromUrl({ url: base64Buffer('scan-nifti'), name: 'scan.nii.gz',
      colormap: 'gray', cal_min: lung[0], cal_max: lung[1] });
    nv.addVolume(scan);
    if (data.hasLabels) {
      var labels = await niivue.NVImage.loadFromUrl({ url: base64Buffer('labels-nifti'), name: 'findings.nii.gz',
        opacity: 0.55 });
      labels.setColormapLabel(labelColormap());
      nv.addVolume(labels);
    }
    if (data.oblique) { nv.setSliceMM(true); }  // world-aligned planes; else niivue shows the voxel grid unrotated
    nv.setSliceType(nv.sliceTypeMultiplanar);
    setWindow('lung');
    nv.onLocationChange = function (location) {
      if (location && location.string) { setStatus(location.string); }
    };
    if (findings.length) { gotoFinding(1); } else { setStatus('No findings; scroll to browse the scan.'); }
    document.body.dataset.viewerReady = '1';
  }
  start().catch(function (error) { showError('The viewer could not start: ' + (error && error.message ? error.message : error)); });
})();
"""


# --------------------------------------------------------------------------------------------
# The batch index
# --------------------------------------------------------------------------------------------


def write_report_index(folder: Path, summaries: Sequence[ReportSummary]) -> Path:
    """Writes ``folder/index.html``: one line per report (relative link, findings, top probability, references hit)."""
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise InputError(root, "is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(root, f"cannot create the folder ({error.strerror or error})") from error
    target = root / "index.html"
    e = html.escape
    rows = []
    total_refs = sum(s.n_references for s in summaries)
    for summary in summaries:
        href = Path(os.path.relpath(Path(summary.path).resolve(), root.resolve())).as_posix()
        refs = f"{summary.n_references_hit} / {summary.n_references}" if summary.n_references else "—"
        rows.append(
            f'<tr><td><a href="{e(quote(href))}">{e(summary.series_uid or Path(summary.path).stem)}</a></td>'
            f'<td data-value="{summary.n_findings}">{summary.n_findings}</td>'
            f'<td data-value="{"" if summary.top_nodule_prob is None else summary.top_nodule_prob}">'
            f'{_fmt(summary.top_nodule_prob)}</td><td>{refs}</td></tr>')
    hit = sum(s.n_references_hit for s in summaries)
    totals = (f"{len(summaries)} scans · {sum(s.n_findings for s in summaries)} findings"
              + (f" · reference nodules hit {hit} / {total_refs}" if total_refs else ""))
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nodule CAD reports</title><style>{_CSS}</style></head><body>
<header class="top"><div><div class="kicker">medcad · computer-aided detection</div><h1>Nodule CAD reports</h1></div>
<div class="meta"><div>{e(totals)}</div></div></header>
<main><div class="card"><h2>Scans</h2><div class="table-wrap"><table id="index-table" class="data">
<thead><tr><th scope="col">Series</th><th scope="col">Findings</th><th scope="col">Top nodule prob.</th>
<th scope="col">References hit / total</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>
{'' if summaries else '<p class="empty">No reports.</p>'}</div></main></body></html>
"""
    try:
        write_text_atomic(target, document)
    except OSError as error:
        raise InputError(target, f"cannot write the index ({error.strerror or error})") from error
    return target
