"""Image transforms applied once, where data is prepared: patch cutting, the filters of the
painterly rendering (:mod:`pipeline.data.painting`), the nuisance transforms (per image, in
numpy), and image-to-tensor conversion. The batched, on-device augmentation of the training
loops is :mod:`pipeline.data.augment`.

Every random transform takes an explicit ``numpy.random.Generator``, so a seed fixes it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from pipeline.color import LUMA, to_gray

NUISANCES = ("rot", "bg", "dil")


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
            box = functools.partial(ndimage.uniform_filter, size=k, origin=(oy, ox), mode="reflect")
            means.append(np.stack([box(img[..., c]) for c in range(3)], -1))
            variances.append(box(luma**2) - box(luma) ** 2)
    best = np.argmin(np.stack(variances), axis=0)  # (H, W)
    out = np.take_along_axis(np.stack(means), best[None, ..., None].repeat(3, -1), axis=0)[0]
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def posterize(image: np.ndarray, levels: int) -> np.ndarray:
    """Quantise each channel to ``levels`` evenly spaced values."""
    step = 255.0 / (levels - 1)
    return (np.round(image.astype(np.float64) / step) * step).clip(0, 255).astype(np.uint8)


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


# ----------------------------------------------------------------------------- tensors


def to_tensor(images: list[np.ndarray] | np.ndarray, channels: int = 3) -> torch.Tensor:
    """uint8 images (N of (H, W[, 3])) of one size -> float (N, channels, H, W) in [0, 1]."""
    arr = np.stack([im if im.ndim == 3 else np.repeat(im[..., None], 3, -1) for im in images])
    # contiguous: a permuted view is channels_last in memory, which sends CPU convolutions to oneDNN's
    # nhwc kernels, whose 1x1 stride-2 backward hangs with few input channels (oneDNN issue 6035)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    return to_gray(x) if channels == 1 else x
