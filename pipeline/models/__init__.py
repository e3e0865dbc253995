"""Networks of the pipeline, plus the helpers every evaluation uses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    """``fn`` over ``x`` (N, ...) in chunks of ``batch`` along the first dimension, concatenated."""
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd inside the block; the module's previous train/eval mode after it."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """The bare ``module`` (out of its DistributedDataParallel wrapper) with no parameter requiring a
    gradient inside the block: a generator's loss through a discriminator then computes no gradient
    for the discriminator's weights and, under DDP, all-reduces none (the references'
    ``set_requires_grad(D, False)``). Its outputs are the wrapped module's, as long as it has no
    buffers for DDP to broadcast (the PatchGAN discriminators have none)."""
    bare = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
    params = [p for p in bare.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield bare
    finally:
        for p in params:
            p.requires_grad_(True)


def recompute_batchnorm(module: nn.Module, images: torch.Tensor, batch: int = 64) -> nn.Module:
    """Set every BatchNorm's running mean and variance to their average over ``images`` (N, C, H, W),
    fed in order in chunks of ``batch`` ("precise BN", ``torch.optim.swa_utils.update_bn``);
    ``module`` keeps its train/eval mode and its BatchNorms their momentum.

    Why: the running estimate is an exponential average with momentum 0.1, so after training on a
    few images per worker it mostly holds the last ten or so batches, and eval mode inherits their
    noise. Training itself is unchanged: train mode normalises with the batch's own statistics.
    """
    update_bn([images[i : i + batch] for i in range(0, len(images), batch)], module)
    return module
