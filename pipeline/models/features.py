"""Feature networks for evaluation, and the kNN probe protocol of a backbone.

- ``embed`` / ``with_data_statistics`` / ``knn_probe``: kNN top-1 of a backbone with BatchNorm
  statistics recomputed on the bank (the same protocol for every backbone, trained or not).
- ``feature_net``: the network that FD and KID are computed on (named in every report). By
  default ``random_resnet``, a ResNet-18 (width 32) with a fixed seed that no generator shares,
  BatchNorm statistics set on the reference (real) images, features = global-average-pooled
  layer2..layer4 (448 dims). Nothing can be downloaded here, so ImageNet Inception features
  are an option only: ``inception`` loads a local torchvision ``inception_v3`` state dict
  (2048-d pool features at 299 px).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError
from pipeline.io import load_torch
from pipeline.metrics.knn import ProbeResult, knn_score
from pipeline.models import evaluating, in_chunks, recompute_batchnorm
from pipeline.models.resnet import ResNet

FEATURE_SEED = 20_231_117


def embed(backbone: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """l2-normalised features (N, D) of images x (N, C, H, W), in eval mode."""
    with evaluating(backbone):
        return in_chunks(lambda c: F.normalize(backbone.embed(c), dim=1), x, batch)


@torch.no_grad()
def with_data_statistics(backbone: nn.Module, x: torch.Tensor, batch: int = 256) -> nn.Module:
    """A copy of ``backbone`` in eval mode whose BatchNorm running statistics are the exact mean/var
    over ``x`` (:func:`pipeline.models.recompute_batchnorm`); ``backbone`` is left as it is."""
    return recompute_batchnorm(copy.deepcopy(backbone), x, batch).eval()


def knn_probe(
    backbone: nn.Module,
    bank_x: torch.Tensor,
    bank_y: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> ProbeResult:
    """kNN top-1 with BatchNorm statistics recomputed on the bank (the same protocol for every backbone).

    A randomly initialised network's BN running stats are meaningless (mean 0, var 1), which
    costs it ~20 points; recomputing them on the bank makes the untrained baseline fair.
    """
    model = with_data_statistics(backbone, bank_x)
    return knn_score(embed(model, bank_x), bank_y, embed(model, query_x), query_y, k, temperature)


class RandomResNetFeatures(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, 14 * width) pooled layer2..layer4 features of a seeded untrained ResNet-18."""

    name = "random_resnet"

    def __init__(self, reference: torch.Tensor, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(FEATURE_SEED)
        self.net = with_data_statistics(ResNet(width, 3), reference)

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
            raise UserError(
                f"translate.inception_weights: {weights} is not an inception_v3 state dict ({type(exc).__name__})"
            ) from None
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
