"""infra/: every file parses, and its images, versions, resources, ports and entrypoints agree
with the package and params.yaml."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params

from .conftest import ROOT, deep_update

INFRA = ROOT / "infra"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pin(name: str) -> str:
    for dep in PYPROJECT["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==([\w.]+)", dep)
        if m:
            return m.group(2)
    raise KeyError(name)


def k8s_docs() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((INFRA / "k8s").glob("*.yaml"))}


def ray_cluster_specs() -> list[dict]:
    docs = k8s_docs()
    return [docs["raycluster.yaml"]["spec"], docs["rayjob.yaml"]["spec"]["rayClusterSpec"]]


def test_every_infra_file_parses():
    for path in INFRA.rglob("*.yaml"):
        assert yaml.safe_load(path.read_text()), path
    assert (INFRA / "docker" / "Dockerfile").read_text().startswith("#")
    assert (INFRA / "mlflow" / "server.sh").stat().st_mode & 0o111


def test_image_installs_the_pinned_package_on_the_supported_python():
    docker = (INFRA / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM python:(\d+\.\d+)", docker, re.M)
    assert base and base.group(1) == "3.11" and PYPROJECT["project"]["requires-python"].startswith(">=3.11")
    assert "pip install --no-cache-dir -e ." in docker  # the pins come from pyproject.toml, nowhere else
    assert pin("ray") == "2.60.0" and pin("torch") == "2.14.1"
    exposed = {int(p) for p in re.findall(r"\b(\d{4,5})\b", re.search(r"^EXPOSE (.*)$", docker, re.M).group(1))}
    assert {6379, 8265} <= exposed


def test_cluster_launcher_agrees_with_the_image_and_binds_the_dashboard_locally():
    cfg = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    assert cfg["docker"]["image"] == "ssl-i2i:latest"
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "--port=6379" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(cfg["worker_start_ray_commands"])
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"]["GPU"] == 0 and types["gpu_worker"]["resources"]["GPU"] == 1
    assert types["gpu_worker"]["max_workers"] <= cfg["max_workers"]


@pytest.mark.parametrize("index", [0, 1])
def test_kuberay_resources_ports_and_versions_agree(index):
    spec = ray_cluster_specs()[index]
    assert spec["rayVersion"] == pin("ray")
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "ssl-i2i:latest"
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    for group in spec["workerGroupSpecs"]:
        worker = group["template"]["spec"]["containers"][0]
        assert worker["image"] == head["image"]
        gpus = int(group["rayStartParams"]["num-gpus"])
        assert gpus == int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        env = {e["name"]: e["value"] for e in worker["env"]}
        assert env["PIPELINE_CHECKPOINT_STORAGE"].startswith("/shared")  # every node sees the checkpoints


def test_rayjob_entrypoint_sets_only_valid_params():
    entry = k8s_docs()["rayjob.yaml"]["spec"]["entrypoint"]
    overrides = re.findall(r"-S ([\w.]+)=(\S+?)\"?(?:\s|$)", entry)
    assert overrides, entry
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides:
        node: dict = {}
        parts = key.split(".")
        cur = node
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = yaml.safe_load(value)
        raw = deep_update(raw, node)
    params = parse_params(raw)  # raises on an unknown key or a bad value
    assert params.distributed.use_gpu is True


@pytest.mark.slow
def test_mlflow_server_binds_localhost_and_accepts_only_the_allowed_host_names(tmp_path):
    """infra/mlflow/server.sh as a cluster runs it: MLFLOW_ALLOWED_HOSTS lets workers reach it as
    http://mlflow:5000; any other Host header is refused (MLflow's DNS-rebinding guard)."""
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_BACKEND_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLFLOW_ARTIFACTS": str(tmp_path / "artifacts"),
           "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1", "MLFLOW_ALLOWED_HOSTS": "mlflow:*",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    proc = subprocess.Popen([str(INFRA / "mlflow" / "server.sh")], env=env, stdout=(tmp_path / "log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip

    def get(host: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status = get(f"127.0.0.1:{port}")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "log").read_text()[-2000:]) from None
                time.sleep(0.5)
        assert status == 200
        assert get(f"mlflow:{port}") == 200  # the cluster's Service name
        assert get(f"attacker.example:{port}") in (400, 403)
        with socket.socket() as s:  # bound to loopback only
            assert s.connect_ex((socket.gethostbyname(socket.gethostname()), port)) != 0 or socket.gethostbyname(socket.gethostname()).startswith("127.")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    makefile = (ROOT / "Makefile").read_text()
    assert "MLFLOW_HOST:-127.0.0.1" in makefile and "MLFLOW_PORT:-5000" in makefile
