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

from pipeline import ace
from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.io import atomic_file
from pipeline.metrics.seeds import mean_over_seeds
from pipeline.plots import bar_chart, image_grid, rgb_images
from pipeline.tracking import stage_run
from pipeline.translate import painted_twins


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

    with stage_run(
        "ace_eval",
        {"ace": ac.model_dump(), "styles": args.styles or "painting train split"},
        params.tracking.experiment,
    ) as run:
        stylize = json.loads(Path(args.stylize).read_text()) if Path(args.stylize).is_file() else {}
        result = ace.evaluate_zero_shot(zero_models, fine_models, rgb, target, exemplars, params, stylize)
        table, per_seed, gains, multimodal = result["table"], result["per_seed"], result["gains"], result["multimodal"]
        grid_styles, contents, outs = (result["grid"][k] for k in ("styles", "contents", "outputs"))
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
            tmp.write_text(ace.markdown(table, ac.encoder, params.translate.fd_features))
        for path in (grid, bars, Path("metrics/ace_table.md")):
            run.log_artifact(path, "plots" if str(path).endswith(".png") else None)
        metrics = {"table": table, "labels": ace.labels(ac.encoder), "multimodal": multimodal, "encoder": ac.encoder, "fd_features": params.translate.fd_features,
                   **mean_over_seeds(list(gains.values())), "seeds": [int(s) for s in per_seed], "per_seed": {s: per_seed[s] | gains[s] for s in per_seed},
                   "test_images": len(rgb), "style_exemplars": result["styles"]}  # fmt: skip
        run.finish(metrics, name="ace")
    print(ace.markdown(table, ac.encoder, params.translate.fd_features))
    print(
        f"ace_eval: content similarity own {multimodal['content_similarity_own']:.3f} vs others "
        f"{multimodal['content_similarity_others']:.3f}; style diversity {multimodal['style_diversity']:.4f}"
    )


if __name__ == "__main__":
    run_cli(main)
