"""DVC stage ``pretrain@<method>``: SSL pretraining of the backbone on Ray Train."""

from __future__ import annotations

import argparse
import math

from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.io import write_json
from pipeline.model_files import save_backbone, servables
from pipeline.plots import plot_history
from pipeline.ssl.pretrain import METHODS, backbone_from_state, evaluate_backbone, pretrain
from pipeline.tracking import add_register_option, stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("method", help=f"one of: {', '.join(METHODS)}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--storage", default="checkpoints", help="Ray Train run folder (resumable)")
    add_register_option(ap)
    args = ap.parse_args()
    if args.method not in METHODS:
        raise UserError(f"unknown SSL method '{args.method}' (allowed: {', '.join(METHODS)})")
    params = load_params(args.params)
    stage = f"pretrain@{args.method}"
    logged = {"pretrain": params.pretrain.model_dump(), args.method: getattr(params, args.method).model_dump(),
              "distributed": params.distributed.model_dump()}  # fmt: skip

    with stage_run(stage, logged, params.tracking.experiment, params.tracking.log_models, args.register) as run:
        state, *others = pretrain(params, args.method, args.data, args.storage)
        history = state["history"]
        if not all(math.isfinite(r["loss"]) for r in history):
            raise UserError(f"{stage}: the loss became NaN or infinite; lower {args.method}.lr")
        backbone = backbone_from_state(state, params.pretrain)
        metrics = evaluate_backbone(backbone, params, args.data)
        last = history[-1]
        metrics.update(
            method=args.method, loss=last["loss"], z_std=last["z_std"], images_per_s=last["images_per_s"],
            world_size=state["world_size"], epochs=len(history), resumed_at_epochs=state["starts"][1:],
            knn_top1_last_epoch=last["knn_top1"],
        )  # fmt: skip
        run.log_history(history)
        out = f"models/backbone_{args.method}.pt"
        save_backbone(out, backbone, args.method, params.pretrain.seed)
        run.log_models(out, *servables(out))
        if others:  # the same study again from pretrain.extra_seeds: the claim's interval over seeds
            gains = {params.pretrain.seed: metrics["knn_gain"]}
            for seed, other in zip(params.pretrain.extra_seeds, others):
                again = params.model_copy(update={"pretrain": params.pretrain.model_copy(update={"seed": seed})})
                gains[seed] = evaluate_backbone(backbone_from_state(other, params.pretrain), again, args.data)[
                    "knn_gain"
                ]
                print(f"{stage}: seed {seed}: knn_gain {gains[seed]:+.3f}")
            metrics["knn_gain_per_seed"] = {str(k): v for k, v in gains.items()}
        write_json(f"plots/pretrain_{args.method}.json", history)
        png = plot_history(
            history, ["loss", "z_std", "knn_top1"], f"plots/pretrain_{args.method}.png", stage,
            {"knn_top1": {"untrained (BN recomputed)": metrics["knn_top1_untrained"], "chance": metrics["knn_chance"]},
             "z_std": {"1/sqrt(d), healthy": 1 / math.sqrt(getattr(params, args.method).proj_dim), "collapsed": 0.0}},
        )  # fmt: skip
        run.log_artifact(png, "plots")
        run.finish(metrics, step=len(history))  # the final probe sits one step after the last epoch
        print(
            f"{stage}: knn_top1 {metrics['knn_top1']:.3f} vs untrained {metrics['knn_top1_untrained']:.3f} "
            f"(gain {metrics['knn_gain']:+.3f}; over untrained init 0 {metrics['knn_gain_vs_seed0']:+.3f}, 95% CI "
            f"{metrics['knn_gain_ci95_vs_seed0']}) chance {metrics['knn_chance']:.2f}"
        )


if __name__ == "__main__":
    run_cli(main)
