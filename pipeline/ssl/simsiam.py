"""SimSiam (Chen & He 2021): projector, predictor, negative cosine with stop-gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def projector(in_dim: int, dim: int) -> nn.Sequential:
    """3-layer MLP (N, in_dim) -> (N, dim); the last BN has no affine (the reference head)."""
    return nn.Sequential(
        nn.Linear(in_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
    )  # fmt: skip


def predictor(dim: int, hidden: int) -> nn.Sequential:
    """Bottleneck MLP (N, dim) -> (N, dim)."""
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
    )


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, sg(z)) = -mean_i cos(p_i, z_i), gradient stopped through z. p, z: (N, D) -> scalar."""
    return -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetrised loss D(p1, sg(z2))/2 + D(p2, sg(z1))/2, in [-1, 1]."""
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


class SimSiam(nn.Module):
    """Backbone + projector + predictor. forward(x1, x2: (N, C, H, W)) -> (loss, z1 (N, dim)).

    Each view takes its own pass, as in both references (facebookresearch/simsiam, lightly): every
    BatchNorm normalises a view by that view's batch statistics. One pass over ``cat([x1, x2])``
    would mix the two views' statistics, and change the loss and its gradients."""

    def __init__(self, backbone: nn.Module, proj_dim: int, pred_hidden: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector(backbone.out_dim, proj_dim)
        self.predictor = predictor(proj_dim, pred_hidden)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = (self.projector(self.backbone.embed(x)) for x in (x1, x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return simsiam_loss(p1, p2, z1, z2), z1.detach()
