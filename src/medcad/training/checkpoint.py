"""Training checkpoints without pickles: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``checkpoints/epoch-NNNN/`` holding

- ``model.safetensors`` (+ ``model.json`` when the task gives a model description, so the folder
  loads with :func:`medcad.models.store.load_model`);
- ``training_state.safetensors``: every other tensor (optimiser moments, EMA weights, grad scaler);
- ``training_state.json``: epoch, optimiser / scheduler / early-stopping state with tensors replaced
  by references into the safetensors file, the history, the resolved config and task extras.

The folder is written under a temporary name and renamed into place, then the ``latest`` pointer
file is rewritten atomically, so a crash leaves the previous checkpoint intact. Nothing is
unpickled on load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcad.errors import InputError
from medcad.io.atomic import write_text_atomic

MODEL_WEIGHTS = "model.safetensors"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
LATEST = "latest"
FORMAT_NAME = "medcad-checkpoint"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


@dataclass(frozen=True, eq=False)
class TrainingState:
    """Everything that resumes a run at an epoch boundary.

    ``epoch`` counts completed epochs; ``model`` is the raw (not averaged) state dict; ``ema`` the
    averaged weights when an EMA is kept; ``best`` holds ``epoch`` and ``score`` of the best epoch.
    """

    epoch: int
    model: dict
    optimizer: dict
    scheduler: dict | None = None
    scaler: dict | None = None
    ema: dict | None = None
    early_stopping: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def split_tensors(tree: Any, prefix: str = "") -> tuple[Any, dict]:
    """Replaces every tensor in a nested structure by ``{"__tensor__": key}``; returns (JSON tree, tensors).

    Dicts with non-string keys (an optimiser's per-parameter state) and tuples are tagged so that
    :func:`join_tensors` restores them exactly.
    """
    import torch

    tensors: dict = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            key = path or "tensor"
            tensors[key] = node.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(node, Mapping):
            if all(isinstance(k, str) for k in node):
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
            return {"__items__": [[k, walk(v, f"{path}.{k}" if path else str(k))] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        return node

    return walk(tree, prefix), tensors


def join_tensors(tree: Any, tensors: Mapping) -> Any:
    """The inverse of :func:`split_tensors`."""
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__items__"}:
            return {k: join_tensors(v, tensors) for k, v in tree["__items__"]}
        if set(tree) == {"__tuple__"}:
            return tuple(join_tensors(v, tensors) for v in tree["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_tensors(v, tensors) for v in tree]
    return tree


def _state_document(state: TrainingState) -> tuple[dict, dict]:
    parts = {"optimizer": state.optimizer, "scheduler": state.scheduler, "scaler": state.scaler,
             "ema": state.ema, "early_stopping": state.early_stopping}
    tree, tensors = split_tensors(parts)
    document = {"format": FORMAT_NAME, "version": 1, "epoch": state.epoch, **tree, "best": state.best,
                "history": state.history, "config": state.config, "extra": state.extra}
    return document, tensors


def _write_folder(folder: Path, state: TrainingState, description) -> None:
    from safetensors.torch import save_file

    from medcad.models.store import DESCRIPTION_NAME

    document, tensors = _state_document(state)
    try:
        text = json.dumps(document, indent=1)
    except TypeError as error:
        raise InputError(folder, f"training state is not serialisable without pickles ({error})") from error
    save_file({k: v.detach().cpu().contiguous() for k, v in state.model.items()}, str(folder / MODEL_WEIGHTS))
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_JSON).write_text(text)
    if description is not None:
        (folder / DESCRIPTION_NAME).write_text(description.to_json())


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def save_checkpoint(checkpoints_dir: str | Path, state: TrainingState, description=None, keep: int = 2) -> Path:
    """Writes ``epoch-NNNN/`` atomically, points ``latest`` at it and keeps the newest ``keep`` folders.

    Args:
        description: a :class:`medcad.models.store.ModelDescription`; when given the checkpoint is
            also a loadable model folder.
    """
    root = Path(checkpoints_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(state.epoch)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        _write_folder(tmp, state, description)
        target = root / name
        if target.exists():  # re-running an epoch after a resume: replace the old folder
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=root))
            os.replace(target, trash / name)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_text_atomic(root / LATEST, name + "\n")
    epochs = sorted(_epoch_folders(root))
    for _, old in epochs[: max(len(epochs) - max(keep, 1), 0)]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _epoch_folders(root: Path) -> list[tuple[int, Path]]:
    return [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _EPOCH_DIR.match(p.name))]


def latest_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """The folder ``latest`` points at (or the highest complete epoch folder); None when there is none."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return None
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_JSON).is_file():
            return candidate
    complete = [(n, p) for n, p in _epoch_folders(root) if (p / STATE_JSON).is_file()]
    return max(complete)[1] if complete else None


def load_checkpoint(path: str | Path) -> TrainingState:
    """Reads a checkpoint folder (or the latest one under a ``checkpoints`` folder)."""
    from medcad.models.store import load_state_dict

    folder = Path(path)
    if not (folder / STATE_JSON).is_file():
        found = latest_checkpoint(folder)
        if found is None:
            raise InputError(folder, "no training checkpoint here (no epoch-NNNN folder with training_state.json)")
        folder = found
    try:
        document = json.loads((folder / STATE_JSON).read_text())
        if document.get("format") != FORMAT_NAME:
            raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT_NAME!r}")
    except ValueError as error:
        raise InputError(folder / STATE_JSON, f"malformed training state ({error})") from error
    tensors = load_state_dict(folder / STATE_TENSORS)
    parts = join_tensors({k: document.get(k) for k in ("optimizer", "scheduler", "scaler", "ema", "early_stopping")},
                         tensors)
    return TrainingState(
        epoch=int(document["epoch"]), model=load_state_dict(folder / MODEL_WEIGHTS),
        optimizer=parts["optimizer"], scheduler=parts["scheduler"], scaler=parts["scaler"], ema=parts["ema"],
        early_stopping=parts["early_stopping"] or {}, best=document.get("best", {}),
        history=document.get("history", []), config=document.get("config", {}), extra=document.get("extra", {}),
    )
