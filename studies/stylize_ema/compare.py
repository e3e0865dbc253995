"""The stylize claims with the moving average (the default run, ``metrics/stylize_<e>.json``) and
with the last weights (``last_weights/stylize_<e>.json``: the same stages, backbones, machine and
seeds with ``stylize.ema_decay: 0``), and the paired difference per run. Run from the repository root:

    python studies/stylize_ema/compare.py   # writes results/stylize_ema/compare.{json,md}
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.claims import markdown, stylize_claims
from pipeline.io import atomic_file, write_json
from pipeline.metrics.seeds import t_interval

HERE = Path("results/stylize_ema")  # its results; run from the repository root
ENCODERS = ("scratch", "simsiam", "swav")


def runs(folder: Path) -> dict[str, dict]:
    """{encoder: its stage metrics} of one set of stylize runs."""
    return {e: json.loads((folder / f"stylize_{e}.json").read_text()) for e in ENCODERS}


def main() -> None:
    table = json.loads(Path("metrics/stylize.json").read_text())
    baselines = {k: table[k] for k in ("identity", "palette")}
    sets = {"moving average (default)": runs(Path("metrics")), "last weights": runs(HERE / "last_weights")}
    out, lines = {}, []
    for name, stages in sets.items():
        claims = stylize_claims({"stylize": baselines | stages}, "default")
        out[name] = claims
        lines += [f"### {name}", "", markdown(claims)]
    paired = {}
    for key in ("l1_rgb", "kid", "l1_luma", "l1_chroma"):
        diffs = [sets["last weights"][e]["per_seed"][s][key] - sets["moving average (default)"][e]["per_seed"][s][key]
                 for e in ENCODERS for s in sorted(sets["last weights"][e]["per_seed"])]  # fmt: skip
        mean, lo, hi = t_interval(diffs)
        paired[key] = {"mean": mean, "ci95": [lo, hi], "per_run": diffs}
    out["last_minus_average_paired"] = paired
    lines += [
        "### last weights minus moving average, paired by run (> 0: the average is lower)",
        "",
        "| score | mean | 95 % CI (t over 9 runs) |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v['mean']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] |" for k, v in paired.items()]
    write_json(HERE / "compare.json", out)
    with atomic_file(HERE / "compare.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
