"""DVC stage ``translate_report``: the colorization and style-transfer tables, beside their trivial
baselines (ab = 0; identity) and, for style transfer, an oracle (the renderer's colour step), in metrics/colorize.json, metrics/stylize.json and a markdown table
in the layout of seed 002's Table I."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.painting import palette_rgb
from pipeline.errors import UserError, run_cli
from pipeline.io import atomic_file, write_json
from pipeline.plots import bar_chart
from pipeline.tracking import stage_run
from pipeline.translate import ENCODERS, GANS, evaluate_colorization, evaluate_painter, evaluate_stylization

ROW_NAMES = {"scratch": "scratch", "simsiam": "SimSiam", "swav": "SwAV", "cgan": "cGAN", "cyclegan": "CycleGAN"}
COLS = ("l1_ab", "l1_rgb", "psnr", "ssim", "fd", "kid")
STYLE_COLS = ("l1_rgb", "l1_luma", "l1_chroma", "psnr", "ssim", "fd", "kid", "cycle_l1")


def read_variant(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} not found: run its translation stage first")
    return json.loads(path.read_text())


def display_name(key: str, gan: str = "cyclegan") -> str:
    """'simsiam-cgan' -> 'SimSiam + cGAN'; 'ab0' -> 'ab = 0'; 'swav' (stylize) -> 'SwAV + CycleGAN'."""
    trivial = {
        "ab0": "ab = 0 (no colour)",
        "identity": "identity (output = input)",
        "palette": "palette oracle (the renderer's colour step)",
    }
    if key in trivial:
        return trivial[key]
    enc, _, g = key.partition("-")
    return f"{ROW_NAMES[enc]} + {ROW_NAMES[g or gan]}"


def markdown(title: str, rows: dict[str, dict], cols: tuple[str, ...]) -> str:
    lines = [f"### {title}", "", "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key, m in rows.items():
        name = display_name(key)
        cells = [f"{m[c]:.4f}" if isinstance(m.get(c), float) else "-" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--metrics", default="metrics")
    args = ap.parse_args()
    params = load_params(args.params)
    root = Path(args.metrics)
    with stage_run("translate_report", {"translate": params.translate.model_dump()}, params.tracking.experiment) as run:
        ab0 = {k: v for k, v in evaluate_colorization(None, params, args.data).items() if k != "samples"}
        colorize = {"ab0": ab0}
        for gan in GANS:
            for enc in ENCODERS:
                colorize[f"{enc}-{gan}"] = read_variant(root / f"colorize_{enc}_{gan}.json")
        identity = {k: v for k, v in evaluate_stylization(None, params, args.data).items() if k != "samples"}
        pp = params.prepare.painting
        palette = evaluate_painter(lambda rgb: palette_rgb(rgb, pp.saturation, pp.levels), params, args.data)
        stylize = {
            "identity": identity,
            "palette": palette,
            **{e: read_variant(root / f"stylize_{e}.json") for e in ENCODERS},
        }
        notes = {"l1_ab_scale": "mean |ab_pred - ab_true| / 110 over pixels (network scale)",
                 "l1_rgb_scale": "mean absolute error of RGB in [0, 1]",
                 "l1_luma_chroma": "l1_rgb split: L1 of the luminance, and L1 of RGB minus luminance (the colours)",
                 "fd_kid_features": params.translate.fd_features,
                 "test_split": "patches of the held-out source photos (prepare.photos.test_sources)",
                 "seeds": f"every variant is the mean over translate.seeds {params.translate.seeds}; per_seed keeps each",
                 "kid_paintings_split_half": identity["kid_paintings_split_half"]}  # fmt: skip
        table = markdown("Colorization (test photos; lower L1/FD/KID, higher PSNR/SSIM is better)", colorize, COLS)
        table += "\n" + markdown(
            "Style transfer photo -> painting (against the exact filtered twins)", stylize, STYLE_COLS
        )
        table += "\n" + "\n".join(f"- {k}: {v}" for k, v in notes.items()) + "\n"
        with atomic_file(root / "translation_table.md") as tmp:
            tmp.write_text(table)
        chart = bar_chart(
            {display_name(k): m["l1_ab"] for k, m in colorize.items() if k != "ab0"}, "plots/colorize_l1_ab.png",
            "colorization ab L1 (ab/110), test photos", {"ab = 0 (no colour)": ab0["l1_ab"]},
        )  # fmt: skip
        for name, table_dict in (("colorize", colorize), ("stylize", stylize)):
            write_json(root / f"{name}.json", {**table_dict, "notes": notes})
            run.log_metrics({name: table_dict})
            run.log_artifact(root / f"{name}.json")
        run.log_artifact(root / "translation_table.md")
        run.log_artifact(chart, "plots")
        print(table)


if __name__ == "__main__":
    run_cli(main)
