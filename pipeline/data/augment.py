"""Batched augmentation on the worker's device, for every training loop.

Every random parameter is drawn per sample from an explicit ``torch.Generator`` that lives on
the same device as the images, so (seed, epoch, rank) fix a batch and nothing leaves the device.
torchvision.transforms.v2 functionals take one parameter per call (a whole batch shares it) and
kornia is not part of the stack, so the per-sample ops are written here as batched tensor ops.
The tests check each against its per-image counterpart (PIL, scipy, torchvision functionals).

Images are float (N, C, H, W) in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.color import to_gray
from pipeline.data.transforms import NUISANCES

# ----------------------------------------------------------------------------- random draws


def uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    """(n,) samples of U(lo, hi) on ``g``'s device."""
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def below(high: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One integer in [0, high_i) per entry of ``high`` (long, >= 1)."""
    u = torch.rand(high.shape, generator=g, device=g.device)
    return torch.minimum((u * high).long(), high - 1)


def balanced_draw(labels: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n indices drawn class-balanced: a uniform class, then a uniform image of it. labels: (N,) long."""
    classes, counts = labels.unique(return_counts=True)
    order = torch.argsort(labels, stable=True)  # images grouped by class, classes in ascending order
    starts = torch.cumsum(counts, 0) - counts
    c = below(torch.full((n,), len(classes), device=g.device), g).to(labels.device)
    return order[starts[c] + below(counts[c].to(g.device), g).to(labels.device)]


# ----------------------------------------------------------------------------- crops


class PhotoBank:
    """Photos of different sizes, zero-padded into one tensor on ``device``.

    images: (K, 3, H_max, W_max) in [0, 1]; sizes: (K, 2) long (height, width).
    """

    def __init__(self, photos: list[np.ndarray], device: torch.device) -> None:
        h, w = max(p.shape[0] for p in photos), max(p.shape[1] for p in photos)
        images = torch.zeros(len(photos), 3, h, w)
        for i, p in enumerate(photos):
            rgb = p if p.ndim == 3 else np.repeat(p[..., None], 3, -1)
            images[i, :, : p.shape[0], : p.shape[1]] = torch.tensor(rgb).permute(2, 0, 1).float() / 255
        self.images = images.to(device)
        self.sizes = torch.tensor([p.shape[:2] for p in photos], device=device)

    def __len__(self) -> int:
        return len(self.sizes)


def random_squares(
    sizes: torch.Tensor, n: int, side_scale: tuple[float, float], g: torch.Generator, every_photo: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random squares of random photos (of photo i in order, with ``every_photo``, n = the
    photo count): photo index (n,) and box (n, 4) as pixel (x0, y0, x1, y1).

    The side is a fraction ~ U(side_scale) of the photo's shorter side (at least 2 px)."""
    if every_photo:
        k = torch.arange(n, device=g.device)
    else:
        k = below(torch.full((n,), len(sizes), device=g.device), g)
    h, w = sizes[k, 0], sizes[k, 1]
    short = torch.minimum(h, w)
    side = torch.minimum(torch.clamp((short * uniform(n, *side_scale, g)).round().long(), min=2), short)
    y = below(h - side + 1, g)
    x = below(w - side + 1, g)
    return k, torch.stack([x, y, x + side, y + side], 1).float()


def random_resized_boxes(boxes: torch.Tensor, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Inside each box (n, 4): a crop of area fraction ~ U(scale), aspect ratio log-uniform in
    [3/4, 4/3] (torchvision's RandomResizedCrop, without its retries), at least 2 px a side."""
    n = len(boxes)
    bw, bh = (boxes[:, 2] - boxes[:, 0]).long(), (boxes[:, 3] - boxes[:, 1]).long()
    area = bw * bh * uniform(n, *scale, g)
    ratio = torch.exp(uniform(n, math.log(3 / 4), math.log(4 / 3), g))
    ch = torch.minimum(bh, torch.clamp(torch.sqrt(area / ratio).round().long(), min=2))
    cw = torch.minimum(bw, torch.clamp(torch.sqrt(area * ratio).round().long(), min=2))
    y = boxes[:, 1].long() + below(bh - ch + 1, g)
    x = boxes[:, 0].long() + below(bw - cw + 1, g)
    return torch.stack([x, y, x + cw, y + ch], 1).float()


def crop_resize(images: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box i (pixel x0, y0, x1, y1) of ``images[index[i]]`` and resize it to ``size`` x ``size``.

    One ``roi_align`` call for the batch; each output pixel averages ceil(box side / size)^2
    bilinear samples of its cell, so a shrink is area-averaged (anti-aliased). -> (n, C, size, size)."""
    from torchvision.ops import (
        roi_align,  # here, not at the top: torchvision's import costs every process that never crops ~2.5 s
    )

    rois = torch.cat([index[:, None].to(images.dtype), boxes.to(images.dtype)], 1)
    return roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True).clamp_(0, 1)


def crop_flip(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """A random ``size`` crop and a horizontal flip (p 0.5) per image, as one gather: (N, C, H, W) -> (N, C, size, size)."""
    n, c, h, w = x.shape
    ys = below(torch.full((n,), h - size + 1, device=g.device), g).to(x.device)
    xs = below(torch.full((n,), w - size + 1, device=g.device), g).to(x.device)
    flip = (torch.rand(n, generator=g, device=g.device) < 0.5).to(x.device)
    step = torch.arange(size, device=x.device)
    rows = ys[:, None] + step  # (n, size)
    cols = torch.where(flip[:, None], xs[:, None] + size - 1 - step, xs[:, None] + step)
    return x[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]  # fmt: skip


# ----------------------------------------------------------------------------- colour


def hflip(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=g, device=g.device) < p).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def rotate_hue(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate chroma in YIQ space by per-sample ``angles`` (N,) in radians. x: (N, 3, H, W)."""
    rgb2yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], 1).view(-1, 3, 3)
    m = torch.linalg.inv(rgb2yiq) @ rot @ rgb2yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)


def color_jitter(
    x: torch.Tensor, g: torch.Generator, jitter: float, grayscale_p: float, jitter_p: float = 0.8
) -> torch.Tensor:
    """SimCLR-style colour augmentation with per-sample parameters. x: (N, 3, H, W).

    With p ``jitter_p``: brightness, contrast and saturation factors in [1 - jitter, 1 + jitter]
    (torchvision's formulas: scale; blend with the mean grey; blend with the grey image) and a
    hue rotation of up to jitter/4 turns; then grey with p ``grayscale_p``."""
    n = len(x)

    def factor() -> torch.Tensor:
        return torch.where(on, uniform(n, 1 - jitter, 1 + jitter, g), 1.0).to(x.device).view(n, 1, 1, 1)

    on = torch.rand(n, generator=g, device=g.device) < jitter_p
    b, c, s = factor(), factor(), factor()
    hue = (torch.where(on, uniform(n, -jitter / 4, jitter / 4, g), 0.0) * 2 * math.pi).to(x.device)
    x = adjust_colors(x, b, c, s, hue)
    gray = (torch.rand(n, generator=g, device=g.device) < grayscale_p).to(x.device).view(n, 1, 1, 1)
    return torch.where(gray, to_gray(x).expand_as(x), x)


def adjust_colors(
    x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor
) -> torch.Tensor:
    """x (N, 3, H, W) in [0, 1] with per-image factors (N, 1, 1, 1) and hue angles (N,) in radians:
    torchvision's brightness (scale), contrast (blend with the mean grey) and saturation (blend with
    the grey image), in that order, then a hue rotation (:func:`rotate_hue`)."""
    x = (x * brightness).clamp(0, 1)
    mean = to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    grey = to_gray(x)
    x = ((x - grey) * saturation + grey).clamp(0, 1)
    return rotate_hue(x, hue)


# ----------------------------------------------------------------------------- nuisances (seed 000)


DIL_WINDOWS = ((True, 2), (True, 3), (True, 4), (False, 1), (False, 2))  # (dilate, size): seed 000's DIL


def draw_nuisances(name: str, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-sample parameters of ``n`` draws of a nuisance, distributed as :func:`transforms.draw_nuisance`."""
    if name == "rot":
        return {"angle": uniform(n, -180.0, 180.0, g)}
    if name == "bg":
        return {"level": below(torch.full((n,), 100, device=g.device), g)}
    if name == "dil":
        dilate = torch.rand(n, generator=g, device=g.device) < 0.6
        size = torch.where(
            dilate,
            2 + below(torch.full((n,), 3, device=g.device), g),
            1 + below(torch.full((n,), 2, device=g.device), g),
        )
        return {"dilate": dilate, "size": size}
    raise ValueError(f"unknown nuisance transform '{name}' (allowed: {', '.join(NUISANCES)})")


def apply_nuisances(x: torch.Tensor, name: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply per-sample draws to grey images (N, 1, H, W) in [0, 1] with a black (0) background.

    rot: bilinear rotation about the centre, counter-clockwise, zero fill (PIL's ``rotate``);
    bg: background pixels set to level / 255; dil: grey dilation or erosion with a square
    window (scipy's ``grey_dilation`` / ``grey_erosion``, whose edge handling equals replicate
    padding for these window sizes), one max-pool per distinct window."""
    params = {k: v.to(x.device) for k, v in params.items()}
    if name == "rot":
        a = params["angle"] * (math.pi / 180)
        cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
        theta = torch.stack([cos, -sin, zero, sin, cos, zero], 1).view(-1, 2, 3).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if name == "bg":
        return torch.where(x == 0, (params["level"].to(x.dtype) / 255).view(-1, 1, 1, 1), x)
    if name == "dil":
        out = x
        for dilate, size in DIL_WINDOWS:  # every window on the whole batch, then a per-sample pick: no host sync
            lead, trail = (
                (size - 1 - size // 2, size // 2) if dilate else (size // 2, size - 1 - size // 2)
            )  # dilation mirrors the window
            pad = (lead, trail, lead, trail)
            sign = 1 if dilate else -1
            pooled = sign * F.max_pool2d(F.pad(sign * x, pad, mode="replicate"), size, stride=1)
            pick = (params["dilate"] == dilate) & (params["size"] == size)
            out = torch.where(pick.view(-1, 1, 1, 1), pooled, out)
        return out
    raise ValueError(f"unknown nuisance transform '{name}' (allowed: {', '.join(NUISANCES)})")
