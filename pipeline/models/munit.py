"""MUNIT building blocks (Huang et al. 2018): content/style encoders, AdaIN decoder, PatchGAN.

Shapes for an input (N, C, H, W) with ``n_down`` downsamplings and base width ``dim``:
content code (N, dim * 2**n_down, H / 2**n_down, W / 2**n_down); style code (N, style_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AdaIN(nn.Module):
    """Instance norm whose per-channel scale and shift are set from outside (by the style MLP)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight: torch.Tensor | None = None  # (N, C), assigned before each forward
        self.bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None or self.bias is None:
            raise RuntimeError("AdaIN parameters are unset: call Decoder.forward(content, style)")
        x = F.instance_norm(x, eps=self.eps)
        return x * self.weight[:, :, None, None] + self.bias[:, :, None, None]


class LayerNorm2d(nn.Module):
    """Layer norm over (C, H, W) with a per-channel affine, as in the MUNIT decoder."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + self.eps) * self.gamma[:, None, None] + self.beta[:, None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels) if kind == "in" else AdaIN(channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode="reflect"), _norm(norm, channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, padding_mode="reflect"), _norm(norm, channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ContentEncoder(nn.Module):
    """conv7 -> ``n_down`` stride-2 convs -> ``n_res`` residual blocks, instance norm throughout."""

    def __init__(self, in_channels: int, dim: int = 64, n_down: int = 2, n_res: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, dim, 7, 1, 3, padding_mode="reflect"),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
        ]
        for _ in range(n_down):
            layers += [
                nn.Conv2d(dim, 2 * dim, 4, 2, 1, padding_mode="reflect"),
                nn.InstanceNorm2d(2 * dim),
                nn.ReLU(True),
            ]
            dim *= 2
        layers += [ResBlock(dim, "in") for _ in range(n_res)]
        self.net = nn.Sequential(*layers)
        self.out_channels = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StyleEncoder(nn.Module):
    """Convs without normalisation, global average pool, 1x1 conv to ``style_dim``."""

    def __init__(self, in_channels: int, dim: int = 64, style_dim: int = 8, n_down: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dim, 7, 1, 3, padding_mode="reflect"), nn.ReLU(True)]
        for i in range(n_down):
            out = dim * 2 if i < 2 else dim
            layers += [nn.Conv2d(dim, out, 4, 2, 1, padding_mode="reflect"), nn.ReLU(True)]
            dim = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class Decoder(nn.Module):
    """AdaIN residual blocks -> (upsample, conv5, layer norm) x ``n_up`` -> conv7 -> tanh.

    forward(content (N, in_channels, h, w), style (N, style_dim)) -> image (N, out_channels, h * 2**n_up, w * 2**n_up) in [-1, 1].

    ``direct_adain``: the MLP output is the AdaIN weight itself, as in NVlabs/MUNIT; otherwise it
    is an offset from 1 (ACE's decoder, whose saved models were trained so).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_dim: int = 8,
        n_up: int = 2,
        n_res: int = 4,
        mlp_dim: int = 256,
        direct_adain: bool = True,
    ) -> None:
        super().__init__()
        self.direct_adain = direct_adain
        self.res = nn.Sequential(*[ResBlock(in_channels, "adain") for _ in range(n_res)])
        layers: list[nn.Module] = []
        dim = in_channels
        for _ in range(n_up):
            layers += [
                nn.Upsample(scale_factor=2),
                nn.Conv2d(dim, dim // 2, 5, 1, 2, padding_mode="reflect"),
                LayerNorm2d(dim // 2),
                nn.ReLU(True),
            ]
            dim //= 2
        layers += [nn.Conv2d(dim, out_channels, 7, 1, 3, padding_mode="reflect"), nn.Tanh()]
        self.up = nn.Sequential(*layers)
        self.adains = [m for m in self.res.modules() if isinstance(m, AdaIN)]
        n_params = sum(2 * m.channels for m in self.adains)
        self.mlp = nn.Sequential(
            nn.Linear(style_dim, mlp_dim),
            nn.ReLU(True),
            nn.Linear(mlp_dim, mlp_dim),
            nn.ReLU(True),
            nn.Linear(mlp_dim, n_params),
        )

    @property
    def n_adain_params(self) -> int:
        return sum(2 * m.channels for m in self.adains)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.decode_with_params(content, self.mlp(style))

    def decode_with_params(self, content: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Decode with AdaIN parameters given directly, (N, n_adain_params): per layer bias, then weight
        (weight - 1 unless ``direct_adain``)."""
        start = 0
        for m in self.adains:
            m.bias = params[:, start : start + m.channels]
            weight = params[:, start + m.channels : start + 2 * m.channels]
            m.weight = weight if self.direct_adain else 1 + weight
            start += 2 * m.channels
        return self.up(self.res(content))


def kaiming_init(module: nn.Module) -> nn.Module:
    """NVlabs/MUNIT's generator init: every conv and linear weight kaiming-normal (fan in), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class MUNIT(nn.Module):
    """One-domain MUNIT auto-encoder: ``encode`` -> (content, style), ``decode(content, style)`` -> image.
    Built as the reference: kaiming init, AdaIN weight and bias straight from the style MLP."""

    def __init__(
        self, channels: int = 1, dim: int = 32, style_dim: int = 8, n_down: int = 2, n_res: int = 4, mlp_dim: int = 256
    ) -> None:
        super().__init__()
        self.style_dim = style_dim
        self.content_encoder = ContentEncoder(channels, dim, n_down, n_res)
        self.style_encoder = StyleEncoder(channels, dim, style_dim)
        self.decoder = Decoder(self.content_encoder.out_channels, channels, style_dim, n_down, n_res, mlp_dim)
        kaiming_init(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.content_encoder(x), self.style_encoder(x)

    def decode(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.decoder(content, style)


class MunitPass(torch.nn.Module):
    """One training pass of single-domain MUNIT, as one forward (so DDP sees every use of the weights).

    forward(x (N, C, H, W), s_rand (N, style_dim)) -> dict of x_fake = G(c, s_rand), x_rec = G(c, s),
    c, c_rec / s_rec = E(x_fake), and (``cycle``) x_cyc = G(c_rec, s).
    """

    def __init__(self, munit: MUNIT, cycle: bool) -> None:
        super().__init__()
        self.munit, self.cycle = munit, cycle

    def forward(self, x: torch.Tensor, s_rand: torch.Tensor) -> dict[str, torch.Tensor]:
        c, s = self.munit.encode(x)
        x_fake = self.munit.decode(c, s_rand)
        c_rec, s_rec = self.munit.encode(x_fake)
        out = {"c": c, "x_fake": x_fake, "x_rec": self.munit.decode(c, s), "c_rec": c_rec, "s_rec": s_rec}
        if self.cycle:
            out["x_cyc"] = self.munit.decode(c_rec, s)
        return out
