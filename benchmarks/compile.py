"""What ``torch.compile`` would buy the classifiers on a CPU: one training step (forward, cross
entropy, backward, SGD with momentum) of the default ResNet-20 (width 8, 1 channel, 32 px) on one
Ray worker's share of the batch (16), eager against compiled, at the thread count a worker runs.

Both models start from the same weights and train side by side in one process, alternating over
``--rounds`` after a warm-up. The compiled model's first call (its compilation, which every Ray
worker process would pay once) is timed on its own, with an empty inductor cache (a fresh
temporary folder) as on a new machine. Reports the median seconds per step, the
ratio, and the steps a stage would need to earn the compilation back; writes
``benchmarks/results/compile_cpu.json``. Needs a C++ compiler (inductor's CPU backend).

    python benchmarks/compile.py               # 5 rounds of 40 steps, 1 thread
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # a cold compilation, as a fresh worker's

import torch
import torch.nn.functional as F

from pipeline.io import write_json
from pipeline.models.classifier import ResNet20
from pipeline.tracking import host_tags


def sgd_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of ``model`` on (x (B, 1, H, W), y (B,)), as the classify loop takes it."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def seconds_per_step(
    step: Callable[[torch.Tensor, torch.Tensor], None], x: torch.Tensor, y: torch.Tensor, steps: int
) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    eager = ResNet20(10, 1, 8)
    compiled = torch.compile(copy.deepcopy(eager))
    x, y = torch.rand(args.batch, 1, 32, 32), torch.randint(0, 10, (args.batch,))
    steps = {"eager": sgd_step(eager), "compiled": sgd_step(compiled)}

    start = time.perf_counter()
    steps["compiled"](x, y)
    compile_s = time.perf_counter() - start
    for step in steps.values():  # warm-up
        seconds_per_step(step, x, y, 3)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for k, step in steps.items():
            times[k].append(seconds_per_step(step, x, y, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    saved = med["eager"] - med["compiled"]
    out = {"device": "cpu", "threads": args.threads, "batch": args.batch, **host_tags(), "rounds": args.rounds, "steps": args.steps,
           "compile_s": compile_s, "step_s": med, "speedup": med["eager"] / med["compiled"],
           "break_even_steps": compile_s / saved if saved > 0 else None, "rounds_s": times}  # fmt: skip
    write_json(Path(__file__).parent / "results" / "compile_cpu.json", out)
    shutil.rmtree(os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    print(f"eager {med['eager'] * 1000:.1f} ms, compiled {med['compiled'] * 1000:.1f} ms a step ({out['speedup']:.2f}x); "
          f"compilation {compile_s:.1f} s, earned back after {out['break_even_steps'] or float('inf'):.0f} steps")  # fmt: skip


if __name__ == "__main__":
    main()
