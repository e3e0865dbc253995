"""sRGB <-> CIE Lab (D65) and luminance in torch, differentiable, and the network scalings of Lab.

Network scaling (pix2pix colorization): L / 50 - 1 in [-1, 1]; ab / 110 in about [-1, 1].
"""

from __future__ import annotations

import torch

_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754], dtype=torch.float64)
_EPS = 0.008856
_KAPPA = 7.787
AB_SCALE = 110.0
LUMA = (0.299, 0.587, 0.114)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luminance."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _mix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", m.to(x.dtype).to(x.device), x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> (N, 3, H, W) Lab (L in [0, 100], a/b roughly [-110, 110])."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    xyz = _mix(lin, _RGB_TO_XYZ) / _WHITE.to(rgb.dtype).to(rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1 / 3), _KAPPA * xyz + 16 / 116)
    L = 116 * f[:, 1:2] - 16
    a = 500 * (f[:, 0:1] - f[:, 1:2])
    b = 200 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([L, a, b], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) Lab -> (N, 3, H, W) sRGB clamped to [0, 1]."""
    fy = (lab[:, 0:1] + 16) / 116
    f = torch.cat([lab[:, 1:2] / 500 + fy, fy, fy - lab[:, 2:3] / 200], 1)
    xyz = torch.where(f > 0.206893, f**3, (f - 16 / 116) / _KAPPA) * _WHITE.to(lab.dtype).to(lab.device).view(
        1, 3, 1, 1
    )
    lin = _mix(xyz, torch.linalg.inv(_RGB_TO_XYZ)).clamp(min=0)
    rgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0, 1)


def lab_to_net(lab: torch.Tensor) -> torch.Tensor:
    """Lab -> network scale: (L / 50 - 1, a / 110, b / 110)."""
    return torch.cat([lab[:, :1] / 50 - 1, lab[:, 1:] / AB_SCALE], 1)


def net_to_lab(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`lab_to_net`."""
    return torch.cat([(x[:, :1] + 1) * 50, x[:, 1:] * AB_SCALE], 1)


def grey_of(lab_net: torch.Tensor) -> torch.Tensor:
    """The grey version of network-scale Lab images: same L, ab = 0."""
    return torch.cat([lab_net[:, :1], torch.zeros_like(lab_net[:, 1:])], 1)
