"""DVC stage ``backbone_scratch``: the untrained backbone, seeded exactly as pretraining starts.

The ``scratch`` translation variants transplant it, so they differ from the SimSiam/SwAV ones by
the pretraining alone (same architecture, same initial weights). Its kNN probe is logged too.
"""

from __future__ import annotations

import argparse

import torch

from pipeline.config import load_params
from pipeline.errors import run_cli
from pipeline.model_files import save_backbone, servables
from pipeline.ssl.pretrain import evaluate_backbone, new_backbone
from pipeline.tracking import add_register_option, stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="models/backbone_scratch.pt")
    add_register_option(ap)
    args = ap.parse_args()
    params = load_params(args.params)
    pre = params.pretrain
    with stage_run(
        "backbone_scratch",
        {"pretrain": pre.model_dump()},
        params.tracking.experiment,
        params.tracking.log_models,
        args.register,
    ) as run:
        torch.manual_seed(pre.seed)  # the pretraining loops build their backbone first after this seed
        backbone = new_backbone(pre)
        metrics = evaluate_backbone(backbone, params, args.data)
        save_backbone(args.out, backbone, "scratch", pre.seed)
        run.log_models(args.out, *servables(args.out))
        run.finish({**metrics, "method": "scratch"})
        print(f"backbone_scratch: knn_top1 {metrics['knn_top1']:.3f} (chance {metrics['knn_chance']:.2f})")


if __name__ == "__main__":
    run_cli(main)
