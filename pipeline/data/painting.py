"""The painting domain: a deterministic painterly rendering of a photo patch.

Four steps, each a classic non-photorealistic rendering operation:

1. abstraction: a Kuwahara filter flattens texture and keeps edges;
2. brush strokes: colours are smeared along the local edge direction (a line-integral blur along
   the tangent of the structure tensor), so flat areas turn into strokes that follow the shapes;
3. palette: saturation is raised and the colours are quantised to a few levels per channel;
4. edge darkening: a difference of Gaussians on luminance darkens the contours like ink lines.

The result is far enough from the photo in style (colour statistics, texture, contours) that the
identity is a poor painter, yet it is a pure function of the photo, so every test photo has an
exact painted twin.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from pipeline.color import LUMA
from pipeline.data.transforms import kuwahara, posterize, to_tensor


def stroke_directions(luma: np.ndarray, sigma: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Unit tangent (dy, dx) per pixel of (H, W) luminance: the structure tensor's minor eigenvector."""
    gy, gx = ndimage.sobel(luma, 0, mode="reflect"), ndimage.sobel(luma, 1, mode="reflect")
    jxx, jyy, jxy = (ndimage.gaussian_filter(a, sigma, mode="reflect") for a in (gx * gx, gy * gy, gx * gy))
    theta = 0.5 * np.arctan2(2 * jxy, jxx - jyy)  # gradient direction; strokes run across it
    return np.cos(theta), -np.sin(theta)


def brush_strokes(image: np.ndarray, length: int) -> np.ndarray:
    """Average float (H, W, 3) colours over ``2 * length + 1`` samples along each pixel's tangent."""
    if length == 0:
        return image
    dy, dx = stroke_directions(image @ np.asarray(LUMA))
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    acc = np.zeros_like(image)
    for t in range(-length, length + 1):
        coords = np.stack([yy + t * dy, xx + t * dx])
        acc += np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], -1)
    return acc / (2 * length + 1)


def saturate(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale float RGB (H, W, 3) away from its luminance by ``factor``."""
    grey = (image @ np.asarray(LUMA))[..., None]
    return grey + factor * (image - grey)


def palette(image: np.ndarray, saturation: float, levels: int) -> np.ndarray:
    """Step 3 on float RGB (H, W, 3) in [0, 255]: raise the saturation, then quantise -> uint8 (H, W, 3)."""
    return posterize(np.clip(saturate(image, saturation), 0, 255).round().astype(np.uint8), levels)


def palette_rgb(rgb: torch.Tensor, saturation: float, levels: int) -> torch.Tensor:
    """:func:`palette` alone on RGB (N, 3, H, W) in [0, 1] -> the same: the painting's colours
    without its strokes and ink (the oracle of a stylizer that learns the colours only)."""
    photos = (rgb.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return to_tensor([palette(im.astype(np.float64), saturation, levels) for im in photos])


def edge_darkening(image: np.ndarray, strength: float, sigma: float = 0.8) -> np.ndarray:
    """Darken float RGB where a difference of Gaussians of luminance is negative (the dark side of a contour)."""
    luma = image @ np.asarray(LUMA)
    dog = ndimage.gaussian_filter(luma, sigma, mode="reflect") - ndimage.gaussian_filter(
        luma, 1.6 * sigma, mode="reflect"
    )
    ink = np.clip(-dog / 12.0, 0.0, 1.0)  # ~12 grey levels of contrast = a full line
    return image * (1.0 - strength * ink[..., None])


def painterly(
    image: np.ndarray, radius: int, stroke_length: int, saturation: float, levels: int, edges: float
) -> np.ndarray:
    """uint8 (H, W, 3) photo -> uint8 (H, W, 3) painting (steps in the module docstring)."""
    flat = kuwahara(image, radius).astype(np.float64)
    stroked = brush_strokes(flat, stroke_length)
    coloured = palette(stroked, saturation, levels)
    return np.clip(edge_darkening(coloured.astype(np.float64), edges).round(), 0, 255).astype(np.uint8)
