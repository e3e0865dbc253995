"""A private Ray cluster on 127.0.0.1 for tests: `ray start --block` in the background, stopped by
its process id (never `ray stop`, which would kill every Ray process on the machine)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipeline.distributed import free_port

RAY = str(Path(sys.executable).parent / "ray")
PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
              "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port")  # fmt: skip


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.5)
    raise TimeoutError(f"Ray head did not open port {port} in {timeout} s")


def _wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until ``url`` answers (the head's dashboard, which serves `ray job submit`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.5)
    raise TimeoutError(f"Ray dashboard did not answer at {url} in {timeout} s")


def start_node(
    temp_dir: Path, gcs_port: int, head_address: str | None, num_cpus: int, log: Path, resources: str | None = None, dashboard_port: int = 0
) -> subprocess.Popen:
    """``ray start --block`` for a head (``head_address`` None, on ``gcs_port``) or a worker joining ``head_address``."""
    cmd = [RAY, "start", "--block", f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    cmd += [f"{flag}={free_port()}" for flag in PORT_FLAGS]
    if resources:
        cmd.append(f"--resources={resources}")
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


def _join_worker(base: Path, index: int, gcs_port: int, address: str, cpus: int, dashboard_port: int, attempts: int = 3) -> subprocess.Popen:
    """Start worker node ``index`` and wait until the cluster lists it ALIVE. On a loaded machine
    `ray start` can give up on its own raylet (30 s, fixed in Ray) and exit, leaving the cluster a
    node short (a sweep then waits forever for CPUs); such a start is retried in a fresh temp dir."""
    for attempt in range(attempts):
        tag = f"w{index}" if attempt == 0 else f"w{index}-{attempt}"
        proc = start_node(base / tag, gcs_port, address, cpus, base / f"{tag}.log", f'{{"node_{index + 1}": 1}}')
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _alive_nodes(dashboard_port) >= index + 2:  # the head, the workers before this one, and this one
                return proc
            time.sleep(1)
        stop(proc)
    raise RuntimeError(f"worker node {index} did not join the Ray cluster in {attempts} attempts (logs: {base}/w{index}*.log)")


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
def local_cluster(num_cpus: int = 4, workers: int = 0, worker_cpus: int = 2) -> Iterator[dict]:
    """A head (and ``workers`` worker nodes, each with a custom resource ``node_<i>``) on 127.0.0.1;
    yields the GCS ``address`` and the ``dashboard`` URL (the job server of `ray job submit`)."""
    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    temp_dir, port, dashboard = base / "r", free_port(), free_port()
    procs = [start_node(temp_dir, port, None, num_cpus, base / "head.log", dashboard_port=dashboard)]
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_port(port, procs[0], 120)
        _wait_for_http(f"http://127.0.0.1:{dashboard}/api/version", procs[0], 120)  # slow to come up on a loaded machine
        deadline = time.monotonic() + 120
        while _alive_nodes(dashboard) < 1:
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not come up (log: {base / 'head.log'})")
            time.sleep(1)
        for i in range(workers):
            procs.append(_join_worker(base, i, port, address, worker_cpus, dashboard))
        yield {"address": address, "dashboard": f"http://127.0.0.1:{dashboard}", "base": base, "procs": procs}
    finally:
        for p in reversed(procs):
            stop(p)
