"""Image-translation scores: L1, PSNR, SSIM, and Frechet distance / KID on a fixed feature network.

Feature network (named in every report): by default ``random_resnet``, a ResNet-18 (width 32)
with a fixed seed that no generator shares, BatchNorm statistics set on the reference (real)
images, features = global-average-pooled layer2..layer4 (448 dims). Nothing can be downloaded
here, so ImageNet Inception features are an option only: ``inception`` loads a local
torchvision ``inception_v3`` state dict (2048-d pool features at 299 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from skimage.metrics import structural_similarity
from torch import nn

from pipeline.errors import UserError
from pipeline.io import load_torch
from pipeline.metrics.knn import recompute_batchnorm
from pipeline.models.resnet import ResNet18

FEATURE_SEED = 20_231_117


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).abs().mean())


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of the PSNR (dB) of (N, C, H, W) images in [0, 1]."""
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM of (N, C, H, W) images in [0, 1] (scikit-image, 7x7 window, colour averaged)."""
    p = pred.permute(0, 2, 3, 1).double().numpy()
    t = target.permute(0, 2, 3, 1).double().numpy()
    win = min(7, p.shape[1] - (1 - p.shape[1] % 2), p.shape[2] - (1 - p.shape[2] % 2))
    return float(np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win) for a, b in zip(p, t)]))


class RandomResNetFeatures(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 14 * width) pooled layer2..layer4 features of a seeded untrained ResNet-18."""

    name = "random_resnet"

    def __init__(self, reference: torch.Tensor, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(FEATURE_SEED)
        self.net = recompute_batchnorm(ResNet18(width, 3), reference)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.net(x)
        return torch.cat([f.mean(dim=(2, 3)) for f in feats[2:]], 1)


class InceptionFeatures(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 2048) pool features of torchvision's inception_v3 from a local state dict."""

    name = "inception"

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        if not Path(weights).is_file():
            raise UserError(f"translate.inception_weights: file not found: {weights}")
        self.net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            self.net.load_state_dict(load_torch(weights))
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"translate.inception_weights: {weights} is not an inception_v3 state dict ({type(exc).__name__})") from None
        self.net.fc = nn.Identity()
        self.net.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return self.net((x - mean) / std)


def feature_net(kind: str, reference: torch.Tensor, inception_weights: str | None = None) -> nn.Module:
    if kind == "inception":
        return InceptionFeatures(inception_weights or "")
    return RandomResNetFeatures(reference)


def batched(net: nn.Module, x: torch.Tensor, batch: int = 128) -> np.ndarray:
    return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]).double().numpy()


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


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subset_size: int = 64, subsets: int = 50, seed: int = 0) -> tuple[float, float]:
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


def image_scores(pred: torch.Tensor, target: torch.Tensor, features: nn.Module, subset_size: int, subsets: int) -> dict[str, float]:
    """L1 (RGB, [0, 1] scale), PSNR, SSIM, FD and KID of predicted vs target RGB images (N, 3, H, W) in [0, 1]."""
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
