"""SimGAN (Shrivastava et al. 2017): the refiner, and the history buffer of refined images that
its discriminator reads half of each batch from. The discriminator is the local (patch-wise) one
of :class:`pipeline.models.gan.PatchDiscriminator`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ResnetBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(x))), then ReLU, as the paper's refiner blocks: (N, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(True), nn.Conv2d(channels, channels, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class Refiner(nn.Module):
    """A fully convolutional refiner: conv3x3 to ``width`` channels, ``blocks`` ResNet blocks, and a
    1x1 conv back to the image, squashed by tanh. forward(x (N, C, H, W) in [-1, 1]) -> same shape
    in [-1, 1]. No pooling: every output pixel sees a small neighbourhood of its input, so the
    refiner changes local appearance, not the digit."""

    def __init__(self, channels: int = 1, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1), nn.ReLU(True),
                                 *[ResnetBlock(width) for _ in range(blocks)], nn.Conv2d(width, channels, 1))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


class HistoryBuffer:
    """SimGAN's history of refined images (Shrivastava et al., section 2.3): the discriminator's
    batch of refined images is half current ones and half drawn from the buffer, and then that many
    random buffer entries are replaced by current ones. Until the buffer holds half a batch it only
    fills. Seeded; its state (images, random state, counts) goes into the checkpoint."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.images: torch.Tensor | None = None
        self.rng = np.random.default_rng(seed)
        self.served = self.from_history = 0

    def mix(self, refined: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) current refined images -> (N, C, H, W): half of them swapped for buffered ones."""
        refined = refined.detach()
        half = len(refined) // 2
        stored = 0 if self.images is None else len(self.images)
        out = refined
        if self.size > 0 and stored >= half > 0:
            pick = torch.as_tensor(self.rng.choice(stored, half, replace=False), device=refined.device)
            out = torch.cat([refined[: len(refined) - half], self.images[pick]])
            self.from_history += half
        self.served += len(refined)
        self._store(refined[len(refined) - half :] if half else refined)
        return out

    def _store(self, new: torch.Tensor) -> None:
        if self.size == 0:
            return
        if self.images is None:
            self.images = new[: self.size].clone()
            return
        room = self.size - len(self.images)
        if room > 0:
            self.images = torch.cat([self.images, new[:room]])
            new = new[room:]
        if len(new):
            slots = torch.as_tensor(self.rng.choice(len(self.images), len(new), replace=False), device=new.device)
            self.images[slots] = new

    @property
    def history_share(self) -> float:
        """The share of images served from the buffer so far."""
        return self.from_history / self.served if self.served else 0.0

    def to(self, device: torch.device) -> HistoryBuffer:
        if self.images is not None:
            self.images = self.images.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"images": None if self.images is None else self.images.cpu(), "rng": self.rng.bit_generator.state,
                "served": self.served, "from_history": self.from_history}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = state["images"]
        self.rng.bit_generator.state = state["rng"]
        self.served, self.from_history = state["served"], state["from_history"]
