"""A small 3D U-Net for boundary maps and affinities (imported only when training or exporting).

Arrays and tensors are (N, C, Z, Y, X). Convolutions are 3x3x3 with same padding, so the output
has the input's spatial size; each of the `depth - 1` poolings divides the size by `pool`
(per axis, z,y,x order: (1, 2, 2) keeps z for anisotropic data), so the input size must be a
multiple of `divisor(pool, depth)`. `UNet3d.forward` returns logits; `Probabilities` wraps a
U-Net with the final sigmoid (what gets exported).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

Triple = tuple[int, int, int]


def divisor(pool: Triple, depth: int) -> Triple:
    """Spatial sizes (z,y,x) must be multiples of this: `pool` to the power `depth - 1`."""
    return (pool[0] ** (depth - 1), pool[1] ** (depth - 1), pool[2] ** (depth - 1))


class ConvBlock(nn.Sequential):
    """Two (3x3x3 conv, BatchNorm, ReLU) layers."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet3d(nn.Module):
    """U-Net with `depth` levels of `base_channels * 2**level` channels; returns logits."""

    def __init__(
        self,
        out_channels: int = 1,
        base_channels: int = 8,
        depth: int = 3,
        pool: Triple = (2, 2, 2),
    ) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1 or out_channels < 1:
            raise ValueError("U-Net depth, base_channels and out_channels must be positive")
        if len(pool) != 3 or min(pool) < 1:
            raise ValueError(f"U-Net pool {pool} must be three positive factors (z, y, x)")
        self.out_channels = out_channels
        self.depth = depth
        self.pool = tuple(int(p) for p in pool)
        widths = [base_channels * 2**level for level in range(depth)]
        self.down = nn.ModuleList(
            ConvBlock(c_in, c_out) for c_in, c_out in zip([1, *widths[:-1]], widths)
        )
        self.pools = nn.ModuleList(nn.MaxPool3d(self.pool, self.pool) for _ in widths[1:])
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(wide, narrow, self.pool, stride=self.pool)
            for narrow, wide in pairwise(widths)
        )
        self.up = nn.ModuleList(ConvBlock(2 * c, c) for c in widths[:-1])
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    @property
    def divisor(self) -> Triple:
        """Spatial sizes (z,y,x) must be multiples of this."""
        return divisor(self.pool, self.depth)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = self.pools[level - 1](x)
            x = block(x)
            skips.append(x)
        for level in reversed(range(self.depth - 1)):
            x = self.ups[level](x)
            x = self.up[level](torch.cat([skips[level], x], dim=1))
        return self.head(x)


class Probabilities(nn.Module):
    """A logit model followed by a sigmoid: values in [0, 1]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
