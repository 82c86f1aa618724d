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


def segment(hu: np.ndarray, predictor: Predictor, batch_size: int = SLICE_BATCH, threshold: float | None = None,
            progress: Callable[[int, int], None] | None = None, core_threshold: float | None = None,
            region: BoxIrc | None = None) -> np.ndarray:
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
        region: run the model only on this box's slices and in-plane window (context slices
            still come from the whole scan; the window's start moved back onto the pooling grid);
            outside it the result is 0 / False.
    """
    preprocessing = predictor.description.preprocessing
    context = int(preprocessing.get("context_slices", 3))
    clamp = tuple(preprocessing.get("hu_clamp", (-1000.0, 1000.0)))
    levels = core_threshold is not None and threshold is not None
    result = np.zeros(hu.shape, dtype=np.float32 if threshold is None else np.uint8 if levels else bool)
    # The U-Net halves the size depth - 1 times.
    multiple = 2 ** (int(predictor.description.kwargs.get("depth", 3)) - 1)
    first, stop = (0, hu.shape[0]) if region is None else (region.start_irc[0], region.stop_irc[0])
    # A region starts on the pooling grid of the whole slice: shifted by a pixel, the max-poolings
    # see other windows and the U-Net answers differently everywhere.
    start_rc = (0, 0) if region is None else region.start_irc[1:]
    stop_rc = hu.shape[1:] if region is None else region.stop_irc[1:]
    skip_r, skip_c = (start % multiple for start in start_rc)
    hu = hu[:, start_rc[0] - skip_r:stop_rc[0], start_rc[1] - skip_c:stop_rc[1]]  # views: no copy
    out = result[:, start_rc[0]:stop_rc[0], start_rc[1]:stop_rc[1]]
    _, rows, cols = out.shape  # pad the window's rows / columns up to a multiple with air:
    padding = ((0, 0), (0, 0), (0, -hu.shape[1] % multiple), (0, -hu.shape[2] % multiple))

    def inputs(indices: np.ndarray) -> np.ndarray:
        batch = context_batch(hu, indices, context, clamp)
        return np.pad(batch, padding, constant_values=clamp[0]) if padding[2][1] or padding[3][1] else batch

    chunks = [np.arange(start, min(start + batch_size, stop)) for start in range(first, stop, batch_size)]
    for indices, output in zip(chunks, predictor.map(inputs(indices) for indices in chunks)):
        prob = output[:, 0, skip_r:skip_r + rows, skip_c:skip_c + cols]
        if levels:
            out[indices] = (prob > threshold).astype(np.uint8) + (prob > core_threshold)
        else:
            out[indices] = prob if threshold is None else prob > threshold
        if progress:
            progress(int(indices[-1]) + 1 - first, stop - first)
    return result


#: Axes each erosion mode shrinks the mask along: the book's 3D cross, in-plane only (thick
#: slices, where a nodule spans one or two slices), or none (coarse grids, where a nodule is a
#: couple of voxels wide and one erosion would delete it).
EROSION_AXES = {"3d": (0, 1, 2), "2d": (1, 2), "none": ()}


def segment_masks(hu: np.ndarray, predictor: Predictor, threshold: float = 0.5, core_threshold: float | None = None,
                  erosion_iterations: int = 1, erosion: str = "3d",
                  progress: Callable[[int, int], None] | None = None,
                  region: BoxIrc | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The stage as ``detect`` runs it: the eroded mask ``prob > threshold`` and, when
    ``core_threshold`` is given, the equally eroded core mask ``prob > core_threshold``.

    The core splits components in grouping (:func:`medcad.pipeline.group.group`): a U-Net that
    also marks vessels joins a nodule to them at 0.5, and the joint centroid lands off the
    nodule; the nodule's own voxels are usually far more certain than the bridge. ``region``
    limits the model to a box (see :func:`segment`).
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
