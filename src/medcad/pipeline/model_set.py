"""The models ``detect`` needs, loaded from one folder.

Layout of a models folder (each sub-folder a medcad model: ``model.json`` + ``model.safetensors``,
e.g. written by ``medcad models import-dlwpt``)::

    DIR/segmentation/   2D slice segmenter (preprocessing kind "slice_context"), required
    DIR/nodule/         nodule classifier on 3D crops (kind "crop3d"), required
    DIR/malignancy/     malignancy classifier on the same crops, optional
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medcad.errors import InputError
from medcad.models.store import read_description
from medcad.pipeline.backends import Predictor, load_predictor

#: Sub-folder -> the preprocessing kind the stage needs.
ROLES = {"segmentation": "slice_context", "nodule": "crop3d", "malignancy": "crop3d"}


@dataclass(frozen=True)
class DetectModels:
    """Predictors for the three stages (malignancy optional)."""

    segmentation: Predictor
    nodule: Predictor
    malignancy: Predictor | None = None

    @property
    def backend(self) -> str:
        """Which backend runs which model, e.g. ``"segmentation onnx, nodule torch"``."""
        roles = {"segmentation": self.segmentation, "nodule": self.nodule, "malignancy": self.malignancy}
        return ", ".join(f"{role} {p.backend}" for role, p in roles.items() if p is not None)


def load_detect_models(folder: str | Path, backend: str = "auto", device: str | None = None,
                       threads: int | None = None) -> DetectModels:
    """Loads ``segmentation``, ``nodule`` and, when present, ``malignancy`` from ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "models folder not found (expected segmentation/ and nodule/ inside; "
                               "create them with `medcad models import-dlwpt`)")
    loaded = {}
    for role, kind in ROLES.items():
        sub = root / role
        if not sub.exists():
            if role == "malignancy":
                continue
            raise InputError(root, f"no {role}/ model in the models folder")
        description = read_description(sub)
        found = description.preprocessing.get("kind")
        if found != kind:
            raise InputError(sub, f"{description.name} is not a {role} model "
                                  f"(its input is {found!r}, the {role} stage needs {kind!r})")
        loaded[role] = load_predictor(sub, backend=backend, device=device, threads=threads)
    if "malignancy" in loaded:
        crops = [loaded[role].description.preprocessing.get("crop_irc") for role in ("nodule", "malignancy")]
        if crops[0] != crops[1]:
            raise InputError(root / "malignancy", f"takes {crops[1]} crops, the nodule model {crops[0]}: "
                                                  "both classify the same crops")
    return DetectModels(**loaded)
