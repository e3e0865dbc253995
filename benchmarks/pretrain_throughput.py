"""Images/s of SSL pretraining: the Ray Train loop (N workers) beside a plain single-process loop.

Same data (the prepared full photos), same model, same views, same global batch; the plain
loop uses all the cores as torch threads. Both are timed in this one run and the ratio is
printed. Needs `dvc repro prepare` (or `make repro`) first.

    python benchmarks/pretrain_throughput.py --method simsiam --epochs 3
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
from pipeline.data.shards import read_images
from pipeline.pretrain import build_model, job_config, make_views, param_groups, train_loop


def plain_loop(config: dict, steps: int, threads: int) -> float:
    """Images/s of a single-process loop over the same views and model (first step not timed)."""
    torch.set_num_threads(threads)
    pre, mp, method = config["pretrain"], config["method_params"], config["method"]
    torch.manual_seed(pre["seed"])
    model = build_model(method, pre, mp)
    opt = torch.optim.SGD(param_groups(model, method, mp), lr=0.01, momentum=0.9)
    photos, _, _ = read_images(os.path.join(config["data_root"], "photos_full"), "train")
    rng = np.random.default_rng(0)
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        views = make_views(photos, pre["batch_size"], method, pre, mp, rng)
        loss, _ = model(*views) if method == "simsiam" else model(views)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * pre["batch_size"] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", default="simsiam", choices=["simsiam", "swav"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--epochs", type=int, default=3, help="Ray epochs; the first is warm-up and not counted")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    params = load_params(args.params)
    pre = params.pretrain.model_copy(update={"epochs": args.epochs})
    dist = params.distributed.model_copy(update={"num_workers": args.workers})
    params = params.model_copy(update={"pretrain": pre, "distributed": dist})
    config = job_config(params, args.method, args.data)
    steps = max(1, pre.crops_per_epoch // pre.batch_size)

    plain = plain_loop(config, steps * (args.epochs - 1), threads=os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as storage:
        state = distributed.fit(train_loop, config, dist, "bench", storage)
    # per-epoch images/s excludes the rank-0 kNN probe; skip the first (warm-up) epoch
    ray_ips = float(np.mean([r["images_per_s"] for r in state["history"][1:]]))
    print(f"method={args.method} width={pre.width} batch={pre.batch_size} crop={pre.crop_size} cores={os.cpu_count()}")
    print(f"plain single-process loop ({os.cpu_count()} threads): {plain:8.1f} images/s")
    print(f"Ray Train loop ({args.workers} workers, gloo DDP):     {ray_ips:8.1f} images/s")
    print(f"ratio ray/plain: {ray_ips / plain:.2f}")


if __name__ == "__main__":
    main()
