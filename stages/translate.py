"""DVC stages ``colorize@<encoder>-<gan>`` and ``stylize@<encoder>``: train one translation variant
on Ray Train with the transplanted backbone once per seed of ``translate.seeds`` (one run), score each on the
test photos (a stylizer stuck at the identity stops the stage), log them to MLflow."""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.io import write_json
from pipeline.metrics.seeds import mean_over_seeds
from pipeline.model_files import save_translator, servables
from pipeline.plots import image_grid, plot_history
from pipeline.tracking import add_register_option, stage_run
from pipeline.translate import ENCODERS, GANS, sample_rows, score_seeds, served_weights, train

TASKS = ("colorize", "stylize")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    ap.add_argument("encoder", help=f"one of: {', '.join(ENCODERS)}")
    ap.add_argument("gan", nargs="?", default="cyclegan", help=f"colorize only, one of: {', '.join(GANS)}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--backbone", default=None, help="default: models/backbone_<encoder>.pt")
    ap.add_argument("--storage", default="checkpoints/translate", help="Ray Train run folder (resumable)")
    ap.add_argument("--train-fraction", type=float, default=None,
                    help="override <task>.train_fraction; the stage is then named <stage>-f<fraction>")  # fmt: skip
    ap.add_argument(
        "--out", default=None, help="model file; default models/<stage>.pt (e.g. models/colorize_simsiam_cgan.pt)"
    )
    add_register_option(ap)
    args = ap.parse_args()
    if args.task not in TASKS:
        raise UserError(f"unknown translation task '{args.task}' (allowed: {', '.join(TASKS)})")
    if args.task == "stylize" and args.gan != "cyclegan":
        raise UserError("stylize is unpaired: only the cyclegan variant exists")
    params = load_params(args.params)
    stage = f"colorize@{args.encoder}-{args.gan}" if args.task == "colorize" else f"stylize@{args.encoder}"
    if args.train_fraction is not None:
        if not 0 < args.train_fraction <= 1:
            raise UserError(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
        section = getattr(params, args.task).model_copy(update={"train_fraction": args.train_fraction})
        params = params.model_copy(update={args.task: section})
        stage += f"-f{args.train_fraction}"
    tag = stage.replace("@", "_").replace("-", "_")
    logged = {"translate": params.translate.model_dump(), "distributed": params.distributed.model_dump(),
              "cyclegan": params.cyclegan.model_dump(), args.task: getattr(params, args.task).model_dump(),
              "encoder": args.encoder, "gan": args.gan}  # fmt: skip

    with stage_run(stage, logged, params.tracking.experiment, params.tracking.log_models, args.register) as run:
        runs = train(params, args.task, args.encoder, args.gan, args.data, args.storage, args.backbone)
        per_seed, first_samples = score_seeds(runs, params, args.data, stage)
        out = args.out or f"models/{tag}.pt"
        save_translator(out, [(job, {**state, "models": served_weights(state)}) for job, state in runs], args.encoder)
        run.log_models(out, *servables(out))
        job, state = runs[0]
        history = state["history"]  # the curves shown are the first seed's; every seed's scores are kept
        metrics = {**mean_over_seeds(list(per_seed.values())), "seeds": [int(s) for s in per_seed], "per_seed": per_seed,
                   "encoder": args.encoder, "gan": args.gan, "fd_features": params.translate.fd_features,
                   "world_size": state["world_size"], "epochs": len(history)}  # fmt: skip
        run.log_history(history)
        write_json(f"plots/{tag}.json", history)
        curves = ["loss_g", "loss_d", "val_l1"]
        baselines = {"val_l1": {"ab = 0": history[-1]["val_l1_ab0"]}} if args.task == "colorize" else None
        png = plot_history(history, curves, f"plots/{tag}.png", f"{stage} (seed {job.seed})", baselines)
        grid = image_grid(
            sample_rows(first_samples, args.task), f"plots/{tag}_samples.png", f"{stage}: input | output | target", 1.0
        )
        run.log_artifact(png, "plots")
        run.log_artifact(grid, "plots")
        run.finish(metrics, step=len(history))
        key = "l1_ab" if args.task == "colorize" else "l1_rgb"
        spread = [per_seed[s][key] for s in per_seed]
        print(
            f"{stage}: {key} {metrics[key]:.4f} (seeds {', '.join(f'{v:.4f}' for v in spread)}) psnr {metrics['psnr']:.2f} ssim {metrics['ssim']:.3f} fd {metrics['fd']:.2f}"
        )


if __name__ == "__main__":
    run_cli(main)
