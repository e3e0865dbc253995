"""Image transforms: patch cutting, the painterly filter, the nuisance transforms, SSL views.

Every random transform takes an explicit ``numpy.random.Generator``, so a seed fixes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

NUISANCES = ("rot", "bg", "dil")
LUMA = (0.299, 0.587, 0.114)


def resize_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so that the longer side is at most ``max_side``."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 image of side ``size`` (bicubic)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def random_patches(
    image: np.ndarray,
    n: int,
    size: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    x_range: tuple[float, float] = (0.0, 1.0),
) -> list[tuple[np.ndarray, int, int, int]]:
    """``n`` square crops resized to ``size``; each is (patch, y, x, side).

    The crop side is ``scale`` times the shorter side of the allowed region, whose columns
    are the fraction ``x_range`` of the image width.
    """
    h, w = image.shape[:2]
    x0, x1 = int(round(x_range[0] * w)), int(round(x_range[1] * w))
    short = min(h, x1 - x0)
    out = []
    for _ in range(n):
        side = max(2, int(round(short * rng.uniform(*scale))))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(x0, x1 - side + 1))
        out.append((resize(image[y : y + side, x : x + side], size), y, x, side))
    return out


def kuwahara(image: np.ndarray, radius: int) -> np.ndarray:
    """Kuwahara filter: each pixel takes the mean colour of its least-varied quadrant.

    image: uint8 (H, W, 3). The four quadrants are the (radius+1)^2 windows that have the
    pixel as a corner; variance is measured on luminance.
    """
    img = image.astype(np.float64)
    luma = img @ np.asarray(LUMA)
    k = radius + 1
    before, after = k - 1 - k // 2, -(k // 2)  # origins: windows [i-r, i] and [i, i+r]
    means, variances = [], []
    for oy in (before, after):
        for ox in (before, after):
            box = lambda a: ndimage.uniform_filter(a, size=k, origin=(oy, ox), mode="reflect")  # noqa: E731
            means.append(np.stack([box(img[..., c]) for c in range(3)], -1))
            variances.append(box(luma**2) - box(luma) ** 2)
    best = np.argmin(np.stack(variances), axis=0)  # (H, W)
    out = np.take_along_axis(np.stack(means), best[None, ..., None].repeat(3, -1), axis=0)[0]
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def posterize(image: np.ndarray, levels: int) -> np.ndarray:
    """Quantise each channel to ``levels`` evenly spaced values."""
    step = 255.0 / (levels - 1)
    return (np.round(image.astype(np.float64) / step) * step).clip(0, 255).astype(np.uint8)


def paint(image: np.ndarray, radius: int, levels: int) -> np.ndarray:
    """The deterministic painterly filter: Kuwahara smoothing, then colour quantisation."""
    return posterize(kuwahara(image, radius), levels)


# ----------------------------------------------------------------------------- nuisances


def draw_nuisance(name: str, rng: np.random.Generator) -> dict[str, Any]:
    """Parameters of one draw of a nuisance transform (seed 000's ROT, BG, DIL)."""
    if name == "rot":
        return {"name": "rot", "angle": float(rng.uniform(-180.0, 180.0))}
    if name == "bg":
        return {"name": "bg", "level": int(rng.integers(0, 100))}
    if name == "dil":
        if rng.random() < 0.6:
            return {"name": "dil", "op": "dilate", "size": int(rng.choice([2, 3, 4]))}
        return {"name": "dil", "op": "erode", "size": int(rng.choice([1, 2]))}
    raise ValueError(f"unknown nuisance transform '{name}' (allowed: {', '.join(NUISANCES)})")


def apply_nuisance(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Apply a drawn nuisance to a grey uint8 image (H, W) with a black (0) background."""
    name = params["name"]
    if name == "rot":
        out = Image.fromarray(image).rotate(params["angle"], resample=Image.BILINEAR, fillcolor=0)
        return np.asarray(out)
    if name == "bg":
        out = image.copy()
        out[image == 0] = params["level"]
        return out
    if name == "dil":
        size = params["size"]
        op = ndimage.grey_dilation if params["op"] == "dilate" else ndimage.grey_erosion
        return op(image, size=(size, size))
    raise ValueError(f"unknown nuisance transform '{name}' (allowed: {', '.join(NUISANCES)})")


# ----------------------------------------------------------------------------- SSL views


def to_tensor(images: list[np.ndarray] | np.ndarray, channels: int = 3) -> torch.Tensor:
    """uint8 images (N of (H, W[, 3])) of one size -> float (N, channels, H, W) in [0, 1]."""
    arr = np.stack([im if im.ndim == 3 else np.repeat(im[..., None], 3, -1) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    return to_gray(x) if channels == 1 else x


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luminance."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def random_square(image: np.ndarray, side_scale: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A random square crop whose side is a fraction ~ U(side_scale) of the shorter side (no resize)."""
    h, w = image.shape[:2]
    side = max(2, int(round(min(h, w) * rng.uniform(*side_scale))))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    return image[y : y + side, x : x + side]


def random_resized_crops(
    images: list[np.ndarray], size: int, scale: tuple[float, float], rng: np.random.Generator
) -> torch.Tensor:
    """One crop per image: area fraction ~ U(scale), aspect in [3/4, 4/3], resized to ``size``.

    images: N uint8 arrays (H, W, 3) of any size. Returns float (N, 3, size, size) in [0, 1].
    """
    out = torch.empty(len(images), 3, size, size)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        area = h * w * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, max(2, round(np.sqrt(area / ratio)))))
        cw = int(min(w, max(2, round(np.sqrt(area * ratio)))))
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        crop = torch.from_numpy(np.ascontiguousarray(img[y : y + ch, x : x + cw])).permute(2, 0, 1)
        out[i] = F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return out.div_(255.0).clamp_(0, 1)


def color_augment(
    x: torch.Tensor, rng: np.random.Generator, jitter: float, grayscale_p: float, jitter_p: float = 0.8
) -> torch.Tensor:
    """SimCLR-style augmentation on a batch (N, 3, H, W) in [0, 1], per-sample parameters.

    Horizontal flip (p 0.5); with p ``jitter_p`` brightness, contrast, saturation in
    [1 - jitter, 1 + jitter] and a hue rotation of up to jitter/4 turns; grey with p ``grayscale_p``.
    """
    n = x.shape[0]

    def col(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values.astype(np.float32)).view(n, 1, 1, 1)

    flip = torch.from_numpy(rng.random(n) < 0.5)
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    on = rng.random(n) < jitter_p
    b = np.where(on, rng.uniform(1 - jitter, 1 + jitter, n), 1.0)
    c = np.where(on, rng.uniform(1 - jitter, 1 + jitter, n), 1.0)
    s = np.where(on, rng.uniform(1 - jitter, 1 + jitter, n), 1.0)
    hue = np.where(on, rng.uniform(-jitter / 4, jitter / 4, n), 0.0) * 2 * np.pi
    x = (x * col(b)).clamp(0, 1)
    mean = to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * col(c) + mean).clamp(0, 1)
    g = to_gray(x)
    x = ((x - g) * col(s) + g).clamp(0, 1)
    x = _rotate_hue(x, hue)
    gray = torch.from_numpy(rng.random(n) < grayscale_p).view(n, 1, 1, 1)
    return torch.where(gray, to_gray(x).expand_as(x), x)


def _rotate_hue(x: torch.Tensor, angles: np.ndarray) -> torch.Tensor:
    """Rotate chroma in YIQ space by per-sample ``angles`` (radians). x: (N, 3, H, W)."""
    rgb2yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq2rgb = torch.linalg.inv(rgb2yiq)
    cos = torch.from_numpy(np.cos(angles).astype(np.float32))
    sin = torch.from_numpy(np.sin(angles).astype(np.float32))
    rot = torch.zeros(len(angles), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = yiq2rgb @ rot @ rgb2yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)
