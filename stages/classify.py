"""DVC stage ``classify@<method>``: ResNet-20 classifiers (one per seed) on the long-tailed digits,
trained on Ray Train as erm | drs | git | oracle."""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.invariance.classify import METHODS, NUM_CLASSES, train
from pipeline.io import write_json
from pipeline.model_files import save_model, servables
from pipeline.plots import plot_history
from pipeline.tracking import add_register_option, stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("method", help=f"one of: {', '.join(METHODS)}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--augmented", default="data/augmented")
    ap.add_argument("--storage", default=None, help="Ray Train run folder (default checkpoints/classify_<method>)")
    add_register_option(ap)
    args = ap.parse_args()
    if args.method not in METHODS:
        raise UserError(f"unknown classifier '{args.method}' (allowed: {', '.join(METHODS)})")
    params = load_params(args.params)
    stage = f"classify@{args.method}"
    logged = {"classify": params.classify.model_dump(), "distributed": params.distributed.model_dump(),
              "transform": params.prepare.digits_lt.transform}  # fmt: skip
    with stage_run(stage, logged, params.tracking.experiment, params.tracking.log_models, args.register) as run:
        state = train(
            params, args.method, args.data, args.augmented, args.storage or f"checkpoints/classify_{args.method}"
        )
        history = state["history"]
        out = f"models/classify_{args.method}.pt"
        meta = {"width": params.classify.width, "num_classes": NUM_CLASSES, "method": args.method}
        save_model(out, "classifier", meta, {int(s): {"classifier": sd} for s, sd in state["done"].items()})
        run.log_models(out, *servables(out))
        run.log_history(history, step_key="step")
        write_json(f"plots/classify_{args.method}.json", history)
        png = plot_history([{**r, "epoch": r["step"]} for r in history], ["loss", "train_acc", "lr"], f"plots/classify_{args.method}.png",
                           f"{stage} (seeds one after the other)")  # fmt: skip
        run.log_artifact(png, "plots")
        last = [r for r in history if r["epoch"] == params.classify.epochs - 1]
        run.finish({"train_acc_last_epoch": [r["train_acc"] for r in last], "val_balanced_acc_last_epoch": [r["val_balanced_acc"] for r in last],
                    "seeds": [r["seed"] for r in last],
                    "world_size": state["world_size"], "resumed_at": state["starts"][1:]}, step=len(history))  # fmt: skip
        print(
            f"{stage}: {len(state['done'])} classifiers, last-epoch train acc {[round(r['train_acc'], 3) for r in last]}, "
            f"fresh-draw balanced acc {[round(r['val_balanced_acc'], 3) for r in last]}"
        )


if __name__ == "__main__":
    run_cli(main)
