"""DVC stage ``augment``: MUNIT samples of the tail classes (content of a real image + a random
style, label kept) as Parquet shards with provenance (source row, style seed)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.shards import write_set
from pipeline.errors import run_cli
from pipeline.invariance.munit import augment_records, check_style_alive, load_digits, load_munit, style_figures
from pipeline.io import atomic_dir
from pipeline.plots import image_grid
from pipeline.tracking import stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--model", default="models/munit.pt")
    ap.add_argument("--out", default="data/augmented")
    args = ap.parse_args()
    params = load_params(args.params)
    ag = params.augment
    with stage_run("augment", {"augment": ag.model_dump()}, params.tracking.experiment) as run:
        model = load_munit(args.model)
        x_test, _, _ = load_digits(args.data, "test")
        alive = style_figures(model, x_test, params.munit.diversity_styles)
        if ag.style_guard:
            check_style_alive(alive)
        records = augment_records(model, args.data, ag.threshold, ag.per_image, ag.seed)
        with atomic_dir(args.out) as tmp:
            write_set(Path(tmp), records)
        per_class = Counter(r.label for r in records)
        rows = {f"class {c}": [r.image for r in records if r.label == c][:12] for c in sorted(per_class)}
        grid = image_grid(rows, "plots/augment_samples.png", "MUNIT samples of the tail classes", 0.7)
        run.log_artifact(grid, "plots")
        metrics = {"generated": len(records), "per_class": {str(c): n for c, n in sorted(per_class.items())},
                   "tail_classes": sorted(per_class), "threshold": ag.threshold, **alive,
                   "munit_seed": params.munit.seed, "styles": params.munit.diversity_styles}  # fmt: skip
        run.finish(metrics)
        print(f"augment: {len(records)} samples for tail classes {sorted(per_class)}")


if __name__ == "__main__":
    run_cli(main)
