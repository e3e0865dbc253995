"""Stage ``efficiency_report`` of studies/data_efficiency: cGAN colorization ab L1 against the
fraction of photo train patches, one line per encoder with its 95 % t interval over seeds, beside
the ab = 0 baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.metrics.seeds import t_interval
from pipeline.plots import line_plot
from pipeline.tracking import stage_run
from pipeline.translate import ENCODERS, evaluate_colorization


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fractions", nargs="+", type=float, required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--metrics", default="metrics")
    args = ap.parse_args()
    params = load_params(args.params)
    with stage_run("efficiency_report", {"fractions": args.fractions}, params.tracking.experiment) as run:
        table: dict[str, dict[str, float]] = {}
        half: dict[str, dict[str, float]] = {}  # 95 % t interval half-width over seeds (0 for one seed)
        for enc in ENCODERS:
            for f in args.fractions:
                path = Path(args.metrics) / f"colorize_{enc}_cgan_f{f}.json"
                if not path.is_file():
                    raise UserError(f"{path} not found: run `dvc repro studies/data_efficiency/dvc.yaml`")
                m = json.loads(path.read_text())
                table.setdefault(enc, {})[str(f)] = m["l1_ab"]
                seeds = [r["l1_ab"] for r in m.get("per_seed", {}).values()]
                half.setdefault(enc, {})[str(f)] = t_interval(seeds)[2] - m["l1_ab"] if len(seeds) > 1 else 0.0
        ab0 = evaluate_colorization(None, params, args.data)["l1_ab"]
        png = line_plot(
            {enc: (args.fractions, [table[enc][str(f)] for f in args.fractions]) for enc in ENCODERS},
            "plots/colorize_data_efficiency.png", "fraction of photo train patches", "test ab L1 (ab/110)",
            "cGAN colorization: data efficiency (95 % CI over seeds)", {"ab = 0 (no colour)": ab0}, logx=True,
            errors={enc: [half[enc][str(f)] for f in args.fractions] for enc in ENCODERS},
        )  # fmt: skip
        run.log_artifact(png, "plots")
        run.finish(
            {"l1_ab": table, "l1_ab_ci95_half_width": half, "l1_ab_ab0": ab0, "fractions": args.fractions},
            step=0,
            name="colorize_efficiency",
        )
        for enc in ENCODERS:
            print(
                f"{enc:8s} "
                + "  ".join(f"f={f}: {table[enc][str(f)]:.4f}" for f in args.fractions)
                + f"  (ab=0: {ab0:.4f})"
            )


if __name__ == "__main__":
    run_cli(main)
