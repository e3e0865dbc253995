"""ResNet-20 (He et al. 2016, CIFAR variant) for the long-tailed classification of the GIT study."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.resnet import BasicBlock


class ResNet20(nn.Module):
    """3 stages x 3 basic blocks, widths (w, 2w, 4w), global pool, linear head.

    forward(x (N, in_channels, H, W)) -> logits (N, num_classes).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16, blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        layers, c_in = [], width
        for i, c in enumerate((width, 2 * width, 4 * width)):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in if j == 0 else c, c, stride if j == 0 else 1) for j in range(blocks)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean(dim=(2, 3)))
