"""infra/: every file parses, and its images, versions, resources, ports and entrypoints agree
with the package and params.yaml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params

from .cluster import stop_group
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
    """{file name: its document} for single-document manifests, {file name/kind: document} for the others."""
    out = {}
    for p in sorted((INFRA / "k8s").glob("*.yaml")):
        docs = list(yaml.safe_load_all(p.read_text()))
        out.update({p.name: docs[0]} if len(docs) == 1 else {f"{p.name}/{d['kind']}": d for d in docs})
    return out


# The KubeRay v1 API fields these manifests may use, written down from its API reference
# (https://ray-project.github.io/kuberay/reference/api/, package ray.io/v1): a typo or a field of
# another version fails here before `kubectl apply` would reject it.
KUBERAY_V1 = {
    "RayClusterSpec": {"rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headServiceAnnotations", "headGroupSpec",
                       "workerGroupSpecs", "suspend", "managedBy", "gcsFaultToleranceOptions", "authOptions"},
    "HeadGroupSpec": {"rayStartParams", "template", "serviceType", "headService", "enableIngress", "resources", "labels"},
    "WorkerGroupSpec": {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template", "numOfHosts",
                        "scaleStrategy", "suspend", "idleTimeoutSeconds", "resources", "labels"},
    "RayJobSpec": {"entrypoint", "runtimeEnvYAML", "metadata", "jobId", "submissionMode", "rayClusterSpec", "clusterSelector",
                   "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit", "suspend",
                   "submitterPodTemplate", "submitterConfig", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources",
                   "deletionStrategy", "managedBy"},
}  # fmt: skip


def test_kuberay_manifests_use_only_kuberay_v1_fields():
    def check(spec: dict, where: str) -> None:
        assert set(spec) <= KUBERAY_V1["RayClusterSpec"], (where, set(spec) - KUBERAY_V1["RayClusterSpec"])
        assert set(spec["headGroupSpec"]) <= KUBERAY_V1["HeadGroupSpec"], where
        for group in spec["workerGroupSpecs"]:
            assert set(group) <= KUBERAY_V1["WorkerGroupSpec"], (where, set(group) - KUBERAY_V1["WorkerGroupSpec"])

    docs = k8s_docs()
    assert docs["raycluster.yaml"]["apiVersion"] == docs["rayjob.yaml"]["apiVersion"] == "ray.io/v1"
    check(docs["raycluster.yaml"]["spec"], "RayCluster")
    job = docs["rayjob.yaml"]["spec"]
    assert set(job) <= KUBERAY_V1["RayJobSpec"], set(job) - KUBERAY_V1["RayJobSpec"]
    check(job["rayClusterSpec"], "RayJob")
    with pytest.raises(AssertionError):  # a misspelt field is caught
        check({**docs["raycluster.yaml"]["spec"], "workerGroupSpec": []}, "typo")


def test_every_volume_and_service_the_ray_pods_use_is_defined_beside_them():
    docs = k8s_docs()
    pvc = docs["storage.yaml"]
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    service, deployment = docs["mlflow.yaml/Service"], docs["mlflow.yaml/Deployment"]
    pods = [spec["headGroupSpec"]["template"]["spec"] for spec in ray_cluster_specs()]
    pods += [g["template"]["spec"] for spec in ray_cluster_specs() for g in spec["workerGroupSpecs"]]
    pods.append(deployment["spec"]["template"]["spec"])
    for pod in pods:
        assert {v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])} <= {pvc["metadata"]["name"]}
        for container in pod["containers"]:
            assert container["image"] == IMAGE
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            if "MLFLOW_TRACKING_URI" in env:
                assert (
                    env["MLFLOW_TRACKING_URI"]
                    == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
                )
    mlflow_env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert mlflow_env["MLFLOW_ALLOWED_HOSTS"].startswith(
        f"{service['metadata']['name']}:*"
    )  # workers call it by the Service name
    assert mlflow_env["MLFLOW_BACKEND_URI"].startswith("sqlite:////shared/") and deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    # the RayJob's results outlive its pods: copied to the storage URI (stages/publish_results.py, tested on S3)
    assert docs["rayjob.yaml"]["spec"]["entrypoint"].rstrip("'").endswith("&& python -m stages.publish_results")


def ray_cluster_specs() -> list[dict]:
    docs = k8s_docs()
    return [docs["raycluster.yaml"]["spec"], docs["rayjob.yaml"]["spec"]["rayClusterSpec"]]


def test_every_infra_file_parses():
    for path in INFRA.rglob("*.yaml"):
        assert all(yaml.safe_load_all(path.read_text())), path
    assert (INFRA / "docker" / "Dockerfile").read_text().startswith("#")
    assert (INFRA / "mlflow" / "server.sh").stat().st_mode & 0o111


def lock() -> dict[str, str]:
    """infra/docker/requirements.lock as {package: version}."""
    lines = (INFRA / "docker" / "requirements.lock").read_text().splitlines()
    return {
        m.group(1).lower(): m.group(2) for line in lines if (m := re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line))
    }


def test_image_installs_the_locked_environment_then_the_code_as_a_non_root_user():
    docker = (INFRA / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM python:(\d+\.\d+)\.\d+-slim-\w+$", docker, re.M)  # a full version tag, not a floating one
    assert base and base.group(1) == "3.11" and PYPROJECT["project"]["requires-python"].startswith(">=3.11")
    body = docker.splitlines()
    lock_install = next(i for i, line in enumerate(body) if "-r /tmp/requirements.lock" in line)
    code_copy = next(i for i, line in enumerate(body) if line.startswith("COPY --chown=app:app . ."))
    assert lock_install < code_copy  # a code change leaves the dependency layer cached
    last_run = max(i for i, line in enumerate(body) if line.startswith("RUN"))
    assert (
        "pip install --no-cache-dir --no-deps -e ." in docker and body.index("USER app") > last_run
    )  # nothing runs as root after
    locked = lock()
    for name in ("torch", "torchvision", "ray", "mlflow", "dvc"):
        assert locked[name] == pin(name), name  # the lock agrees with pyproject's pins
    assert "boto3" in locked and "pytest" in locked  # the AWS launcher on the head; the suite in the image
    assert pin("ray") == "2.60.0" and pin("torch") == "2.14.1"
    exposed = {int(p) for p in re.findall(r"\b(\d{4,5})\b", re.search(r"^EXPOSE (.*)$", docker, re.M).group(1))}
    assert {6379, 8265} <= exposed


IMAGE = "REGISTRY/ssl-i2i:0.1.0"
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Z0-9_]+|ACCOUNT_ID|REGISTRY")


def test_cluster_launcher_validates_against_rays_schema_with_named_placeholders():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    text = (INFRA / "ray" / "cluster.yaml").read_text()
    cfg = yaml.safe_load(text)
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert all(
        t["node_config"]["ImageId"] == "REPLACE_WITH_DLAMI_ID" for t in types.values()
    )  # the AMI, a named placeholder
    assert types["gpu_worker"]["node_config"]["IamInstanceProfile"]["Arn"].endswith(":instance-profile/ssl-i2i-worker")
    mount = " ".join(cfg["initialization_commands"])
    assert "REPLACE_WITH_EFS_ID.efs." in mount and " /shared" in mount  # the shared file system on every node
    assert "-v /shared:/shared" in cfg["docker"]["run_options"]
    assert set(PLACEHOLDER.findall(text)) == {"REPLACE_WITH_DLAMI_ID", "REPLACE_WITH_EFS_ID", "ACCOUNT_ID", "REGISTRY"}
    with pytest.raises(jsonschema.ValidationError):  # the schema check is a real one
        jsonschema.validate({**cfg, "max_workers": "four"}, schema)


def test_cluster_launcher_agrees_with_the_image_and_binds_the_dashboard_locally():
    cfg = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    assert cfg["docker"]["image"] == IMAGE
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
    assert head["image"] == IMAGE
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    for group in spec["workerGroupSpecs"]:
        worker = group["template"]["spec"]["containers"][0]
        assert worker["image"] == head["image"]
        gpus = int(group["rayStartParams"]["num-gpus"])
        assert gpus == int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        env = {e["name"]: e["value"] for e in worker["env"]}
        head_env = {e["name"]: e["value"] for e in head["env"]}
        # every node sees the checkpoints: on the shared volume, or under the one storage URI
        if "PIPELINE_STORAGE_URI" in env:
            assert env["PIPELINE_STORAGE_URI"] == head_env["PIPELINE_STORAGE_URI"] and env[
                "PIPELINE_STORAGE_URI"
            ].startswith("s3://")
        else:
            assert (
                env["PIPELINE_CHECKPOINT_STORAGE"].startswith("/shared")
                and worker["volumeMounts"][0]["mountPath"] == "/shared"
            )


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
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}
        )
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
            assert s.connect_ex((socket.gethostbyname(socket.gethostname()), port)) != 0 or socket.gethostbyname(
                socket.gethostname()
            ).startswith("127.")
    finally:
        stop_group(proc)
    makefile = (ROOT / "Makefile").read_text()
    assert "MLFLOW_HOST:-127.0.0.1" in makefile and "MLFLOW_PORT:-5000" in makefile
