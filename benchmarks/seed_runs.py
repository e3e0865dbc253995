"""What a stage of several seeds pays for starting Ray Train once per seed.

One stage's real loop trains the same seeds twice, side by side in this one process run:
- one run per seed: ``distributed.fit`` for each seed (how the translation and ACE stages ran before);
- one run for all: ``distributed.fit_seeds`` (how they run now).
Both use ``params.distributed`` and fresh checkpoint folders; the final weights must agree bit
for bit (checked). It writes to ``benchmarks/results/seed_runs_<device>.json``:

    per_seed_s, one_run_s   wall seconds of each way
    saved_s_per_seed        (per_seed_s - one_run_s) / (seeds - 1): one worker group's start and stop
    one_run_over_per_seed   one_run_s / per_seed_s

Needs the prepared data (`dvc repro prepare`).

    python benchmarks/seed_runs.py                          # stylize, 3 seeds, 1 epoch of 4 steps
    python benchmarks/seed_runs.py --stage colorize --steps 20
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from pipeline import distributed, ray_cluster, translate
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.ssl.pretrain import new_backbone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("colorize", "stylize"), default="stylize")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="steps per epoch")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if args.seeds < 2:
        raise SystemExit("--seeds must be at least 2")
    params = load_params(args.params)
    tr = params.translate.model_copy(update={"epochs": args.epochs, "steps_per_epoch": args.steps})
    params = params.model_copy(
        update={"translate": tr, "stylize": params.stylize.model_copy(update={"steps_per_epoch": None})}
    )
    gan = "cgan" if args.stage == "colorize" else "cyclegan"
    backbone = new_backbone(params.pretrain)
    configs = [
        translate.job_config(params, args.stage, "scratch", gan, args.data, backbone, seed)
        for seed in range(args.seeds)
    ]
    ray_cluster.init_ray()  # both ways find Ray started
    with tempfile.TemporaryDirectory() as storage:
        t0 = time.perf_counter()
        alone = [
            distributed.fit(translate.train_loop, c, params.distributed, f"seed{i}", storage)
            for i, c in enumerate(configs)
        ]
        per_seed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        together = distributed.fit_seeds(translate.train_loop, configs, params.distributed, "all", storage)
        one_run_s = time.perf_counter() - t0
    for a, b in zip(alone, together):
        for k, v in a["models"]["G"].items():
            if not torch.equal(v, b["models"]["G"][k]):
                raise SystemExit(f"fit_seeds trained other weights than fit ({k}): the comparison is void")
    device = distributed.default_device()
    result = {
        "stage": args.stage, "seeds": args.seeds, "epochs": args.epochs, "steps_per_epoch": args.steps,
        "num_workers": params.distributed.num_workers, "cores": os.cpu_count(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "per_seed_s": per_seed_s, "one_run_s": one_run_s,
        "saved_s_per_seed": (per_seed_s - one_run_s) / (args.seeds - 1),
        "one_run_over_per_seed": one_run_s / per_seed_s,
    }  # fmt: skip
    out = Path(args.out) / f"seed_runs_{device.type}.json"
    write_json(out, result)
    print(f"{args.stage}, {args.seeds} seeds: one run per seed {per_seed_s:.1f} s, one run for all {one_run_s:.1f} s "
          f"({result['one_run_over_per_seed']:.2f}x; {result['saved_s_per_seed']:.1f} s saved per extra seed) -> {out}")  # fmt: skip


if __name__ == "__main__":
    main()
