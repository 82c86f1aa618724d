"""The models ``detect`` needs, loaded from one folder.

Layout of a models folder (each sub-folder a medcad model: ``model.json`` + ``model.safetensors``,
e.g. written by ``medcad models import-dlwpt``)::

    DIR/segmentation/   2D slice segmenter (preprocessing kind "slice_context"), required
    DIR/nodule/         nodule classifier on 3D crops (kind "crop3d"), required
    DIR/malignancy/     malignancy classifier on the same crops, optional
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from medcad.errors import InputError
from medcad.findings import ModelIdentity
from medcad.models.store import read_description
from medcad.pipeline.backends import Predictor, load_predictor

#: Sub-folder -> the preprocessing kind the stage needs.
ROLES = {"segmentation": "slice_context", "nodule": "crop3d", "malignancy": "crop3d"}


def model_identity(folder: str | Path, role: str) -> ModelIdentity:
    """The identity of the model stored in ``folder`` (hashes its weights file)."""
    from medcad.models.store import WEIGHTS_NAME

    root = Path(folder)
    description = read_description(root)
    digest = hashlib.sha256()
    with (root / WEIGHTS_NAME).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    provenance = description.provenance
    source = str(provenance.get("source") or provenance.get("trained_by") or root.name)
    return ModelIdentity(role, description.name, source, digest.hexdigest())


@dataclass(frozen=True)
class DetectModels:
    """Predictors for the three stages (malignancy optional), and which models they are."""

    segmentation: Predictor
    nodule: Predictor
    malignancy: Predictor | None = None
    identities: tuple[ModelIdentity, ...] = field(default_factory=tuple)

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
    loaded, identities = {}, []
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
        identities.append(model_identity(sub, role))
    if "malignancy" in loaded:
        crops = [loaded[role].description.preprocessing.get("crop_irc") for role in ("nodule", "malignancy")]
        if crops[0] != crops[1]:
            raise InputError(root / "malignancy", f"takes {crops[1]} crops, the nodule model {crops[0]}: "
                                                  "both classify the same crops")
    return DetectModels(**loaded, identities=tuple(identities))
