"""The nodule CAD as small stage functions (see ``docs/architecture.md``).

``detect(scan, load_detect_models(folder))`` runs them all: :func:`segment` (2D U-Net per slice
with context slices) -> :func:`threshold_mask` (0.5, one erosion) -> :func:`group` (connected
components, HU-weighted centres) -> :func:`classify` (3D crops; nodule and malignancy models in one
pass) -> ``Finding`` records.
"""

from medcad.pipeline.backends import load_predictor, resolve_backend
from medcad.pipeline.classify import classify, extract_crops
from medcad.pipeline.detect import Detection, detect
from medcad.pipeline.group import group, voxel_components, weighted_centroids
from medcad.pipeline.model_set import DetectModels, load_detect_models
from medcad.pipeline.segment import context_batch, segment, threshold_mask

__all__ = ["Detection", "DetectModels", "classify", "context_batch", "detect", "extract_crops",
           "group", "voxel_components", "load_detect_models", "load_predictor", "resolve_backend", "segment",
           "threshold_mask", "weighted_centroids"]
