"""Weighted kNN on given features, chance level, and a bootstrap of a gain (no network here:
the probe protocol that embeds images is :func:`pipeline.models.features.knn_probe`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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


def knn_score(
    bank: torch.Tensor,
    bank_y: torch.Tensor,
    query: torch.Tensor,
    query_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> ProbeResult:
    """kNN top-1 of l2-normalised query features (Q, D) against bank features (B, D) and their labels."""
    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    correct = (knn_predict(bank, bank_y, query, k, temperature, num_classes) == query_y).numpy()
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
