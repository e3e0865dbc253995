"""DVC stage ``evaluate``: balanced accuracy and per-class eKLD of the four classifiers against
training class size (metrics/classify.json, plots/ekld_by_class.png)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.data.shards import read_table
from pipeline.errors import run_cli
from pipeline.invariance.classify import METHODS, evaluate
from pipeline.model_files import load_model
from pipeline.plots import line_plot
from pipeline.tracking import stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--models", default="models")
    args = ap.parse_args()
    params = load_params(args.params)
    cp, transform = params.classify, params.prepare.digits_lt.transform
    logged = {"classify": cp.model_dump(), "augment": params.augment.model_dump(), "transform": transform}
    with stage_run("evaluate", logged, params.tracking.experiment) as run:
        labels = np.asarray(
            read_table(Path(args.data) / "digits_lt", "train", columns=["label"]).column("label").to_pylist()
        )
        sizes = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
        table = {}
        for method in METHODS:
            model = load_model(Path(args.models) / f"classify_{method}.pt", "classifier", f"classify@{method}")
            classifiers = {seed: model.networks(seed)["classifier"] for seed in model.seeds}
            table[method] = evaluate(classifiers, args.data, transform,
                                     cp.ekld_draws, sizes, params.augment.threshold)  # fmt: skip
        order = sorted(sizes, key=sizes.get)
        xs = [sizes[c] for c in order]
        png = line_plot(
            {m: (xs, [table[m]["ekld_by_class"][str(c)] for c in order]) for m in METHODS},
            "plots/ekld_by_class.png", "training images in the class (log)", "eKLD (mean over seeds)",
            f"per-class invariance to '{transform}' against class size", logx=True,
            errors={m: [table[m]["ekld_by_class_std"][str(c)] for c in order] for m in METHODS},
        )  # fmt: skip
        run.log_artifact(png, "plots")
        summary = {"transform": transform, "tail_threshold": params.augment.threshold, "classifiers": table,
                   "spearman_size_ekld_erm": table["erm"]["spearman_size_ekld"],
                   "ekld_definition": "mean over clean test images x of class c and ekld_draws x' ~ T(.|x) of KL(p(y|x) || p(y|x'))",
                   "balanced_acc_on": "test images with one fresh seeded nuisance draw each"}  # fmt: skip
        run.finish(summary, name="classify")
        for m in METHODS:
            t = table[m]
            print(
                f"{m:7s} balanced_acc {t['balanced_acc']:.3f}±{t['balanced_acc_std']:.3f}  eKLD head {t['ekld_head']:.3f} "
                f"tail {t['ekld_tail']:.3f}±{t['ekld_tail_std']:.3f}  spearman {t['spearman_size_ekld']:+.2f}"
            )


if __name__ == "__main__":
    run_cli(main)
