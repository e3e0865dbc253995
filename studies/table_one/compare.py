"""Paired comparisons of the variants ``experiment.py`` wrote (same seeds, so the same train subset):

    python studies/table_one/compare.py   # writes results/table_one/compare.json

Each effect is per seed, with its 95 % t interval; > 0 means the first variant has the lower ab L1.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.io import write_json
from pipeline.metrics.seeds import t_interval

OUT = Path("results/table_one")
PAIRS = {  # effect name: (the variant said to be better, the one it is compared with)
    "cyclegan_beats_cgan": ("cyclegan", "cgan"),
    "run_long_pool_beats_no_pool": ("cyclegan", "cyclegan_no_pool"),
    "cyclegan_batch16_beats_cyclegan": ("cyclegan_batch16", "cyclegan"),
    "cyclegan_cycle100_beats_cyclegan": ("cyclegan_cycle100", "cyclegan"),
    "cyclegan_4x_steps_beats_cyclegan": ("cyclegan_4x_steps", "cyclegan"),
    "cyclegan_4x_steps_beats_cgan": ("cyclegan_4x_steps", "cgan"),
}


def main() -> None:
    runs = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json") if p.stem != "compare"}
    ab0 = next(iter(runs.values()))["ab0"]
    out = {"ab0": ab0, "variants": {k: {"l1_ab": r["l1_ab"], "ci95": r["l1_ab_ci95"], "gain_over_ab0": ab0 - r["l1_ab"]}
                                    for k, r in sorted(runs.items())}}  # fmt: skip
    for name, (better, other) in PAIRS.items():
        if better not in runs or other not in runs:
            continue
        seeds = sorted(runs[better]["per_seed"], key=int)
        effects = [runs[other]["per_seed"][s]["l1_ab"] - runs[better]["per_seed"][s]["l1_ab"] for s in seeds]
        mean, lo, hi = t_interval(effects)
        out[name] = {"per_seed": effects, "mean": mean, "ci95": [lo, hi], "holds": lo > 0}
    write_json(OUT / "compare.json", out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
