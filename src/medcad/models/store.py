"""Saving and loading models safely: safetensors weights + a JSON description.

A model folder holds ``model.safetensors`` (the state dict) and ``model.json``::

    {"format": "medcad-model", "version": 1,
     "architecture": {"name": <registry name>, "kwargs": {...}},
     "preprocessing": {...},   # what the input must look like (e.g. HU clamp, crop shape)
     "provenance": {...},      # where the weights came from
     ...extra keys (metrics, class names, ...)}

Nothing here unpickles: weights load with safetensors, descriptions are JSON. Both files are
written atomically (weights first, so a description never points at missing weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medcad.errors import InputError
from medcad.io.atomic import atomic_path, write_text_atomic

WEIGHTS_NAME = "model.safetensors"
DESCRIPTION_NAME = "model.json"
FORMAT_NAME = "medcad-model"


@dataclass(frozen=True)
class ModelDescription:
    """What ``model.json`` says: how to rebuild the network and what it expects."""

    name: str
    kwargs: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        document = {"format": FORMAT_NAME, "version": 1,
                    "architecture": {"name": self.name, "kwargs": self.kwargs},
                    "preprocessing": self.preprocessing, "provenance": self.provenance}
        document.update(self.extra)
        return json.dumps(document, indent=2, sort_keys=False)


def save_model(folder: str | Path, model, description: ModelDescription) -> Path:
    """Writes ``model.safetensors`` and ``model.json`` into ``folder``; returns the folder."""
    from safetensors.torch import save_file

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(target / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    write_text_atomic(target / DESCRIPTION_NAME, description.to_json())
    return target


def read_description(folder: str | Path) -> ModelDescription:
    """Reads and checks ``model.json`` of a model folder."""
    path = Path(folder) / DESCRIPTION_NAME
    if not path.is_file():
        raise InputError(Path(folder), f"not a medcad model folder (no {DESCRIPTION_NAME})")
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT_NAME:
            raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT_NAME!r}")
        architecture = document["architecture"]
        extra = {k: v for k, v in document.items()
                 if k not in ("format", "version", "architecture", "preprocessing", "provenance")}
        description = ModelDescription(architecture["name"], dict(architecture.get("kwargs", {})),
                                       dict(document.get("preprocessing", {})), dict(document.get("provenance", {})),
                                       extra)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(path, f"malformed model description ({error})") from error
    from medcad.models.dlwpt import check_book_import

    check_book_import(description.kwargs, description.provenance, path)
    return description


def load_state_dict(path: str | Path) -> dict:
    """Loads a safetensors state dict; a clear error for a missing or corrupt file."""
    from safetensors.torch import load_file

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "weights file not found")
    try:
        return load_file(str(source))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InputError(source, f"corrupt or unreadable weights ({error})") from error


def load_model(folder: str | Path, map_location: str = "cpu"):
    """Rebuilds the network named in ``model.json`` and loads its weights (eval mode).

    Returns:
        (model, description)
    """
    from medcad.models.registry import create

    description = read_description(folder)
    model = create(description.name, **description.kwargs)
    state = load_state_dict(Path(folder) / WEIGHTS_NAME)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise InputError(Path(folder), f"weights do not fit the {description.name} architecture ({first})") from error
    model.to(map_location)
    model.eval()
    return model, description
