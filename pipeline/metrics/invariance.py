"""Per-class invariance of a classifier: expected KL divergence under the nuisance transform.

eKLD(c) = mean over test images x of class c, and K draws x' ~ T(.|x), of
KL(p(y|x) || p(y|x')). x' is a transformed copy of the SAME x (the public code of seed 000
pairs x with a transformed copy of another image of the class, which measures class spread,
not invariance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.transforms import apply_nuisance, draw_nuisance, to_tensor


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) per row: (N, C), (N, C) -> (N,), always >= 0."""
    log_p = F.log_softmax(logits_p.double(), dim=1)
    log_q = F.log_softmax(logits_q.double(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).clamp_min(0.0)


@torch.no_grad()
def ekld_by_class(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: list[np.ndarray],
    labels: np.ndarray,
    transform: str,
    draws: int,
    rng: np.random.Generator,
) -> dict[int, float]:
    """eKLD per class of ``predict`` (float (N, 1, H, W) -> logits (N, C)).

    images: clean grey uint8 (H, W); labels (N,); ``draws`` fresh nuisance draws per image.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    clean_logits = predict(to_tensor(images, channels=1))
    total = torch.zeros(len(images), dtype=torch.float64)
    for _ in range(draws):
        moved = [apply_nuisance(img, draw_nuisance(transform, rng)) for img in images]
        total += kl_divergence(clean_logits, predict(to_tensor(moved, channels=1)))
    per_image = (total / draws).numpy()
    return {int(c): float(per_image[labels == c].mean()) for c in np.unique(labels)}


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of per-class recalls (classes present in ``y_true``)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_true, y_pred))
