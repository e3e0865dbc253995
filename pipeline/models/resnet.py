"""The SSL backbone: ResNet-18 or ResNet-50, with the CIFAR or the ImageNet stem, returning its feature pyramid.

The CIFAR stem (3x3 conv, stride 1, no max-pool) keeps 32 px images at full resolution; the
ImageNet stem (7x7 conv, stride 2, then a 3x3 max-pool of stride 2) is torchvision's, for 224 to
256 px images. ResNet-50 uses torchvision's ``Bottleneck`` block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ARCHS = ("resnet18", "resnet50")
STEM_STRIDES = {"cifar": [1, 1, 2, 4, 8], "imagenet": [2, 4, 8, 16, 32]}  # of the 5 pyramid levels
STEMS = tuple(STEM_STRIDES)


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


def _bottleneck_stage(c_in: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """torchvision's ResNet-50 stage: ``blocks`` Bottlenecks of output 4 * ``planes``."""
    from torchvision.models.resnet import Bottleneck  # here: torchvision.models costs every ResNet-18 process ~1 s

    c_out = planes * Bottleneck.expansion
    down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    return nn.Sequential(
        Bottleneck(c_in, planes, stride, down), *(Bottleneck(c_out, planes) for _ in range(blocks - 1))
    )


class ResNet(nn.Module):
    """ResNet-18 or -50 of base width ``width`` (64 is the standard network).

    forward(x: (N, in_channels, H, W)) -> pyramid, a list of 5 maps [stem, layer1, .., layer4] with
    ``pyramid_channels`` channels at ``pyramid_strides`` (H / stride):
      - resnet18: channels [w, w, 2w, 4w, 8w]; resnet50: [w, 4w, 8w, 16w, 32w];
      - CIFAR stem: strides [1, 1, 2, 4, 8]; ImageNet stem: [2, 4, 8, 16, 32] (the max-pool sits
        between the stem level and layer1).
    ``embed(x)`` -> (N, out_dim): global average pool of the last level.
    """

    def __init__(
        self, width: int = 64, in_channels: int = 3, zero_init_residual: bool = True,
        arch: str = "resnet18", stem: str = "cifar",
    ) -> None:  # fmt: skip
        super().__init__()
        if arch not in ARCHS or stem not in STEMS:
            raise ValueError(f"unknown backbone '{arch}' with stem '{stem}' (allowed: {ARCHS} x {STEMS})")
        self.width, self.in_channels, self.arch, self.stem_kind = width, in_channels, arch, stem
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
            self.pool = nn.Identity()
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
            self.pool = nn.MaxPool2d(3, 2, 1)
        planes = [width, 2 * width, 4 * width, 8 * width]
        layers, c_in = [], width
        for i, c in enumerate(planes):
            stride = 1 if i == 0 else 2
            if arch == "resnet18":
                layers.append(nn.Sequential(BasicBlock(c_in, c, stride), BasicBlock(c, c, 1)))
                c_in = c
            else:
                layers.append(_bottleneck_stage(c_in, c, (3, 4, 6, 3)[i], stride))
                c_in = 4 * c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        expansion = 1 if arch == "resnet18" else 4
        self.pyramid_channels = [width, *(expansion * c for c in planes)]
        self.pyramid_strides = STEM_STRIDES[stem]
        self.out_dim = self.pyramid_channels[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
                elif hasattr(m, "bn3"):  # torchvision's Bottleneck
                    nn.init.zeros_(m.bn3.weight)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ResNet:
        """The untrained network a :meth:`spec` describes (ValueError for an unknown one)."""
        arch, _, stem = str(spec.get("arch")).partition("_")
        if arch not in ARCHS or stem not in STEMS or not {"width", "in_channels"} <= spec.keys():
            raise ValueError(f"not a backbone spec: {spec}")
        return cls(spec["width"], spec["in_channels"], arch=arch, stem=stem)

    @property
    def reduction(self) -> int:
        return reduction(self.spec())

    def level(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Pyramid level ``level`` (0 = stem .. 4 = layer4) alone, computing nothing above it."""
        feats = self.stem(x)
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)[:level]):
            feats = layer(self.pool(feats) if i == 0 else feats)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            feats.append(layer(self.pool(feats[-1]) if i == 0 else feats[-1]))
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[-1].mean(dim=(2, 3))

    def spec(self) -> dict[str, Any]:
        """Architecture facts saved beside the weights, checked when a checkpoint is loaded."""
        return {"arch": f"{self.arch}_{self.stem_kind}", "width": self.width, "in_channels": self.in_channels}


def reduction(spec: dict[str, Any]) -> int:
    """The last pyramid level's stride of the backbone ``spec`` names: the multiple of it that a
    U-Net on that backbone needs for H and W (8 with the CIFAR stem, 32 with the ImageNet stem)."""
    return STEM_STRIDES[str(spec.get("arch")).partition("_")[2]][-1]
