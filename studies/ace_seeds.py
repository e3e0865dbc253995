"""ACE's test L1 over pretraining seeds: zero-shot, fine-tuned (the paper's recipe and with the
reconstruction anchor), the photo's own style, and the oracle bound, beside the identity.

Runs the same Ray Train loops and scoring as the ``ace`` / ``ace_finetune`` / ``ace_eval``
stages, outside DVC, on the prepared data and backbone of a finished ``dvc repro``:

    python studies/ace_seeds.py --seeds 0 1 2 --out studies/ace_seeds.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pipeline import ace
from pipeline.config import Params, load_params
from pipeline.errors import run_cli
from pipeline.io import write_json
from pipeline.metrics.image import l1
from pipeline.translate import encoder_backbone, painted_twins


def one_seed(params: Params, data: str, seed: int, anchor: float, storage: Path, test: tuple, exemplars: torch.Tensor) -> dict[str, float]:
    """Train ACE with ``ace.seed`` = ``seed``, fine-tune it both ways, score on ``test`` = (photos, painted twins)."""
    params = params.model_copy(update={"ace": params.ace.model_copy(update={"seed": seed})})
    backbone = encoder_backbone(params.ace.encoder)
    rgb, target = test
    styles = ace.pick_exemplars(exemplars, params.ace.eval_exemplars, seed)

    def model(state: dict) -> ace.ACE:
        return ace.from_state(params.ace.model_dump(), backbone, state["ace"])

    zero = model(ace.train(params, "pretrain", data, backbone, storage))
    row = {"identity": l1(rgb, target), "zero_shot": l1(ace.translate(zero, rgb, ace.domain_style(zero, styles)), target),
           "self_style": l1(ace.reconstruct(zero, rgb), target), "oracle": l1(ace.reconstruct(zero, target), target)}  # fmt: skip
    for name, recon in (("finetuned", 0.0), ("finetuned_anchor", anchor)):
        p = params.model_copy(update={"ace_finetune": params.ace_finetune.model_copy(update={"recon": recon})})
        fine = model(ace.train(p, "finetune", data, backbone, storage, zero.state_dict()))
        row[name] = l1(ace.translate(fine, rgb, ace.domain_style(fine, styles)), target)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--anchor", type=float, default=10.0, help="ace_finetune.recon of the anchored fine-tuning")
    ap.add_argument("--storage", default="checkpoints/ace_seeds")
    ap.add_argument("--out", default="studies/ace_seeds.json")
    args = ap.parse_args()
    params, test = load_params(args.params), painted_twins(args.data)
    exemplars = ace.load_exemplars(Path(args.data) / "painting")
    rows = {}
    for seed in args.seeds:
        rows[seed] = one_seed(params, args.data, seed, args.anchor, Path(args.storage), test, exemplars)
        print(f"seed {seed}: " + " ".join(f"{k} {v:.4f}" for k, v in rows[seed].items()), flush=True)
    keys = list(next(iter(rows.values())))
    summary = {k: {"mean": float(np.mean([r[k] for r in rows.values()])), "std": float(np.std([r[k] for r in rows.values()], ddof=1)) if len(rows) > 1 else 0.0}
               for k in keys}  # fmt: skip
    write_json(args.out, {"per_seed": rows, "summary": summary, "anchor": args.anchor})
    print(" ".join(f"{k} {s['mean']:.4f} +- {s['std']:.4f}" for k, s in summary.items()))


if __name__ == "__main__":
    run_cli(main)
