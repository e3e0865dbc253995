"""Pretraining's memory and speed against the size of its photo set: in memory against streamed.

For each N (default 2,000, 8,000 and 32,000) it writes N procedural colour photos of 256 x 256 px
as Parquet shards (the prepared sets' schema; nothing is downloaded), then runs a fixed number of
SimSiam steps at 128 px on them, each run in a fresh process:
- ``memory``: every photo decoded into one float32 bank (``PhotoBank``), as the default study does;
  skipped where that bank would not fit in half of this machine's memory;
- ``stream``: the shards read through Ray Data, one batch of photos decoded at a time
  (``pipeline.data.stream``).
It writes ``benchmarks/results/data_scale_<device>.json``: per N and path, images/s over the
timed steps, the training process's peak RSS (Ray Data's readers run in Ray's own processes and
are not counted), and the ratios the targets name (RSS at the largest N over the smallest on the
streaming path; streaming over in-memory images/s at the smallest N).

    python benchmarks/data_scale.py                          # N = 2000 8000 32000, 20 timed steps of 32
    python benchmarks/data_scale.py --sizes 500 2000 --steps 8 --keep /tmp/shards
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_photo(rng: np.random.Generator, side: int = 256) -> np.ndarray:
    """A smooth random colour field with a few sharp-edged shapes: uint8 (side, side, 3)."""
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.random((1, 3, 6, 6), dtype=np.float32))
    img = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)[0].clamp(0, 1).numpy()
    yy, xx = np.mgrid[:side, :side]
    for _ in range(3):
        cy, cx, r = rng.integers(0, side, 2).tolist() + [int(rng.integers(side // 16, side // 4))]
        img[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random((3, 1), dtype=np.float32)
    return (img.transpose(1, 2, 0) * 255).astype(np.uint8)


def write_photos(folder: Path, n: int, seed: int = 0) -> None:
    from pipeline.data.shards import Record, write_set

    rng = np.random.default_rng(seed)
    write_set(folder, (Record(synthetic_photo(rng), "photo", "train", f"synthetic{i}") for i in range(n)), 1024)


def child(folder: str, path: str, steps: int, batch: int, crop: int, warmup: int) -> dict[str, float]:
    """One run in this (fresh) process: ``warmup`` + ``steps`` SimSiam steps; images/s and peak RSS."""
    import torch

    from pipeline import ray_cluster
    from pipeline.config import load_params
    from pipeline.data import stream
    from pipeline.data.augment import PhotoBank
    from pipeline.data.shards import read_images
    from pipeline.ssl.pretrain import build_model, make_views

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    params = load_params(ROOT / "params.yaml")
    pre = params.pretrain.model_copy(update={"crop_size": crop, "width": 16, "instance_scale": [0.5, 1.0]})
    torch.manual_seed(0)
    model = build_model("simsiam", pre, params.simsiam)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    t_load = time.perf_counter()
    if path == "memory":
        bank = PhotoBank(read_images(folder, "train")[0], torch.device("cpu"))

        def views() -> list[torch.Tensor]:
            return make_views(bank, batch, "simsiam", pre, params.simsiam, g)
    else:
        ray_cluster.init_ray(num_cpus=os.cpu_count() or 2)
        batches = stream.photo_batches(stream.photo_dataset(folder, "train"), batch, seed=0, epoch=0)

        def views() -> list[torch.Tensor]:
            return make_views(
                PhotoBank(next(batches), torch.device("cpu")), batch, "simsiam", pre, params.simsiam, g, True
            )

    load_s = time.perf_counter() - t_load
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss, _ = model(*views())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    return {"images_per_s": steps * batch / elapsed, "setup_s": load_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run (after 3 warm-up steps)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--keep", help="write (or reuse) the shards under this folder instead of a temporary one")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.batch, args.crop, warmup=3)))
        return
    from pipeline.data.stream import bank_bytes
    from pipeline.io import write_json

    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    runs: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep or tmp)
        for n in args.sizes:
            folder = base / f"photos_{n}"
            if not any(folder.glob("train-*.parquet")):
                t = time.perf_counter()
                write_photos(folder, n)
                print(f"data_scale: wrote {n} photos in {time.perf_counter() - t:.0f} s", flush=True)
            bank_mb = bank_bytes(folder, "train") / 2**20
            runs[str(n)] = {"bank_mb": bank_mb}
            for path in ("memory", "stream"):
                if path == "memory" and 1.3 * bank_mb > memory_mb / 2:
                    runs[str(n)][path] = {
                        "skipped": f"its bank ({bank_mb:.0f} MB) would not fit in half of {memory_mb:.0f} MB"
                    }
                    continue
                cmd = [sys.executable, __file__, "--child", str(folder), path, "--steps", str(args.steps),
                       "--batch", str(args.batch), "--crop", str(args.crop)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                runs[str(n)][path] = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"data_scale: N={n} {path}: {runs[str(n)][path]}", flush=True)
    small, large = (str(min(args.sizes)), str(max(args.sizes)))
    ratios = {
        "stream_rss_largest_over_smallest": runs[large]["stream"]["peak_rss_mb"] / runs[small]["stream"]["peak_rss_mb"],
        "stream_over_memory_images_per_s_smallest": runs[small]["stream"]["images_per_s"]
        / runs[small]["memory"]["images_per_s"] if "images_per_s" in runs[small]["memory"] else None,
    }  # fmt: skip
    device = "cpu"
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "memory_mb": memory_mb,
              "steps": args.steps, "batch": args.batch, "crop": args.crop, "runs": runs, "ratios": ratios}  # fmt: skip
    target = Path(args.out) / f"data_scale_{device}.json"
    write_json(target, result)
    print(f"data_scale: {json.dumps(ratios)} -> {target}")


if __name__ == "__main__":
    main()
