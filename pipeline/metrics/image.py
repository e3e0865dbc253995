"""Image-translation scores: L1, PSNR, SSIM, and Frechet distance / KID on the features of a
given feature function (the networks live in :mod:`pipeline.models.features`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.color import to_gray
from pipeline.models import in_chunks


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).abs().mean())


def l1_luma_chroma(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """The RGB L1 of (N, 3, H, W) images in [0, 1] split in two: the L1 of their luminance (brightness,
    texture, contours) and the L1 of what is left per channel, RGB minus luminance (the colours)."""
    yp, yt = to_gray(pred), to_gray(target)
    return l1(yp, yt), l1(pred - yp, target - yt)


PSNR_CAP_DB = 100.0  # an image equal to its target (MSE 0, infinite PSNR) counts as an MSE of 1e-10


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of the PSNR (dB) of (N, C, H, W) images in [0, 1] (scikit-image, float64)."""
    p, t = pred.double().numpy(), target.double().numpy()
    with np.errstate(divide="ignore"):
        values = [peak_signal_noise_ratio(b, a, data_range=1.0) for a, b in zip(p, t)]
    return float(np.mean(np.minimum(values, PSNR_CAP_DB)))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM of (N, C, H, W) images in [0, 1] (scikit-image, 7x7 window, colour averaged)."""
    p = pred.permute(0, 2, 3, 1).double().numpy()
    t = target.permute(0, 2, 3, 1).double().numpy()
    win = min(7, p.shape[1] - (1 - p.shape[1] % 2), p.shape[2] - (1 - p.shape[2] % 2))
    return float(
        np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win) for a, b in zip(p, t)])
    )


def batched(features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 128) -> np.ndarray:
    """features(x) in chunks, as float64 (N, D)."""
    return in_chunks(features, x, batch).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = covmean.real
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def kernel_inception_distance(
    a: np.ndarray, b: np.ndarray, subset_size: int = 64, subsets: int = 50, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets.

    Zero in expectation for one distribution (single estimates may be slightly negative).
    """
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def image_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    subset_size: int,
    subsets: int,
) -> dict[str, float]:
    """L1 (RGB, [0, 1] scale), PSNR, SSIM, FD and KID of predicted vs target RGB images (N, 3, H, W) in [0, 1];
    FD and KID on ``features`` (N, 3, H, W) -> (N, D)."""
    fp, ft = batched(features, pred), batched(features, target)
    kid, kid_std = kernel_inception_distance(fp, ft, subset_size, subsets)
    return {
        "l1_rgb": l1(pred, target),
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "fd": frechet_distance(fp, ft),
        "kid": kid,
        "kid_std": kid_std,
    }
