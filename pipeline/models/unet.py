"""The transplant: a U-Net generator whose encoder is the (pretrained) ResNet backbone.

The backbone's 5-level pyramid feeds the skip connections. The backbone always sees what it
was pretrained on: RGB in [0, 1] (or its luminance, for a 1-channel backbone), whatever the
generator's own input space is.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.color import lab_to_rgb, net_to_lab, to_gray
from pipeline.models.resnet import ResNet

SPACES = ("lab", "rgb")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ResNetUNet(nn.Module):
    """U-Net on a ResNet encoder (:class:`ResNet`, any depth and stem).

    forward(x (N, C_in, H, W) in [-1, 1]) -> (N, out_channels, H, W) in [-1, 1] (tanh); H and W
    multiples of the backbone's ``reduction`` (8 with the CIFAR stem, 32 with the ImageNet stem).
    ``space`` 'lab': x is network-scale Lab (3 channels, or 1 = L alone); 'rgb': x is RGB * 2 - 1.
    Decoder (p = the backbone's pyramid channels, d = decoder width), CIFAR stem: layer4 (p4, H/8)
    -> up + layer3 -> (4d, H/4) -> up + layer2 -> (2d, H/2) -> up + layer1 + stem -> (d, H) -> +
    input -> out. ImageNet stem, one level deeper: layer1 is at H/4 and the stem at H/2, so
    up + layer1 -> (d, H/4), up + stem -> (d, H/2) (``dec0``), then up to H.
    """

    def __init__(self, backbone: ResNet, space: str, out_channels: int, decoder_width: int = 32) -> None:
        super().__init__()
        if space not in SPACES:
            raise ValueError(f"unknown input space '{space}' (allowed: {', '.join(SPACES)})")
        self.encoder = backbone
        self.space = space
        p, d = backbone.pyramid_channels, decoder_width
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec3 = _block(p[4] + p[3], 4 * d)
        self.dec2 = _block(4 * d + p[2], 2 * d)
        self.stem_apart = backbone.pyramid_strides[0] != backbone.pyramid_strides[1]
        self.dec1 = _block(2 * d + p[1] + (0 if self.stem_apart else p[0]), d)
        self.out = nn.Sequential(
            nn.Conv2d(d + 3, d, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(d, out_channels, 1), nn.Tanh()
        )
        if self.stem_apart:
            self.dec0 = _block(d + p[0], d)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) generator input -> (N, 3 or 1, H, W) backbone input, RGB in [0, 1]."""
        if self.space == "lab":
            if x.shape[1] == 1:
                x = torch.cat([x, torch.zeros_like(x).expand(-1, 2, -1, -1)], 1)
            rgb = lab_to_rgb(net_to_lab(x.float())).to(x.dtype)
        else:
            rgb = (x + 1) / 2
        return to_gray(rgb) if self.encoder.in_channels == 1 else rgb

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder maps, coarse to fine, the last at full resolution: CIFAR stem [(N, 4d, H/4, W/4),
        (N, 2d, H/2, W/2), (N, d, H, W)]; ImageNet stem [(N, 4d, H/16, W/16), (N, 2d, H/8, W/8),
        (N, d, H/4, W/4), (N, d, H/2, W/2), (N, d, H, W)]."""
        stem, l1, l2, l3, l4 = self.encoder(self.encoder_input(x))
        d3 = self.dec3(torch.cat([self.up(l4), l3], 1))
        d2 = self.dec2(torch.cat([self.up(d3), l2], 1))
        if not self.stem_apart:
            return [d3, d2, self.dec1(torch.cat([self.up(d2), l1, stem], 1))]
        d1 = self.dec1(torch.cat([self.up(d2), l1], 1))
        d0 = self.dec0(torch.cat([self.up(d1), stem], 1))
        return [d3, d2, d1, d0, self.up(d0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.encoder.reduction
        if x.shape[-1] % r or x.shape[-2] % r:
            raise ValueError(f"ResNetUNet on this backbone needs H and W divisible by {r}, got {tuple(x.shape[-2:])}")
        rgb_in = x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1)
        return self.out(torch.cat([self.features(x)[-1], rgb_in], 1))


class DomainGenerator(nn.Module):
    """A ResNet U-Net mapping one domain's images to the other's, (N, 3, H, W) -> (N, 3, H, W).

    ``mode`` 'colorize': predict ab, keep the input L; 'decolorize': predict L, ab = 0; 'rgb':
    predict the image. For colorization the U-Net's output is a residual on the trivial baseline
    (ab = 0 for a grey input), so training is a measured move away from it. For style transfer it
    is the image itself, from a random init as in CycleGAN (the input reaches the last layer
    through the U-Net's skip): a residual on the identity is a lasso under the L1 identity and
    cycle losses, whose pull (weights 5 and 10) beats the GAN's near zero, so a residual stylizer
    collapses to the exact identity. The last layer starts at N(0, 0.02) (CycleGAN's init).
    """

    MODES = {"colorize": ("lab", 2), "decolorize": ("lab", 1), "rgb": ("rgb", 3)}

    def __init__(self, backbone: ResNet, mode: str, decoder_width: int) -> None:
        super().__init__()
        space, out_channels = self.MODES[mode]
        self.mode = mode
        self.unet = ResNetUNet(backbone, space, out_channels, decoder_width)
        last = self.unet.out[-2]
        nn.init.normal_(last.weight, 0.0, 0.02)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.unet(x)
        if self.mode == "colorize":
            return torch.cat([x[:, :1], x[:, 1:] + out], 1)
        if self.mode == "decolorize":
            return torch.cat([x[:, :1] + out, torch.zeros_like(x[:, 1:])], 1)
        return out
