"""DVC stage ``ace_eval``: zero-shot photo -> painting translation by ACE (never trained on
paintings), scored against the exact painted twins beside the identity, classic AdaIN
feature-statistics transfer on the same backbone (no training), the CycleGAN stylizer (trained
with the painting domain), the fine-tuned ACE and the floor (each photo's content decoded with the
style code fitted to its own twin: no choice of style does better); every ACE row is the mean over
the seeds of ``ace.seeds``, each seed's scores kept. A multimodal check (one content, several
style exemplars). Writes ``metrics/ace.json``, ``metrics/ace_table.md``, ``plots/ace_grid.png``,
``plots/ace_l1.png``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from pipeline import ace
from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.io import atomic_file
from pipeline.metrics.seeds import mean_over_seeds
from pipeline.plots import bar_chart, image_grid, rgb_images
from pipeline.tracking import stage_run
from pipeline.translate import painted_twins, score_paintings

COLUMNS = ("l1_rgb", "psnr", "ssim", "fd", "kid")


def labels(encoder: str) -> dict[str, str]:
    return {
        "identity": "identity (output = photo)",
        "adain": f"AdaIN feature statistics, {encoder} backbone, no training",
        "cyclegan": f"CycleGAN stylize@{encoder} (trained with paintings)",
        "ace_zero_shot": "ACE zero-shot (trained on photos only)",
        "ace_finetuned": "ACE fine-tuned on paintings",
        "ace_self_style": "diagnostic: ACE with each photo's own style (reconstruction)",
        "ace_floor": "floor: each photo's content with the style code fitted to its twin (the best any style can do)",
    }


def markdown(table: dict[str, dict[str, float]], encoder: str, fd_features: str) -> str:
    lines = [f"| photo -> painting (test) | L1 | PSNR | SSIM | FD ({fd_features}) | KID |", "|---|---|---|---|---|---|"]
    for key, s in table.items():
        lines.append(
            f"| {labels(encoder)[key]} | {s['l1_rgb']:.4f} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['fd']:.2f} | {s['kid']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument(
        "--styles", default=None, help="style exemplars: a folder of images (default: the painting train split)"
    )
    ap.add_argument("--zero-shot", default="models/ace.pt")
    ap.add_argument("--finetuned", default="models/ace_finetune.pt")
    ap.add_argument("--stylize", default="metrics/stylize.json", help="CycleGAN scores (translate_report)")
    args = ap.parse_args()
    params = load_params(args.params)
    ac = params.ace
    exemplars = ace.load_exemplars(args.styles or Path(args.data) / "painting")
    zero_models, fine_models = ace.load_ace(args.zero_shot), ace.load_ace(args.finetuned)  # {seed: model}
    if set(zero_models) != set(fine_models):
        raise UserError(
            f"{args.zero_shot} has seeds {sorted(zero_models)} but {args.finetuned} has {sorted(fine_models)}: rerun `dvc repro ace_finetune`"
        )
    rgb, target = painted_twins(args.data)
    if exemplars.shape[-2:] != rgb.shape[-2:]:
        raise UserError(
            f"style exemplars are {tuple(exemplars.shape[-2:])} px but the photos are {tuple(rgb.shape[-2:])} px: give exemplars of that size"
        )
    first = min(zero_models)
    zero, fine = zero_models[first], fine_models[first]  # the grid and the multimodal check show the first seed
    styles = ace.pick_exemplars(exemplars, ac.eval_exemplars, first)

    with stage_run(
        "ace_eval",
        {"ace": ac.model_dump(), "styles": args.styles or "painting train split"},
        params.tracking.experiment,
    ) as run:
        torch.manual_seed(first)
        table: dict[str, dict[str, float]] = {"identity": score_paintings(rgb, target, params)}
        adain = ace.adain_transfer(
            zero, rgb, styles, ac.adain_steps, ac.adain_lr
        )  # the frozen backbone only: one for all seeds
        table["adain"] = score_paintings(adain, target, params)
        stylize = json.loads(Path(args.stylize).read_text()) if Path(args.stylize).is_file() else {}
        if ac.encoder in stylize:
            table["cyclegan"] = {k: stylize[ac.encoder][k] for k in COLUMNS}
        per_seed = {}
        for seed in sorted(zero_models):
            seed_styles = ace.pick_exemplars(exemplars, ac.eval_exemplars, seed)
            z, f = zero_models[seed], fine_models[seed]
            start = ace.domain_style(z, seed_styles)
            floor = ace.best_style_per_image(z, rgb, target, start, ac.floor_steps, ac.floor_lr)
            per_seed[str(seed)] = {
                "ace_zero_shot": score_paintings(ace.translate(z, rgb, start), target, params),
                "ace_finetuned": score_paintings(
                    ace.translate(f, rgb, ace.domain_style(f, seed_styles)), target, params
                ),
                "ace_self_style": score_paintings(ace.reconstruct(z, rgb), target, params),  # what fidelity alone costs
                "ace_floor": score_paintings(floor, target, params),
            }
        table |= mean_over_seeds(list(per_seed.values()))

        # multimodal: one content, several style exemplars
        contents = rgb[: ac.grid_contents]
        grid_styles = styles[: ac.grid_styles]
        codes = zero.style(grid_styles).detach()
        outs = torch.stack([ace.translate(zero, contents, s) for s in codes], 1)  # (contents, styles, 3, H, W)
        own, others = ace.content_similarity(zero, outs.flatten(0, 1), contents.repeat_interleave(len(codes), 0))
        multimodal = {"content_similarity_own": own, "content_similarity_others": others,
                      "style_diversity": ace.style_diversity(zero, rgb[:32], codes),
                      "style_diversity_finetuned": ace.style_diversity(fine, rgb[:32], fine.style(grid_styles).detach())}  # fmt: skip
        # "own vs others" compares an output with its own content and with the other contents: the gap is the content kept
        blank = np.full((*rgb.shape[-2:], 3), 255, np.uint8)
        rows = {"style exemplars": [blank, *rgb_images(grid_styles)]}
        for i in range(len(contents)):
            rows[f"content {i}"] = [*rgb_images(contents[i : i + 1]), *rgb_images(outs[i])]
        grid = image_grid(
            rows, "plots/ace_grid.png", "ACE zero-shot: rows = contents (first column), columns = style exemplars", 1.0
        )
        l1s = {key: s["l1_rgb"] for key, s in table.items() if key != "identity"}
        bars = bar_chart(
            l1s,
            "plots/ace_l1.png",
            "photo -> painting test L1 (lower is better)",
            {"identity": table["identity"]["l1_rgb"]},
        )
        with atomic_file("metrics/ace_table.md") as tmp:
            tmp.write_text(markdown(table, ac.encoder, params.translate.fd_features))
        for path in (grid, bars, Path("metrics/ace_table.md")):
            run.log_artifact(path, "plots" if str(path).endswith(".png") else None)
        gains = {seed: {"zero_shot_gain_over_identity_l1": table["identity"]["l1_rgb"] - r["ace_zero_shot"]["l1_rgb"],
                        "finetune_gain_over_zero_shot_l1": r["ace_zero_shot"]["l1_rgb"] - r["ace_finetuned"]["l1_rgb"],
                        "floor_gain_over_identity_l1": table["identity"]["l1_rgb"] - r["ace_floor"]["l1_rgb"]} for seed, r in per_seed.items()}  # fmt: skip
        metrics = {"table": table, "labels": labels(ac.encoder), "multimodal": multimodal, "encoder": ac.encoder, "fd_features": params.translate.fd_features,
                   **mean_over_seeds(list(gains.values())), "seeds": [int(s) for s in per_seed], "per_seed": {s: per_seed[s] | gains[s] for s in per_seed},
                   "test_images": len(rgb), "style_exemplars": len(styles)}  # fmt: skip
        run.finish(metrics, name="ace")
    print(markdown(table, ac.encoder, params.translate.fd_features))
    print(
        f"ace_eval: content similarity own {own:.3f} vs others {others:.3f}; style diversity {multimodal['style_diversity']:.4f}"
    )


if __name__ == "__main__":
    run_cli(main)
