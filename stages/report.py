"""DVC stage ``report``: ``reports/index.html``, the whole study on one self-contained page (claims,
results tables beside their baselines, key plots, and per stage its MLflow run, wall time, git
commit and params), and ``reports/runs.json``, every stage's MLflow run id; both logged to MLflow."""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.errors import run_cli
from pipeline.io import atomic_file, write_json
from pipeline.report import build
from pipeline.tracking import git_commit, stage_run, stage_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".", help="folder holding metrics/ and plots/")
    ap.add_argument("--out", default="reports/index.html")
    ap.add_argument(
        "--runs", default="reports/runs.json", help="every stage's MLflow run (id, status, wall time, commit) as JSON"
    )
    args = ap.parse_args()
    params = load_params(args.params)
    runs = stage_runs(params.tracking.experiment)
    with stage_run("report", {"profile": params.tracking.profile}, params.tracking.experiment) as run:
        page = build(
            args.root, runs, f"ssl-i2i study ({params.tracking.experiment})", git_commit(), params.tracking.profile
        )
        with atomic_file(args.out) as tmp:
            tmp.write_text(page)
        write_json(args.runs, [{k: v for k, v in r.items() if k != "params"} for r in runs])
        run.log_artifact(args.out, "report")
        run.log_artifact(args.runs, "report")
        run.log_metrics({"stage_runs": len(runs), "page_bytes": len(page)})
    print(f"report: {args.out} ({len(page) / 1e6:.1f} MB, {len(runs)} stage runs)")


if __name__ == "__main__":
    run_cli(main)
