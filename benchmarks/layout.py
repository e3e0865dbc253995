"""What the input's memory layout costs a CPU training step: plain NCHW (what ``to_tensor`` returns
now) against the channels_last view it returned before (a permuted (N, H, W, C) array).

One stylizer generator (the ResNet-18 U-Net at the default widths) and one ResNet-20 classifier,
forward and backward on a batch, side by side in one process, alternating over ``--rounds`` after a
warm-up; per setting the median seconds per step and the ratio to NCHW. Writes
``benchmarks/results/layout_<device>.json``.

    python benchmarks/layout.py                # 5 rounds of 5 steps, 2 threads
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from pipeline.io import write_json
from pipeline.models.classifier import ResNet20
from pipeline.models.resnet import ResNet
from pipeline.models.unet import DomainGenerator


def step_seconds(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = {
        "stylizer_generator_b4_32px": (DomainGenerator(ResNet(32, 3), "rgb", 32), torch.rand(4, 32, 32, 3) * 2 - 1),
        "classifier_resnet20_w8_b32_rgb": (ResNet20(10, 3, 8), torch.rand(32, 32, 32, 3)),
    }
    results = {}
    for name, (model, nhwc_array) in cases.items():
        layouts = {
            "nchw": nhwc_array.permute(0, 3, 1, 2).contiguous(),
            "channels_last_view": nhwc_array.permute(0, 3, 1, 2),
        }
        times: dict[str, list[float]] = {k: [] for k in layouts}
        for x in layouts.values():
            step_seconds(model, x, 1)  # warm-up
        for _ in range(args.rounds):
            for k, x in layouts.items():
                times[k].append(step_seconds(model, x, args.steps))
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {
            k: {"step_s": med[k], "ratio_to_nchw": med[k] / med["nchw"], "rounds_s": times[k]} for k in layouts
        }
        print(name, {k: f"{med[k] * 1000:.1f} ms ({med[k] / med['nchw']:.2f}x)" for k in layouts})
    out = {"device": "cpu", "threads": args.threads, "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "rounds": args.rounds, "steps": args.steps, "results": results}  # fmt: skip
    write_json(Path(__file__).parent / "results" / "layout_cpu.json", out)


if __name__ == "__main__":
    main()
