"""Shared GAN pieces: the PatchGAN discriminator, adversarial losses, and CycleGAN's image pool."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """PatchGAN: stride-2 4x4 convs with leaky ReLU, then a 1-channel map of real/fake scores.

    forward(x (N, in_channels, H, W)) -> (N, 1, H / 2**n_layers, W / 2**n_layers).
    """

    def __init__(self, in_channels: int, dim: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dim, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(n_layers - 1):
            layers += [nn.Conv2d(dim, 2 * dim, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            dim *= 2
        layers += [nn.Conv2d(dim, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def adversarial_loss(scores: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """``kind`` 'bce' (pix2pix's vanilla cGAN, on logits) or 'lsgan' (least squares, CycleGAN/MUNIT)."""
    target = torch.ones_like(scores) if real else torch.zeros_like(scores)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(scores, target)
    if kind == "lsgan":
        return F.mse_loss(scores, target)
    raise ValueError(f"unknown GAN loss '{kind}' (allowed: bce, lsgan)")


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): the discriminator sees past fakes.

    ``query(batch)``: each image is returned as is until the pool holds ``size``; after that, with
    probability 1/2 it is swapped for a stored one (which the new image replaces). Seeded. It counts
    what it served (``queried``) and how many of those came from the history (``from_history``).
    A pool is meant to live as long as the run: its state (images, random state, counts) goes into
    the checkpoint.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = np.random.default_rng(seed)
        self.queried = self.from_history = 0

    def query(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W): the batch, some images swapped for stored ones."""
        self.queried += len(batch)
        if self.size == 0:
            return batch
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() < 0.5:
                k = int(self.rng.integers(0, self.size))
                out.append(self.images[k].clone())
                self.images[k] = img.clone()
                self.from_history += 1
            else:
                out.append(img)
        return torch.stack(out)

    @property
    def history_share(self) -> float:
        """The share of served images that came from the history (0 while the pool fills)."""
        return self.from_history / max(1, self.queried)

    def state_dict(self) -> dict:
        return {"images": [t.cpu() for t in self.images], "rng": self.rng.bit_generator.state,
                "queried": self.queried, "from_history": self.from_history}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.images = list(state["images"])
        self.rng.bit_generator.state = state["rng"]
        self.queried, self.from_history = state.get("queried", 0), state.get("from_history", 0)

    def to(self, device: torch.device) -> ImagePool:
        self.images = [t.to(device) for t in self.images]
        return self
