"""ACE's networks (Xu et al.): on a frozen backbone's feature map f (N, F, h, w),

- content encoder: 1x1 conv + residual blocks with BatchNorm -> content code (N, D, h, w),
  with a SimSiam predictor (1x1 convs, bottleneck, BatchNorm between);
- style encoder: global mean and std pooling + 1x1 conv -> (N, style_dim), plus a learnable
  domain style code (paper section 4.1);
- decoder: MUNIT's AdaIN residual blocks + upsampling convs, AdaIN parameters from an MLP;
- discriminator: PatchGAN with spectral norm (LSGAN).

The losses and the training loop are :mod:`pipeline.ace`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import AceParams
from pipeline.errors import UserError
from pipeline.models.gan import PatchDiscriminator
from pipeline.models.munit import Decoder
from pipeline.models.resnet import ResNet


class ResBlockBN(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class ContentEncoder(nn.Module):
    """forward(f (N, in_channels, h, w)) -> content code (N, dim, h, w)."""

    def __init__(self, in_channels: int, dim: int, n_res: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, dim, 1),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            *[ResBlockBN(dim) for _ in range(n_res)],
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def predictor(dim: int) -> nn.Sequential:
    """SimSiam predictor on every location: (N, dim, h, w) -> (N, dim, h, w), bottleneck dim / 4, no BN at the output."""
    hidden = max(1, dim // 4)
    return nn.Sequential(
        nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim, 1)
    )


class StyleEncoder(nn.Module):
    """forward(f (N, in_channels, h, w)) -> (N, style_dim): global mean and std pooling, then a 1x1 conv."""

    def __init__(self, in_channels: int, style_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2 * in_channels, style_dim, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([f.mean(dim=(2, 3)), f.flatten(2).std(dim=2)], dim=1)[:, :, None, None]
        return self.proj(pooled).flatten(1)


def spectral_discriminator(in_channels: int, dim: int, n_layers: int = 2) -> PatchDiscriminator:
    """The PatchGAN discriminator with spectral norm on every conv."""
    disc = PatchDiscriminator(in_channels, dim, n_layers)
    for i, m in enumerate(disc.net):
        if isinstance(m, nn.Conv2d):
            disc.net[i] = nn.utils.parametrizations.spectral_norm(m)
    return disc


class ACE(nn.Module):
    """Frozen backbone + content encoder (+ predictor) + style encoder (+ domain code) + decoder.

    ``features(x)`` -> (N, F, H / s, W / s) with s the backbone's stride at ``level``; ``content(x)`` -> (N, D, h, w); ``style(x)`` -> (N, style_dim);
    ``decode(c, s)`` -> (N, 3, H, W) in [0, 1]; ``augment(c)`` -> the decode with random AdaIN parameters.
    """

    def __init__(self, backbone: ResNet, level: int, dim: int, n_res: int, style_dim: int, mlp_dim: int) -> None:
        super().__init__()
        if not 0 <= level <= 4:
            raise UserError(f"ace.level={level} must be a pyramid level 0..4")
        self.level = level
        self.encoder = backbone.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        feat = backbone.pyramid_channels[level]
        self.content_encoder = ContentEncoder(feat, dim, n_res)
        self.predictor = predictor(dim)
        self.style_encoder = StyleEncoder(feat, style_dim)
        self.domain_style = nn.Parameter(torch.zeros(style_dim))
        n_up = int(math.log2(backbone.pyramid_strides[level]))  # back to the image's resolution
        self.decoder = Decoder(dim, 3, style_dim, n_up=n_up, n_res=n_res, mlp_dim=mlp_dim, direct_adain=False)

    def train(self, mode: bool = True) -> ACE:
        super().train(mode)
        self.encoder.eval()  # frozen: its BatchNorm keeps the pretrained statistics
        return self

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        return [*self.style_encoder.parameters(), self.domain_style, *self.decoder.parameters()]

    def contrastive_parameters(self) -> list[nn.Parameter]:
        return [*self.content_encoder.parameters(), *self.predictor.parameters()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.level(x, self.level)

    def content(self, x: torch.Tensor) -> torch.Tensor:
        return self.content_encoder(self.features(x))

    def style(self, x: torch.Tensor) -> torch.Tensor:
        return self.style_of(self.features(x))

    def style_of(self, f: torch.Tensor) -> torch.Tensor:
        """Style code (N, style_dim) from backbone features f: the image's own code + the domain code."""
        return self.style_encoder(f) + self.domain_style

    def decode(self, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (self.decoder(c, s) + 1) / 2

    def augment(self, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Adaptive Instance Augmentation: ``c`` decoded with N(0, 1) AdaIN parameters (a style-perturbed view)."""
        params = torch.randn(len(c), self.decoder.n_adain_params, generator=generator).to(c.device)
        return (self.decoder.decode_with_params(c, params) + 1) / 2


def build(ac: AceParams, backbone: ResNet) -> tuple[ACE, PatchDiscriminator]:
    """An ACE of the architecture ``ac`` names on ``backbone``, and its discriminator."""
    ace = ACE(backbone, ac.level, ac.content_dim, ac.n_res, ac.style_dim, ac.mlp_dim)
    return ace, spectral_discriminator(3, ac.disc_width)
