"""Why the CycleGAN colorizers lose to the cGAN at the default budget (seed 002's Table I says the
reverse): the scratch-encoder colorizer trained as the stage trains it (Ray Train, 2 workers, the
3 seeds of ``translate.seeds``), once per variant, each scored on the test photos as the stage scores it.

    python studies/table_one/experiment.py VARIANT [VARIANT ...]   # from the repository root

Variants (``-S``-style changes to params.yaml, see VARIANTS): ``cgan`` and ``cyclegan`` are the
defaults; ``cyclegan_no_pool`` is the CycleGAN before its image pool lived for the whole run (a pool
that never fills serves every fake as it is, which is what pool_size 0 does); ``cyclegan_batch16``
gives the CycleGAN the cGAN's images per step (16, 8 per worker); ``cyclegan_cycle100`` weights the
cycle L1 as the cGAN weights its L1 (100); ``cyclegan_4x_steps`` trains 4 times as long. Needs data/prepared and
models/backbone_scratch.pt (``dvc repro backbone_scratch``). Writes results/table_one/<variant>.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from pipeline.config import parse_params, set_values
from pipeline.io import write_json
from pipeline.metrics.seeds import t_interval
from pipeline.translate import evaluate_colorization, generators_from_state, train

OUT = Path("results/table_one")
VARIANTS = {
    "cgan": ("cgan", []),
    "cyclegan": ("cyclegan", []),
    "cyclegan_no_pool": ("cyclegan", ["cyclegan.pool_size=0"]),
    "cyclegan_batch16": ("cyclegan", ["cyclegan.batch_size=16"]),
    "cyclegan_cycle100": ("cyclegan", ["cyclegan.cycle=100"]),
    "cyclegan_4x_steps": ("cyclegan", ["translate.epochs=16"]),
}


def run(variant: str) -> dict:
    gan, changes = VARIANTS[variant]
    params = parse_params(set_values(yaml.safe_load(Path("params.yaml").read_text()), changes))
    t0 = time.time()
    runs = train(
        params,
        "colorize",
        "scratch",
        gan,
        "data/prepared",
        f"checkpoints/table_one_{variant}",
        "models/backbone_scratch.pt",
    )
    per_seed = {}
    for config, state in runs:
        scores = evaluate_colorization(generators_from_state(config, state), params, "data/prepared")
        scores.pop("samples")
        per_seed[str(config.seed)] = {
            "l1_ab": scores["l1_ab"],
            "val_l1_last_epoch": state["history"][-1]["val_l1"],
            "pool_history_share": state["history"][-1].get("pool_history_share"),
        }
    l1 = [r["l1_ab"] for r in per_seed.values()]
    mean, lo, hi = t_interval(l1)
    return {"variant": variant, "gan": gan, "changes": changes, "per_seed": per_seed, "l1_ab": mean, "l1_ab_ci95": [lo, hi],
            "ab0": evaluate_colorization(None, params, "data/prepared")["l1_ab"], "wall_s": round(time.time() - t0)}  # fmt: skip


if __name__ == "__main__":
    for name in sys.argv[1:]:
        result = run(name)
        write_json(OUT / f"{name}.json", result)
        print(json.dumps({k: result[k] for k in ("variant", "l1_ab", "l1_ab_ci95", "ab0", "wall_s")}), flush=True)
