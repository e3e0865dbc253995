"""The one home of Ray Train (and of the process-group calls the training loops need).

Driver side: :func:`fit` runs a per-worker loop as a ``TorchTrainer`` and returns the state
dict of its final checkpoint; :func:`fit_seeds` runs the loop once per config (one per seed), one
after the other in one worker group, so that a stage of several seeds starts its workers once. It runs on a local Ray instance by default and on an existing
cluster when ``RAY_ADDRESS`` is set. Each run is named by a hash of its config and of the
library code, so running the same config again resumes from (or returns) its last
checkpoint, and a changed config or code starts fresh.

Worker side: :func:`worker`, :func:`prepare_model`, :func:`load_state`, :func:`report`,
:func:`autocast`; the process-group collectives are :mod:`pipeline.collectives`.

:func:`run_plain` runs the same per-worker loop in this process, without Ray (one rank, no
checkpoint storage): the plain baseline the benchmarks compare Ray Train against.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import io
import json
import os
import posixpath
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import storage
from pipeline.config import DistributedParams
from pipeline.errors import UserError
from pipeline.io import file_digest, load_torch

STATE_FILE = "state.pt"
RAY_CONNECT_TIMEOUT_S = 30


# ----------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class Worker:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class _PlainSession:
    """What :func:`report` and :func:`load_state` use while :func:`run_plain` runs a loop in-process."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None


_plain: _PlainSession | None = None


class _Sequence:
    """What :func:`load_state` and :func:`report` use while :func:`fit_seeds` runs one of its
    configs: the finished configs' final states ride along in every checkpoint, and ``last`` is
    the state this config last reported (its resume state until it reports). Its reports carry
    ``sequence_index``, the config's place in the sequence."""

    def __init__(self, finished: list[dict[str, Any] | None], resume: dict[str, Any] | None) -> None:
        self.finished, self.resume, self.last = finished, resume, resume
        self.index = len(finished)


_sequence: _Sequence | None = None
SEQUENCE_KEY = "sequence"


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def run_plain(
    loop: Callable[[dict[str, Any]], None], config: dict[str, Any], threads: int | None = None
) -> dict[str, Any]:
    """Run ``loop(config)`` in this process as the only rank, without Ray; return its last checkpoint state."""
    global _plain
    if threads is not None:
        torch.set_num_threads(threads)
    _plain = _PlainSession()
    try:
        loop(config)
        if _plain.state is None:
            raise RuntimeError("the loop finished without a checkpoint")
        return _plain.state
    finally:
        _plain = None


def worker(cpus_per_worker: float = 1.0) -> Worker:
    """Rank, world size and device of this Ray Train worker; sets torch's thread count.
    Under :func:`run_plain`: rank 0 of 1, the threads left as they are."""
    if _plain is not None:
        return Worker(0, 1, default_device())
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    device = ray.train.torch.get_device() if check_cuda() else torch.device("cpu")
    return Worker(ctx.get_world_rank(), ctx.get_world_size(), device)


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


def load_state() -> dict[str, Any] | None:
    """The state dict of the checkpoint this worker resumes from, or None on a fresh start."""
    if _plain is not None:
        return None
    if _sequence is not None:
        return _sequence.resume
    return _checkpoint_state()


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


def report(metrics: dict[str, Any], state: dict[str, Any] | None, w: Worker) -> None:
    """Report an epoch's metrics from every worker; rank 0 also saves ``state`` as the checkpoint.

    The reported metrics also name the Ray node the worker runs on (``node_id``)."""
    if _plain is not None:
        _plain.state = state if state is not None else _plain.state
        return
    import ray
    import ray.train

    metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
    if _sequence is not None:
        metrics["sequence_index"] = _sequence.index
        if state is not None:
            _sequence.last = state
            state = {SEQUENCE_KEY: {"finished": _sequence.finished, "current": state}}
    if state is not None and w.is_main:
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
    else:
        ray.train.report(metrics, checkpoint=None)


def _run_sequence(loop: Callable[[dict[str, Any]], None], config: dict[str, Any]) -> None:
    """Per-worker: ``loop`` on each of ``config["configs"]`` in turn, skipping those the
    checkpoint resumed from has finished and resuming the one it was in."""
    global _sequence
    saved = _checkpoint_state()
    progress = saved[SEQUENCE_KEY] if saved is not None else {"finished": [], "current": None}
    finished, resume = list(progress["finished"]), progress["current"]
    for one in config["configs"][len(finished) :]:
        _sequence = _Sequence(list(finished), resume)
        try:
            loop(one)
            finished.append(_sequence.last)
        finally:
            _sequence = None
        resume = None


# ----------------------------------------------------------------------------- driver side


def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _code_tree(source: str) -> str:
    """The syntax tree of ``source`` without docstrings: comments, layout and docs do not count."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):  # fmt: skip
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def imported_files(module: str, root: str | Path | None = None, packages: tuple[str, ...] = ()) -> dict[str, Path]:
    """``module`` and every module of its own package (and of ``packages``) it imports, transitively
    (parent packages' ``__init__`` included), by name -> source file. ``root`` is the folder
    holding the packages (default: the one holding ``pipeline``)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    top = {module.split(".")[0], *packages}
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # the module and its parent packages
            sub = ".".join(parts[:k])
            f = _module_file(sub, root)
            if sub in seen or f is None:
                continue
            seen[sub] = f
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    todo += [a.name for a in node.names if a.name.split(".")[0] in top]
                elif (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.level == 0
                    and node.module.split(".")[0] in top
                ):
                    todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return seen


def code_fingerprint(module: str = "pipeline", root: str | Path | None = None) -> str:
    """sha256 of the code ``module`` runs (:func:`imported_files`), as syntax trees: a comment or
    docstring edit, or an edit of a module it does not import, leaves the fingerprint as it is."""
    h = hashlib.sha256()
    for name, f in sorted(imported_files(module, root).items()):
        h.update(name.encode())
        h.update(_code_tree(f.read_text()).encode())
    return h.hexdigest()


def data_fingerprint(paths: Iterable[str | Path]) -> str:
    """sha256 over every file under ``paths`` (folders walked, names and bytes): what a run reads."""
    h = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(f.name.encode())
            h.update(file_digest(f).encode())
    return h.hexdigest()


def run_name(
    prefix: str, config: dict[str, Any], loop: Callable[..., Any] | None = None, inputs: Iterable[str | Path] = ()
) -> str:
    """``<prefix>-<hash of config, the loop's code and its input data>``.

    The same config, code and data resume (or return) the same run; a changed config, a change
    in the code the loop imports (see :func:`code_fingerprint`; the whole library without
    ``loop``) or changed ``inputs`` (files or folders the loop reads) start fresh, so a finished
    checkpoint is never reused for other code or other data.
    """
    code = code_fingerprint(loop.__module__ if loop is not None else "pipeline")
    payload = json.dumps(config, sort_keys=True, default=str) + code + data_fingerprint(inputs)
    return f"{prefix}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def wait_for_cluster(address: str, timeout_s: float | None = None) -> None:
    """Wait until the GCS port of ``address`` (``host:port``) accepts a connection, at most
    ``timeout_s`` (default ``PIPELINE_RAY_CONNECT_TIMEOUT_S`` or 30 s); raise a one-line error after.

    ``ray.init`` itself retries an unreachable address for minutes; this bounds the wait.
    ``auto`` and ``ray://`` client addresses are left to Ray.
    """
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"RAY_ADDRESS={address} is not host:port (e.g. 127.0.0.1:6379)")
    timeout_s = (
        float(os.environ.get("PIPELINE_RAY_CONNECT_TIMEOUT_S", RAY_CONNECT_TIMEOUT_S))
        if timeout_s is None
        else timeout_s
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"cannot reach the Ray cluster at RAY_ADDRESS={address} after {timeout_s:.0f} s ({exc.strerror or exc})"
                ) from None
            time.sleep(1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` when set (bounded wait), else start a private local instance that
    listens on 127.0.0.1 only (GCS, raylet, workers, dashboard and its agent)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        wait_for_cluster(address)
        # a loopback address is a local instance of this machine (a pipeline run's, see
        # stages/with_ray.py): join it as a node of 127.0.0.1, the address it was started with
        joining = _loopback_node() if address.split(":")[0] in ("127.0.0.1", "localhost") else contextlib.nullcontext()
        api = os.environ.get("RAY_API_SERVER_ADDRESS")  # see _init_local; set by stages/with_ray.py for its children
        try:
            with joining:
                ray.init(
                    address=address,
                    log_to_driver=True,
                    runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": api}} if api else None,
                )
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise UserError(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {str(exc).splitlines()[0]}"
            ) from None
        return
    dashboard_port = free_port()
    with _loopback_node():
        _init_local(num_cpus, dashboard_port)


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """While a local instance starts, its node address is 127.0.0.1, so that the GCS, the raylet,
    the workers and the dashboard agent listen on loopback only.

    Ray resolves a local node to the machine's reachable address (and then binds its servers to
    every interface) unless multi-node clusters are off, as it does on macOS and Windows; the
    flag is read at call time, and the started processes get the address from the driver."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _init_local(num_cpus: int | None, dashboard_port: int) -> None:
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus or max(os.cpu_count() or 1, 2),
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        include_dashboard=True,  # Train V2 placement-group cleanup and `ray job` need it
        # Train's placement-group cleaner asks the state API for its controller, which otherwise
        # resolves "auto" and fails when another Ray instance runs on the machine; the
        # placement groups of stopped trials then leak until later trials wait forever.
        runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}"}},
        log_to_driver=True,
        configure_logging=False,
    )


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor is dead; returns how many.

    Ray Train's controller creates its worker group's placement group, and a placement group
    lives as long as the job that made it. When Tune stops a trial, the trial's controller dies
    with it, and it can die after it has stopped its ``PlacementGroupCleaner`` but before it has
    removed the group: the group then holds its CPUs until the sweep ends, and a later trial's
    workers wait for them forever (seen in a sweep on 2 CPUs: 1.5 reserved, a 1-CPU worker group
    pending, its controller dead). Groups made by the driver itself (Tune's trials) have no
    creating actor and are left alone, as are other jobs' groups."""
    import ray
    from ray._private import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    held = (gcs_pb2.PlacementGroupTableData.CREATED, gcs_pb2.PlacementGroupTableData.PENDING)
    released = 0
    # GCS's own tables (a private accessor; ray is pinned): the state API resolves "auto", which fails beside another Ray instance
    for raw in state.state._connect_and_get_accessor().get_placement_group_table():
        pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
        creator = ray.ActorID(pg.creator_actor_id)
        if pg.state not in held or pg.is_detached or creator.is_nil() or ray.JobID(pg.creator_job_id).hex() != job:
            continue
        if state.actors(creator.hex()).get("State") == "DEAD":
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            released += 1
    return released


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
    loop: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    params: DistributedParams,
    name: str,
    storage: str | Path,
    callbacks: list[Any] | None = None,
    gpus_per_worker: float = 1.0,
) -> dict[str, Any]:
    """Run ``loop(config)`` on ``params.num_workers`` Ray Train workers; return the final state dict.

    Checkpoints every epoch (the loop calls :func:`report`), keeps the last
    ``keep_checkpoints``, and restarts dead workers from the last checkpoint up to
    ``max_failures`` times. ``callbacks`` are Ray Train user callbacks (a Tune trial passes the
    one that forwards reports to Tune); ``gpus_per_worker`` may be a fraction when ``use_gpu``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if params.use_gpu and params.num_workers == 0:
        raise UserError("distributed.use_gpu needs distributed.num_workers >= 1")
    init_ray(
        num_cpus=max(os.cpu_count() or 1, int(params.num_workers * params.cpus_per_worker) + 1)
    )  # no-op inside a Tune trial
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        torch_config=_torch_config("nccl" if params.use_gpu and not cpu_on_gpu_nodes() else "gloo"),
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


def fit_seeds(loop: Callable[[dict[str, Any]], None], configs: list[dict[str, Any]], params: DistributedParams, name: str,
              storage: str | Path) -> list[dict[str, Any]]:  # fmt: skip
    """Run ``loop`` on each of ``configs`` one after the other in one Ray Train worker group (as
    :func:`fit` does for one); return their final state dicts in order.

    A config trains exactly as it would in a run of its own (each loop seeds its own random
    state), without starting the workers again. Every checkpoint holds the finished configs'
    final states, so a restart resumes inside the config it was in.
    """
    final = fit(functools.partial(_run_sequence, loop), {"configs": configs}, params, name, storage)[SEQUENCE_KEY]
    states = [*final["finished"], final["current"]]
    if len(states) != len(configs):
        raise RuntimeError(f"training run {name} finished {len(states)} of {len(configs)} configs")
    return states
