"""The one home of MLflow: every stage run is an MLflow run.

A run carries the stage's params, per-epoch metrics, the git commit, the DVC stage name
and artifacts (sample images, plots). The final metrics dict is also written to
``metrics/<stage>.json`` for ``dvc metrics show``: MLflow and DVC read the same numbers.

The store is ``mlflow.db`` at the project root, as an absolute sqlite URI, so that the runs of
an experiment DVC runs in a temporary workspace (``dvc exp run --temp`` or ``--queue``) land in
the same store; ``MLFLOW_TRACKING_URI`` overrides it. Runs made under ``dvc exp run`` carry the
experiment's name (tag ``dvc.exp_name``) and baseline commit (``dvc.baseline_rev``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import UserError, seconds_from_env, wait_until_reachable
from pipeline.io import write_json


def project_root() -> Path:
    """The project whose store this is: ``DVC_ROOT`` (set by DVC) or the working directory, and for
    a temporary DVC experiment workspace (``<repo>/.dvc/tmp/exps/...``) the repo that holds it."""
    root = Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else ``sqlite:////<project root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


MLFLOW_CONNECT_TIMEOUT_S = 10
EXPERIMENT_KIND = {
    "mlflow.experimentKind": "custom_model_development"
}  # the UI opens on the training runs, not the GenAI view


def check_reachable(uri: str, timeout_s: float | None = None) -> None:
    """Raise a one-line :class:`UserError` when the tracking server of an ``http(s)://`` ``uri`` does not
    answer its ``/health`` within ``timeout_s`` seconds (default ``PIPELINE_MLFLOW_CONNECT_TIMEOUT_S`` or 10).

    MLflow's own client retries a dead server for about four minutes before it fails with a long
    traceback; a stage checks once, before any work. File and database stores are left to MLflow."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    timeout_s = seconds_from_env(timeout_s, "PIPELINE_MLFLOW_CONNECT_TIMEOUT_S", MLFLOW_CONNECT_TIMEOUT_S)

    def connect(seconds: float) -> None:
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=seconds).close()
        except urllib.error.HTTPError:
            pass  # something answers: MLflow reports auth or API problems in its own words

    wait_until_reachable(connect, timeout_s, f"the MLflow tracking server at MLFLOW_TRACKING_URI={uri}")


def dvc_tags() -> dict[str, str]:
    """The DVC experiment a run belongs to, when DVC runs it as one."""
    names = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def host_tags() -> dict[str, str]:
    """The machine that runs the stage (its Ray workers too, unless they are on a cluster): CPU
    model, torch's CPU kernel level, torch version and GPU. Float rounding, and so a seeded run's
    exact figures, differ between CPUs whose kernel level or caches differ; these tags tell such
    runs apart in the MLflow UI."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        models = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    tags = {
        "host.cpu": cpu,
        "host.cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "host.torch": torch.__version__,
    }
    if torch.cuda.is_available():
        tags["host.gpu"] = torch.cuda.get_device_name(0)
    return tags


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def metrics_path(stage: str, root: str | Path = "metrics") -> Path:
    """``pretrain@simsiam`` -> ``metrics/pretrain_simsiam.json``."""
    return Path(root) / (stage.replace("@", "_").replace("-", "_") + ".json")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class StageRun:
    """An open MLflow run of one stage; create it with :func:`stage_run`."""

    def __init__(self, stage: str, run_id: str, log_models: bool = True, register: str | None = None) -> None:
        self.stage = stage
        self.run_id = run_id
        self.models_on = log_models
        self.register = register

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log every numeric value of ``metrics`` (nested keys are dotted)."""
        import mlflow

        values = _scalars(metrics)
        if values:
            mlflow.log_metrics(values, step=step)

    def log_history(self, history: list[Mapping[str, Any]], step_key: str = "epoch") -> None:
        """Log a list of per-epoch metric dicts, each at its own step."""
        for i, row in enumerate(history):
            self.log_metrics({k: v for k, v in row.items() if k != step_key}, step=int(row.get(step_key, i)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=folder)

    def log_dict(self, obj: Any, name: str) -> None:
        import mlflow

        mlflow.log_dict(obj, name)

    def log_models(
        self, path: str | Path, servables: Mapping[str, tuple[Any, tuple[Any, ...]]], metadata: Mapping[str, Any]
    ) -> dict[str, str]:
        """Log each {name: (torch module, example inputs)} of the model file ``path`` as an MLflow
        PyTorch model called ``name``; return {name: model URI}. With ``tracking.log_models: false``
        (:func:`stage_run`'s ``log_models``) only a tag says so, and nothing is returned.

        The models are ``torch.export`` programs (MLflow's 'pt2' format: no pickle) with the example
        as input example, a tensor signature whose batch, height and width are free, and the model
        file itself beside them (``extra_files``: what ``stages.predict`` loads, with
        ``weights_only``). The run's ``register`` also registers them in the Model Registry: as
        ``register``, or ``<register>-<name>`` when there is more than one.
        """
        import mlflow

        if not self.models_on:
            mlflow.set_tag(f"models.{Path(path).stem}", "not logged (tracking.log_models: false)")
            return {}
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        def spec(t: torch.Tensor, name: str) -> TensorSpec:
            free = {0} | ({2, 3} if t.dim() == 4 else set())
            return TensorSpec(np.dtype(np.float32), tuple(-1 if i in free else n for i, n in enumerate(t.shape)), name)

        uris = {}
        for name, (module, inputs) in servables.items():
            with torch.no_grad():
                output = module(*inputs)
            names = ["image", "style"][: len(inputs)]
            signature = ModelSignature(
                Schema([spec(t, n) for t, n in zip(inputs, names)]), Schema([spec(output, "output")])
            )
            registered = (
                None if self.register is None else self.register if len(servables) == 1 else f"{self.register}-{name}"
            )
            info = mlflow.pytorch.log_model(
                module, name=name, input_example=tuple(t.numpy() for t in inputs), signature=signature, serialization_format="pt2",
                extra_files=[str(path)], pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"], registered_model_name=registered,
                metadata={**metadata, "model_file": Path(path).name},
            )  # fmt: skip
            uris[name] = info.model_uri
        mlflow.set_tag(f"models.{Path(path).stem}", " ".join(f"{n}={u}" for n, u in uris.items()))
        return uris

    def finish(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        metrics_root: str | Path = "metrics",
        name: str | None = None,
    ) -> Path:
        """Log the final metrics (at ``step``, e.g. one past the last epoch) and write them to
        ``metrics/<stage>.json`` (or ``metrics/<name>.json``)."""
        self.log_metrics(metrics, step=step)
        path = Path(metrics_root) / f"{name}.json" if name else metrics_path(self.stage, metrics_root)
        write_json(path, dict(metrics))
        self.log_artifact(path)
        return path


def model_file_from_uri(uri: str, dest: str | Path) -> Path:
    """The model file logged beside an MLflow model (``runs:/<id>/<name>``, ``models:/<name>/<version>``,
    ``models:/m-<id>``), downloaded under ``dest``; one-line errors for an unknown URI or a foreign model."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except MlflowException as exc:
        raise UserError(f"MLflow model {uri} not found in {tracking_uri()}: {str(exc).splitlines()[0]}") from None
    files = sorted(local.glob("extra_files/*.pt"))
    if len(files) != 1:
        raise UserError(f"MLflow model {uri} carries no model file of this pipeline (it was not logged by a stage)")
    return files[0]


def stage_runs(experiment: str) -> list[dict[str, Any]]:
    """The latest finished run of every stage (by its ``dvc.stage`` tag; sweep trials and failed or
    killed runs left out) in ``experiment``, in start order: {stage, run_id, status, wall_s, commit,
    cpu_capability, params}. Empty when there is none."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    latest: dict[str, Any] = {}
    finished = "attributes.status = 'FINISHED'"
    for run in client.search_runs(
        [exp.experiment_id], finished, order_by=["attributes.start_time ASC"], max_results=5000
    ):
        stage = run.data.tags.get("dvc.stage")
        if stage and "mlflow.parentRunId" not in run.data.tags:
            latest[stage] = run
    out = []
    for stage, run in sorted(latest.items(), key=lambda kv: kv[1].info.start_time):
        end = run.info.end_time or run.info.start_time
        out.append({"stage": stage, "run_id": run.info.run_id, "status": run.info.status, "wall_s": (end - run.info.start_time) / 1000,
                    "commit": run.data.tags.get("git.commit", "unknown"),
                    "cpu_capability": run.data.tags.get("host.cpu_capability", "unknown"), "params": dict(run.data.params)})  # fmt: skip
    return out


def add_register_option(parser: argparse.ArgumentParser) -> None:
    """The ``--register NAME`` option of a stage that writes a model file (off by default)."""
    parser.add_argument("--register", metavar="NAME", default=None,
                        help="also register the stage's MLflow model(s) in the Model Registry under NAME")  # fmt: skip


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any], experiment: str = "ssl-i2i", log_models: bool = True,
              register: str | None = None) -> Iterator[StageRun]:  # fmt: skip
    """Open an MLflow run named after the DVC stage, log params and tags, end it FINISHED or FAILED.
    An unreachable tracking server stops the stage here (:func:`check_reachable`); the experiment is
    tagged as model development, so that MLflow's UI opens on its runs.

    ``log_models`` and ``register`` are what :meth:`StageRun.log_models` does with the stage's
    model file (``tracking.log_models`` and the ``--register`` option); a name to register with
    the models off stops the stage here, before any work."""
    import mlflow

    if register is not None and not log_models:
        raise UserError(f"--register {register} needs the MLflow models: set tracking.log_models: true")

    check_reachable(tracking_uri())
    if not os.environ.get(
        "MLFLOW_LOGGING_LEVEL"
    ):  # MLflow's INFO lines (a new store's tables...) would bury a stage's own
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    exp = mlflow.set_experiment(experiment)
    if any(exp.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):
        for k, v in EXPERIMENT_KIND.items():
            mlflow.set_experiment_tag(k, v)
    commit = git_commit()
    tags = {"dvc.stage": stage, "git.commit": commit, "mlflow.source.git.commit": commit, **dvc_tags(), **host_tags()}
    with mlflow.start_run(run_name=stage, tags=tags) as run:
        flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]))
        yield StageRun(stage, run.info.run_id, log_models, register)


class ChildRuns:
    """MLflow child runs under an open parent run (one per sweep trial), driven by run ids so
    they can be opened, fed and ended from callbacks; :meth:`close` ends any left open as KILLED."""

    def __init__(self, parent: StageRun) -> None:
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri())
        self.parent = parent
        self.experiment_id = self.client.get_run(parent.run_id).info.experiment_id
        self.open: dict[str, str] = {}  # key -> run id

    def start(self, key: str, name: str, params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> str:
        from mlflow.entities import Param

        all_tags = {"mlflow.parentRunId": self.parent.run_id, "dvc.stage": self.parent.stage, **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # one request per 100 params, as stage_run logs them
            self.client.log_batch(run.info.run_id, params=items[i : i + 100])
        self.open[key] = run.info.run_id
        return run.info.run_id

    def log_metrics(self, key: str, metrics: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        values = _scalars(metrics)
        if key in self.open and values:
            now = int(time.time() * 1000)
            self.client.log_batch(self.open[key], metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def set_tag(self, key: str, name: str, value: str) -> None:
        if key in self.open:
            self.client.set_tag(self.open[key], name, value)

    def end(self, key: str, status: str) -> None:
        """End one child run: FINISHED, KILLED (stopped early) or FAILED."""
        run_id = self.open.pop(key, None)
        if run_id is not None:
            self.client.set_terminated(run_id, status=status)

    def close(self) -> None:
        for key in list(self.open):
            self.end(key, "KILLED")
