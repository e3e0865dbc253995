"""Is SimGAN's gain a learned refinement, or would any blur do? The simgan stage's classifiers
trained on raw synthetic digits lose to those trained on refined ones when both are tested on
the real scikit-learn digits, which are blurred 8 x 8 scans. This trains the same classifiers
(``simgan.classify_*``, every seed of ``simgan.classify_seeds``, in this process) on the synthetic
digits under a fixed Gaussian blur of each ``sigma`` (px at 32 px), a refinement with nothing
learned, through Ray Train on ``distributed.num_workers`` workers as the stage trains its own, and
scores them as the stage does.

    python studies/simgan_blur/experiment.py [SIGMA ...]   # from the repository root, after `dvc repro simgan`
    python studies/simgan_blur/experiment.py --compare     # pair an existing blur.json with metrics/simgan.json

Writes results/simgan_blur/blur.json: balanced accuracy on the real test digits per sigma and
seed, its gain over the raw synthetic classifiers of ``metrics/simgan.json`` (paired by seed),
and the refined classifiers' figures beside them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from pipeline import distributed
from pipeline.config import load_params
from pipeline.data.shards import Record, write_set
from pipeline.io import write_json
from pipeline.metrics.invariance import balanced_accuracy
from pipeline.metrics.seeds import t_interval
from pipeline.models.classifier import ResNet20
from pipeline.simgan import load_split
from pipeline.simgan.evaluate import ClassifierJob, predict, train_loop

DATA, OUT = Path(os.environ.get("PIPELINE_DATA", "data/prepared")), Path("results/simgan_blur")


def blurred(x: torch.Tensor, sigma: float) -> np.ndarray:
    """Synthetic digits (N, 1, H, W) in [0, 1] under a Gaussian blur of ``sigma`` px, as uint8 (N, H, W)."""
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return (gaussian_blur(x, [size, size], [sigma, sigma])[:, 0] * 255).round().clamp(0, 255).byte().numpy()


def main(sigmas: list[float]) -> None:
    params = load_params()
    sp = params.simgan
    synthetic, labels = load_split(DATA, "synthetic_digits", "train")
    test_x, test_y = load_split(DATA, "real_digits", "test")
    out = {"sigmas": {}}
    for sigma in sigmas:
        t0 = time.perf_counter()
        images = blurred(synthetic, sigma)
        with tempfile.TemporaryDirectory() as tmp:
            write_set(
                Path(tmp) / "refined_digits",
                [
                    Record(im, "blurred", "train", f"s{i}", int(y))
                    for i, (im, y) in enumerate(zip(images, labels.tolist()))
                ],
            )
            roots = {"synthetic_digits": str(DATA.resolve()), "real_digits": str(DATA.resolve()), "refined_digits": tmp}
            jobs = [
                ClassifierJob("refined", seed, roots, sp, params.distributed.cpus_per_worker, False)
                for seed in sp.classify_seeds
            ]
            states = distributed.fit_seeds(train_loop, jobs, params.distributed, f"blur{sigma}", Path(tmp) / "runs")
            acc = {}
            for job, state in zip(jobs, states):
                model = ResNet20(10, 1, sp.classify_width)
                model.load_state_dict(state["model"])
                acc[str(job.seed)] = balanced_accuracy(test_y.numpy(), predict(model, test_x))
        moved = float(np.abs(images / 255.0 - synthetic[:, 0].numpy()).mean())
        out["sigmas"][str(sigma)] = {
            "balanced_acc_per_seed": acc,
            "balanced_acc": t_interval(list(acc.values())),
            "moved": moved,
        }
        print(
            f"sigma {sigma}: balanced accuracy {np.mean(list(acc.values())):.3f}, moved {moved:.3f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    write_json(OUT / "blur.json", out)
    compare()


def compare() -> None:
    """Pair each blur's classifiers with the stage's raw synthetic and refined ones (same seeds and budget)."""
    out = json.loads((OUT / "blur.json").read_text())
    stage = json.loads(Path("metrics/simgan.json").read_text())
    out["stage"] = {k: stage["balanced_acc"][k] for k in ("synthetic", "refined", "real")} | {
        "moved_refined": stage["moved"]
    }
    for row in out["sigmas"].values():
        acc = row["balanced_acc_per_seed"]
        row["gain_over_synthetic"] = t_interval([acc[s] - out["stage"]["synthetic"]["per_seed"][s] for s in acc])
        row["refined_minus_blurred"] = t_interval([out["stage"]["refined"]["per_seed"][s] - acc[s] for s in acc])
    write_json(OUT / "blur.json", out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--compare"]:  # only pair an existing blur.json with a newer metrics/simgan.json
        compare()
    else:
        main([float(s) for s in sys.argv[1:]] or [0.5, 1.0, 1.5, 2.0])
