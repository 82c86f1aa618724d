"""ResNet for 2D and 3D inputs: ``resnet{10,18,34,50}_{2d,3d}`` in the registry.

One family for both dimensionalities (``spatial_dims``): a stem (7^d convolution, stride 2,
batch norm, ReLU, 3^d max-pool), four stages of basic (10/18/34) or bottleneck (50) residual
blocks with 64/128/256/512 base channels (times ``width / 64``), global average pooling
(``forward_features``) and a linear ``head``. Options: the shortcut type (``"B"``: 1^d
convolution + norm where the shape changes, as torchvision; ``"A"``: parameter-free strided
identity with zero-padded channels), and ``zero_init_residual`` (the last norm of every block
starts at zero, so each block starts as the identity: Goyal et al. 2017).

MedicalNet (Chen et al. 2019, Tencent/MedicalNet) 3D ResNet weights load with
:func:`load_medicalnet_state_dict`. Key mapping (theirs -> ours):

- ``module.`` prefix (from ``nn.DataParallel``) -> removed;
- ``conv1``, ``bn1``, ``layer{1-4}.{j}.conv{1,2,3}``, ``layer{1-4}.{j}.bn{1,2,3}``,
  ``layer{1-4}.{j}.downsample.0`` (1^3 conv) / ``.1`` (norm) -> the same names here;
- ``conv_seg.*`` (their segmentation decoder) and ``fc.*`` (a classifier for another label set,
  as in Hara et al.'s 3D-ResNets) -> dropped; our ``head`` keeps its own initialisation.

Their networks use shortcut B for depths 10 and 50 and shortcut A for 18 and 34, and dilated
stride-1 stages 3 and 4 instead of stride 2; dilation and stride do not change the weight
shapes, so the weights load into these (stride-2) classifiers unchanged.

Parameter counts: MedicalNet's table (14.36 / 32.99 / 63.31 / 46.21 M for depths 10 / 18 / 34 /
50) counts the backbone without its decoder, with the shortcut of each checkpoint. Here, with 1
input channel and a 2-class head: 14.36 M (10, B), 32.99 M (18, A), 63.30 M (34, A), 46.16 M
(50, B); the default shortcut B adds the projection convolutions (resnet18_3d: 33.16 M).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from medcad.errors import InputError, MedcadError
from medcad.models.registry import register

#: Global pooling of the last stage: "avg" as published, "max" for small-finding labels.
GLOBAL_POOLS = ("avg", "max")
#: depth -> (block kind, blocks per stage).
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


def _layers(spatial_dims: int) -> tuple[type, type, type, type]:
    """(conv, batch norm, max-pool, adaptive average pool) classes for 2 or 3 dimensions."""
    if spatial_dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d
    if spatial_dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


class ZeroPadShortcut(nn.Module):
    """Shortcut type A: strided identity, extra channels filled with zeros (no parameters)."""

    def __init__(self, out_channels: int, stride: int):
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.ndim - 2)]
        missing = self.out_channels - x.shape[1]
        if missing <= 0:
            return x
        return torch.cat([x, x.new_zeros((x.shape[0], missing, *x.shape[2:]))], dim=1)


def _shortcut(kind: str, spatial_dims: int, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The residual branch's shortcut where the shape changes; None where it is the identity."""
    if stride == 1 and in_channels == out_channels:
        return None
    if kind == "A":
        return ZeroPadShortcut(out_channels, stride)
    conv, norm, _, _ = _layers(spatial_dims)
    return nn.Sequential(conv(in_channels, out_channels, kernel_size=1, stride=stride, bias=False), norm(out_channels))


class BasicBlock(nn.Module):
    """Two 3^d convolutions with norms; ``bn2`` is the block's last norm."""

    expansion = 1

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, stride: int, shortcut: str):
        super().__init__()
        conv, norm, _, _ = _layers(spatial_dims)
        self.conv1 = conv(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(channels)
        self.conv2 = conv(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = norm(channels)
        self.downsample = _shortcut(shortcut, spatial_dims, in_channels, channels, stride)

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)


class Bottleneck(nn.Module):
    """1^d reduce, 3^d (strided), 1^d expand (x4); ``bn3`` is the block's last norm."""

    expansion = 4

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, stride: int, shortcut: str):
        super().__init__()
        conv, norm, _, _ = _layers(spatial_dims)
        out_channels = channels * self.expansion
        self.conv1 = conv(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = norm(channels)
        self.conv2 = conv(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(channels)
        self.conv3 = conv(channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = norm(out_channels)
        self.downsample = _shortcut(shortcut, spatial_dims, in_channels, out_channels, stride)

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)


class ResNet(nn.Module):
    """Residual network with a backbone / head split; ``forward`` returns logits.

    Args:
        depth: 10, 18, 34 or 50.
        spatial_dims: 2 (images, N C H W) or 3 (volumes, N C D H W).
        in_channels: input channels (1 for CT in HU or windowed HU).
        num_classes: head outputs.
        width: channels of the first stage (64 as in the paper; smaller for CPU training).
        shortcut: ``"B"`` (projection where the shape changes) or ``"A"`` (zero padding).
        zero_init_residual: start the last norm of every residual block at zero.
        dropout: dropout before the head (0 disables it).
        global_pool: ``"avg"`` (as published) or ``"max"``: the global pooling of the last stage.
            Max pooling suits "is there a small thing anywhere" labels (a nodule in a chest): one
            strong local response is not diluted by the whole volume.
    """

    def __init__(self, depth: int = 18, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                 width: int = 64, shortcut: str = "B", zero_init_residual: bool = False, dropout: float = 0.0,
                 global_pool: str = "avg"):
        super().__init__()
        if depth not in DEPTHS:
            raise MedcadError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if shortcut not in ("A", "B"):
            raise MedcadError(f"ResNet shortcut must be 'A' or 'B', got {shortcut!r}")
        if global_pool not in GLOBAL_POOLS:
            raise MedcadError(f"ResNet global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {global_pool!r}")
        conv, norm, max_pool, avg_pool = _layers(spatial_dims)
        kind, blocks_per_stage = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.spatial_dims = spatial_dims
        self.conv1 = conv(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.maxpool = max_pool(kernel_size=3, stride=2, padding=1)
        channels_in = width
        for stage, blocks in enumerate(blocks_per_stage):
            channels = width * 2 ** stage
            layer = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layer.append(block(spatial_dims, channels_in, channels, stride, shortcut))
                channels_in = channels * block.expansion
            self.add_module(f"layer{stage + 1}", nn.Sequential(*layer))
        self.pool = avg_pool(1) if global_pool == "avg" else _adaptive_max_pool(spatial_dims)(1)
        self.num_features = channels_in
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_norm.weight)

    @property
    def stages(self) -> list[nn.Module]:
        """Backbone parts from input to output (stem first), for freezing the first N."""
        stem = nn.ModuleList([self.conv1, self.bn1])
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output, globally pooled (average or max): (N, num_features)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))

    def reset_head(self, num_classes: int) -> None:
        """Replaces the head with a fresh linear layer (fine-tuning on a new label set)."""
        self.head = nn.Linear(self.num_features, num_classes)


def _adaptive_max_pool(spatial_dims: int) -> type[nn.Module]:
    return nn.AdaptiveMaxPool2d if spatial_dims == 2 else nn.AdaptiveMaxPool3d


def _register_variant(depth: int, spatial_dims: int) -> None:
    name = f"resnet{depth}_{spatial_dims}d"

    def factory(**kwargs) -> ResNet:
        return ResNet(depth=depth, spatial_dims=spatial_dims, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"ResNet-{depth} for {spatial_dims}D inputs; keyword arguments as :class:`ResNet`."
    register(name)(factory)


for _depth in DEPTHS:
    for _dims in (2, 3):
        _register_variant(_depth, _dims)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_medicalnet_state_dict` did.

    Attributes:
        loaded: our parameter / buffer names that received weights.
        dropped: their keys ignored on purpose (the segmentation decoder ``conv_seg``).
        missing: our keys they had no weights for (the head, at least).
    """

    loaded: tuple[str, ...]
    dropped: tuple[str, ...]
    missing: tuple[str, ...]


def map_medicalnet_keys(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renames MedicalNet keys to ours (see the module docstring); returns (mapped, dropped keys)."""
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.startswith("conv_seg.") or name.startswith("fc."):
            dropped.append(key)
            continue
        mapped[name] = value
    return mapped, dropped


def load_medicalnet_state_dict(model: ResNet, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    """Loads MedicalNet 3D ResNet weights into ``model``'s backbone; the head is left as it is.

    Raises:
        MedcadError: a key that has no place in the model, or a shape that does not fit (e.g. a
            depth or shortcut type other than the checkpoint's).
    """
    mapped, dropped = map_medicalnet_keys(state_dict)
    own = model.state_dict()
    unknown = sorted(set(mapped) - set(own))
    if unknown:
        raise MedcadError(f"MedicalNet weights do not fit this ResNet: unknown keys {unknown[:4]} "
                          "(another depth, or shortcut A weights for a shortcut B model?)")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape]
    if wrong:
        raise MedcadError(f"MedicalNet weights do not fit this ResNet: shapes differ ({'; '.join(wrong[:3])})")
    model.load_state_dict(mapped, strict=False)
    missing = tuple(sorted(k for k in own if k not in mapped and not k.endswith("num_batches_tracked")))
    return LoadReport(loaded=tuple(sorted(mapped)), dropped=tuple(dropped), missing=missing)


def read_medicalnet_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a MedicalNet ``.pth`` (``{"state_dict": ...}`` or a bare state dict) without unpickling objects."""
    source = Path(path)
    if not source.is_file():
        raise InputError(source, "weights file not found")
    try:
        document = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses pickled objects: say so in one line
        raise InputError(source, f"not a tensors-only checkpoint ({str(error).splitlines()[0][:160]})") from error
    state = document.get("state_dict", document) if isinstance(document, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(source, "holds no state dict of tensors")
    return state
