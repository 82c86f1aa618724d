"""Stage 3: classify candidates from 3D crops around their centres (nodule, then malignancy).

As the book: the crop (32 x 48 x 48 by default) is centred on the candidate's centre rounded to
the nearest voxel (start = centre - size // 2); near the volume border the window shifts to lie
inside the volume instead of being padded (``medcad.data.cache.crop_inside``, shared with
training). Where the scan is smaller than the crop along an axis (the book cannot handle that),
the crop starts at 0 and the missing part is air (-1000 HU). The probability is the softmax of
the positive class; with ``mirror_views`` it is the mean over the crop's eight mirror images
(test-time augmentation with the flips the book trains with).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from medcad.findings import Candidate
from medcad.pipeline.backends import Predictor, ordered_map

#: Crops per inference call: larger batches are no faster on the CPU and cost memory (ONNX
#: Runtime's 3D convolution unfolds 64 MB per crop in the first block).
CROP_BATCH = 8


def extract_crops(hu: np.ndarray, centers_irc: Sequence, crop_shape: Sequence[int],
                  hu_clamp: tuple[float, float]) -> np.ndarray:
    """Crops (N, 1, *crop_shape) float32 of clamped HU around each centre, the book's window."""
    from medcad.data.cache import crop_inside

    crops = np.empty((len(centers_irc), 1, *crop_shape), dtype=np.float32)
    for i, center in enumerate(centers_irc):
        crops[i, 0] = crop_inside(hu, center, crop_shape)[0]
    return np.clip(crops, hu_clamp[0], hu_clamp[1], out=crops)


#: The eight mirror images of a crop batch (N, 1, z, y, x): every subset of the three spatial axes.
MIRROR_AXES = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))


def softmax_positive(logits: np.ndarray, positive_class: int = 1) -> np.ndarray:
    """Softmax probability of one class from logits (N, classes), computed stably in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp[:, positive_class] / exp.sum(axis=1)


def classify(hu: np.ndarray, candidates: Sequence[Candidate], predictors: Sequence[Predictor],
             batch_size: int = CROP_BATCH, progress: Callable[[int, int], None] | None = None,
             mirror_views: bool = False) -> list[np.ndarray]:
    """Positive-class probabilities of each candidate under each classifier.

    The crops are cut once and every classifier sees the same batch, so a malignancy model costs
    one more forward pass and no more reading. All classifiers must take the same crop. With
    ``mirror_views`` each probability is the mean over the eight mirror images of the crop (eight
    times the work; the classifiers are trained with these flips, and the mean ranks candidates
    more steadily than one view).

    Returns:
        one float64 array (len(candidates),) per predictor.
    """
    if not predictors:
        return []
    preprocessing = predictors[0].description.preprocessing
    crop_shape = tuple(int(n) for n in preprocessing["crop_irc"])
    clamp = tuple(preprocessing.get("hu_clamp", (-1000.0, 1000.0)))
    for predictor in predictors[1:]:
        if tuple(predictor.description.preprocessing.get("crop_irc", ())) != crop_shape:
            raise ValueError("all classifiers in one pass must take the same crop size")
    centers_irc = [c.center_irc for c in candidates]
    chunks = [slice(first, min(first + batch_size, len(candidates))) for first in range(0, len(candidates), batch_size)]
    positives = [int(p.description.preprocessing.get("positive_class", 1)) for p in predictors]

    views = MIRROR_AXES if mirror_views else ((),)

    def score(crops: np.ndarray) -> list[np.ndarray]:
        return [np.mean([softmax_positive(p(np.ascontiguousarray(np.flip(crops, axes)) if axes else crops), positive)
                         for axes in views], axis=0)
                for p, positive in zip(predictors, positives)]

    results = [np.empty(len(candidates), dtype=np.float64) for _ in predictors]
    batches = (extract_crops(hu, centers_irc[chunk], crop_shape, clamp) for chunk in chunks)
    for chunk, scores in zip(chunks, ordered_map(score, batches, predictors[0].workers)):
        for result, probabilities in zip(results, scores):
            result[chunk] = probabilities
        if progress:
            progress(chunk.stop, len(candidates))
    return results
