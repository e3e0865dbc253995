"""Per-worker loops used by the distributed tests (pickled by value into Ray workers)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from pipeline import ace, distributed, translate
from pipeline.invariance import classify, munit
from pipeline.pretrain import train_loop
from pipeline.ssl.swav import sinkhorn

LOOPS = {"pretrain": train_loop, "translate": translate.train_loop, "classify": classify.train_loop, "munit": munit.train_loop,
         "ace": ace.train_loop}


def sinkhorn_shards(config: dict[str, Any]) -> None:
    """Each rank solves Sinkhorn on its half of a fixed score matrix and saves its codes."""
    w = distributed.worker()
    scores = torch.load(config["scores"], weights_only=True)
    shard = scores.chunk(w.world_size)[w.rank]
    q = sinkhorn(shard, config["epsilon"], config["iters"])
    torch.save(q, Path(config["out"]) / f"q{w.rank}.pt")
    distributed.report({"epoch": 0}, {"done": True}, w)


def killed_once(config: dict[str, Any]) -> None:
    """The real loop ``config['loop']``; on its first attempt rank 1 SIGKILLs itself mid-run.

    It waits until the controller has registered a checkpoint (its snapshot file appears),
    so that a restart must resume from it rather than from scratch.
    """
    w = distributed.worker()
    marker = Path(config["kill_marker"])
    if w.rank == 1 and not marker.exists():

        def kill_after_first_checkpoint() -> None:
            run_dir = Path(config["run_dir"])
            while not (run_dir / "checkpoint_manager_snapshot.json").exists():
                time.sleep(0.02)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=kill_after_first_checkpoint, daemon=True).start()
    LOOPS[config["loop"]]({k: v for k, v in config.items() if k not in ("kill_marker", "run_dir", "loop")})
