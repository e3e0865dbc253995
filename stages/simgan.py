"""DVC stage ``simgan`` (seed 003): refine synthetic digits (rendered from matplotlib's fonts)
towards the real scikit-learn digits with SimGAN on Ray Train, stop on a trivial refiner (the
identity, or a collapse to one image), write the refined set, then train ResNet-20 classifiers on
raw synthetic, refined synthetic and real digits over ``simgan.classify_seeds`` and test each on
the real test split; log all of it to MLflow."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.shards import Record, read_images, write_set
from pipeline.errors import UserError, run_cli
from pipeline.io import atomic_dir, write_json
from pipeline.model_files import save_model, servables
from pipeline.plots import image_grid, plot_history
from pipeline.simgan import (
    check_refiner,
    load_split,
    refine,
    refiner_figures,
    refiner_from_state,
    score,
    train,
    train_classifiers,
)
from pipeline.tracking import add_register_option, stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--refined", default="data/simgan", help="where the refined set is written (refined_digits/)")
    ap.add_argument("--storage", default="checkpoints/simgan", help="Ray Train run folder (resumable)")
    ap.add_argument("--out", default="models/simgan.pt")
    add_register_option(ap)
    args = ap.parse_args()
    params = load_params(args.params)
    sp = params.simgan
    logged = {"simgan": sp.model_dump(), "distributed": params.distributed.model_dump()}
    with stage_run("simgan", logged, params.tracking.experiment, params.tracking.log_models, args.register) as run:
        state = train(params, args.data, Path(args.storage) / "refiner")
        history = state["history"]
        if not all(math.isfinite(r["loss_r"]) and math.isfinite(r["loss_d"]) for r in history):
            raise UserError("simgan: a loss became NaN or infinite; lower simgan.lr")
        refiner = refiner_from_state(state, sp)
        synthetic, labels = load_split(args.data, "synthetic_digits", "train")
        figures = refiner_figures(refiner, synthetic)
        check_refiner(figures, sp.min_moved, sp.min_spread)
        refined = refine(refiner, synthetic)
        _, _, sources = read_images(Path(args.data) / "synthetic_digits", "train")
        with atomic_dir(Path(args.refined) / "refined_digits") as tmp:
            write_set(
                tmp,
                [Record(im, "refined", "train", src, int(y)) for im, y, src in zip(refined, labels.tolist(), sources)],
            )
        save_model(args.out, "refiner", {"simgan": sp.model_dump()}, {sp.seed: {"refiner": refiner.state_dict()}})
        run.log_models(args.out, *servables(args.out))

        states = train_classifiers(params, args.data, args.refined, Path(args.storage) / "classifiers")
        scores = score(states, params, args.data, args.refined)
        real, real_labels = load_split(args.data, "real_digits", "train")
        rows = {"synthetic": [], "refined": [], "real": []}
        for digit in range(10):  # the first image of each digit
            i, j = int((labels == digit).nonzero()[0, 0]), int((real_labels == digit).nonzero()[0, 0])
            rows["synthetic"].append((synthetic[i, 0] * 255).round().byte().numpy())
            rows["refined"].append(refined[i])
            rows["real"].append((real[j, 0] * 255).round().byte().numpy())
        grid = image_grid(rows, "plots/simgan_samples.png", "SimGAN: synthetic | refined | real digits", 0.8)
        write_json("plots/simgan.json", history)
        png = plot_history(history, ["loss_adv", "loss_reg", "loss_d", "d_acc", "moved"], "plots/simgan.png", "simgan",
                           {"d_acc": {"chance": 0.5}})  # fmt: skip
        run.log_history(history)
        for path in (png, grid):
            run.log_artifact(path, "plots")
        acc = scores["balanced_acc"]
        metrics = {**figures, **scores, "history_share": history[-1]["history_share"], "epochs": len(history),
                   "world_size": state["world_size"], "resumed_at_epochs": state["starts"][1:]}  # fmt: skip
        run.finish(metrics, step=len(history))
        print(f"simgan: moved {figures['moved']:.4f} spread {figures['spread_ratio']:.2f}; balanced accuracy on real test digits: "
              + ", ".join(f"{k} {v['mean']:.3f}" for k, v in acc.items()))  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
