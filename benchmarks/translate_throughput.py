"""Generator + discriminator steps/s of the translation loop: Ray Train (N workers) beside a plain loop.

Same data, models, losses and global batch; the plain loop runs in this process with all the
cores as torch threads. Both are timed in this one run and the ratio is printed. Needs the
prepared data and the backbone of ``--encoder`` (`make repro`, or `dvc repro backbone_scratch`).

    python benchmarks/translate_throughput.py --gan cgan
    python benchmarks/translate_throughput.py --gan cyclegan --task stylize
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from pipeline import distributed
from pipeline.config import load_params
from pipeline.models.gan import ImagePool
from pipeline.translate import (
    build_models, cgan_step, crop_flip, cyclegan_step, encoder_backbone, generator_optimizer, job_config, load_domains, train_loop,
)  # fmt: skip


def plain_loop(config: dict, backbone: torch.nn.Module, steps: int, batch: int, threads: int) -> float:
    """Steps/s of a single-process loop (the first step is not timed)."""
    torch.set_num_threads(threads)
    tr = config["translate"]
    models = build_models(config, backbone)
    opt_g = generator_optimizer([models[k] for k in ("G", "F") if k in models], tr)
    opt_d = torch.optim.Adam([p for k, m in models.items() if k.startswith("D") for p in m.parameters()], lr=tr["lr"])
    data, rng = load_domains(config), np.random.default_rng(0)
    pools = {d: ImagePool(config["cyclegan"]["pool_size"]) for d in ("X", "Y")}
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        ix = rng.integers(0, len(data["X"]), batch)
        x, y = crop_flip(data["X"][ix], tr["crop_size"], rng), crop_flip(data["Y"][ix], tr["crop_size"], rng)
        if config["gan"] == "cgan":
            cgan_step(models, (opt_g, opt_d), x, y, config)
        else:
            cyclegan_step(models, (opt_g, opt_d), x, y, config, pools)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="colorize", choices=["colorize", "stylize"])
    ap.add_argument("--gan", default="cgan", choices=["cgan", "cyclegan"])
    ap.add_argument("--encoder", default="scratch")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--epochs", type=int, default=3, help="Ray epochs; the first is warm-up and not counted")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.task == "stylize":
        args.gan = "cyclegan"
    params = load_params(args.params)
    tr = params.translate.model_copy(update={"epochs": args.epochs})
    dist = params.distributed.model_copy(update={"num_workers": args.workers})
    params = params.model_copy(update={"translate": tr, "distributed": dist})
    backbone = encoder_backbone(args.encoder)
    config = job_config(params, args.task, args.encoder, args.gan, args.data, backbone)
    batch = params.colorize.batch_size if args.gan == "cgan" else params.cyclegan.batch_size

    plain = plain_loop(config, backbone, tr.steps_per_epoch * (args.epochs - 1), batch, threads=os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as storage:
        state = distributed.fit(train_loop, config, dist, "bench", storage)
    ray_sps = float(np.mean([r["steps_per_s"] for r in state["history"][1:]]))  # excludes rank 0's validation
    print(f"task={args.task} gan={args.gan} global batch={batch} crop={tr.crop_size} cores={os.cpu_count()}")
    print(f"plain single-process loop ({os.cpu_count()} threads): {plain:6.2f} G+D steps/s")
    print(f"Ray Train loop ({args.workers} workers, gloo DDP):     {ray_sps:6.2f} G+D steps/s")
    print(f"ratio ray/plain: {ray_sps / plain:.2f}")


if __name__ == "__main__":
    main()
