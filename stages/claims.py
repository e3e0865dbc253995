"""DVC stage ``claims``: the seeds' claims that the study tests, each an effect over seeds with a
95 % interval (> 0 = the claim holds; ``holds`` = the interval's lower end > 0), in
``metrics/claims.json`` and the table ``metrics/claims.md``; logged to MLflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.claims import METRICS, markdown, study_claims
from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.io import atomic_file
from pipeline.tracking import stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", default="metrics")
    args = ap.parse_args()
    params = load_params(args.params)
    root = Path(args.metrics)
    missing = [name for name in METRICS if not (root / f"{name}.json").is_file()]
    if missing:
        raise UserError(f"{root / (missing[0] + '.json')} not found: run `dvc repro` up to the stage that writes it")
    metrics = {name: json.loads((root / f"{name}.json").read_text()) for name in METRICS}
    claims = study_claims(metrics, params)
    with stage_run("claims", {"profile": params.tracking.profile}, params.tracking.experiment) as run:
        with atomic_file(root / "claims.md") as tmp:
            tmp.write_text(markdown(claims))
        run.log_artifact(root / "claims.md")
        run.finish({"profile": params.tracking.profile, "claims": claims}, name="claims")
        run.log_metrics({c["id"]: c["value"] for c in claims} | {f"{c['id']}_holds": float(c["holds"]) for c in claims})
    print(markdown(claims))


if __name__ == "__main__":
    run_cli(main)
