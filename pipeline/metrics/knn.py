"""Weighted kNN probe of a backbone, the fair untrained baseline, and a bootstrap of the gain."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import evaluating


def embed(backbone: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """l2-normalised features (N, D) of images x (N, C, H, W), in eval mode."""
    with evaluating(backbone):
        return torch.cat([F.normalize(backbone.embed(x[i : i + batch]), dim=1) for i in range(0, len(x), batch)])


@torch.no_grad()
def recompute_batchnorm(backbone: nn.Module, x: torch.Tensor, batch: int = 256) -> nn.Module:
    """A copy of ``backbone`` whose BatchNorm running statistics are the exact mean/var over ``x``."""
    model = copy.deepcopy(backbone)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
    model.train()
    for i in range(0, len(x), batch):
        model.embed(x[i : i + batch])
    model.eval()
    return model


def knn_predict(
    bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, k: int, temperature: float, num_classes: int
) -> torch.Tensor:
    """Labels (Q,) voted by the k most cosine-similar bank items, weighted by exp(sim / T)."""
    sim = query @ bank.t()  # (Q, B)
    k = min(k, bank.shape[0])
    top_sim, top_idx = sim.topk(k, dim=1)
    weights = (top_sim / temperature).exp()
    votes = torch.zeros(query.shape[0], num_classes, dtype=weights.dtype)
    votes.scatter_add_(1, bank_labels[top_idx], weights)
    return votes.argmax(dim=1)


@dataclass
class ProbeResult:
    top1: float
    correct: np.ndarray  # (Q,) bool


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
    model = recompute_batchnorm(backbone, bank_x)
    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    pred = knn_predict(embed(model, bank_x), bank_y, embed(model, query_x), k, temperature, num_classes)
    correct = (pred == query_y).numpy()
    return ProbeResult(float(correct.mean()), correct)


def chance_level(labels: torch.Tensor) -> float:
    """Accuracy of always predicting the most frequent class."""
    counts = torch.bincount(labels)
    return counts.max().item() / counts.sum().item()


def bootstrap_gain(correct_a: np.ndarray, correct_b: np.ndarray, n: int, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap over queries of mean(a) - mean(b): (gain, 2.5 %, 97.5 % quantiles)."""
    rng = np.random.default_rng(seed)
    diff = correct_a.astype(np.float64) - correct_b.astype(np.float64)
    idx = rng.integers(0, len(diff), size=(n, len(diff)))
    samples = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))
