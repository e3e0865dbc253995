"""``python -m stages.sweep --stage <name>``: an ASHA sweep (Ray Tune) over the loss weights of one
stage, one MLflow parent run with a child run per trial; writes ``metrics/sweep_<stage>.json`` and
``plots/sweep_<stage>.png`` and prints the best config as a ready ``dvc exp run -S ...`` command.

Runs on a private local Ray instance, or on the cluster at ``RAY_ADDRESS`` (also set for you by
``ray job submit``). On a cluster, ``--data`` and ``--models`` must be on storage every node sees.
``-S section.key=value`` sets any param for this sweep (workers per trial, GPUs per worker,
concurrency, samples, the search space), checked like params.yaml. On a GPU cluster:

    python -m stages.sweep --stage colorize -S sweep.gpus_per_worker=1 -S sweep.max_concurrent=4

Interrupted (Ctrl-C), it saves the sweep's state and says so; ``--resume`` carries on the latest
sweep of the stage: finished trials are kept and unfinished ones resume from their checkpoints.
"""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.errors import UserError, run_cli
from pipeline.plots import line_plot
from pipeline.sweep import STAGES, build_job, connect, latest_sweep, run, search_space
from pipeline.tracking import stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, help=f"one of: {', '.join(STAGES)}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--models", default="models", help="folder of backbone_<encoder>.pt (colorize / cyclegan)")
    ap.add_argument("--storage", default="checkpoints/sweeps", help="Tune results and trial checkpoints")
    ap.add_argument("--samples", type=int, default=None, help="override sweep.num_samples")
    ap.add_argument(
        "-S",
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a param as `dvc exp run -S` does, e.g. -S sweep.gpus_per_worker=1 -S sweep.workers_per_trial=1"
        " -S sweep.max_concurrent=4 (repeatable; validated with the params)",
    )
    ap.add_argument("--metrics", default="metrics", help="folder of sweep_<stage>.json")
    ap.add_argument("--plots", default="plots", help="folder of sweep_<stage>.png")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="carry on the latest sweep of this stage under --storage after an interruption",
    )
    args = ap.parse_args()
    params = load_params(args.params, args.assignments)
    space = search_space(params, args.stage)  # unknown stage / empty space: one line, before Ray starts
    if args.samples is not None:
        if args.samples < 1:
            raise UserError(f"--samples must be >= 1, got {args.samples}")
        params = params.model_copy(update={"sweep": params.sweep.model_copy(update={"num_samples": args.samples})})
    job = build_job(params, args.stage, args.data, args.models, args.storage)
    resume = (
        latest_sweep(args.storage, args.stage) if args.resume else None
    )  # nothing to resume: one line, before Ray starts
    connect(params)  # an unreachable RAY_ADDRESS fails here, after a bounded wait, before any MLflow run
    name = f"sweep_{args.stage}"
    logged = {
        "sweep": params.sweep.model_dump(exclude={"space"}),
        "space": {k: v.model_dump(exclude_none=True) for k, v in space.items()},
    }

    with stage_run(name, logged, params.tracking.experiment) as parent:
        summary = run(params, args.stage, parent, job, args.storage, resume=resume)
        metric = summary["metric"]
        series = {f"trial {t['trial']}" + (" (params.yaml)" if t["trial"] == 0 else ""): (t["history_reports"], t["history"])
                  for t in summary["trials"] if t["history"]}  # fmt: skip
        png = line_plot(
            series,
            f"{args.plots}/{name}.png",
            "report (epoch)",
            metric,
            f"{name}: ASHA, {summary['stopped_early']} stopped early",
        )
        parent.log_artifact(png, "plots")
        best, base = summary["best"], summary["baseline"]
        parent.finish(summary, name=name, metrics_root=args.metrics)
        parent.log_metrics({f"best_{metric}": best[metric], f"baseline_{metric}": base[metric] or float("nan")})
    print(
        f"{name}: {len(summary['trials'])} trials, {summary['stopped_early']} stopped early by ASHA, {summary['wall_s']:.0f} s"
    )
    print(f"  params.yaml (trial 0): {metric} {base[metric]}")
    print(f"  best (trial {best['trial']}): {metric} {best[metric]:.4f}  {best['config']}")
    print(f"  reproduce it in the pipeline:\n    {summary['dvc_exp_run']}")


if __name__ == "__main__":
    run_cli(main)
