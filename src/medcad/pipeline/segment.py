"""Stage 1: per-slice segmentation of nodule-like voxels, then threshold + erosion.

As the book: each slice goes into the 2D U-Net with ``context_slices`` slices on each side as
channels (indices clamped at the volume ends, so the first slice sees itself repeated), HU clamped
to the model's range (rows / columns not divisible by the U-Net's pooling are padded with air);
the output probability map is thresholded (0.5) and eroded once with the
6-neighbour cross (voxels on the volume border never survive, as ``scipy.ndimage.binary_erosion``
with its default border value 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medcad.pipeline.backends import Predictor
from medcad.transforms.spatial import BoxIrc

#: Slices per inference call. One 512 x 512 slice is enough work to amortise a call (batches of 1
#: and 2 cost the same CPU time), and ONNX Runtime's buffers grow with the batch (about 0.15 GiB
#: per slice in flight; ``Predictor.map`` keeps ``2 * workers`` calls in flight).
SLICE_BATCH = 1


def context_batch(hu: np.ndarray, slice_indices: np.ndarray, context_slices: int,
                  hu_clamp: tuple[float, float]) -> np.ndarray:
    """The model input for some slices: (N, 2 * context + 1, rows, cols) float32, clamped HU."""
    offsets = np.arange(-context_slices, context_slices + 1)
    indices = np.clip(np.asarray(slice_indices)[:, None] + offsets[None, :], 0, hu.shape[0] - 1)
    batch = hu[indices].astype(np.float32)
    return np.clip(batch, hu_clamp[0], hu_clamp[1], out=batch)


@dataclass(frozen=True, eq=False)
class SliceWindows:
    """Per slice, the in-plane window the U-Net runs on: rows ``row_range[z]`` and columns
    ``col_range[z]`` (start, stop; stop excluded), int arrays (slices, 2). A slice whose window is
    empty is not run. Outside the windows :func:`segment` returns 0 / False."""

    row_range: np.ndarray
    col_range: np.ndarray

    @classmethod
    def whole(cls, shape_irc) -> "SliceWindows":
        """Every slice, all of it."""
        return cls.box(BoxIrc((0, 0, 0), tuple(shape_irc)), shape_irc[0])

    @classmethod
    def box(cls, box: BoxIrc, slice_count: int) -> "SliceWindows":
        """The same window on the box's slices, nothing elsewhere."""
        rows = np.zeros((slice_count, 2), dtype=np.int64)
        cols = np.zeros((slice_count, 2), dtype=np.int64)
        inside = slice(box.start_irc[0], box.stop_irc[0])
        rows[inside] = box.start_irc[1], box.stop_irc[1]
        cols[inside] = box.start_irc[2], box.stop_irc[2]
        return cls(rows, cols)

    @property
    def runs(self) -> np.ndarray:
        """Which slices have a non-empty window, bool (slices,)."""
        return (self.row_range[:, 1] > self.row_range[:, 0]) & (self.col_range[:, 1] > self.col_range[:, 0])

    def pixels(self) -> int:
        """Pixels the U-Net computes over all slices (before padding)."""
        return int(np.sum(np.diff(self.row_range, axis=1)[:, 0] * np.diff(self.col_range, axis=1)[:, 0] * self.runs))

    def chunks(self, batch_size: int) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
        """Consecutive slices with the same window, at most ``batch_size`` together: (indices, (r0, r1, c0, c1))."""
        chunks: list[tuple[list[int], tuple[int, int, int, int]]] = []
        for index in np.flatnonzero(self.runs):
            window = (*map(int, self.row_range[index]), *map(int, self.col_range[index]))
            last = chunks[-1] if chunks else None
            if last and last[1] == window and last[0][-1] == index - 1 and len(last[0]) < batch_size:
                last[0].append(int(index))
            else:
                chunks.append(([int(index)], window))
        return [(np.asarray(indices), window) for indices, window in chunks]


def segment(hu: np.ndarray, predictor: Predictor, batch_size: int = SLICE_BATCH, threshold: float | None = None,
            progress: Callable[[int, int], None] | None = None, core_threshold: float | None = None,
            region: SliceWindows | None = None) -> np.ndarray:
    """Nodule probability per voxel, (z, y, x) float32, from the 2D segmentation model.

    Args:
        hu: the scan's HU array (z, y, x).
        predictor: a segmentation model (``preprocessing.kind == "slice_context"``).
        batch_size: slices per inference call.
        threshold: when given, return ``prob > threshold`` (bool) instead, thresholded batch by
            batch so the float map never exists (a quarter of the memory).
        progress: called with (slices done, slices in all) after each batch.
        core_threshold: with ``threshold``, return a uint8 level map instead: 1 where
            ``prob > threshold``, 2 where also ``prob > core_threshold`` (see :func:`segment_masks`).
        region: run the model only in these windows (context slices still come from the whole
            scan; each window's start is moved back onto the pooling grid of the whole slice and
            the extra pixels dropped again); outside them the result is 0 / False.
    """
    preprocessing = predictor.description.preprocessing
    context = int(preprocessing.get("context_slices", 3))
    clamp = tuple(preprocessing.get("hu_clamp", (-1000.0, 1000.0)))
    levels = core_threshold is not None and threshold is not None
    result = np.zeros(hu.shape, dtype=np.float32 if threshold is None else np.uint8 if levels else bool)
    # The U-Net halves the size depth - 1 times: a window starts on that grid (shifted by a pixel,
    # the poolings see other windows and the U-Net answers differently everywhere) and its
    # rows / columns are padded up to a multiple with air.
    multiple = 2 ** (int(predictor.description.kwargs.get("depth", 3)) - 1)
    chunks = (region or SliceWindows.whole(hu.shape)).chunks(batch_size)

    def inputs(chunk) -> np.ndarray:
        indices, (r0, r1, c0, c1) = chunk
        view = hu[:, r0 - r0 % multiple:r1, c0 - c0 % multiple:c1]  # a view: no copy
        batch = context_batch(view, indices, context, clamp)
        padding = ((0, 0), (0, 0), (0, -view.shape[1] % multiple), (0, -view.shape[2] % multiple))
        return np.pad(batch, padding, constant_values=clamp[0]) if padding[2][1] or padding[3][1] else batch

    total, done = sum(len(indices) for indices, _ in chunks), 0
    for (indices, (r0, r1, c0, c1)), output in zip(chunks, predictor.map(inputs(chunk) for chunk in chunks)):
        prob = output[:, 0, r0 % multiple:r0 % multiple + r1 - r0, c0 % multiple:c0 % multiple + c1 - c0]
        if levels:
            result[indices, r0:r1, c0:c1] = (prob > threshold).astype(np.uint8) + (prob > core_threshold)
        else:
            result[indices, r0:r1, c0:c1] = prob if threshold is None else prob > threshold
        done += len(indices)
        if progress:
            progress(done, total)
    return result


#: Axes each erosion mode shrinks the mask along: the book's 3D cross, in-plane only (thick
#: slices, where a nodule spans one or two slices), or none (coarse grids, where a nodule is a
#: couple of voxels wide and one erosion would delete it).
EROSION_AXES = {"3d": (0, 1, 2), "2d": (1, 2), "none": ()}


def segment_masks(hu: np.ndarray, predictor: Predictor, threshold: float = 0.5, core_threshold: float | None = None,
                  erosion_iterations: int = 1, erosion: str = "3d",
                  progress: Callable[[int, int], None] | None = None,
                  region: SliceWindows | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The stage as ``detect`` runs it: the eroded mask ``prob > threshold`` and, when
    ``core_threshold`` is given, the equally eroded core mask ``prob > core_threshold``.

    The core splits components in grouping (:func:`medcad.pipeline.group.group`): a U-Net that
    also marks vessels joins a nodule to them at 0.5, and the joint centroid lands off the
    nodule; the nodule's own voxels are usually far more certain than the bridge. ``region``
    limits the model to windows (see :func:`segment`).
    """
    axes = erosion_axes(erosion)
    if core_threshold is None:
        return erode(segment(hu, predictor, threshold=threshold, progress=progress, region=region),
                     erosion_iterations, axes), None
    check_core_threshold(threshold, core_threshold)
    levels = segment(hu, predictor, threshold=threshold, core_threshold=core_threshold, progress=progress,
                     region=region)
    return erode(levels >= 1, erosion_iterations, axes), erode(levels >= 2, erosion_iterations, axes)


def check_core_threshold(threshold: float, core_threshold: float | None) -> None:
    """Refuses a core threshold outside [threshold, 1) (None: no split, always fine)."""
    if core_threshold is not None and not threshold <= core_threshold < 1:
        from medcad.errors import MedcadError

        raise MedcadError(f"the core threshold must lie in [{threshold:g}, 1) (the segmentation threshold and 1), "
                          f"got {core_threshold:g}")


def erosion_axes(mode: str) -> tuple[int, ...]:
    """The axes of an erosion mode (``3d``, ``2d`` or ``none``)."""
    if mode not in EROSION_AXES:
        from medcad.errors import MedcadError

        raise MedcadError(f"unknown erosion {mode!r}; choose one of {', '.join(EROSION_AXES)}")
    return EROSION_AXES[mode]


def threshold_mask(prob: np.ndarray, threshold: float = 0.5, erosion_iterations: int = 1,
                   erosion: str = "3d") -> np.ndarray:
    """``prob > threshold``, eroded ``erosion_iterations`` times with the cross of ``erosion``'s axes."""
    mask = prob > threshold
    return erode(mask, erosion_iterations, erosion_axes(erosion))


def erode(mask: np.ndarray, iterations: int = 1, axes: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """``iterations`` binary erosions of a boolean volume with the face-neighbour cross along ``axes``."""
    if not axes:
        return mask
    for _ in range(iterations):
        mask = erode_cross(mask, axes)
    return mask


def erode_cross(mask: np.ndarray, axes: tuple[int, ...] | None = None) -> np.ndarray:
    """One binary erosion with the cross of face neighbours along ``axes`` (default all); outside is False.

    Equal to ``scipy.ndimage.binary_erosion(mask)`` for all axes and several times faster: six shifted ANDs.
    """
    out = mask.copy()
    for axis in range(mask.ndim) if axes is None else axes:
        head = [slice(None)] * mask.ndim
        tail = [slice(None)] * mask.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        out[tuple(head)] &= mask[tuple(tail)]
        out[tuple(tail)] &= mask[tuple(head)]
        edge = [slice(None)] * mask.ndim
        for index in (0, -1):
            edge[axis] = index
            out[tuple(edge)] = False
    return out
