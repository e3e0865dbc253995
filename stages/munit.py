"""DVC stage ``munit``: MUNIT on the long-tailed digits as one domain (Ray Train), with the
style-collapse monitor and a grid of contents x random styles beside the true nuisance's draws."""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from pipeline.config import load_params
from pipeline.data.augment import balanced_draw
from pipeline.data.transforms import apply_nuisance, draw_nuisance
from pipeline.errors import UserError, run_cli
from pipeline.invariance.munit import build_munit, load_digits, reconstruction_l1, style_diversity, to_uint8, train
from pipeline.io import write_json
from pipeline.model_files import save_model, servables
from pipeline.plots import image_grid, plot_history
from pipeline.tracking import add_register_option, stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--storage", default="checkpoints/munit", help="Ray Train run folder (resumable)")
    ap.add_argument("--out", default="models/munit.pt")
    add_register_option(ap)
    args = ap.parse_args()
    params = load_params(args.params)
    mp = params.munit
    logged = {"munit": mp.model_dump(), "distributed": params.distributed.model_dump()}
    with stage_run("munit", logged, params.tracking.experiment, params.tracking.log_models, args.register) as run:
        state = train(params, args.data, args.storage)
        history = state["history"]
        if not all(math.isfinite(r["loss_g"]) for r in history):
            raise UserError("munit: a loss became NaN or infinite; lower munit.lr")
        model, _ = build_munit(mp)
        model.load_state_dict(state["model"])
        model.eval()
        x, labels, _ = load_digits(args.data, "test")
        contents = x[balanced_draw(torch.from_numpy(labels), 8, torch.Generator().manual_seed(mp.seed))]
        gen = torch.Generator().manual_seed(mp.seed)
        styles = torch.randn(6, mp.style_dim, generator=gen)
        with torch.no_grad():
            c, _ = model.encode(contents)
            outs = [model.decode(c, s.expand(len(c), -1)) for s in styles]
        transform, rng = params.prepare.digits_lt.transform, np.random.default_rng(mp.seed)
        rows = {}
        for i in range(len(contents)):
            real = to_uint8(contents[i])
            rows[f"content {i}"] = (
                [real]
                + [to_uint8(o[i]) for o in outs]
                + [apply_nuisance(real, draw_nuisance(transform, rng)) for _ in range(6)]
            )
        grid = image_grid(
            rows,
            "plots/munit_samples.png",
            f"MUNIT: real | 6 random styles | 6 draws of the true nuisance '{transform}'",
            0.8,
        )
        metrics = {"style_diversity": style_diversity(model, x, mp.diversity_styles), "recon_l1": reconstruction_l1(model, x),
                   "loss_g": history[-1]["loss_g"], "loss_d": history[-1]["loss_d"], "epochs": len(history),
                   "world_size": state["world_size"], "resumed_at_epochs": state["starts"][1:]}  # fmt: skip
        save_model(args.out, "munit", {"munit": mp.model_dump()}, {mp.seed: {"munit": model.state_dict()}})
        run.log_models(args.out, *servables(args.out))
        run.log_history(history)
        write_json("plots/munit.json", history)
        png = plot_history(history, ["loss_g", "loss_d", "recon_l1", "style_diversity"], "plots/munit.png", "munit",
                           {"style_diversity": {"collapsed (style ignored)": 0.0}})  # fmt: skip
        run.log_artifact(png, "plots")
        run.log_artifact(grid, "plots")
        run.finish(metrics, step=len(history))
        print(f"munit: recon_l1 {metrics['recon_l1']:.4f} style_diversity {metrics['style_diversity']:.4f} (test set)")


if __name__ == "__main__":
    run_cli(main)
