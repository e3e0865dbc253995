"""Process-group collectives the methods use inside a step (SwAV's Sinkhorn sums, ACE's gradient
averages). Each is the identity outside a process group of more than one worker, so the same
code runs on one worker, under Ray Train (gloo / NCCL) or in a test without either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over workers; the identity outside a process group."""
    if _world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """In-place maximum over workers; the identity outside a process group."""
    if _world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every worker's ``obj`` (picklable), in rank order; ``[obj]`` outside a process group."""
    if _world() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average ``params``' gradients over the workers in one all-reduce (for loops that step
    several optimizers on one forward, where a DDP wrapper does not fit); a missing grad counts as 0."""
    if _world() == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    start = 0
    for p in params:
        p.grad.copy_(flat[start : start + p.numel()].view_as(p))
        start += p.numel()
