"""SwAV (Caron et al. 2020): prototypes, distributed Sinkhorn-Knopp, swapped prediction over multi-crop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.collectives import all_reduce_max, all_reduce_sum


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Equipartitioned soft codes from prototype scores.

    scores: (B, K) on this worker. Returns Q (B, K) whose rows sum to 1 and whose columns
    sum to B_total / K over all workers: the row/column sums are all-reduced, so every
    worker solves the same transport problem as one big batch would.
    """
    scores = scores.float()
    top = scores.max()
    all_reduce_max(top)  # one shift for all workers keeps exp() finite and the problem the same
    q = torch.exp((scores - top) / epsilon).t()  # (K, B)
    k, b = q.shape
    b_total = torch.tensor(float(b), device=q.device)
    all_reduce_sum(b_total)
    total = q.sum()
    all_reduce_sum(total)
    q /= total
    for _ in range(iters):
        rows = q.sum(dim=1, keepdim=True)
        all_reduce_sum(rows)
        q /= rows
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b_total
    return (q * b_total).t()


def swapped_prediction_loss(
    scores: list[torch.Tensor], n_global: int, temperature: float, epsilon: float, iters: int
) -> torch.Tensor:
    """SwAV loss: codes of each global crop predicted from every other crop.

    scores: one (B, K) tensor per crop (the first ``n_global`` are global crops).
    """
    total = scores[0].new_zeros(())
    for i in range(n_global):
        q = sinkhorn(scores[i].detach(), epsilon, iters)
        sub = 0.0
        others = [v for v in range(len(scores)) if v != i]
        for v in others:
            sub = sub - (q * F.log_softmax(scores[v] / temperature, dim=1)).sum(dim=1).mean()
        total = total + sub / len(others)
    return total / n_global


class Swav(nn.Module):
    """Backbone + projector + prototypes.

    forward(crops: list of (N, C, h, w) groups, same size within a group) -> (loss, z of the first crop (N, dim)).
    """

    def __init__(
        self, backbone: nn.Module, hidden: int, dim: int, n_prototypes: int,
        temperature: float, epsilon: float, iters: int, n_global: int = 2,
    ) -> None:  # fmt: skip
        super().__init__()
        self.backbone = backbone
        self.projector = nn.Sequential(
            nn.Linear(backbone.out_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
        self.prototypes = nn.Linear(dim, n_prototypes, bias=False)
        self.temperature, self.epsilon, self.iters, self.n_global = temperature, epsilon, iters, n_global
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, crops: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = [c.shape[0] for c in crops]
        embeds = []
        start = 0
        while start < len(crops):  # one backbone pass per resolution, as in the reference
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            embeds.append(self.backbone.embed(torch.cat(crops[start:end])))
            start = end
        z = F.normalize(self.projector(torch.cat(embeds)), dim=1)
        scores = list(self.prototypes(z).split(sizes))
        loss = swapped_prediction_loss(scores, self.n_global, self.temperature, self.epsilon, self.iters)
        return loss, z[: sizes[0]].detach()
