"""A private Ray cluster on 127.0.0.1 for tests: `ray start --block` in the background, stopped by
its process id (never `ray stop`, which would kill every Ray process on the machine)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.ray_cluster import free_port

RAY = str(Path(sys.executable).parent / "ray")
PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
              "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port")  # fmt: skip


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


def start_node(
    temp_dir: Path,
    gcs_port: int,
    head_address: str | None,
    num_cpus: int,
    log: Path,
    resources: str | None = None,
    dashboard_port: int = 0,
    num_gpus: int = 0,
) -> subprocess.Popen:
    """``ray start --block`` for a head (``head_address`` None, on ``gcs_port``) or a worker joining ``head_address``."""
    cmd = [RAY, "start", "--block", f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    cmd += [f"{flag}={free_port()}" for flag in PORT_FLAGS]
    if resources:
        cmd.append(f"--resources={resources}")
    if num_gpus:  # advertised only: the tests set PIPELINE_CPU_ON_GPU_NODES=1 and train on the CPU
        cmd.append(f"--num-gpus={num_gpus}")
    if head_address is None:
        cmd += [f"--port={gcs_port}", f"--temp-dir={temp_dir}", "--head", "--include-dashboard=true",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port or free_port()}", f"--ray-client-server-port={free_port()}"]  # fmt: skip
    else:  # its own temp dir: nodes sharing one would share (and garbage-collect) runtime-env files
        cmd += [f"--address={head_address}", f"--temp-dir={temp_dir}"]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ray_env(), start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the `ray start --block` process (it stops what it started), SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _alive_nodes(dashboard_port: int) -> int:
    """How many nodes the cluster's state API lists as ALIVE (0 while it does not answer)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/api/v0/nodes?limit=100", timeout=20) as resp:
            return sum(n["state"] == "ALIVE" for n in json.load(resp)["data"]["result"]["result"])
    return 0


def _start_until_alive(
    start, nodes: int, what: str, logs: str, timeout: float = 120, attempts: int = 3
) -> tuple[subprocess.Popen, int]:
    """Start a node with ``start(attempt) -> (process, dashboard port)`` and wait until the cluster's
    state API lists ``nodes`` nodes ALIVE. On a loaded machine `ray start` can give up on its own
    raylet (30 s, fixed in Ray) and exit, head or worker alike; such a start is retried (``start``
    gives each attempt a fresh temp dir and, for a head, fresh ports)."""
    for attempt in range(attempts):
        proc, dashboard = start(attempt)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if _alive_nodes(dashboard) >= nodes:
                return proc, dashboard
            time.sleep(1)
        stop_group(proc)  # with whatever it had started
    raise RuntimeError(f"{what} did not come up in {attempts} attempts (logs: {logs})")


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process group that ``proc`` leads (started with ``start_new_session``: our own
    processes only), then SIGKILL to whatever of it is left, so no child outlives the test."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def local_cluster(num_cpus: int = 4, workers: int = 0, worker_cpus: int = 2, worker_gpus: int = 0) -> Iterator[dict]:
    """A head (and ``workers`` worker nodes, each with a custom resource ``node_<i>`` and
    ``worker_gpus`` advertised GPUs) on 127.0.0.1;
    yields the GCS ``address`` and the ``dashboard`` URL (the job server of `ray job submit`)."""
    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    procs: list[subprocess.Popen] = []
    port = 0

    def head(attempt: int) -> tuple[subprocess.Popen, int]:
        nonlocal port
        port, dashboard, tag = free_port(), free_port(), f"-{attempt}" if attempt else ""
        return start_node(
            base / f"r{tag}", port, None, num_cpus, base / f"head{tag}.log", dashboard_port=dashboard
        ), dashboard

    try:  # the head's dashboard (the state API and `ray job submit`'s server) is slow to come up on a loaded machine
        proc, dashboard = _start_until_alive(head, 1, "the Ray head", f"{base}/head*.log", timeout=300)
        procs.append(proc)
        address = f"127.0.0.1:{port}"
        for i in range(workers):

            def worker(attempt: int, i: int = i) -> tuple[subprocess.Popen, int]:
                tag = f"w{i}" if attempt == 0 else f"w{i}-{attempt}"  # its own temp dir: see start_node
                return start_node(
                    base / tag,
                    port,
                    address,
                    worker_cpus,
                    base / f"{tag}.log",
                    f'{{"node_{i + 1}": 1}}',
                    num_gpus=worker_gpus,
                ), dashboard

            # the head, the workers before this one, and this one
            procs.append(_start_until_alive(worker, i + 2, f"worker node {i}", f"{base}/w{i}*.log")[0])
        yield {"address": address, "dashboard": f"http://127.0.0.1:{dashboard}", "base": base, "procs": procs}
    finally:
        for p in reversed(procs):
            stop(p)
