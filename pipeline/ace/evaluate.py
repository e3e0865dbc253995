"""ACE's zero-shot evaluation: photo -> painting on the test photos against their exact painted
twins, beside the identity, AdaIN feature-statistics transfer on the same frozen backbone, the
CycleGAN stylizer (trained with paintings), the fine-tuned ACE and the floor (each photo's content
with the style code fitted to its own twin); and a multimodal check (contents x style exemplars).

Images are (N, 3, H, W) RGB in [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.ace.training import (
    adain_transfer,
    best_style_per_image,
    content_similarity,
    domain_style,
    pick_exemplars,
    reconstruct,
    style_diversity,
    translate,
)
from pipeline.config import Params
from pipeline.metrics.seeds import mean_over_seeds
from pipeline.models.ace import ACE
from pipeline.translate import score_paintings

COLUMNS = ("l1_rgb", "psnr", "ssim", "fd", "kid")


def labels(encoder: str) -> dict[str, str]:
    """The rows of the table, as the report and ``metrics/ace_table.md`` name them."""
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


def evaluate_zero_shot(
    zero_models: dict[int, ACE],
    fine_models: dict[int, ACE],
    rgb: torch.Tensor,
    target: torch.Tensor,
    exemplars: torch.Tensor,
    params: Params,
    stylize: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every row of the table (the ACE rows the mean over the seeds of ``zero_models``, each seed's
    scores in ``per_seed``), the multimodal check on the first seed, and what its grid shows.

    ``rgb`` / ``target``: the test photos and their painted twins; ``exemplars``: the style
    exemplars; ``stylize``: ``metrics/stylize.json`` (the CycleGAN row, when it has the encoder)."""
    ac = params.ace
    first = min(zero_models)
    zero, fine = zero_models[first], fine_models[first]  # the grid and the multimodal check show the first seed
    styles = pick_exemplars(exemplars, ac.eval_exemplars, first)
    torch.manual_seed(first)
    table: dict[str, dict[str, float]] = {"identity": score_paintings(rgb, target, params)}
    adain = adain_transfer(
        zero, rgb, styles, ac.adain_steps, ac.adain_lr
    )  # the frozen backbone only: one for all seeds
    table["adain"] = score_paintings(adain, target, params)
    if stylize and ac.encoder in stylize:
        table["cyclegan"] = {k: stylize[ac.encoder][k] for k in COLUMNS}
    per_seed = {}
    for seed in sorted(zero_models):
        seed_styles = pick_exemplars(exemplars, ac.eval_exemplars, seed)
        z, f = zero_models[seed], fine_models[seed]
        start = domain_style(z, seed_styles)
        floor = best_style_per_image(z, rgb, target, start, ac.floor_steps, ac.floor_lr)
        per_seed[str(seed)] = {
            "ace_zero_shot": score_paintings(translate(z, rgb, start), target, params),
            "ace_finetuned": score_paintings(translate(f, rgb, domain_style(f, seed_styles)), target, params),
            "ace_self_style": score_paintings(reconstruct(z, rgb), target, params),  # what fidelity alone costs
            "ace_floor": score_paintings(floor, target, params),
        }
    table |= mean_over_seeds(list(per_seed.values()))

    # multimodal: one content, several style exemplars
    contents = rgb[: ac.grid_contents]
    grid_styles = styles[: ac.grid_styles]
    codes = zero.style(grid_styles).detach()
    outs = torch.stack([translate(zero, contents, s) for s in codes], 1)  # (contents, styles, 3, H, W)
    own, others = content_similarity(zero, outs.flatten(0, 1), contents.repeat_interleave(len(codes), 0))
    # "own vs others" compares an output with its own content and with the other contents: the gap is the content kept
    multimodal = {"content_similarity_own": own, "content_similarity_others": others,
                  "style_diversity": style_diversity(zero, rgb[:32], codes),
                  "style_diversity_finetuned": style_diversity(fine, rgb[:32], fine.style(grid_styles).detach())}  # fmt: skip
    gains = {seed: {"zero_shot_gain_over_identity_l1": table["identity"]["l1_rgb"] - r["ace_zero_shot"]["l1_rgb"],
                    "finetune_gain_over_zero_shot_l1": r["ace_zero_shot"]["l1_rgb"] - r["ace_finetuned"]["l1_rgb"],
                    "floor_gain_over_identity_l1": table["identity"]["l1_rgb"] - r["ace_floor"]["l1_rgb"]} for seed, r in per_seed.items()}  # fmt: skip
    return {"table": table, "per_seed": per_seed, "gains": gains, "multimodal": multimodal, "styles": len(styles),
            "grid": {"styles": grid_styles, "contents": contents, "outputs": outs}}  # fmt: skip
