"""Where a finished study's wall time goes, stage by stage: read from the MLflow runs and the Ray
Train run folders that a `dvc repro` (or `make repro`) left behind, so the study itself runs as
users run it, untouched.

For every stage run (the latest FINISHED run per ``dvc.stage`` tag):

    wall_s          the stage's MLflow run, from its start (after imports and the params check) to its end
    before_train_s  from the run's start to its first Ray Train run's start (input checks, publishing data,
                    joining Ray, building the trainer); the whole run for stages that train nothing
    train_s         inside Ray Train runs: from a run's storage marker (written as the trainer starts) to its
                    last checkpoint; worker start-up, the epochs and the checkpoints (a stage may fit twice)
    after_train_s   from the last checkpoint to the run's end: evaluation, model files, plots, MLflow logging
    between_s       the rest (between two Ray Train runs of one stage)

and for the study: its span (first stage start to last stage end) and ``outside_stages_s``, the part
of it outside every stage run (process start, imports, DVC's hashing and lock writing).

    python benchmarks/study_time.py --root /path/to/the/repro/checkout [--out benchmarks/results]

Writes ``<out>/study_time_<device>.json`` (device: cpu, or cuda where a stage ran on a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CHECKPOINT = "checkpoint_"
MARKER = ".validate_storage_marker"


def ray_runs(checkpoints: Path) -> list[tuple[float, float, str]]:
    """(start, end, folder) of every Ray Train run under ``checkpoints``: start is its storage marker's
    time, end its last checkpoint's (the folder name carries it, in this machine's local time)."""
    out = []
    for marker in checkpoints.rglob(MARKER):
        folder = marker.parent
        stamps = [datetime.strptime(d.name[len(CHECKPOINT) :], "%Y-%m-%d_%H-%M-%S.%f").timestamp()
                  for d in folder.iterdir() if d.is_dir() and d.name.startswith(CHECKPOINT)]  # fmt: skip
        if stamps:
            out.append((marker.stat().st_mtime, max(stamps), str(folder.relative_to(checkpoints))))
    return sorted(out)


def stage_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """The latest finished run of every stage, in start order: {stage, start, end, gpu}."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment '{experiment}' in {tracking_uri}")
    latest: dict[str, Any] = {}
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time ASC"], max_results=5000):  # fmt: skip
        stage = run.data.tags.get("dvc.stage")
        if stage and "mlflow.parentRunId" not in run.data.tags:
            latest[stage] = run
    return sorted(({"stage": s, "start": r.info.start_time / 1000, "end": (r.info.end_time or r.info.start_time) / 1000,
                    "gpu": r.data.tags.get("host.gpu", "none")} for s, r in latest.items()), key=lambda r: r["start"])  # fmt: skip


def split(stage: dict[str, Any], windows: list[tuple[float, float, str]]) -> dict[str, Any]:
    """One stage's wall time split by the Ray Train runs that fall inside it."""
    mine = [(a, b, f) for a, b, f in windows if stage["start"] <= a and b <= stage["end"]]
    wall = stage["end"] - stage["start"]
    row: dict[str, Any] = {"stage": stage["stage"], "wall_s": wall}
    if not mine:
        return row | {"before_train_s": wall, "train_s": 0.0, "after_train_s": 0.0, "between_s": 0.0, "ray_runs": []}
    train = sum(b - a for a, b, _ in mine)
    before, after = mine[0][0] - stage["start"], stage["end"] - mine[-1][1]
    return row | {"before_train_s": before, "train_s": train, "after_train_s": after,
                  "between_s": wall - before - train - after, "ray_runs": [f for _, _, f in mine]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", help="the checkout the study ran in (its mlflow.db and checkpoints/)")
    ap.add_argument("--mlflow", default=None, help="tracking URI (default: sqlite:///<root>/mlflow.db)")
    ap.add_argument("--experiment", default="ssl-i2i")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    stages = stage_runs(args.mlflow or f"sqlite:///{root / 'mlflow.db'}", args.experiment)
    windows = ray_runs(root / "checkpoints")
    rows = [split(s, windows) for s in stages]
    span = stages[-1]["end"] - stages[0]["start"]
    totals = {k: sum(r[k] for r in rows) for k in ("wall_s", "before_train_s", "train_s", "after_train_s", "between_s")}
    device = "cuda" if any(s["gpu"] not in ("none", "") for s in stages) else "cpu"
    result = {"device": device, "machine": platform.processor() or platform.machine(), "stages": rows,
              "totals": totals | {"span_s": span, "outside_stages_s": span - totals["wall_s"]},
              "started": datetime.fromtimestamp(stages[0]["start"], UTC).isoformat(timespec="seconds")}  # fmt: skip
    out = Path(args.out) / f"study_time_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'stage':28s} {'wall':>7s} {'before':>7s} {'train':>7s} {'after':>7s}")
    for r in rows:
        print(
            f"{r['stage']:28s} {r['wall_s']:7.0f} {r['before_train_s']:7.0f} {r['train_s']:7.0f} {r['after_train_s']:7.0f}"
        )
    t = result["totals"]
    print(
        f"{'all stages':28s} {t['wall_s']:7.0f} {t['before_train_s']:7.0f} {t['train_s']:7.0f} {t['after_train_s']:7.0f}"
    )
    print(
        f"study span {span / 60:.1f} min, of which outside the stage runs {t['outside_stages_s'] / 60:.1f} min -> {out}"
    )


if __name__ == "__main__":
    main()
