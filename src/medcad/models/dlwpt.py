"""One-time conversion of the book's checkpoints (*Deep Learning with PyTorch*, part 2) to medcad models.

The book saves ``torch.save({"model_state": ..., "model_name": "UNetWrapper" | "LunaModel",
"epoch": ..., ...})``. That file is a pickle, and a pickle from elsewhere is untrusted: this is the
only place medcad reads one, and it reads it with ``torch.load(weights_only=True)`` (PyTorch's
restricted unpickler: tensors, numbers, strings and plain containers; anything else is refused).
The result is a model folder in medcad's store format (safetensors + ``model.json``), which is
what ``medcad detect`` loads; the ``.state`` file is not needed afterwards.

Key mapping (book -> medcad):

``UNetWrapper`` -> ``nodule_unet2d``::

    input_batchnorm.*                        -> input_norm.*
    unet.down_path.{i}.block.{0,2,3,5}.*     -> encoder.{i}.{conv1,norm1,conv2,norm2}.*
    unet.up_path.{j}.up.*                    -> decoder.{j}.up.*
    unet.up_path.{j}.conv_block.block.{k}.*  -> decoder.{j}.block.{conv1,norm1,conv2,norm2}.*
    unet.last.*                              -> out_conv.*

(without batch norm the book's block indices are 0 and 2 for conv1 and conv2). The U-Net's
activation is ReLU: the book's ``util/unet.py`` has existed with ReLU and with LeakyReLU, and only
ReLU gives the book's reference result with its published checkpoint (see ``medcad.models.unet2d``).

``LunaModel`` -> ``nodule_cnn3d``::

    tail_batchnorm.*     -> input_norm.*
    block{n}.conv{k}.*   -> blocks.{n-1}.conv{k}.*
    head_linear.*        -> head.*
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from medcad.errors import InputError

#: The book's class names and the registry names they become.
BOOK_MODELS = {"UNetWrapper": "nodule_unet2d", "LunaModel": "nodule_cnn3d"}

_BLOCK_NAMES = {True: {"0": "conv1", "2": "norm1", "3": "conv2", "5": "norm2"},
                False: {"0": "conv1", "2": "conv2"}}


@dataclass(frozen=True)
class BookCheckpoint:
    """What a book checkpoint holds, once read safely."""

    model_name: str
    model_state: dict
    info: dict


def read_book_checkpoint(path: str | Path) -> BookCheckpoint:
    """Reads a book ``.state`` file with PyTorch's restricted unpickler (``weights_only=True``)."""
    import torch

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "checkpoint file not found")
    try:
        document = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (UnpicklingError, KeyError, RuntimeError...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(source, f"not a readable PyTorch checkpoint, or it holds more than weights ({first})") from error
    if not isinstance(document, dict) or not isinstance(document.get("model_state"), dict):
        raise InputError(source, "not a checkpoint of the book (no 'model_state' dict)")
    model_name = document.get("model_name")
    if model_name not in BOOK_MODELS:
        raise InputError(source, f"model_name {model_name!r} is not supported (supported: {', '.join(BOOK_MODELS)})")
    info = {k: v for k, v in document.items()
            if k in ("epoch", "totalTrainingSamples_count", "time", "optimizer_name")
            and isinstance(v, (int, float, str))}
    return BookCheckpoint(model_name, dict(document["model_state"]), info)


def unet_kwargs(state: dict) -> dict:
    """``nodule_unet2d`` arguments that fit a ``UNetWrapper`` state dict."""
    levels = {int(m.group(1)) for key in state if (m := re.match(r"unet\.down_path\.(\d+)\.", key))}
    return {
        "in_channels": int(state["input_batchnorm.weight"].shape[0]),
        "out_channels": int(state["unet.last.weight"].shape[0]),
        "depth": len(levels),
        "width": int(state["unet.down_path.0.block.0.weight"].shape[0]),
        "batch_norm": "unet.down_path.0.block.2.running_mean" in state,
        "up_mode": "upconv" if "unet.up_path.0.up.weight" in state else "upsample",
        "activation": "relu",  # the weights do not say; ReLU reproduces the book's reference run
    }


def check_book_import(kwargs: dict, provenance: dict, path: Path) -> None:
    """Refuses a book U-Net imported before medcad recorded its activation (it would run LeakyReLU)."""
    if provenance.get("book_model_name") == "UNetWrapper" and "activation" not in kwargs:
        raise InputError(path, "a book U-Net imported by an older medcad (no 'activation': it would run "
                               "with LeakyReLU instead of the book's ReLU); import it again with "
                               "'medcad models import-dlwpt'")


def cnn_kwargs(state: dict) -> dict:
    """``nodule_cnn3d`` arguments that fit a ``LunaModel`` state dict (crop size checked)."""
    from medcad.data.nodule_samples import CROP_IRC  # the book's crop, shared with training (imports torch)

    blocks = {int(m.group(1)) for key in state if (m := re.match(r"block(\d+)\.", key))}
    first = state["block1.conv1.weight"]
    kwargs = {"in_channels": int(first.shape[1]), "num_classes": int(state["head_linear.weight"].shape[0]),
              "width": int(first.shape[0]), "depth": len(blocks), "input_shape": list(CROP_IRC)}
    features = kwargs["width"] * 2 ** (kwargs["depth"] - 1)
    for n in CROP_IRC:
        features *= n // 2 ** kwargs["depth"]
    if features != state["head_linear.weight"].shape[1]:
        raise ValueError(f"head takes {state['head_linear.weight'].shape[1]} features, a {CROP_IRC} crop gives {features}")
    return kwargs


def map_unet_key(key: str, batch_norm: bool = True) -> str:
    """A ``UNetWrapper`` state-dict key as a ``nodule_unet2d`` key (see the module docstring)."""
    names = _BLOCK_NAMES[batch_norm]
    rules = (
        (r"^input_batchnorm\.", lambda m: "input_norm."),
        (r"^unet\.down_path\.(\d+)\.block\.(\d+)\.", lambda m: f"encoder.{m[1]}.{names[m[2]]}."),
        (r"^unet\.up_path\.(\d+)\.up\.", lambda m: f"decoder.{m[1]}.up."),
        (r"^unet\.up_path\.(\d+)\.conv_block\.block\.(\d+)\.", lambda m: f"decoder.{m[1]}.block.{names[m[2]]}."),
        (r"^unet\.last\.", lambda m: "out_conv."),
    )
    return _apply_rules(key, rules)


def map_cnn_key(key: str) -> str:
    """A ``LunaModel`` state-dict key as a ``nodule_cnn3d`` key (see the module docstring)."""
    rules = (
        (r"^tail_batchnorm\.", lambda m: "input_norm."),
        (r"^block(\d+)\.(conv\d)\.", lambda m: f"blocks.{int(m[1]) - 1}.{m[2]}."),
        (r"^head_linear\.", lambda m: "head."),
    )
    return _apply_rules(key, rules)


def _apply_rules(key: str, rules) -> str:
    for pattern, replace in rules:
        match = re.match(pattern, key)
        if match:
            return replace(match) + key[match.end():]
    raise KeyError(f"unexpected key {key!r} in the book's state dict")


def convert_book_checkpoint(checkpoint: BookCheckpoint):
    """Builds the medcad model (weights loaded, eval mode) and its description for a book checkpoint.

    Returns:
        (model, ModelDescription)
    """
    from medcad.data.nodule_samples import CROP_IRC, HU_CLAMP  # the book's crop and HU range, shared with training
    from medcad.models.registry import create
    from medcad.models.store import ModelDescription

    state = checkpoint.model_state
    if checkpoint.model_name == "UNetWrapper":
        kwargs = unet_kwargs(state)
        mapped = {map_unet_key(k, kwargs["batch_norm"]): v for k, v in state.items()}
        preprocessing = {"kind": "slice_context", "context_slices": (kwargs["in_channels"] - 1) // 2,
                         "hu_clamp": list(HU_CLAMP), "output": "sigmoid"}
    else:
        kwargs = cnn_kwargs(state)
        mapped = {map_cnn_key(k): v for k, v in state.items()}
        preprocessing = {"kind": "crop3d", "crop_irc": list(CROP_IRC), "hu_clamp": list(HU_CLAMP),
                         "output": "softmax", "positive_class": 1}
    name = BOOK_MODELS[checkpoint.model_name]
    model = create(name, **kwargs)
    model.load_state_dict(mapped, strict=True)
    model.eval()
    return model, ModelDescription(name, kwargs, preprocessing, {})


def import_book_checkpoint(path: str | Path, out: str | Path) -> Path:
    """Converts a book ``.state`` file into a medcad model folder ``out``; returns the folder."""
    from medcad.models.store import ModelDescription, save_model

    source = Path(path)
    checkpoint = read_book_checkpoint(source)
    try:
        model, description = convert_book_checkpoint(checkpoint)
    except (KeyError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(source, f"the {checkpoint.model_name} weights do not have the book's layout ({first})") from error
    provenance = {"source": "Deep Learning with PyTorch (dlwpt-code), converted by medcad models import-dlwpt",
                  "file": source.name, "sha256": _sha256(source), "book_model_name": checkpoint.model_name,
                  **checkpoint.info}
    description = ModelDescription(description.name, description.kwargs, description.preprocessing, provenance)
    return save_model(out, model, description)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
