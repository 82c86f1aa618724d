"""Static PNG views of a nodule CAD report: planes through each finding and a coronal overview.

Every view is drawn in the *radiological* display convention from the scan's exact geometry:
axial (patient's right on the image's left, anterior up), coronal (right on the left, head up),
sagittal (anterior on the left, head up). Pixels are square in millimetres (the planes are
resampled from the voxel spacing), so shapes keep their true aspect. Each view carries a
labelled scale bar and orientation letters; a finding's mask is drawn as its outline in that
plane.

Images are palette PNGs (240 grey levels in the lung window + a few overlay colours): a third the
size of RGB for the same picture. They are drawn with Pillow (matplotlib's own image backend),
without a figure, so a report of many findings stays fast.

Scans whose axes are not aligned with the patient axes (oblique) are shown along the nearest
patient axes; the views are then approximately, not exactly, axial / coronal / sagittal.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medcad.transforms.intensity import apply_window

__all__ = ["OrientedVolume", "oriented", "PlaneView", "finding_views", "overview_image", "PALETTE_RGB",
           "FULL_VIEW_PX", "ZOOM_MM", "ZOOM_PX", "png_bytes"]

#: Longest side of a whole-plane view, in pixels.
FULL_VIEW_PX = 256
#: Side of the zoomed crop around a finding (mm) and its size in pixels.
ZOOM_MM = 40.0
ZOOM_PX = 180
#: Longest side of the overview, in pixels.
OVERVIEW_PX = 520

#: Finding colours (label k uses PALETTE_RGB[(k - 1) % len]); the same in the viewer and the tables.
PALETTE_RGB = (
    (255, 77, 77), (255, 212, 0), (77, 210, 255), (124, 252, 0), (255, 102, 255), (255, 153, 0),
    (0, 255, 200), (180, 140, 255), (255, 130, 170), (200, 255, 120),
)
#: Reference (LUNA16) nodule colours: hit and missed.
HIT_RGB = (46, 204, 113)
MISSED_RGB = (255, 140, 0)
_GREY_LEVELS = 240
# Drawing happens on an 8-bit grey canvas whose values are the palette indices: 0..239 grey (so text
# can be antialiased between black 0 and white 239), 240.. flat overlay colours (never blended).
_WHITE, _BLACK = _GREY_LEVELS - 1, 0
_BOX, _HIT, _MISSED = 242, 243, 244
_FINDING0 = 245  # palette indices 245.. are the finding colours


def _palette() -> list[int]:
    grey = [int(round(v * 255 / (_GREY_LEVELS - 1))) for v in range(_GREY_LEVELS)]
    colours = [(255, 255, 255), (0, 0, 0), (255, 230, 90), HIT_RGB, MISSED_RGB, *PALETTE_RGB]
    flat = [c for g in grey for c in (g, g, g)] + [c for rgb in colours for c in rgb]
    return flat + [0] * (768 - len(flat))


def finding_colour_index(label: int) -> int:
    return _FINDING0 + (label - 1) % len(PALETTE_RGB)


@dataclass(frozen=True, eq=False)
class OrientedVolume:
    """A scan's array seen with its axes along the patient axes (z, y, x of LPS, all increasing).

    Attributes:
        array: a view (no copy) of the HU array, transposed and flipped so index 0 runs along
            +z (feet to head), index 1 along +y (anterior to posterior), index 2 along +x (right to left).
        spacing_zyx: voxel size (mm) along those three axes.
        source_axes: for each of them, the source array axis (0, 1, 2 = i, r, c).
        flipped: for each of them, whether the source axis runs the other way.
        aligned: False for an oblique scan (the axes are then the nearest patient axes).
    """

    array: np.ndarray
    spacing_zyx: np.ndarray
    source_axes: tuple[int, int, int]
    flipped: tuple[bool, bool, bool]
    source_shape: tuple[int, int, int]
    aligned: bool

    def to_canonical(self, points_irc) -> np.ndarray:
        """Source voxel indices (irc, (3,) or (N, 3), fractional allowed) -> indices in ``array``."""
        points = np.asarray(points_irc, dtype=np.float64)
        single = points.ndim == 1
        points = points.reshape(-1, 3)
        out = np.empty_like(points)
        for canonical, (axis, flip) in enumerate(zip(self.source_axes, self.flipped)):
            values = points[:, axis]
            out[:, canonical] = (self.source_shape[axis] - 1 - values) if flip else values
        return out[0] if single else out


def oriented(hu: np.ndarray, direction: np.ndarray, spacing_xyz, aligned: bool | None = None) -> OrientedVolume:
    """The patient-axis view of an array (z, y, x) with the given direction matrix and spacing."""
    direction = np.asarray(direction, dtype=np.float64)
    spacing_xyz = np.asarray(spacing_xyz, dtype=np.float64)
    axes = [0, 1, 2]
    flips = [False, False, False]
    world_of_array = [int(np.argmax(np.abs(direction[:, 2 - a]))) for a in range(3)]
    if sorted(world_of_array) != [0, 1, 2]:  # strongly oblique: keep the array as it is
        world_of_array = [2, 1, 0]
        is_aligned = False
    else:
        is_aligned = bool(np.allclose(np.abs(direction).round(), np.abs(direction), atol=1e-4))
        for a, world in enumerate(world_of_array):
            canonical = 2 - world
            axes[canonical] = a
            flips[canonical] = bool(direction[world, 2 - a] < 0)
    view = np.transpose(hu, axes)
    index = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    view = view[index]
    spacing = np.asarray([spacing_xyz[2 - a] for a in axes], dtype=np.float64)
    return OrientedVolume(view, spacing, tuple(axes), tuple(flips), tuple(hu.shape),
                          is_aligned if aligned is None else aligned)


@dataclass(frozen=True)
class PlaneView:
    """One PNG view: the image bytes, its size, the plane's name and what it shows."""

    plane: str
    png: bytes
    width: int
    height: int
    mm_per_pixel: float
    zoomed: bool
    slice_index: int


# Plane layout in the oriented array (z, y, x): which axis is fixed, which run along rows / columns,
# whether rows are flipped (head up), and the orientation letters (left, right, top, bottom).
_PLANES = {
    "axial": (0, 1, 2, False, ("R", "L", "A", "P")),
    "coronal": (1, 0, 2, True, ("R", "L", "S", "I")),
    "sagittal": (2, 0, 1, True, ("A", "P", "S", "I")),
}


def _plane_data(volume: OrientedVolume, plane: str, fixed_index: int) -> np.ndarray:
    fixed, row_axis, col_axis, flip_rows, _ = _PLANES[plane]
    index = [slice(None)] * 3
    index[fixed] = int(fixed_index)
    data = volume.array[tuple(index)]
    if row_axis > col_axis:
        data = data.T
    return data[::-1] if flip_rows else data


def _sample(data: np.ndarray, rows: np.ndarray, cols: np.ndarray, order: int, fill: float) -> np.ndarray:
    """Samples a 2D array at the grid rows x cols (fractional indices), linear or nearest."""
    from scipy.ndimage import map_coordinates

    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(np.asarray(data, dtype=np.float32), [rr, cc], order=order, mode="constant",
                           cval=fill, prefilter=False)


def _grid(volume: OrientedVolume, plane: str, centre: np.ndarray, zoom: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Fractional (row, column) indices of the display pixels in the plane's data, and mm/pixel."""
    fixed, row_axis, col_axis, flip_rows, _ = _PLANES[plane]
    shape = volume.array.shape
    row_mm, col_mm = volume.spacing_zyx[row_axis], volume.spacing_zyx[col_axis]
    n_rows, n_cols = shape[row_axis], shape[col_axis]
    centre_row = (n_rows - 1 - centre[row_axis]) if flip_rows else centre[row_axis]
    centre_col = centre[col_axis]
    if zoom:
        pixel = ZOOM_MM / ZOOM_PX
        offsets = (np.arange(ZOOM_PX) - (ZOOM_PX - 1) / 2) * pixel
        return centre_row + offsets / row_mm, centre_col + offsets / col_mm, pixel
    height_mm, width_mm = n_rows * row_mm, n_cols * col_mm
    pixel = max(height_mm, width_mm) / FULL_VIEW_PX
    out_rows = max(1, int(round(height_mm / pixel)))
    out_cols = max(1, int(round(width_mm / pixel)))
    rows = ((np.arange(out_rows) + 0.5) * pixel) / row_mm - 0.5
    cols = ((np.arange(out_cols) + 0.5) * pixel) / col_mm - 0.5
    return rows, cols, pixel


def _grey(hu: np.ndarray, window) -> np.ndarray:
    return np.rint(apply_window(hu, window) * (_GREY_LEVELS - 1)).astype(np.uint8)


def _outline(mask: np.ndarray, thick: bool = False) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    edge = mask & ~inner
    if thick:
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text(draw, xy, text: str, size: int, anchor: str = "la", fill: int = _WHITE) -> None:
    """Text with a dark drop shadow; antialiased in grey, aliased in an overlay colour (no blending)."""
    font = _font(size)
    x, y = xy
    draw.fontmode = "L"
    draw.text((x + 1, y + 1), text, font=font, fill=_BLACK, anchor=anchor)
    draw.fontmode = "L" if fill < _GREY_LEVELS else "1"
    draw.text((x, y), text, font=font, fill=fill, anchor=anchor)
    draw.fontmode = "L"


def _scale_bar(draw, width: int, height: int, mm_per_pixel: float, length_mm: float) -> None:
    length = int(round(length_mm / mm_per_pixel))
    x0, y1 = 8, height - 9
    draw.rectangle((x0 - 1, y1 - 4, x0 + length + 1, y1 + 1), fill=_BLACK)
    draw.rectangle((x0, y1 - 3, x0 + length, y1), fill=_WHITE)
    _text(draw, (x0 + length / 2, y1 - 6), f"{length_mm:g} mm", 11, anchor="md")


def _letters(draw, width: int, height: int, letters: tuple[str, str, str, str]) -> None:
    left, right, top, bottom = letters
    _text(draw, (4, height / 2), left, 12, anchor="lm")
    _text(draw, (width - 4, height / 2), right, 12, anchor="rm")
    _text(draw, (width / 2, 3), top, 12, anchor="mt")
    _text(draw, (width / 2, height - 3), bottom, 12, anchor="mb")


def png_bytes(canvas) -> bytes:
    """The grey canvas (values = palette indices) as a palette PNG."""
    from PIL import Image

    image = Image.frombytes("P", canvas.size, canvas.tobytes())
    image.putpalette(_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _canvas(grey: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8), mode="L")


def finding_views(volume: OrientedVolume, centre: np.ndarray, label: int, mask_points: np.ndarray | None,
                  references: tuple[tuple[np.ndarray, float, bool], ...] = (), window="lung") -> list[PlaneView]:
    """Axial, coronal and sagittal views through a finding, whole plane then zoomed crop.

    Args:
        volume: the oriented scan.
        centre: the finding's centre as fractional indices in ``volume.array``.
        label: the finding's number (its colour).
        mask_points: the finding's voxels as (N, 3) integer indices in ``volume.array`` (or None).
        references: reference nodules to circle in the crops: (centre indices, radius mm, hit).
    Returns:
        six views: axial, coronal, sagittal whole planes, then the three crops.
    """
    from PIL import ImageDraw

    centre = np.asarray(centre, dtype=np.float64)
    shape = np.asarray(volume.array.shape)
    nearest = np.clip(np.rint(centre).astype(int), 0, shape - 1)
    colour = finding_colour_index(label)
    views = []
    for zoom in (False, True):
        for plane, (fixed, row_axis, col_axis, flip_rows, letters) in _PLANES.items():
            data = _plane_data(volume, plane, nearest[fixed])
            rows, cols, pixel = _grid(volume, plane, centre, zoom)
            grey = _grey(_sample(data, rows, cols, 1, -1024.0), window)
            if mask_points is not None and len(mask_points):
                in_plane = mask_points[mask_points[:, fixed] == nearest[fixed]]
                if len(in_plane):
                    mask2d = np.zeros(data.shape, dtype=np.float32)
                    r = in_plane[:, row_axis]
                    mask2d[(shape[row_axis] - 1 - r) if flip_rows else r, in_plane[:, col_axis]] = 1.0
                    shown = _sample(mask2d, rows, cols, 1 if zoom else 0, 0.0) >= 0.5
                    grey[_outline(shown, thick=not zoom)] = colour
            image = _canvas(grey)
            draw = ImageDraw.Draw(image)
            height, width = grey.shape
            centre_row = (shape[row_axis] - 1 - centre[row_axis]) if flip_rows else centre[row_axis]
            if zoom:
                for ref_centre, radius, hit in references:
                    distance = abs(ref_centre[fixed] - centre[fixed]) * volume.spacing_zyx[fixed]
                    if distance >= radius:
                        continue
                    in_plane_radius = float(np.sqrt(radius**2 - distance**2)) / pixel
                    ref_row = (shape[row_axis] - 1 - ref_centre[row_axis]) if flip_rows else ref_centre[row_axis]
                    y = (ref_row - rows[0]) * volume.spacing_zyx[row_axis] / pixel + 0.5
                    x = (ref_centre[col_axis] - cols[0]) * volume.spacing_zyx[col_axis] / pixel + 0.5
                    draw.ellipse((x - in_plane_radius, y - in_plane_radius, x + in_plane_radius, y + in_plane_radius),
                                 outline=_HIT if hit else _MISSED, width=1)
                mid = ZOOM_PX / 2
                for sign in (-1, 1):  # centre ticks, leaving the finding itself free
                    draw.line((mid + sign * 0.42 * ZOOM_PX, mid, mid + sign * 0.30 * ZOOM_PX, mid), fill=_BOX, width=1)
                    draw.line((mid, mid + sign * 0.42 * ZOOM_PX, mid, mid + sign * 0.30 * ZOOM_PX), fill=_BOX, width=1)
                _scale_bar(draw, width, height, pixel, 10.0)
            else:
                y = ((centre_row + 0.5) * volume.spacing_zyx[row_axis]) / pixel
                x = ((centre[col_axis] + 0.5) * volume.spacing_zyx[col_axis]) / pixel
                half = ZOOM_MM / 2 / pixel
                draw.rectangle((x - half, y - half, x + half, y + half), outline=_BOX, width=1)
                _scale_bar(draw, width, height, pixel, 50.0 if width * pixel >= 120 else 10.0)
            _letters(draw, width, height, letters)
            views.append(PlaneView(plane, png_bytes(image), width, height, pixel, zoom, int(nearest[fixed])))
    return views


@dataclass(frozen=True)
class OverviewMark:
    """Something to circle on the overview: centre (indices in the oriented array), radius mm, text, kind."""

    centre: np.ndarray
    radius_mm: float
    text: str
    kind: str  # "finding" (then label is its colour), "hit" or "missed" (a reference nodule)
    label: int = 0


#: Window of the lungs' MIP: parenchyma (about -850 HU) nearly black, vessels and nodules bright.
MIP_WINDOW_HU = (-950.0, 250.0)


def overview_image(volume: OrientedVolume, lungs: np.ndarray | None, marks: list[OverviewMark],
                   window="lung") -> PlaneView:
    """A coronal projection with every finding and reference circled and numbered.

    With ``lungs`` (bool, the oriented array's shape): a maximum-intensity projection of the
    lungs, eroded by a voxel so the chest wall and diaphragm do not shine through, in
    :data:`MIP_WINDOW_HU` (the vessel tree and nodules stand out), over a faint average
    projection of the body (``window``) for context. Without: the average projection alone.
    """
    from PIL import ImageDraw
    from scipy.ndimage import binary_erosion

    hu = volume.array
    average = apply_window(hu, window).mean(axis=1)  # (z, x) in [0, 1]
    inner = binary_erosion(lungs, iterations=1) if lungs is not None else None
    if inner is not None and inner.any():
        lung_values = np.where(inner, apply_window(hu, MIP_WINDOW_HU), 0.0).max(axis=1)
        picture = np.maximum(lung_values, 0.45 * average)
    else:
        picture = average
    picture = picture[::-1]  # head up
    row_mm, col_mm = volume.spacing_zyx[0], volume.spacing_zyx[2]
    height_mm, width_mm = picture.shape[0] * row_mm, picture.shape[1] * col_mm
    pixel = max(height_mm, width_mm) / OVERVIEW_PX
    rows = ((np.arange(max(1, int(round(height_mm / pixel)))) + 0.5) * pixel) / row_mm - 0.5
    cols = ((np.arange(max(1, int(round(width_mm / pixel)))) + 0.5) * pixel) / col_mm - 0.5
    shown = _sample(picture, rows, cols, 1, 0.0)
    grey = np.rint(np.clip(shown, 0, 1) * (_GREY_LEVELS - 1)).astype(np.uint8)
    image = _canvas(grey)
    draw = ImageDraw.Draw(image)
    height, width = grey.shape
    n_z = hu.shape[0]
    for mark in sorted(marks, key=lambda m: m.kind == "finding"):  # findings drawn over references
        y = ((n_z - 1 - mark.centre[0]) + 0.5) * row_mm / pixel
        x = (mark.centre[2] + 0.5) * col_mm / pixel
        radius = max(mark.radius_mm / pixel, 6.0) + 3
        if mark.kind == "finding":
            fill = finding_colour_index(mark.label)
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=fill, width=2)
            _text(draw, (x + radius * 0.75 + 2, y - radius * 0.75 - 1), mark.text, 14, anchor="ld", fill=fill)
        else:
            fill = _HIT if mark.kind == "hit" else _MISSED
            radius += 5
            draw.rectangle((x - radius, y - radius, x + radius, y + radius), outline=fill, width=1)
            _text(draw, (x - radius - 2, y + radius + 1), mark.text, 12, anchor="rt", fill=fill)
    _scale_bar(draw, width, height, pixel, 50.0 if width * pixel >= 120 else 10.0)
    _letters(draw, width, height, ("R", "L", "S", "I"))
    return PlaneView("coronal", png_bytes(image), width, height, pixel, False, -1)
