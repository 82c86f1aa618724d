"""``nodule_unet2d``: the 2D U-Net that segments nodule-like voxels slice by slice.

The book's segmentation network (*Deep Learning with PyTorch*, part 2): a slice and its context
slices come in as channels (7 by default: the slice and 3 on each side), go through a
``BatchNorm2d`` on the input, a U-Net of ``depth`` levels (``width`` filters at the top, doubling
per level; 3x3 convolutions with padding, activation then batch norm; average pooling down;
transposed convolution or bilinear upsampling up) and a sigmoid. The output has the input's height
and width, one probability map per ``out_channels``.

The activation is a parameter because the book's repository has had both: its ``util/unet.py``
exists with ``nn.ReLU`` and with ``nn.LeakyReLU`` (neither has weights, so a checkpoint does not
say which). The book's published segmentation checkpoint reproduces the book's reference run only
with ReLU (674 candidates on LIDC-IDRI-0001; with LeakyReLU 1191), so ``import-dlwpt`` sets
``activation="relu"``; models trained by medcad keep the default, LeakyReLU.

Height and width must be divisible by ``2 ** (depth - 1)`` (512 x 512 CT slices are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medcad.models.registry import register


#: Activation name -> function (the names stored in a model's description).
ACTIVATIONS = {"leaky_relu": F.leaky_relu, "relu": F.relu}


class ConvBlock2d(nn.Module):
    """Two 3x3 convolutions (padded), each followed by the activation and optionally batch norm."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, activation: str = "leaky_relu"):
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.activation(self.conv1(x)))
        return self.norm2(self.activation(self.conv2(x)))


class UpBlock2d(nn.Module):
    """Doubles the resolution, concatenates the skip connection, then a :class:`ConvBlock2d`."""

    def __init__(self, in_channels: int, out_channels: int, up_mode: str, batch_norm: bool, activation: str):
        super().__init__()
        if up_mode == "upconv":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(mode="bilinear", scale_factor=2),
                                    nn.Conv2d(in_channels, out_channels, kernel_size=1))
        self.block = ConvBlock2d(in_channels, out_channels, batch_norm, activation)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


@register("nodule_unet2d")
class NoduleUNet2d(nn.Module):
    """Input batch norm -> U-Net -> sigmoid; input (N, in_channels, H, W) in clamped HU.

    Args:
        in_channels: context slices in (``2 * context + 1``; 7 in the book).
        out_channels: probability maps out.
        depth: resolution levels (3 in the book).
        width: filters at the top level, doubling per level (16 in the book, ``2 ** wf``).
        batch_norm: batch norm after each activation (as the book).
        up_mode: ``"upconv"`` (transposed convolution, the book) or ``"upsample"`` (bilinear).
        activation: ``"leaky_relu"`` (default) or ``"relu"`` (the book's published checkpoint).
    """

    def __init__(self, in_channels: int = 7, out_channels: int = 1, depth: int = 3, width: int = 16,
                 batch_norm: bool = True, up_mode: str = "upconv", activation: str = "leaky_relu"):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")
        if up_mode not in ("upconv", "upsample"):
            raise ValueError(f"up_mode must be 'upconv' or 'upsample', got {up_mode!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.depth = depth
        self.input_norm = nn.BatchNorm2d(in_channels)
        channels = [width * 2 ** level for level in range(depth)]
        self.encoder = nn.ModuleList(
            ConvBlock2d(c_in, c_out, batch_norm, activation) for c_in, c_out in zip([in_channels, *channels[:-1]], channels))
        self.decoder = nn.ModuleList(
            UpBlock2d(channels[level + 1], channels[level], up_mode, batch_norm, activation) for level in reversed(range(depth - 1)))
        self.out_conv = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net output before the sigmoid."""
        x = self.input_norm(x)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level < self.depth - 1:
                skips.append(x)
                x = F.avg_pool2d(x, 2)
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.out_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))
