"""The one home of Ray Tune: ASHA sweeps over the loss weights of one training stage.

Each trial is a Tune function that builds the stage's Ray Train job (through
:func:`pipeline.distributed.fit`) with the sampled weights; the Train workers' per-epoch reports
reach Tune through a forwarding callback, so ASHA stops weak trials on the stage's own
validation metric. The first trial always runs the current params (the baseline every other
trial is read against); the others are drawn by a seeded random search, and with
``max_concurrent: 1`` ASHA sees results in a fixed order, so a rerun picks the same best trial.

MLflow (through :mod:`pipeline.tracking`): the caller's stage run is the parent; each trial is a
child run with its params, its per-report metrics and the Ray nodes it ran on, ended FINISHED
(ran to the end), KILLED (stopped by ASHA or left open by an interrupted sweep) or FAILED.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from pipeline import distributed, translate
from pipeline.config import DistributedParams, Params, SweepDimension
from pipeline.errors import UserError
from pipeline.invariance import classify, munit
from pipeline.storage import join, sweep_storage
from pipeline.tracking import ChildRuns, StageRun


@dataclass(frozen=True)
class SweepStage:
    """How to sweep one stage: its params section, its Train loop and the metric ASHA reads."""

    section: str
    loop: Callable[[dict[str, Any]], None]
    metric: str
    mode: str  # "min" | "max"
    describe: str


STAGES: dict[str, SweepStage] = {
    "colorize": SweepStage("colorize", translate.train_loop, "val_l1", "min",
                           "pix2pix colorizer (cGAN); metric: validation ab L1 on held-out train patches"),
    "cyclegan": SweepStage("cyclegan", translate.train_loop, "val_l1", "min",
                           "CycleGAN colorizer; metric: validation ab L1 on held-out train patches"),
    "munit": SweepStage("munit", munit.train_loop, "style_diversity", "max",
                        "MUNIT on digits_lt; metric: style diversity (0 = the decoder ignores the style)"),
    "classify": SweepStage("classify", classify.train_loop, "val_balanced_acc", "max",
                           "GIT classifier, first seed; metric: balanced accuracy on the train images under "
                           "fresh nuisance draws"),
}  # fmt: skip

_TUNE_KEYS = {"training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid", "time_since_restore",
              "iterations_since_restore", "epoch", "seed", "step"}  # fmt: skip


@dataclass(frozen=True)
class Job:
    """Everything a trial needs: the base worker config and how to run it."""

    stage: str
    config: dict[str, Any]
    max_reports: int
    distributed: DistributedParams  # of the trial's Train workers
    gpus_per_worker: float
    storage: str


def search_space(params: Params, stage: str) -> dict[str, SweepDimension]:
    """The stage's dimensions from ``sweep.space``; a one-line error for an unknown stage or an empty space."""
    if stage not in STAGES:
        raise UserError(f"unknown sweep stage '{stage}' (allowed: {', '.join(STAGES)})")
    space = params.sweep.space.get(stage) or {}
    if not space:
        raise UserError(f"sweep.space.{stage} is empty: give at least one parameter to sweep in params.yaml")
    return space


def tune_space(space: dict[str, SweepDimension]) -> dict[str, Any]:
    out = {}
    for name, dim in space.items():
        if dim.uniform is not None:
            out[name] = tune.uniform(*dim.uniform)
        elif dim.loguniform is not None:
            out[name] = tune.loguniform(*dim.loguniform)
        else:
            out[name] = tune.choice(list(dim.choice or []))
    return out


def connect(params: Params) -> None:
    """Join ``RAY_ADDRESS`` (bounded wait) or start a local instance sized for ``max_concurrent`` trials."""
    sw = params.sweep
    per_trial = sw.trial_cpus + sw.workers_per_trial * sw.cpus_per_worker
    distributed.init_ray(num_cpus=max(2, math.ceil(sw.max_concurrent * per_trial)))


def build_job(params: Params, stage: str, data_root: str | Path, models_root: str | Path, storage: str | Path) -> Job:
    """The base worker config of ``stage`` at the current params (checked here, not in a worker)."""
    sw = params.sweep
    if stage in ("colorize", "cyclegan"):
        gan = "cgan" if stage == "colorize" else "cyclegan"
        translate.check_inputs(params, "colorize", data_root)
        backbone = translate.encoder_backbone(sw.encoder, Path(models_root) / f"backbone_{sw.encoder}.pt")
        config = translate.job_config(params, "colorize", sw.encoder, gan, data_root, backbone)
        reports = params.translate.epochs
    elif stage == "munit":
        config = munit.job_config(params, data_root)
        reports = params.munit.epochs
    else:
        config = classify.job_config(params, "git", data_root, Path(data_root).parent / "augmented")
        config["classify"]["seeds"] = config["classify"]["seeds"][:1]
        cp = params.classify
        reports = math.ceil(cp.epochs / cp.checkpoint_every)
    config["cpus_per_worker"] = sw.cpus_per_worker
    dist = params.distributed.model_copy(
        update={"num_workers": sw.workers_per_trial, "cpus_per_worker": sw.cpus_per_worker, "use_gpu": sw.gpus_per_worker > 0}
    )
    return Job(stage, config, reports, dist, sw.gpus_per_worker, distributed.checkpoint_storage(storage))


class ForwardReports(TuneReportCallback):
    """Ray Train callback (built inside a trial) that forwards rank 0's report to Tune, with the
    Ray nodes of the trial's driver and of all its workers in ``nodes``."""

    def __init__(self) -> None:
        super().__init__()
        self.trial_node = ray.get_runtime_context().get_node_id()

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        nodes = sorted({m.get("node_id", "") for m in metrics} | {self.trial_node})
        first = {k: v for k, v in metrics[0].items() if k != "node_id"} | {"nodes": ",".join(nodes)}
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


def _trial(sampled: dict[str, Any], job: Job) -> None:
    """One Tune trial: the stage's Train job with the sampled weights."""
    config = copy.deepcopy(job.config)
    config[STAGES[job.stage].section].update(sampled)
    name = f"{job.stage}-{tune.get_context().get_trial_id()}"
    distributed.fit(STAGES[job.stage].loop, config, job.distributed, name, job.storage, [ForwardReports()], job.gpus_per_worker)


class TrialRuns(tune.Callback):
    """Tune callback: one MLflow child run per trial, per-report metrics, final status."""

    def __init__(self, runs: ChildRuns, fixed: dict[str, Any], max_reports: int, metric: str) -> None:
        self.runs, self.fixed, self.max_reports, self.metric = runs, fixed, max_reports, metric
        self.records: dict[str, dict[str, Any]] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = len(self.records)
        self.records[trial.trial_id] = {"trial": index, "trial_id": trial.trial_id, "config": dict(trial.config),
                                        "history": [], "nodes": set(), "status": "RUNNING"}  # fmt: skip
        self.runs.start(trial.trial_id, f"trial_{index:02d}", {**self.fixed, "sweep": dict(trial.config)},
                        {"ray.trial_id": trial.trial_id, "sweep.baseline": str(index == 0)})  # fmt: skip

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        rec = self.records[trial.trial_id]
        step = int(result["training_iteration"])
        rec["history"].append((step, float(result[self.metric])))
        rec["nodes"] |= set(str(result.get("nodes", "")).split(",")) - {""}
        self.runs.log_metrics(trial.trial_id, {k: v for k, v in result.items() if k not in _TUNE_KEYS and not k.startswith("config")}, step)

    def _end(self, trial: Any, status: str) -> None:
        rec = self.records.get(trial.trial_id)
        if rec is None or rec["status"] != "RUNNING":
            return
        rec["status"] = status
        self.runs.set_tag(trial.trial_id, "ray.nodes", ",".join(sorted(rec["nodes"])))
        self.runs.end(trial.trial_id, status)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = len(self.records[trial.trial_id]["history"]) >= self.max_reports
        self._end(trial, "FINISHED" if done else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED")


def best_trial(records: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The trial that reached the most reports, best last metric among those; ties go to the earlier trial."""
    ran = [r for r in records if r["history"]]
    if not ran:
        raise RuntimeError("no trial reported a result")
    most = max(len(r["history"]) for r in ran)
    sign = 1 if mode == "min" else -1
    return min((r for r in ran if len(r["history"]) == most), key=lambda r: (sign * r["history"][-1][1], r["trial"]))


def exp_run_command(section: str, config: dict[str, Any]) -> str:
    """``dvc exp run -S section.key=value ...`` for a trial's config."""
    return "dvc exp run " + " ".join(f"-S '{section}.{k}={v:.6g}'" for k, v in sorted(config.items()))


def run(params: Params, stage: str, parent: StageRun, job: Job, storage: str | Path) -> dict[str, Any]:
    """Run the ASHA sweep of ``stage``; returns the summary written to ``metrics/sweep_<stage>.json``."""
    sw, spec = params.sweep, STAGES[stage]
    space = search_space(params, stage)
    section = getattr(params, spec.section)
    current = {k: getattr(section, k) for k in space}
    connect(params)
    runs = ChildRuns(parent)
    trial_runs = TrialRuns(runs, {"stage": stage, "encoder": sw.encoder, spec.section: section.model_dump()}, job.max_reports, spec.metric)
    name = f"sweep_{stage}_{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_root = sweep_storage(storage)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, job=job), {"cpu": sw.trial_cpus, "gpu": 0}),
        param_space=tune_space(space),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=sw.num_samples,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=job.max_reports,
                                    grace_period=min(sw.grace_period, job.max_reports), reduction_factor=sw.reduction_factor),
            search_alg=BasicVariantGenerator(points_to_evaluate=[current], max_concurrent=sw.max_concurrent, random_state=sw.seed),
        ),  # fmt: skip
        run_config=tune.RunConfig(name=name, storage_path=sweep_root, callbacks=[trial_runs], verbose=1),
    )
    t0 = time.perf_counter()
    try:
        tuner.fit()
    finally:
        runs.close()
    records = sorted(trial_runs.records.values(), key=lambda r: r["trial"])
    best = best_trial(records, spec.mode)
    baseline = records[0]
    trials = [{"trial": r["trial"], "config": r["config"], "status": r["status"], "reports": len(r["history"]),
               spec.metric: r["history"][-1][1] if r["history"] else None, "history": [v for _, v in r["history"]],
               "nodes": sorted(r["nodes"])} for r in records]  # fmt: skip
    return {
        "stage": stage,
        "describe": spec.describe,
        "metric": spec.metric,
        "mode": spec.mode,
        "best": {"trial": best["trial"], "config": best["config"], spec.metric: best["history"][-1][1]},
        "baseline": {"trial": 0, "config": baseline["config"], spec.metric: baseline["history"][-1][1] if baseline["history"] else None},
        "dvc_exp_run": exp_run_command(spec.section, best["config"]),
        "trials": trials,
        "num_samples": sw.num_samples,
        "seed": sw.seed,
        "max_reports": job.max_reports,
        "stopped_early": sum(t["status"] == "KILLED" for t in trials),
        "wall_s": time.perf_counter() - t0,
        "parent_run_id": parent.run_id,
        "tune_experiment": str(join(sweep_root, name)),
    }
