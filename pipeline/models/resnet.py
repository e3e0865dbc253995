"""ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool), returning its feature pyramid."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR stem, base width ``width`` (64 is the standard network).

    forward(x: (N, in_channels, H, W)) -> pyramid, a list of 5 maps:
      [stem (N, w, H, W), layer1 (N, w, H, W), layer2 (N, 2w, H/2, W/2),
       layer3 (N, 4w, H/4, W/4), layer4 (N, 8w, H/8, W/8)]
    ``embed(x)`` -> (N, 8w): global average pool of the last level.
    """

    def __init__(self, width: int = 64, in_channels: int = 3, zero_init_residual: bool = True) -> None:
        super().__init__()
        self.width = width
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        chans = [width, 2 * width, 4 * width, 8 * width]
        layers, c_in = [], width
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(c_in, c, stride), BasicBlock(c, c, 1)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pyramid_channels = [width, *chans]
        self.out_dim = chans[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            feats.append(layer(feats[-1]))
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[-1].mean(dim=(2, 3))

    def spec(self) -> dict[str, Any]:
        """Architecture facts saved beside the weights, checked when a checkpoint is loaded."""
        return {"arch": "resnet18_cifar", "width": self.width, "in_channels": self.in_channels}
