"""Models and scans for the pipeline tests: a hand-wired segmenter, tiny classifiers, the real checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medcad.io import Scan
from medcad.models import create
from medcad.models.store import ModelDescription, save_model

SEGMENTER_PREPROCESSING = {"kind": "slice_context", "context_slices": 3, "hu_clamp": [-1000.0, 1000.0],
                           "output": "sigmoid"}
CLASSIFIER_PREPROCESSING = {"kind": "crop3d", "crop_irc": [32, 48, 48], "hu_clamp": [-1000.0, 1000.0],
                            "output": "softmax", "positive_class": 1}
#: The hand-wired segmenter marks voxels brighter than this (HU).
BRIGHT_HU = 500


def bright_voxel_segmenter() -> torch.nn.Module:
    """A depth-1 U-Net wired to output sigmoid(10 * (hu / 1000) - 5): > 0.5 exactly above 500 HU.

    Only the centre slice (channel 3) counts, so results are easy to predict.
    """
    model = create("nodule_unet2d", depth=1, width=1, batch_norm=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                module.bias.zero_()
        model.encoder[0].conv1.weight[0, 3, 1, 1] = 1e-3
        model.encoder[0].conv2.weight[0, 0, 1, 1] = 1.0
        model.out_conv.weight.fill_(10.0)
        model.out_conv.bias.fill_(-5.0)
        model.input_norm.running_var.fill_(1.0 - model.input_norm.eps)  # the input norm is the identity
    return model.eval()


def tiny_classifier(seed: int) -> torch.nn.Module:
    """A small random nodule_cnn3d taking the book's 32 x 48 x 48 crop."""
    torch.manual_seed(seed)
    return create("nodule_cnn3d", width=2).eval()


def write_models(folder: Path, malignancy: bool = False) -> Path:
    """A models folder (segmentation/, nodule/, optional malignancy/) with the test networks."""
    save_model(folder / "segmentation", bright_voxel_segmenter(),
               ModelDescription("nodule_unet2d", {"depth": 1, "width": 1, "batch_norm": False}, SEGMENTER_PREPROCESSING))
    save_model(folder / "nodule", tiny_classifier(0), ModelDescription("nodule_cnn3d", {"width": 2}, CLASSIFIER_PREPROCESSING))
    if malignancy:
        save_model(folder / "malignancy", tiny_classifier(1),
                   ModelDescription("nodule_cnn3d", {"width": 2}, CLASSIFIER_PREPROCESSING))
    return folder


def import_book_models(dlwpt_dir: Path, folder: Path) -> Path:
    """The book's two real checkpoints imported as folder/segmentation and folder/nodule."""
    from medcad.models.dlwpt import import_book_checkpoint

    for source in sorted(dlwpt_dir.glob("*.state")):
        import_book_checkpoint(source, folder / ("segmentation" if source.name.startswith("seg_") else "nodule"))
    return folder


def scan_with_blobs(shape=(12, 40, 44), blobs=((6, 12, 14), (5, 28, 30)), radius=2.5, **geometry) -> Scan:
    """Air with soft tissue and bright spheres (800 HU) at ``blobs`` (irc); LPS geometry as given."""
    z, y, x = np.indices(shape)
    hu = np.full(shape, -900, dtype=np.int16)
    hu[:, 5:-5, 5:-5] = 40
    for centre in blobs:
        inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2
        hu[inside] = 800
    geometry = {"origin_xyz": (-100.0, 50.0, -300.0), "spacing_xyz": (0.7, 0.8, 2.5), **geometry}
    return Scan.from_array(hu, series_uid="1.2.3.test", **geometry)
