"""torchvision classification networks as medcad classifiers: registry name ``torchvision``.

``create("torchvision", arch="resnet18", num_classes=4)`` builds any model of
``torchvision.models.list_models(module=torchvision.models)`` (VGG16, ResNet-18/50, EfficientNet,
ConvNeXt, ...) looked up by name in torchvision's own table, never by ``getattr``. The network's
last ``nn.Linear`` (its ImageNet classifier) becomes ``nn.Identity``, so ``backbone`` ends with the
penultimate features, and a new ``head`` (one linear layer, or linear-ReLU-dropout-linear with
``head_hidden``) maps them to the classes.

Freezing (``freeze``): ``none`` trains everything; ``features`` only the head; ``all-but-last-N``
the head and the last N parameter-holding blocks of the backbone (top-level modules, sequential
containers opened one level: ResNet's residual blocks, VGG's convolution and linear layers).
Frozen batch-norm layers stay in eval mode during training, so their statistics do not drift.

Pretrained weights: a name of torchvision's weight enum for the architecture (``DEFAULT``,
``IMAGENET1K_V1``...), downloaded once into torch's hub cache, or a local state-dict file
(``.safetensors``, or ``.pth`` / ``.pt`` read with ``weights_only=True``). Nothing is unpickled.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medcad.errors import InputError, MedcadError
from medcad.models.registry import register

REGISTRY_NAME = "torchvision"
_ALL_BUT_LAST = re.compile(r"^all-but-last-(\d+)$")
#: Extra constructor arguments some architectures need to build without their auxiliary heads.
_BUILD_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True},
                 "inception_v3": {"aux_logits": False, "init_weights": True}}


@dataclass(frozen=True)
class ParameterCount:
    """Total and trainable parameters of a model."""

    total: int
    trainable: int

    def __str__(self) -> str:
        return f"{self.total:,} parameters, {self.trainable:,} trainable"


def count_parameters(model: nn.Module) -> ParameterCount:
    """Total and trainable (``requires_grad``) parameter counts."""
    params = list(model.parameters())
    return ParameterCount(sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))


def classification_architectures() -> list[str]:
    """Names of torchvision's image classification models."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def check_architecture(arch: str) -> str:
    """``arch`` when torchvision has such a classification model; else an error suggesting close names."""
    known = classification_architectures()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MedcadError(f"unknown torchvision classification model {arch!r}{hint} "
                          f"(see torchvision.models.list_models(); e.g. resnet18, resnet50, vgg16)")
    return arch


def final_linear_name(model: nn.Module) -> str:
    """Dotted name of the last ``nn.Linear`` of a network: its classifier layer."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise MedcadError(f"{type(model).__name__} has no linear classifier layer to replace")
    return names[-1]


def is_weights_file(weights: str) -> bool:
    """Whether a ``weights`` option names a file (rather than one of torchvision's weight names)."""
    return Path(weights).suffix.lower() in (".safetensors", ".pth", ".pt", ".bin") or Path(weights).exists()


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a tensors-only ``torch.save`` file (``weights_only=True``).

    A ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is opened and a ``module.`` prefix
    (DataParallel) removed.
    """
    from medcad.models.store import load_state_dict

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "weights file not found")
    if source.suffix.lower() == ".safetensors":
        state = load_state_dict(source)
    else:
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as error:  # pickles with code, damaged files: never unpickle them
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(source, f"not a plain state-dict file loadable with weights_only=True ({first})") \
                from error
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(source, "does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def download_pretrained(arch: str, weights_name: str) -> dict[str, torch.Tensor]:
    """torchvision's pretrained state dict for ``arch`` (hub cache, else download); clear error offline."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    names = [w.name for w in enum]
    if weights_name != "DEFAULT" and weights_name not in names:
        raise MedcadError(f"{arch} has no pretrained weights named {weights_name!r} "
                          f"(torchvision has: DEFAULT, {', '.join(names)}; or give a file path)")
    weights = enum[weights_name] if weights_name in names else enum.DEFAULT
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, weights_only=True)
    except OSError as error:  # URLError, DNS failures, refused connections are OSErrors
        raise MedcadError(
            f"cannot download the pretrained {arch} weights ({weights.url}: {error}); offline, pass a local "
            f"file with --weights PATH (a torchvision state dict, .pth or .safetensors), or train from random "
            f"initialisation with --weights none") from error


def _load_backbone_state(body: nn.Module, state: dict[str, torch.Tensor], head_name: str, source: str) -> None:
    """Loads pretrained weights into a torchvision network, ignoring its classifier layer."""
    if state and all(k.startswith(("backbone.", "head.")) for k in state):  # a medcad TorchvisionClassifier
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    head_keys = (f"{head_name}.weight", f"{head_name}.bias")
    state = {k: v for k, v in state.items() if k not in head_keys}
    try:
        missing, unexpected = body.load_state_dict(state, strict=False)
    except RuntimeError as error:
        mismatch = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line),
                        str(error).splitlines()[0])
        raise InputError(source, f"weights do not fit this architecture ({mismatch})") from error
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        problem = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputError(source, f"weights do not fit this architecture ({problem}, ...)")


def _adapt_input_channels(body: nn.Module, in_channels: int) -> None:
    """Replaces the first convolution for ``in_channels`` inputs, summing / spreading its RGB filters."""
    name, conv = next(((n, m) for n, m in body.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        # A grey image repeated over RGB gives the same response as the summed filter on one channel.
        summed = conv.weight.sum(dim=1, keepdim=True)
        new.weight.copy_(summed.repeat(1, in_channels, 1, 1) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    body.set_submodule(name, new)


def _blocks(body: nn.Module) -> list[tuple[str, nn.Module]]:
    """Parameter-holding blocks in forward order: top-level modules, sequential containers opened once."""
    blocks = []
    for name, child in body.named_children():
        parts = [(f"{name}.{n}", m) for n, m in child.named_children()] if isinstance(child, nn.Sequential) \
            else [(name, child)]
        blocks += [(n, m) for n, m in parts if any(True for _ in m.parameters())]
    return blocks


def parse_freeze(freeze: str) -> int | None:
    """Number of trainable backbone blocks: None for all (``none``), 0 (``features``), N (``all-but-last-N``)."""
    if freeze == "none":
        return None
    if freeze == "features":
        return 0
    match = _ALL_BUT_LAST.match(freeze)
    if match:
        return int(match.group(1))
    raise MedcadError(f"unknown freeze option {freeze!r} (choose features, none or all-but-last-N, e.g. all-but-last-2)")


class TorchvisionClassifier(nn.Module):
    """A torchvision network split into ``backbone`` (features) and a new ``head``.

    Args:
        arch: torchvision model name (``resnet18``, ``vgg16``, ...).
        num_classes: outputs of the new head.
        in_channels: input channels (1 for greyscale: the first convolution's RGB filters are summed).
        head_hidden: width of a hidden layer in the head (0: a single linear layer).
        dropout: dropout before the head's last layer.
        freeze: ``none``, ``features`` or ``all-but-last-N``.
        weights: None (random), a torchvision weight name (``DEFAULT``, ``IMAGENET1K_V1``) or a file path.
    """

    def __init__(self, arch: str = "resnet18", num_classes: int = 2, in_channels: int = 3, head_hidden: int = 0,
                 dropout: float = 0.0, freeze: str = "none", weights: str | None = None):
        super().__init__()
        import torchvision

        check_architecture(arch)
        body = torchvision.models.get_model(arch, weights=None, **_BUILD_KWARGS.get(arch, {}))
        head_name = final_linear_name(body)
        if weights is not None and str(weights).lower() != "none":
            if is_weights_file(str(weights)):
                state, source = read_weights_file(weights), str(weights)
            else:
                state, source = download_pretrained(arch, str(weights)), f"torchvision {arch} {weights}"
            _load_backbone_state(body, state, head_name, source)
        self.num_features = body.get_submodule(head_name).in_features
        body.set_submodule(head_name, nn.Identity())
        _adapt_input_channels(body, in_channels)
        self.arch = arch
        self.backbone = body
        self.head = self._make_head(num_classes, head_hidden, dropout)
        self.head_hidden, self.dropout = head_hidden, dropout
        self.trainable_blocks = self.set_freeze(freeze)

    def _make_head(self, num_classes: int, hidden: int, dropout: float) -> nn.Module:
        if hidden:
            return nn.Sequential(nn.Linear(self.num_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_classes))
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes)) if dropout \
            else nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (what the ImageNet classifier layer used to see), shape (n, num_features)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def reset_head(self, num_classes: int) -> None:
        """A fresh head for ``num_classes`` outputs (same hidden width and dropout)."""
        self.head = self._make_head(num_classes, self.head_hidden, self.dropout)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The backbone's parameter-holding blocks in forward order (the units ``all-but-last-N`` counts)."""
        return _blocks(self.backbone)

    def set_freeze(self, freeze: str) -> list[str]:
        """Sets ``requires_grad`` for a freeze option; returns the names of the trainable backbone blocks."""
        keep = parse_freeze(freeze)
        blocks = self.blocks()
        chosen = blocks if keep is None else blocks[max(len(blocks) - keep, 0):]
        trainable = [name for name, _ in chosen]
        for parameter in self.backbone.parameters():
            parameter.requires_grad = keep is None
        for name, block in blocks:
            if name in trainable:
                for parameter in block.parameters():
                    parameter.requires_grad = True
        for parameter in self.head.parameters():
            parameter.requires_grad = True
        self.train(self.training)
        return trainable

    def train(self, mode: bool = True) -> TorchvisionClassifier:
        """Train / eval mode; batch norms whose parameters are frozen stay in eval mode."""
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                    and not module.weight.requires_grad:
                module.eval()
        return self


@register(REGISTRY_NAME)
def torchvision_classifier(**kwargs) -> TorchvisionClassifier:
    """Factory of :class:`TorchvisionClassifier` (``arch=...``, ``num_classes=...``, ...)."""
    return TorchvisionClassifier(**kwargs)
