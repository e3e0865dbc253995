"""DVC stages ``ace`` and ``ace_finetune``: train the Auto-Contrastive-Encoder on the photos train
split only (``ace``), or fine-tune it on the painting train split with the latent-consistency and
GAN losses (``ace_finetune``); Ray Train, resumable, logged to MLflow."""

from __future__ import annotations

import argparse
import math

from pipeline import ace
from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.io import save_torch, write_json
from pipeline.plots import plot_history
from pipeline.tracking import stage_run
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
    args = ap.parse_args()
    if args.mode not in MODES:
        raise UserError(f"unknown ACE mode '{args.mode}' (allowed: {', '.join(MODES)})")
    stage = MODES[args.mode]
    params = load_params(args.params)
    encoder = params.ace.encoder
    init = ace.load_ace(args.init) if args.mode == "finetune" else None
    backbone = encoder_backbone(encoder, args.backbone)
    logged = {"ace": params.ace.model_dump(), "distributed": params.distributed.model_dump(), "mode": args.mode}
    if args.mode == "finetune":
        logged["ace_finetune"] = params.ace_finetune.model_dump()

    with stage_run(stage, logged, params.tracking.experiment) as run:
        init_state = None if init is None else init.state_dict()
        state = ace.train(params, args.mode, args.data, backbone, args.storage or f"checkpoints/{stage}", init_state)
        history = state["history"]
        if not all(math.isfinite(v) for r in history for k, v in r.items() if k.startswith("loss")):
            raise UserError(f"{stage}: a loss became NaN or infinite; lower ace.lr")
        out = args.out or f"models/{stage}.pt"
        save_torch(out, {"state_dict": state["ace"], "ace": params.ace.model_dump(), "backbone_spec": backbone.spec(),
                         "encoder": encoder, "mode": args.mode})  # fmt: skip
        run.log_history(history)
        write_json(f"plots/{stage}.json", history)
        curves = ["loss_contrastive", "content_std", "loss_recon", "style_diversity"] if args.mode == "pretrain" else ["loss_content", "loss_style", "loss_gan", "style_diversity"]
        png = plot_history(history, curves, f"plots/{stage}.png", f"{stage} ({encoder} backbone)")
        run.log_artifact(png, "plots")
        last = history[-1]
        metrics = {k: v for k, v in last.items() if k != "epoch"} | {"epochs": len(history), "world_size": state["world_size"], "encoder": encoder}
        run.finish(metrics, step=len(history), name="ace_train" if args.mode == "pretrain" else None)  # metrics/ace.json is ace_eval's table
        summary = " ".join(f"{k} {v:.4f}" for k, v in last.items() if k in ("loss_contrastive", "val_recon_l1", "val_content_std", "style_diversity", "loss_content"))
        print(f"{stage}: {summary}")


if __name__ == "__main__":
    run_cli(main)
