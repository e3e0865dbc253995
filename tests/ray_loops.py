"""Per-worker loops used by the distributed tests (pickled by value into Ray workers)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from pipeline import ace, distributed, translate
from pipeline.invariance import classify, munit
from pipeline.ssl.pretrain import train_loop
from pipeline.ssl.swav import sinkhorn

LOOPS = {
    "pretrain": train_loop,
    "translate": translate.train_loop,
    "classify": classify.train_loop,
    "munit": munit.train_loop,
    "ace": ace.train_loop,
}


def sinkhorn_shards(config: dict[str, Any], session: distributed.Session) -> None:
    """Each rank solves Sinkhorn on its half of a fixed score matrix and saves its codes."""
    w = session.worker()
    scores = torch.load(config["scores"], weights_only=True)
    shard = scores.chunk(w.world_size)[w.rank]
    q = sinkhorn(shard, config["epsilon"], config["iters"])
    torch.save(q, Path(config["out"]) / f"q{w.rank}.pt")
    session.report({"epoch": 0}, {"done": True}, w)


def killed_once(config: dict[str, Any], session: distributed.Session) -> None:
    """The real loop ``config['loop']`` on the job ``config['job']``; on its first attempt rank 1
    SIGKILLs itself mid-run (only in a config that names a ``kill_marker``).

    It waits until the controller has registered a checkpoint of this loop, so that a restart
    must resume from it rather than from scratch: in a :func:`distributed.fit_seeds` sequence, one
    reported with ``sequence_index`` equal to the config's ``kill_in_sequence``.
    """
    w = session.worker()
    if "kill_marker" in config and w.rank == 1 and not Path(config["kill_marker"]).exists():
        marker, snapshot = Path(config["kill_marker"]), Path(config["run_dir"]) / "checkpoint_manager_snapshot.json"

        def latest_index() -> int | None:
            try:
                return json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"].get("sequence_index", -1)
            except (OSError, ValueError, KeyError, TypeError):  # not written yet, or caught mid-write
                return None

        def kill_after_first_checkpoint() -> None:
            while latest_index() != config.get("kill_in_sequence", -1):
                time.sleep(0.02)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=kill_after_first_checkpoint, daemon=True).start()
    LOOPS[config["loop"]](config["job"], session)
