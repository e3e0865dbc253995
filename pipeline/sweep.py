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

An interrupted sweep (Ctrl-C) leaves its state under the sweep storage; ``run(..., resume=True)``
restores the latest one (``Tuner.restore``): finished trials are kept, and an unfinished trial's
Ray Train run resumes from its own checkpoint. ASHA's clock is the loop's ``report`` count, which
a resumed run carries on (Tune's ``training_iteration`` would start again at 1). A report the
running trial makes while Tune shuts down is checkpointed but never reaches Tune, so ASHA may
then judge later trials against other rung values than an uninterrupted sweep would.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from pipeline import distributed, ray_cluster, translate
from pipeline.config import DistributedParams, Params, SweepDimension, SweepParams, describe_validation_error
from pipeline.errors import UserError
from pipeline.invariance import classify, munit
from pipeline.storage import filesystem, join, sweep_storage
from pipeline.tracking import ChildRuns, StageRun


@dataclass(frozen=True)
class SweepStage:
    """How to sweep one stage: its params section, its Train loop and the metric ASHA reads."""

    section: str
    loop: distributed.Loop
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
              "iterations_since_restore", "epoch", "seed", "step", "report"}  # fmt: skip


@dataclass(frozen=True)
class Job:
    """Everything a trial needs: the stage's job at the current params and how to run it."""

    stage: str
    config: Any  # the stage's job (translate.TranslateJob, munit.MunitJob, classify.ClassifyJob)
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
    ray_cluster.init_ray(num_cpus=max(2, math.ceil(sw.max_concurrent * per_trial)))


def capacity_warning(sw: SweepParams, cluster: dict[str, float]) -> str | None:
    """A one-line warning when ``sw.max_concurrent`` trials need more CPUs or GPUs than ``cluster``
    (``ray.cluster_resources()``) has, else None. Tune reserves only a trial's driver
    (``trial_cpus``); its Ray Train workers are asked for after it starts. On a cluster that does
    not grow, trials that started therefore hold their drivers and wait forever for workers."""
    per_trial = {
        "CPU": sw.trial_cpus + sw.workers_per_trial * sw.cpus_per_worker,
        "GPU": sw.workers_per_trial * sw.gpus_per_worker,
    }
    for resource, need in per_trial.items():
        have = cluster.get(resource, 0.0)
        if need > 0 and sw.max_concurrent * need > have + 1e-9:
            fit = int((have + 1e-9) // need)
            advice = (
                f"set sweep.max_concurrent: {fit}" if fit else "give each trial fewer workers (sweep.workers_per_trial)"
            )
            return (f"warning: {sw.max_concurrent} concurrent trial(s) need {sw.max_concurrent * need:g} {resource} "
                    f"({need:g} each: the driver and {sw.workers_per_trial} workers) and the Ray cluster has {have:g} now; "
                    f"unless it autoscales, {advice} or the trials wait forever for their workers")  # fmt: skip
    return None


def build_job(params: Params, stage: str, data_root: str | Path, models_root: str | Path, storage: str | Path) -> Job:
    """The base worker config of ``stage`` at the current params (checked here, not in a worker)."""
    sw = params.sweep
    if stage in ("colorize", "cyclegan"):
        gan = "cgan" if stage == "colorize" else "cyclegan"
        translate.check_inputs(params, "colorize", data_root)
        backbone = translate.encoder_backbone(sw.encoder, Path(models_root) / f"backbone_{sw.encoder}.pt")
        job = translate.job_config(params, "colorize", sw.encoder, gan, data_root, backbone)
        reports = params.translate.epochs
    elif stage == "munit":
        job = munit.job_config(params, data_root)
        reports = params.munit.epochs
    else:
        cp = params.classify
        job = classify.job_config(params, "git", data_root, Path(data_root).parent / "augmented")
        job = dataclasses.replace(job, classify=cp.model_copy(update={"seeds": cp.seeds[:1]}))
        reports = math.ceil(cp.epochs / cp.checkpoint_every)
    job = dataclasses.replace(job, cpus_per_worker=sw.cpus_per_worker)
    dist = params.distributed.model_copy(
        update={
            "num_workers": sw.workers_per_trial,
            "cpus_per_worker": sw.cpus_per_worker,
            "use_gpu": sw.gpus_per_worker > 0,
        }
    )
    return Job(stage, job, reports, dist, sw.gpus_per_worker, distributed.checkpoint_storage(storage))


class ForwardReports(TuneReportCallback):
    """Ray Train callback (built inside a trial) that forwards rank 0's report to Tune, with the
    Ray nodes of the trial's driver and of all its workers in ``nodes``."""

    def __init__(self) -> None:
        super().__init__()
        self.trial_node = ray.get_runtime_context().get_node_id()

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        workers = sorted({m.get("node_id", "") for m in metrics})
        nodes = sorted({*workers, self.trial_node})
        first = {k: v for k, v in metrics[0].items() if k != "node_id"} | {
            "nodes": ",".join(nodes),
            "worker_nodes": ",".join(workers),
        }
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


def _trial(sampled: dict[str, Any], job: Job) -> None:
    """One Tune trial: the stage's Train job with the sampled weights (validated as the params are)."""
    config = with_values(job.config, STAGES[job.stage].section, sampled)
    name = f"{job.stage}-{tune.get_context().get_trial_id()}"
    distributed.fit(
        STAGES[job.stage].loop, config, job.distributed, name, job.storage, [ForwardReports()], job.gpus_per_worker
    )


def with_values(job: Any, section: str, values: dict[str, Any]) -> Any:
    """``job`` with ``values`` set in its params ``section``, checked by the section's model: a value
    out of its bounds is a one-line :class:`UserError` naming it."""
    current = getattr(job, section)
    try:
        updated = type(current).model_validate({**current.model_dump(), **values})
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, type(current), f"sweep trial {section}")) from None
    return dataclasses.replace(job, **{section: updated})


_TRIAL_ID = re.compile(r"[0-9a-f]{5}_\d{5}")


def trial_index(trial_id: str) -> int:
    """A trial's place in the sweep: Tune numbers trial ids ``<experiment>_<00000 + index>``."""
    return int(trial_id.rsplit("_", 1)[-1])


@dataclass
class LiveSweep:
    """The MLflow side of the sweep running in this process: child runs, and the Ray nodes seen per trial."""

    runs: ChildRuns
    resumed: bool
    nodes: dict[str, set[str]]


_LIVE: LiveSweep | None = None  # set by run() while its Tuner fits


class TrialRuns(tune.Callback):
    """Tune callback: one MLflow child run per trial (``trial_NN``) with its params, its per-report
    metrics, the Ray nodes it ran on and its end status: FINISHED (ran to the end), KILLED (stopped
    by ASHA, or left open by an interrupted sweep) or FAILED.

    It keeps no MLflow state itself: Tune pickles its callbacks with the experiment and
    ``Tuner.restore`` brings back that copy, whose parent run is gone; events go to :data:`_LIVE`."""

    def __init__(self, fixed: dict[str, Any], max_reports: int) -> None:
        self.fixed, self.max_reports = fixed, max_reports

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = trial_index(trial.trial_id)
        tags = {"ray.trial_id": trial.trial_id, "sweep.baseline": str(index == 0), "sweep.resumed": str(_LIVE.resumed)}
        _LIVE.runs.start(trial.trial_id, f"trial_{index:02d}", {**self.fixed, "sweep": dict(trial.config)}, tags)
        _LIVE.nodes[trial.trial_id] = set()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        _LIVE.nodes.setdefault(trial.trial_id, set()).update(set(str(result.get("nodes", "")).split(",")) - {""})
        metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS and not k.startswith("config")}
        _LIVE.runs.log_metrics(trial.trial_id, metrics, int(result["report"]))

    def _end(self, trial: Any, status: str) -> None:
        _LIVE.runs.set_tag(trial.trial_id, "ray.nodes", ",".join(sorted(_LIVE.nodes.get(trial.trial_id, ()))))
        _LIVE.runs.end(trial.trial_id, status)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reports = (trial.last_result or {}).get("report", 0)
        self._end(trial, "FINISHED" if reports >= self.max_reports else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED")


class ReleaseOrphanedGroups(tune.Callback):
    """Tune callback: every ``every_s`` seconds of the sweep's loop, remove the placement groups that
    stopped trials' Ray Train runs left behind (:func:`ray_cluster.release_orphaned_placement_groups`),
    which would otherwise keep later trials' workers waiting forever."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s, self._last = every_s, -math.inf

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and now >= self._last:  # a restored copy carries another process's clock
            return
        self._last = now
        if released := ray_cluster.release_orphaned_placement_groups():
            print(
                f"sweep: released {released} placement group(s) a stopped trial's Ray Train run left behind", flush=True
            )


def trial_records(grid: Any, metric: str, max_reports: int) -> list[dict[str, Any]]:
    """Per trial, in sweep order, from Tune's results (so a resumed sweep counts the trials that
    finished before it): config, ``metric`` history as (report, value), Ray nodes and end status.

    A report in flight when a sweep was interrupted may be missing from the history: its
    checkpoint was saved, so the resumed run goes on after it."""
    records = []
    for result in grid:
        trial_id = _TRIAL_ID.search(posixpath.basename(result.path)).group(
            0
        )  # the trial's folder: <trainable>_<trial id>_...
        df = result.metrics_dataframe
        rows = [] if df is None or metric not in df else df.dropna(subset=[metric]).to_dict("records")
        rows = list(
            {int(r["report"]): r for r in rows}.values()
        )  # a report redone after a restart counts once, as last seen
        history = sorted((int(r["report"]), float(r[metric])) for r in rows)
        nodes, worker_nodes = (_listed(rows, key) for key in ("nodes", "worker_nodes"))
        status = (
            "FAILED"
            if result.error is not None
            else "FINISHED"
            if history and history[-1][0] >= max_reports
            else "KILLED"
        )
        records.append({"trial": trial_index(trial_id), "trial_id": trial_id, "config": dict(result.config),
                        "history": history, "nodes": nodes, "worker_nodes": worker_nodes, "status": status})  # fmt: skip
    return sorted(records, key=lambda r: r["trial"])


def _listed(rows: list[dict[str, Any]], key: str) -> set[str]:
    """The union of the comma-separated ``key`` of every row (the Ray nodes a trial reported)."""
    return set().union(*(set(str(r.get(key, "")).split(",")) for r in rows)) - {"", "nan"}


def latest_sweep(storage: str | Path, stage: str) -> str:
    """The newest sweep of ``stage`` under ``storage`` (or the storage URI) that Tune can restore."""
    import pyarrow.fs as pafs

    root = sweep_storage(storage)
    fs, path = filesystem(root)
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                   if i.type == pafs.FileType.Directory and i.base_name.startswith(f"sweep_{stage}_"))  # fmt: skip
    for name in reversed(names):
        if tune.Tuner.can_restore(str(join(root, name))):
            return str(join(root, name))
    raise UserError(f"no sweep of {stage} to resume under {root}")


def best_trial(records: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The trial that reached the most reports, best last metric among those; ties go to the earlier trial."""
    ran = [r for r in records if r["history"]]
    if not ran:
        raise RuntimeError("no trial reported a result")
    most = max(r["history"][-1][0] for r in ran)
    sign = 1 if mode == "min" else -1
    return min((r for r in ran if r["history"][-1][0] == most), key=lambda r: (sign * r["history"][-1][1], r["trial"]))


def exp_run_command(section: str, config: dict[str, Any]) -> str:
    """``dvc exp run -S section.key=value ...`` for a trial's config."""
    return "dvc exp run " + " ".join(f"-S '{section}.{k}={v:.6g}'" for k, v in sorted(config.items()))


def run(
    params: Params, stage: str, parent: StageRun, job: Job, storage: str | Path, resume: str | None = None
) -> dict[str, Any]:
    """Run the ASHA sweep of ``stage`` (or carry on the one at ``resume``, a Tune experiment path
    from :func:`latest_sweep`, from where it stopped: finished trials are kept, unfinished ones
    resume from their checkpoints); returns the summary written to ``metrics/sweep_<stage>.json``."""
    global _LIVE
    sw, spec = params.sweep, STAGES[stage]
    space = search_space(params, stage)
    section = getattr(params, spec.section)
    current = {k: getattr(section, k) for k in space}
    trainable = tune.with_resources(tune.with_parameters(_trial, job=job), {"cpu": sw.trial_cpus, "gpu": 0})
    connect(params)
    if warning := capacity_warning(sw, ray.cluster_resources()):
        print(warning, file=sys.stderr, flush=True)
    if resume:
        path = resume
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        sweep_root, name = sweep_storage(storage), f"sweep_{stage}_{time.strftime('%Y%m%d-%H%M%S')}"
        path = str(join(sweep_root, name))
        fixed = {"stage": stage, "encoder": sw.encoder, spec.section: section.model_dump()}
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(space),
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                num_samples=sw.num_samples,
                scheduler=ASHAScheduler(
                    time_attr="report",
                    max_t=job.max_reports,
                    grace_period=min(sw.grace_period, job.max_reports),
                    reduction_factor=sw.reduction_factor,
                ),
                search_alg=BasicVariantGenerator(
                    points_to_evaluate=[current], max_concurrent=sw.max_concurrent, random_state=sw.seed
                ),
            ),  # fmt: skip
            run_config=tune.RunConfig(
                name=name,
                storage_path=sweep_root,
                callbacks=[TrialRuns(fixed, job.max_reports), ReleaseOrphanedGroups()],
                verbose=1,
            ),
        )
    parent.set_tags({"sweep.tune_experiment": path, "sweep.resumed": str(bool(resume))})
    _LIVE = LiveSweep(ChildRuns(parent), bool(resume), {})
    t0 = time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        _LIVE.runs.close()
        _LIVE = None
    # an interruption stops the running trials as if they had ended, in memory; the state Tune saved
    # just before that still says which had not (and trials never started are simply missing)
    saved = tune.ExperimentAnalysis(path).trials
    unfinished = sw.num_samples - sum(t.status in ("TERMINATED", "ERROR") for t in saved)
    if unfinished:
        raise UserError(
            f"sweep interrupted with {unfinished} trial(s) unfinished; carry on with: python -m stages.sweep --stage {stage} --resume"
        )
    records = trial_records(grid, spec.metric, job.max_reports)
    best = best_trial(records, spec.mode)
    baseline = records[0]
    trials = [{"trial": r["trial"], "config": r["config"], "status": r["status"], "reports": r["history"][-1][0] if r["history"] else 0,
               spec.metric: r["history"][-1][1] if r["history"] else None, "history": [v for _, v in r["history"]],
               "history_reports": [k for k, _ in r["history"]], "nodes": sorted(r["nodes"]),
               "worker_nodes": sorted(r["worker_nodes"])} for r in records]  # fmt: skip
    return {
        "stage": stage,
        "describe": spec.describe,
        "metric": spec.metric,
        "mode": spec.mode,
        "best": {"trial": best["trial"], "config": best["config"], spec.metric: best["history"][-1][1]},
        "baseline": {
            "trial": 0,
            "config": baseline["config"],
            spec.metric: baseline["history"][-1][1] if baseline["history"] else None,
        },
        "dvc_exp_run": exp_run_command(spec.section, best["config"]),
        "trials": trials,
        "num_samples": sw.num_samples,
        "seed": sw.seed,
        "max_reports": job.max_reports,
        "stopped_early": sum(t["status"] == "KILLED" for t in trials),
        "resumed": bool(resume),
        "wall_s": time.perf_counter() - t0,
        "parent_run_id": parent.run_id,
        "tune_experiment": path,
    }
