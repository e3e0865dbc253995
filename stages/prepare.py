"""DVC stage ``prepare``: every data set as Parquet shards under ``data/prepared/``."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import load_params
from pipeline.data import sources
from pipeline.data.prepare import build_digits_lt, build_photo_sets, build_probe, build_simgan_digits
from pipeline.data.shards import write_set
from pipeline.errors import UserError, run_cli
from pipeline.io import atomic_dir
from pipeline.plots import image_grid
from pipeline.tracking import stage_run


def sample_rows(sets: dict, per_row: int = 10) -> dict:
    """Rows of the sample grid: images spread evenly over each set and split.

    Test photos and test paintings are stored in the same order, so their rows show pairs.
    """
    rows = {}
    for name, recs in sets.items():
        if name == "photos_full":
            continue
        for split in sorted({r.split for r in recs}):
            images = [r.image for r in recs if r.split == split]
            rows[f"{name} / {split}"] = images[:: max(1, len(images) // per_row)][:per_row]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/prepared")
    args = ap.parse_args()
    params = load_params(args.params)
    p = params.prepare

    with stage_run("prepare", params.prepare.model_dump(), params.tracking.experiment) as run:
        bad = sources.BadImages(p.on_bad_image)
        photo_sets = build_photo_sets(p, bad)
        test_full = [sources.NamedImage(r.image, r.source) for r in photo_sets.sets["photos_full"] if r.split == "test"]
        probe = build_probe(p, test_full)
        digits = build_digits_lt(p)
        simgan = build_simgan_digits(p)
        all_sets = {**photo_sets.sets, **probe.sets, **digits.sets, **simgan.sets}
        for name, recs in all_sets.items():
            if not recs:
                raise UserError(f"prepare produced no images for set '{name}'")

        counts: dict[str, dict[str, int]] = {}
        with atomic_dir(args.out) as tmp:
            for name, recs in all_sets.items():
                counts[name] = write_set(tmp / name, recs)
                print(
                    f"prepare: {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts[name].items())),
                    file=sys.stderr,
                )

        grid = image_grid(sample_rows(all_sets), "plots/prepare_samples.png", "prepare: samples of every set")
        metrics = {
            "counts": counts,
            "bad_images_skipped": len(bad.skipped),
            **photo_sets.info,
            **probe.info,
            **digits.info,
            **simgan.info,
        }
        run.log_dict(metrics, "prepare_summary.json")
        run.log_artifact(grid, "plots")
        run.finish(metrics)


if __name__ == "__main__":
    run_cli(main)
