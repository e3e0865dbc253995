"""DVC stages ``ace`` and ``ace_finetune``: train the Auto-Contrastive-Encoder on the photos train
split only (``ace``), or fine-tune it on the painting train split with the latent-consistency and
GAN losses (``ace_finetune``); one model per seed of ``ace.seeds``, all in one file; Ray Train,
resumable, logged to MLflow."""

from __future__ import annotations

import argparse
import math

from pipeline import ace
from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.io import write_json
from pipeline.metrics.seeds import mean_over_seeds
from pipeline.model_files import servables
from pipeline.plots import plot_history
from pipeline.tracking import add_register_option, stage_run
from pipeline.translate import encoder_backbone

MODES = {"pretrain": "ace", "finetune": "ace_finetune"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", nargs="?", default="pretrain", help=f"one of: {', '.join(MODES)}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--backbone", default=None, help="default: models/backbone_<ace.encoder>.pt")
    ap.add_argument("--init", default="models/ace.pt", help="finetune: the model to start from")
    ap.add_argument("--out", default=None, help="default: models/ace.pt or models/ace_finetune.pt")
    ap.add_argument("--storage", default=None, help="Ray Train run folder (resumable); default checkpoints/<stage>")
    add_register_option(ap)
    args = ap.parse_args()
    if args.mode not in MODES:
        raise UserError(f"unknown ACE mode '{args.mode}' (allowed: {', '.join(MODES)})")
    stage = MODES[args.mode]
    params = load_params(args.params)
    encoder = params.ace.encoder
    init = ace.load_ace(args.init) if args.mode == "finetune" else None  # {seed: model}
    backbone = encoder_backbone(encoder, args.backbone)
    logged = {"ace": params.ace.model_dump(), "distributed": params.distributed.model_dump(), "mode": args.mode}
    if args.mode == "finetune":
        logged["ace_finetune"] = params.ace_finetune.model_dump()

    with stage_run(stage, logged, params.tracking.experiment, params.tracking.log_models, args.register) as run:
        init_states = None if init is None else {seed: m.state_dict() for seed, m in init.items()}
        states = ace.train(params, args.mode, args.data, backbone, args.storage or f"checkpoints/{stage}", init_states)
        for seed, state in states.items():
            if not all(math.isfinite(v) for r in state["history"] for k, v in r.items() if k.startswith("loss")):
                raise UserError(f"{stage}: a loss became NaN or infinite (seed {seed}); lower ace.lr")
        out = args.out or f"models/{stage}.pt"
        ace.save_ace(out, params, backbone, states, args.mode)
        run.log_models(out, *servables(out))
        first = min(states)
        history = states[first]["history"]  # the curves shown are the first seed's
        run.log_history(history)
        write_json(f"plots/{stage}.json", history)
        curves = (
            ["loss_contrastive", "content_std", "loss_recon", "style_diversity"]
            if args.mode == "pretrain"
            else ["loss_content", "loss_style", "loss_gan", "style_diversity"]
        )
        png = plot_history(history, curves, f"plots/{stage}.png", f"{stage} ({encoder} backbone, seed {first})")
        run.log_artifact(png, "plots")
        per_seed = {
            str(seed): {k: v for k, v in st["history"][-1].items() if k != "epoch"} for seed, st in states.items()
        }
        metrics = mean_over_seeds(list(per_seed.values())) | {"seeds": list(states), "per_seed": per_seed, "epochs": len(history),
                                                               "world_size": states[first]["world_size"], "encoder": encoder}  # fmt: skip
        run.finish(
            metrics, step=len(history), name="ace_train" if args.mode == "pretrain" else None
        )  # metrics/ace.json is ace_eval's table
        summary = " ".join(
            f"{k} {v:.4f}"
            for k, v in metrics.items()
            if k in ("loss_contrastive", "val_recon_l1", "val_content_std", "style_diversity", "loss_content")
        )
        print(f"{stage} (mean over seeds {list(states)}): {summary}")


if __name__ == "__main__":
    run_cli(main)
