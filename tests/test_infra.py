"""infra/: every file parses, and its images, versions, resources, ports and entrypoints agree
with the package and params.yaml."""

from __future__ import annotations

import re
import sys
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


def test_mlflow_server_binds_localhost_on_the_ui_port_by_default():
    script = (INFRA / "mlflow" / "server.sh").read_text()
    assert '"${MLFLOW_HOST:-127.0.0.1}"' in script and '"${MLFLOW_PORT:-5000}"' in script
    assert "sqlite:///mlflow.db" in script
    makefile = (ROOT / "Makefile").read_text()
    assert "MLFLOW_HOST:-127.0.0.1" in makefile and "MLFLOW_PORT:-5000" in makefile
    assert (Path(sys.executable).parent / "mlflow").is_file()  # the CLI the package installs
