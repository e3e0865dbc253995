"""The translation domains and their data: the photos' train split (a seeded fraction, with a
held-out validation set), the test photos and their painted twins.

Domains (all tensors (N, 3, H, W) in [-1, 1]):
- colorize: X = grey Lab (L / 50 - 1, 0, 0), Y = colour Lab (L / 50 - 1, a / 110, b / 110).
- stylize: X = photos, Y = paintings, both RGB * 2 - 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from pipeline import storage
from pipeline.color import grey_of, lab_to_net, lab_to_rgb, net_to_lab, rgb_to_lab
from pipeline.data.shards import decode_png, read_images, read_rows, read_table
from pipeline.data.transforms import to_tensor
from pipeline.errors import UserError

VAL_SIZE = 64


def photo_to_domain(rgb: torch.Tensor, task: str) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] -> the network-scale image of the task's colour/photo domain."""
    return lab_to_net(rgb_to_lab(rgb)) if task == "colorize" else rgb * 2 - 1


def domain_to_rgb(x: torch.Tensor, task: str) -> torch.Tensor:
    """Inverse of :func:`photo_to_domain` (clamped to [0, 1])."""
    return lab_to_rgb(net_to_lab(x)) if task == "colorize" else ((x + 1) / 2).clamp(0, 1)


def train_subset(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded ``fraction`` of n items for training, and up to VAL_SIZE of the rest for validation."""
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, math.ceil(fraction * n))
    return np.sort(perm[:k]), np.sort(perm[k : k + VAL_SIZE])


def load_domains(root: str | Path, task: str, fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """{'X', 'Y'} training images of both domains (``fraction`` of the train split, drawn by ``seed``)
    and {'val_X', 'val_Y'} (paired when the task allows), each (N, 3, H, W)."""
    folder = storage.join(root, "photos")
    train_rows, val_rows = train_subset(read_table(folder, "train", columns=["label"]).num_rows, fraction, seed)
    keep = np.union1d(train_rows, val_rows)  # decode only these: the set may be far larger than memory
    rgb = to_tensor([decode_png(b) for b in read_rows(folder, "train", keep, ["image"]).column("image").to_pylist()])
    train_idx, val_idx = np.searchsorted(keep, train_rows), np.searchsorted(keep, val_rows)
    if task == "colorize":
        lab = photo_to_domain(rgb, task)
        val = lab[val_idx] if len(val_idx) else lab[train_idx][:VAL_SIZE]
        return {"X": grey_of(lab[train_idx]), "Y": lab[train_idx], "val_X": grey_of(val), "val_Y": val}
    paintings, _, _ = read_images(storage.join(root, "painting"), "train")
    x = photo_to_domain(rgb, task)
    val = x[val_idx] if len(val_idx) else x[train_idx][:VAL_SIZE]
    return {"X": x[train_idx], "Y": photo_to_domain(to_tensor(paintings), task), "val_X": val, "val_Y": val}


def load_test(data_root: str | Path, name: str) -> tuple[torch.Tensor, list[str]]:
    images, _, src = read_images(Path(data_root) / name, "test")
    return to_tensor(images), src


def painted_twins(data_root: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Test photos (N, 3, H, W) in [0, 1] and their exact painted twins, in the same order."""
    rgb, src = load_test(data_root, "photos")
    target_rgb, target_src = load_test(data_root, "painting")
    order = {s: i for i, s in enumerate(target_src)}
    missing = [s for s in src if s not in order]
    if missing:
        raise UserError(f"{Path(data_root) / 'painting'}: no painted twin for test photo patch {missing[0]}")
    return rgb, target_rgb[[order[s] for s in src]]
