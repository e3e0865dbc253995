"""Long-tailed class profiles (seed 000): how many training images each class keeps."""

from __future__ import annotations

import math

import numpy as np


def zipf_counts(num_classes: int, n_max: int, n_min: int, a: float) -> list[int]:
    """n_c = max(floor(n_max * c^-a), n_min) for ranks c = 1..C (the K49-LT profile)."""
    return [max(int(math.floor(n_max * c ** (-a))), n_min) for c in range(1, num_classes + 1)]


def exp_counts(num_classes: int, n_max: int, n_min: int) -> list[int]:
    """n_c = n_max * rho^(-c/(C-1)), rho = n_max/n_min, for ranks c = 0..C-1 (the CIFAR-LT profile)."""
    if num_classes == 1:
        return [n_max]
    rho = n_max / n_min
    return [max(int(math.floor(n_max * rho ** (-c / (num_classes - 1)))), n_min) for c in range(num_classes)]


def class_counts(profile: str, num_classes: int, n_max: int, n_min: int, a: float) -> list[int]:
    """Counts by rank (largest first) for ``profile`` in {zipf, exp}."""
    if profile == "zipf":
        return zipf_counts(num_classes, n_max, n_min, a)
    if profile == "exp":
        return exp_counts(num_classes, n_max, n_min)
    raise ValueError(f"unknown long-tail profile '{profile}' (allowed: zipf, exp)")


def assign_counts(labels: np.ndarray, counts_by_rank: list[int], rng: np.random.Generator) -> dict[int, int]:
    """Map each class to a count; which class gets which rank is drawn with ``rng``."""
    classes = np.unique(labels)
    if len(classes) != len(counts_by_rank):
        raise ValueError(f"{len(classes)} classes but {len(counts_by_rank)} counts")
    order = rng.permutation(classes)
    return {int(c): int(n) for c, n in zip(order, counts_by_rank)}
