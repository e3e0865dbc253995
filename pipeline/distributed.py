"""The one home of Ray Train (and of the process-group calls the training loops need).

Driver side: :func:`fit` runs a per-worker loop as a ``TorchTrainer`` and returns the state
dict of its final checkpoint; :func:`fit_seeds` runs the loop once per config (one per seed), one
after the other in one worker group, so that a stage of several seeds starts its workers once. It runs on a local Ray instance by default and on an existing
cluster when ``RAY_ADDRESS`` is set (:mod:`pipeline.ray_cluster`). Each run is named by a hash of
its config, of the library code and of its data (:func:`pipeline.fingerprint.run_name`), so running
the same config again resumes from (or returns) its last checkpoint, and a changed config, code or
data starts fresh.

Worker side: a loop is ``loop(job, session)``; its :class:`Session` (Ray Train's, or
:class:`PlainSession` in :func:`run_plain`) gives the :class:`Worker` and carries the resume state
and the reports. :func:`prepare_model` and :func:`autocast` are the device helpers; the
process-group collectives are :mod:`pipeline.collectives`.

:func:`run_plain` runs the same per-worker loop in this process, without Ray (one rank, no
checkpoint storage): the plain baseline the benchmarks compare Ray Train against.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import posixpath
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import storage
from pipeline.config import DistributedParams
from pipeline.errors import UserError
from pipeline.io import load_torch
from pipeline.ray_cluster import init_ray

STATE_FILE = "state.pt"


# ----------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class Worker:
    """Who this worker is (rank, world size, device) and the :class:`Session` it reports through."""

    rank: int
    world_size: int
    device: torch.device
    session: Session

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Session:
    """How a per-worker loop ``loop(config, session)`` meets its runner: who it is, the state it
    resumes from, and where its reports and checkpoints go. This one is a Ray Train worker's."""

    def worker(self, cpus_per_worker: float = 1.0) -> Worker:
        """Rank, world size and device of this Ray Train worker; sets torch's thread count."""
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        torch.set_num_threads(max(1, int(cpus_per_worker)))
        device = ray.train.torch.get_device() if check_cuda() else torch.device("cpu")
        return Worker(ctx.get_world_rank(), ctx.get_world_size(), device, self)

    def load_state(self) -> dict[str, Any] | None:
        """The state dict of the checkpoint this worker resumes from, or None on a fresh start."""
        return _checkpoint_state()

    def dataset(self, name: str) -> Any:
        """This worker's shard of the Ray Data dataset ``name`` that :func:`fit` was given (a DataIterator)."""
        import ray.train

        return ray.train.get_dataset_shard(name)

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, w: Worker) -> None:
        """Report an epoch's metrics from every worker; rank 0 also saves ``state`` as the checkpoint.

        The reported metrics also name the Ray node the worker runs on (``node_id``)."""
        import ray
        import ray.train

        metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        if state is not None and w.is_main:
            with tempfile.TemporaryDirectory() as d:
                torch.save(state, Path(d) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics, checkpoint=None)


class PlainSession(Session):
    """The session of :func:`run_plain`: rank 0 of 1 in this process, resuming from ``resume``.
    ``states`` holds a copy of the last checkpointed state (the run's result), or of every one
    with ``keep_all`` (to resume from any of them, as a checkpoint on disk would)."""

    def __init__(
        self, resume: dict[str, Any] | None = None, keep_all: bool = False, datasets: dict[str, Any] | None = None
    ) -> None:
        self.resume, self.keep_all, self.datasets = resume, keep_all, datasets or {}
        self.states: list[dict[str, Any]] = []

    def worker(self, cpus_per_worker: float = 1.0) -> Worker:
        return Worker(0, 1, default_device(), self)

    def load_state(self) -> dict[str, Any] | None:
        return self.resume

    def dataset(self, name: str) -> Any:
        """The whole Ray Data dataset ``name`` (the only rank reads all of it)."""
        return self.datasets[name]

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, w: Worker) -> None:
        if state is not None:
            self.states = [*self.states, copy.deepcopy(state)] if self.keep_all else [copy.deepcopy(state)]


class SequenceSession(Session):
    """A Ray Train worker's session while :func:`fit_seeds` runs one of its configs: the finished
    configs' final states ride along in every checkpoint, and ``last`` is the state this config last
    reported (its resume state until it reports). Its reports carry ``sequence_index``, the
    config's place in the sequence."""

    def __init__(self, finished: list[dict[str, Any] | None], resume: dict[str, Any] | None) -> None:
        self.finished, self.resume, self.last = finished, resume, resume
        self.index = len(finished)

    def load_state(self) -> dict[str, Any] | None:
        return self.resume

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, w: Worker) -> None:
        if state is not None:
            self.last = state
            state = {SEQUENCE_KEY: {"finished": self.finished, "current": state}}
        super().report({**metrics, "sequence_index": self.index}, state, w)


SEQUENCE_KEY = "sequence"
Loop = Callable[[Any, Session], None]


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def run_plain(
    loop: Loop, config: Any, threads: int | None = None, session: PlainSession | None = None
) -> dict[str, Any]:
    """Run ``loop(config, session)`` in this process as the only rank, without Ray; return its last
    checkpoint state. ``session`` (default: a fresh :class:`PlainSession`) may resume from a state."""
    if threads is not None:
        torch.set_num_threads(threads)
    session = session or PlainSession()
    loop(config, session)
    if not session.states:
        raise RuntimeError("the loop finished without a checkpoint")
    return session.states[-1]


CPU_ON_GPU_NODES = "PIPELINE_CPU_ON_GPU_NODES"


def cpu_on_gpu_nodes() -> bool:
    """``PIPELINE_CPU_ON_GPU_NODES=1``: Ray still schedules workers by the GPUs they ask for, but they
    train on the CPU (gloo). For checking GPU scheduling on nodes that advertise GPUs they lack
    (``ray start --num-gpus N``); a real run leaves it unset."""
    return os.environ.get(CPU_ON_GPU_NODES) == "1"


def nvidia_driver() -> str | None:
    """The loaded NVIDIA kernel driver's version (``/proc/driver/nvidia/version``), or None."""
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return next((w for w in first.split() if w[:1].isdigit() and "." in w), first.strip())


def check_cuda() -> list[Any]:
    """The GPUs Ray gave this worker (none under :func:`cpu_on_gpu_nodes`); a one-line :class:`UserError`
    when it has some and CUDA cannot use them (no driver, or one older than torch's CUDA needs)."""
    import ray

    gpus = [] if cpu_on_gpu_nodes() else ray.get_gpu_ids()
    if gpus and not torch.cuda.is_available():
        raise UserError(cuda_unusable(gpus))
    return gpus


def cuda_unusable(gpus: list[Any]) -> str:
    """Why a worker that Ray gave ``gpus`` cannot train on them, in one line."""
    driver = nvidia_driver()
    return (
        f"distributed.use_gpu: this worker holds GPU {','.join(map(str, gpus))} but CUDA is not usable: "
        f"NVIDIA driver {driver or 'not loaded'}, torch {torch.__version__} built for CUDA {torch.version.cuda} "
        "(CUDA 13 wheels need a driver >= 580; build the image with TORCH_INDEX for CUDA 12, or set use_gpu: false)"
    )


def prepare_model(model: torch.nn.Module, w: Worker) -> torch.nn.Module:
    """Move to the device; on GPU use channels_last and SyncBatchNorm; wrap in DDP when world_size > 1.

    SyncBatchNorm needs CUDA, so on CPU (gloo) each worker keeps its own BatchNorm statistics.
    """
    import ray.train.torch

    if w.device.type == "cuda":
        if w.world_size > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(memory_format=torch.channels_last)
    if w.world_size > 1:
        return ray.train.torch.prepare_model(model)
    return model.to(w.device)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def autocast(w: Worker, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU when ``enabled``; a no-op on CPU (fp32 keeps CPU runs deterministic)."""
    if enabled and w.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _checkpoint_state() -> dict[str, Any] | None:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    return None if ckpt is None else read_state(ckpt)


def read_state(ckpt: Any) -> dict[str, Any]:
    """The state dict of a Ray Train checkpoint, read straight from its storage (local or S3).

    Not through ``Checkpoint.as_directory``: for remote storage that downloads into one folder per
    checkpoint that all processes of a machine share, and a second worker can download into it
    again while the first is reading (torch.load then fails with "file read failed")."""
    with ckpt.filesystem.open_input_stream(posixpath.join(ckpt.path, STATE_FILE)) as f:
        return load_torch(io.BytesIO(f.read()))


def _in_session(loop: Loop, train_loop_config: dict[str, Any]) -> None:
    """Per-worker: ``loop`` on the job :func:`fit` was given, in a Ray Train worker's :class:`Session`."""
    loop(train_loop_config["job"], Session())


def _run_sequence(loop: Loop, configs: list[Any], session: Session) -> None:
    """Per-worker: ``loop`` on each of ``configs`` in turn, skipping those the checkpoint resumed
    from has finished and resuming the one it was in (each in its own :class:`SequenceSession`)."""
    saved = _checkpoint_state()
    progress = saved[SEQUENCE_KEY] if saved is not None else {"finished": [], "current": None}
    finished, resume = list(progress["finished"]), progress["current"]
    for one in configs[len(finished) :]:
        session = SequenceSession(list(finished), resume)
        loop(one, session)
        finished.append(session.last)
        resume = None


# ----------------------------------------------------------------------------- driver side

_loopback_store: Any = None  # rank 0's rendezvous store, while its worker group lives


def _serve_loopback_store(world_size: int, timeout_s: float) -> int:
    """Rank 0: host the process group's rendezvous store on 127.0.0.1; return its port.

    torch's own ``env://`` rendezvous starts the store on every interface (``::``); here rank 0
    binds the listening socket to loopback itself and hands it to the store."""
    global _loopback_store
    from datetime import timedelta

    from torch.distributed import TCPStore

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(world_size * 2)
    port = sock.getsockname()[1]
    _loopback_store = (sock, TCPStore("127.0.0.1", port, world_size, True, timedelta(seconds=timeout_s), wait_for_workers=False,
                                      master_listen_fd=sock.fileno(), multi_tenant=True))  # fmt: skip
    return port


def _join_loopback_store(port: int) -> None:
    """Every rank: rendezvous through rank 0's loopback store (as a client), gloo on ``lo``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True", GLOO_SOCKET_IFNAME="lo"
    )


def _close_loopback_store() -> None:
    global _loopback_store
    if _loopback_store is not None:
        _loopback_store[0].close()
    _loopback_store = None


def _torch_config(backend: str) -> Any:
    """Ray Train's ``TorchConfig`` whose process group, when every worker runs on a local instance
    (node address 127.0.0.1, see :func:`init_ray`), rendezvous on loopback; on a cluster, Ray's own."""
    import ray
    from ray.train.torch import TorchConfig
    from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

    class LoopbackBackend(_TorchBackend):
        def on_start(self, worker_group: Any, backend_config: Any) -> None:
            worker_group.execute(check_cuda)  # before NCCL, whose own error says less
            if worker_group.execute_single(0, ray.util.get_node_ip_address) != "127.0.0.1":
                return super().on_start(worker_group, backend_config)
            n, timeout_s = len(worker_group), backend_config.timeout_s
            port = worker_group.execute_single(0, _serve_loopback_store, n, timeout_s)
            worker_group.execute(_join_loopback_store, port=port)
            worker_group.execute(_set_torch_distributed_env_vars)
            ray.get([worker_group.execute_single_async(i, _setup_torch_process_group, backend=backend_config.backend, world_rank=i, world_size=n,
                                                       init_method="env://", timeout_s=timeout_s) for i in range(n)])  # fmt: skip

        def on_shutdown(self, worker_group: Any, backend_config: Any) -> None:
            super().on_shutdown(worker_group, backend_config)
            worker_group.execute(_close_loopback_store)

    class LoopbackTorchConfig(TorchConfig):
        @property
        def backend_cls(self) -> type:
            return LoopbackBackend

    return LoopbackTorchConfig(backend=backend)


def checkpoint_storage(default: str | Path) -> str:
    """Where run checkpoints live: see :func:`pipeline.storage.run_storage` (``default`` is the local folder)."""
    return storage.run_storage(default)


def fit(
    loop: Loop,
    config: Any,
    params: DistributedParams,
    name: str,
    storage: str | Path,
    callbacks: list[Any] | None = None,
    gpus_per_worker: float = 1.0,
    datasets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``loop(config, session)`` on ``params.num_workers`` Ray Train workers; return the final state dict.

    Checkpoints every epoch (the loop calls :func:`report`), keeps the last
    ``keep_checkpoints``, and restarts dead workers from the last checkpoint up to
    ``max_failures`` times. ``callbacks`` are Ray Train user callbacks (a Tune trial passes the
    one that forwards reports to Tune); ``gpus_per_worker`` may be a fraction when ``use_gpu``.
    ``datasets`` are Ray Data datasets, split across the workers (``session.dataset(name)``).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if params.use_gpu and params.num_workers == 0:
        raise UserError("distributed.use_gpu needs distributed.num_workers >= 1")
    init_ray(
        num_cpus=max(os.cpu_count() or 1, int(params.num_workers * params.cpus_per_worker) + 1)
    )  # no-op inside a Tune trial
    trainer = TorchTrainer(
        functools.partial(_in_session, loop),
        train_loop_config={"job": config},
        torch_config=_torch_config("nccl" if params.use_gpu and not cpu_on_gpu_nodes() else "gloo"),
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=params.num_workers,
            use_gpu=params.use_gpu,
            resources_per_worker={
                "CPU": params.cpus_per_worker,
                **({"GPU": gpus_per_worker} if params.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=name,
            storage_path=checkpoint_storage(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=params.keep_checkpoints),
            failure_config=FailureConfig(max_failures=params.max_failures),
            callbacks=callbacks,
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train raises the run's error; a UserError inside it is said in one line
        user = _user_error(exc)
        if user is None:
            raise
        raise user from None
    if result.error is not None:
        raise _user_error(result.error) or result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} finished without a checkpoint")
    return read_state(result.checkpoint)


def _user_error(error: BaseException) -> UserError | None:
    """The :class:`UserError` a worker or the backend's set-up raised inside Ray Train's ``error``, if any."""
    causes = [*(getattr(error, "worker_failures", None) or {}).values(), getattr(error, "controller_failure", None)]
    for cause in causes:
        while cause is not None:
            original = getattr(cause, "cause", None)  # a RayTaskError(UserError) carries the worker's own exception
            if isinstance(original, UserError):
                return original
            if isinstance(cause, UserError):
                return cause
            cause = cause.__cause__
    return None


def fit_seeds(loop: Loop, configs: list[Any], params: DistributedParams, name: str,
              storage: str | Path, datasets: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Run ``loop`` on each of ``configs`` one after the other in one Ray Train worker group (as
    :func:`fit` does for one); return their final state dicts in order.

    A config trains exactly as it would in a run of its own (each loop seeds its own random
    state), without starting the workers again. Every checkpoint holds the finished configs'
    final states, so a restart resumes inside the config it was in.
    """
    final = fit(functools.partial(_run_sequence, loop), configs, params, name, storage, datasets=datasets)[SEQUENCE_KEY]
    states = [*final["finished"], final["current"]]
    if len(states) != len(configs):
        raise RuntimeError(f"training run {name} finished {len(states)} of {len(configs)} configs")
    return states
