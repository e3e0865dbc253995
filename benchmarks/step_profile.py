"""Where a training step's time goes, per stage, on this machine's device (CPU, or the GPU if any).

Each stage's real per-worker loop runs twice, side by side in this one process run:
- plain: in this process without Ray (``distributed.run_plain``), all cores as torch threads;
- Ray Train: ``params.distributed.num_workers`` workers, as the DVC stage runs it.
Both run ``--epochs`` epochs; the first is warm-up (and counts FLOPs with torch's
FlopCounterMode), the rest are timed. Per stage it writes:

    data_s, model_s     seconds per step making the batch / in the model step (plain loop)
    data_share          data_s / (data_s + model_s)
    images_per_s        plain loop; ray_images_per_s for Ray Train
    tflops              counted FLOPs per step / step time, in TFLOP/s
    peak_tflops         a matrix product measured in the same run (fp32 on CPU, bf16 on GPU)
    mfu                 tflops / peak_tflops
    ray_over_plain      images/s of Ray Train / images/s of the plain loop (same cores, model, data)

to ``benchmarks/results/step_profile_<device>.json``. Needs the prepared data (`dvc repro prepare`).

    python benchmarks/step_profile.py                    # every stage
    python benchmarks/step_profile.py --stages pretrain_simsiam munit
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import ace, distributed, translate
from pipeline.config import Params, load_params
from pipeline.invariance import classify, munit
from pipeline.io import write_json
from pipeline.ssl import pretrain

STAGES = (
    "pretrain_simsiam",
    "pretrain_swav",
    "colorize_cgan",
    "stylize_cyclegan",
    "munit",
    "classify_erm",
    "classify_oracle",
    "ace",
)


def with_epochs(params: Params, epochs: int) -> Params:
    """``params`` with every training section shortened to ``epochs`` epochs (classifiers: one seed)."""
    cp = params.classify
    return params.model_copy(update={
        "pretrain": params.pretrain.model_copy(update={"epochs": epochs, "warmup_epochs": 0}),
        "translate": params.translate.model_copy(update={"epochs": epochs}),
        "munit": params.munit.model_copy(update={"epochs": epochs}),
        "classify": cp.model_copy(update={"epochs": epochs, "seeds": cp.seeds[:1], "warmup_epochs": 0, "decay_epochs": [epochs],
                                          "checkpoint_every": 1}),
        "ace": params.ace.model_copy(update={"epochs": epochs}),
    })  # fmt: skip


def stage_job(stage: str, params: Params, data: Path) -> tuple[Callable[[dict[str, Any]], None], dict[str, Any]]:
    """The per-worker loop of ``stage`` and its config, as its DVC stage would build them."""
    backbone = pretrain.new_backbone(params.pretrain)  # weights do not change a step's cost
    if stage.startswith("pretrain_"):
        return pretrain.train_loop, pretrain.job_config(params, stage.split("_")[1], data)
    if stage == "colorize_cgan":
        return translate.train_loop, translate.job_config(params, "colorize", "scratch", "cgan", data, backbone)
    if stage == "stylize_cyclegan":
        return translate.train_loop, translate.job_config(params, "stylize", "scratch", "cyclegan", data, backbone)
    if stage == "munit":
        return munit.train_loop, munit.job_config(params, data)
    if stage.startswith("classify_"):
        return classify.train_loop, classify.job_config(params, stage.split("_")[1], data, data.parent / "augmented")
    if stage == "ace":
        return ace.train_loop, ace.job_config(params, "pretrain", data, backbone)
    raise SystemExit(f"unknown stage '{stage}' (allowed: {', '.join(STAGES)})")


def peak_tflops(device: torch.device, seconds: float = 2.0) -> float:
    """TFLOP/s of a square matrix product on ``device`` (fp32 on CPU, bf16 on GPU)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
        sync()
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e12


def timed_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return history[1:] if len(history) > 1 else history


def profile_stage(stage: str, params: Params, data: Path, peak: float, storage: Path) -> dict[str, Any]:
    loop, config = stage_job(stage, params, data)
    config = dataclasses.replace(config, profile=True)
    plain = distributed.run_plain(loop, config, threads=os.cpu_count())
    rows = timed_rows(plain["history"])
    data_s = float(np.mean([r["data_s"] for r in rows]))
    model_s = float(np.mean([r["model_s"] for r in rows]))
    flops = plain["history"][0].get("flops_per_step", 0.0)
    tflops = flops / (data_s + model_s) / 1e12
    ray = distributed.fit(loop, config, params.distributed, f"profile_{stage}", storage)
    images = float(np.mean([r["images_per_s"] for r in rows]))
    ray_images = float(np.mean([r["images_per_s"] for r in timed_rows(ray["history"])]))
    return {
        "data_s": data_s,
        "model_s": model_s,
        "data_share": data_s / (data_s + model_s),
        "images_per_s": images,
        "ray_images_per_s": ray_images,
        "ray_over_plain": ray_images / images,
        "gflop_per_step": flops / 1e9,
        "tflops": tflops,
        "peak_tflops": peak,
        "mfu": tflops / peak,
        "timed_epochs": len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up and FLOP counting")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2 (the first is not timed)")
    params = with_epochs(load_params(args.params), args.epochs)
    device = distributed.default_device()
    dev_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    )
    peak = peak_tflops(device)
    print(f"device {device.type} ({dev_name}), {os.cpu_count()} cores, peak {peak:.3f} TFLOP/s", flush=True)
    stages = {}
    with tempfile.TemporaryDirectory() as storage:
        for stage in args.stages:
            stages[stage] = profile_stage(stage, params, Path(args.data), peak, Path(storage))
            s = stages[stage]
            print(f"{stage:18s} data {s['data_s'] * 1e3:8.1f} ms  model {s['model_s'] * 1e3:8.1f} ms  data_share {s['data_share']:.3f}  "
                  f"{s['images_per_s']:8.1f} img/s  mfu {s['mfu']:.3f}  ray/plain {s['ray_over_plain']:.2f}", flush=True)  # fmt: skip
    out = Path(args.out) / f"step_profile_{device.type}.json"
    write_json(out, {
        "device": device.type, "device_name": dev_name, "cores": os.cpu_count(), "torch": torch.__version__,
        "ray_workers": params.distributed.num_workers, "epochs": args.epochs, "stages": stages,
    })  # fmt: skip
    print(json.dumps({k: round(v["data_share"], 3) for k, v in stages.items()}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
