"""``nodule_cnn3d``: the small 3D CNN that tells nodules from other candidates.

The book's ``LunaModel`` (*Deep Learning with PyTorch*, part 2): a ``BatchNorm3d`` on the input,
``depth`` blocks of two 3x3x3 convolutions + ReLU and a 2x2x2 max-pool (``width`` channels,
doubling per block: 8/16/32/64), flattened, and a linear head (2 classes). Input: a
(1, 32, 48, 48) crop of HU clamped to [-1000, 1000]. ``forward`` returns logits; the pipeline
takes the softmax. The malignancy classifier is the same network fine-tuned, so it shares the
backbone / head split (``forward_features``, ``head``, ``reset_head``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medcad.models.registry import register


class ConvBlock3d(nn.Module):
    """Two 3x3x3 convolutions with ReLU, then a 2x2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1)
        self.pool = nn.MaxPool3d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU in place: the convolution's fresh output is not needed otherwise, and not
        # allocating another full-resolution tensor makes the CPU classifier ~18 % faster
        # (17.2 -> 14.1 ms a crop, bit-identical output); autograd allows it (ReLU keeps its output).
        x = torch.relu_(self.conv1(x))
        return self.pool(torch.relu_(self.conv2(x)))


@register("nodule_cnn3d")
class NoduleCnn3d(nn.Module):
    """Input batch norm -> conv blocks (backbone) -> linear head; logits out.

    Args:
        in_channels: input channels (1: HU).
        num_classes: head outputs (2: not nodule / nodule, or benign / malignant).
        width: channels of the first block, doubling per block (8 in the book).
        depth: conv blocks (4 in the book).
        input_shape: crop size (index, row, column) the head is sized for ((32, 48, 48)).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 8, depth: int = 4,
                 input_shape: tuple[int, int, int] | list[int] = (32, 48, 48)):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")
        feature_shape = [n // 2 ** depth for n in input_shape]
        if len(feature_shape) != 3 or min(feature_shape) < 1:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for {depth} pooling steps")
        self.input_shape = tuple(int(n) for n in input_shape)
        channels = [width * 2 ** block for block in range(depth)]
        self.input_norm = nn.BatchNorm3d(in_channels)
        self.blocks = nn.Sequential(
            *(ConvBlock3d(c_in, c_out) for c_in, c_out in zip([in_channels, *channels[:-1]], channels)))
        self.num_features = channels[-1] * math.prod(feature_shape)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output, flattened: (N, num_features)."""
        return self.blocks(self.input_norm(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def reset_head(self, num_classes: int) -> None:
        """Replaces the head with a fresh linear layer (for fine-tuning, e.g. malignancy)."""
        self.head = nn.Linear(self.num_features, num_classes)
