"""infra/: every file parses, and its images, versions, resources, ports and entrypoints agree
with the package and params.yaml; the launcher, the KubeRay manifests, the head's IAM policy and
the image check against the real schemas (Ray's ray-schema.json, the KubeRay v1 CRDs, EC2's API
model in botocore, IAM's policy grammar, Dockerfile instructions)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params

from .cluster import stop_group
from .conftest import ROOT

INFRA = ROOT / "infra"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = "REGISTRY/ssl-i2i:0.1.0"
# Every value a team must fill in is named: REPLACE_WITH_<WHAT>, or one of the names below.
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Z0-9_]+|ACCOUNT_ID|REGISTRY|\bBUCKET\b")
RAY_MANIFESTS = ("raycluster.yaml", "rayjob.yaml", "sweep-rayjob.yaml")


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


def ray_cluster_specs() -> dict[str, dict]:
    """{manifest: its RayClusterSpec} for the RayCluster and both RayJobs."""
    docs = k8s_docs()
    return {name: docs[name]["spec"].get("rayClusterSpec", docs[name]["spec"]) for name in RAY_MANIFESTS}


def ray_pods() -> list[tuple[str, dict]]:
    """(where, pod spec) of every Ray pod: each manifest's head and worker groups."""
    pods = []
    for name, spec in ray_cluster_specs().items():
        pods.append((f"{name} head", spec["headGroupSpec"]["template"]["spec"]))
        pods += [(f"{name} {g['groupName']}", g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return pods


def gpus(pod: dict) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in pod["containers"])


# ---------------------------------------------------------------------------------------------
# KubeRay: the fields of the KubeRay v1 CRDs these manifests may use, written down from
# ray-operator/config/crd/bases/ray.io_rayclusters.yaml and ray.io_rayjobs.yaml of KubeRay v1.7.0
# (authOptions needs >= 1.5.1), PodTemplateSpec included as those CRDs embed it from Kubernetes
# core/v1. Per type: its fields (all of them, as the CRD lists them), the required ones, and for
# the fields the manifests set: a type of this table, [type] for a list, a JSON type, or a tuple
# of allowed values (the CRD's enum for authOptions.mode; Kubernetes' documented values for
# tolerations and emptyDir.medium). Built into a JSON schema with additionalProperties: false, so
# a typo, a field of another version, a wrong type or value fails here, not at `kubectl apply`.
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}]}  # fmt: skip
CRD_V1 = {
    "RayJobSpec": ("activeDeadlineSeconds backoffLimit clusterSelector deletionStrategy entrypoint entrypointNumCpus "
                   "entrypointNumGpus entrypointResources jobId managedBy metadata preRunningDeadlineSeconds rayClusterSpec "
                   "runtimeEnvYAML shutdownAfterJobFinishes submissionMode submitterConfig submitterPodTemplate suspend "
                   "ttlSecondsAfterFinished", "",
                   {"rayClusterSpec": "RayClusterSpec", "submitterPodTemplate": "PodTemplateSpec", "entrypoint": "string",
                    "runtimeEnvYAML": "string", "shutdownAfterJobFinishes": "boolean", "ttlSecondsAfterFinished": "integer"}),
    "RayClusterSpec": ("authOptions autoscalerOptions enableInTreeAutoscaling gcsFaultToleranceOptions headGroupSpec "
                       "headServiceAnnotations historyServerOptions managedBy networkPolicy rayVersion suspend tlsOptions "
                       "upgradeStrategy workerGroupSpecs", "headGroupSpec",
                       {"authOptions": "AuthOptions", "headGroupSpec": "HeadGroupSpec", "workerGroupSpecs": ["WorkerGroupSpec"],
                        "rayVersion": "string", "enableInTreeAutoscaling": "boolean"}),
    "AuthOptions": ("enableK8sTokenAuth mode secretName", "",
                    {"mode": ("disabled", "token"), "secretName": "string", "enableK8sTokenAuth": "boolean"}),
    "HeadGroupSpec": ("enableIngress headService ingressOptions labels rayStartParams resources serviceType template", "template",
                      {"rayStartParams": "StartParams", "template": "PodTemplateSpec"}),
    "WorkerGroupSpec": ("groupName idleTimeoutSeconds labels maxReplicas minReplicas numOfHosts priority rayStartParams replicas "
                        "resources scaleStrategy suspend template", "groupName maxReplicas minReplicas template",
                        {"groupName": "string", "replicas": "integer", "minReplicas": "integer", "maxReplicas": "integer",
                         "rayStartParams": "StartParams", "template": "PodTemplateSpec"}),
    "PodTemplateSpec": ("metadata spec", "", {"spec": "PodSpec"}),
    "PodSpec": ("activeDeadlineSeconds affinity automountServiceAccountToken containers dnsConfig dnsPolicy enableServiceLinks "
                "ephemeralContainers hostAliases hostIPC hostNetwork hostPID hostUsers hostname hostnameOverride imagePullSecrets "
                "initContainers nodeName nodeSelector os overhead preemptionPolicy priority priorityClassName readinessGates "
                "resourceClaims resources restartPolicy runtimeClassName schedulerName schedulingGates schedulingGroup "
                "securityContext serviceAccount serviceAccountName setHostnameAsFQDN shareProcessNamespace subdomain "
                "terminationGracePeriodSeconds tolerations topologySpreadConstraints volumes", "containers",
                {"containers": ["Container"], "initContainers": ["Container"], "securityContext": "PodSecurityContext",
                 "serviceAccountName": "string", "tolerations": ["Toleration"], "volumes": ["Volume"]}),
    "PodSecurityContext": ("appArmorProfile fsGroup fsGroupChangePolicy runAsGroup runAsNonRoot runAsUser seLinuxChangePolicy "
                           "seLinuxOptions seccompProfile supplementalGroups supplementalGroupsPolicy sysctls windowsOptions", "",
                           {"fsGroup": "integer", "runAsUser": "integer", "runAsGroup": "integer", "runAsNonRoot": "boolean"}),
    "Toleration": ("effect key operator tolerationSeconds value", "",
                   {"effect": ("NoSchedule", "PreferNoSchedule", "NoExecute"), "key": "string", "operator": ("Exists", "Equal"),
                    "value": "string"}),
    "Volume": ("awsElasticBlockStore azureDisk azureFile cephfs cinder configMap csi downwardAPI emptyDir ephemeral fc flexVolume "
               "flocker gcePersistentDisk gitRepo glusterfs hostPath image iscsi name nfs persistentVolumeClaim "
               "photonPersistentDisk portworxVolume projected quobyte rbd scaleIO secret storageos vsphereVolume", "name",
               {"name": "string", "emptyDir": "EmptyDirVolumeSource", "persistentVolumeClaim": "PersistentVolumeClaimVolumeSource"}),
    "EmptyDirVolumeSource": ("medium sizeLimit", "", {"medium": ("", "Memory", "HugePages"), "sizeLimit": "quantity"}),
    "PersistentVolumeClaimVolumeSource": ("claimName readOnly", "claimName", {"claimName": "string", "readOnly": "boolean"}),
    "Container": ("args command env envFrom image imagePullPolicy lifecycle livenessProbe name ports readinessProbe resizePolicy "
                  "resources restartPolicy restartPolicyRules securityContext startupProbe stdin stdinOnce terminationMessagePath "
                  "terminationMessagePolicy tty volumeDevices volumeMounts workingDir", "name",
                  {"name": "string", "image": "string", "env": ["EnvVar"], "ports": ["ContainerPort"],
                   "resources": "ResourceRequirements", "volumeMounts": ["VolumeMount"]}),
    "EnvVar": ("name value valueFrom", "name", {"name": "string", "value": "string"}),
    "ContainerPort": ("containerPort hostIP hostPort name protocol", "containerPort",
                      {"containerPort": "integer", "name": "string", "protocol": ("TCP", "UDP", "SCTP")}),
    "ResourceRequirements": ("claims limits requests", "", {"limits": "Quantities", "requests": "Quantities"}),
    "VolumeMount": ("mountPath mountPropagation name readOnly recursiveReadOnly subPath subPathExpr", "mountPath name",
                    {"mountPath": "string", "name": "string", "readOnly": "boolean"}),
}  # fmt: skip
EXTRA_TYPES = {
    "StartParams": {"type": "object", "additionalProperties": {"type": "string"}},  # rayStartParams: strings only
    "Quantities": {"type": "object", "additionalProperties": QUANTITY},
}


def crd_schema(root: str) -> dict:
    def sub(kind) -> dict:
        if isinstance(kind, list):
            return {"type": "array", "items": sub(kind[0])}
        if isinstance(kind, tuple):
            return {"enum": list(kind)}
        if kind == "quantity":
            return QUANTITY
        if kind in CRD_V1 or kind in EXTRA_TYPES:
            return {"$ref": f"#/$defs/{kind}"}
        return {"type": kind}

    defs = dict(EXTRA_TYPES)
    for name, (fields, required, typed) in CRD_V1.items():
        props = {f: {} for f in fields.split()}
        assert set(typed) <= set(props), (name, set(typed) - set(props))
        props.update({f: sub(k) for f, k in typed.items()})
        defs[name] = {
            "type": "object",
            "properties": props,
            "required": required.split(),
            "additionalProperties": False,
        }
    return {"$ref": f"#/$defs/{root}", "$defs": defs}


def test_kuberay_manifests_validate_against_the_kuberay_v1_crds():
    import jsonschema

    docs = k8s_docs()
    cluster, job = crd_schema("RayClusterSpec"), crd_schema("RayJobSpec")
    assert docs["raycluster.yaml"]["kind"] == "RayCluster"
    assert docs["rayjob.yaml"]["kind"] == docs["sweep-rayjob.yaml"]["kind"] == "RayJob"
    for name in RAY_MANIFESTS:
        assert docs[name]["apiVersion"] == "ray.io/v1", name
        jsonschema.validate(docs[name]["spec"], cluster if docs[name]["kind"] == "RayCluster" else job)
    spec = docs["raycluster.yaml"]["spec"]
    worker = spec["workerGroupSpecs"][0]
    pod = worker["template"]["spec"]

    def with_pod(**changes) -> dict:  # the spec with the GPU group's pod changed
        return {**spec, "workerGroupSpecs": [{**worker, "template": {"spec": {**pod, **changes}}}]}

    for bad in (
        {**spec, "workerGroupSpec": []},  # a misspelt field
        {**spec, "authOptions": {"mode": "tokens"}},  # a value outside the CRD's enum
        {**spec, "workerGroupSpecs": [{**worker, "rayStartParams": {"num-gpus": 1}}]},  # rayStartParams are strings
        with_pod(tolerations=[{"key": "nvidia.com/gpu", "effect": "NoSchedul"}]),
        with_pod(securityContext={"fsGroup": "1000"}),
        with_pod(volumes=[{"name": "dshm", "emptyDir": {"medium": "memory"}}]),
        with_pod(serviceAccount_Name="ssl-i2i"),
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, cluster)


def test_every_ray_pod_runs_as_the_service_account_with_fsgroup_shm_and_gpu_tolerations():
    docs = k8s_docs()
    sa = docs["serviceaccount.yaml"]
    uid = int(re.search(r"useradd [^\n]*--uid (\d+)", (INFRA / "docker" / "Dockerfile").read_text()).group(1))
    assert uid == 1000
    pods = ray_pods()
    assert len(pods) == 2 * len(RAY_MANIFESTS)
    for where, pod in pods:
        assert pod["serviceAccountName"] == sa["metadata"]["name"], (
            where
        )  # cloud credentials (IRSA / Workload Identity)
        ctx = pod["securityContext"]
        assert ctx["fsGroup"] == ctx["runAsUser"] == ctx["runAsGroup"] == uid, (
            where
        )  # volumes and the SA token readable
        shm = [v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert len(shm) == 1, where  # the object store in memory, not the container's 64 MiB /dev/shm
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/dev/shm"] == shm[0], where
            # the MLflow server asks for a login: the Ray user's, from the Secret infra/mlflow/README.md creates
            assert {"secretRef": {"name": "mlflow-client"}} in container.get("envFrom", []), where
        gpu_tolerations = [
            t for t in pod.get("tolerations", []) if t["key"] == "nvidia.com/gpu" and t.get("effect") == "NoSchedule"
        ]
        if gpus(pod):
            assert gpu_tolerations and all(t["operator"] == "Exists" or "value" in t for t in gpu_tolerations), where
        else:
            assert not gpu_tolerations, where  # the CPU head stays off the GPU nodes
    assert sum(1 for _, pod in pods if gpus(pod)) == len(RAY_MANIFESTS)  # each cluster has its GPU group


def test_ray_clusters_turn_on_token_auth():
    for name, spec in ray_cluster_specs().items():
        assert spec["authOptions"]["mode"] == "token", name
        assert "secretName" not in spec["authOptions"], name  # KubeRay makes the Secret <cluster name>/auth_token
        major, minor, _ = (int(x) for x in spec["rayVersion"].split("."))
        assert (major, minor) >= (2, 52), name  # KubeRay refuses token mode for older Ray
        for group in (spec["headGroupSpec"], *spec["workerGroupSpecs"]):
            for container in group["template"]["spec"]["containers"]:
                env = {e["name"] for e in container.get("env", [])}
                assert not env & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, name  # the operator sets both


def test_service_account_names_a_cloud_role_by_placeholder():
    text = (INFRA / "k8s" / "serviceaccount.yaml").read_text()
    sa = yaml.safe_load(text)
    assert sa["apiVersion"] == "v1" and sa["kind"] == "ServiceAccount"
    # core/v1 ServiceAccount's fields (Kubernetes API reference) and ObjectMeta's used here
    assert set(sa) <= {"apiVersion", "kind", "metadata", "automountServiceAccountToken", "imagePullSecrets", "secrets"}
    assert set(sa["metadata"]) <= {"name", "namespace", "labels", "annotations"}
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::ACCOUNT_ID:role/REPLACE_WITH_[A-Z0-9_]+", arn), arn
    gke = re.search(r"#\s+iam\.gke\.io/gcp-service-account: (\S+)", text)  # the GKE alternative, in a comment
    assert gke and re.fullmatch(r"REPLACE_WITH_[A-Z_]+@REPLACE_WITH_[A-Z_]+\.iam\.gserviceaccount\.com", gke.group(1))


def test_every_volume_and_service_the_ray_pods_use_is_defined_beside_them():
    docs = k8s_docs()
    pvc = docs["storage.yaml"]
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    service, deployment = docs["mlflow.yaml/Service"], docs["mlflow.yaml/Deployment"]
    pods = [pod for _, pod in ray_pods()]
    pods.append(deployment["spec"]["template"]["spec"])
    for pod in pods:
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
        assert claims <= {pvc["metadata"]["name"]}
        for container in pod["containers"]:
            assert container["image"] == IMAGE
            assert {m["name"] for m in container.get("volumeMounts", [])} <= set(volumes)  # every mount has its volume
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
    # runs in PostgreSQL (postgres.yaml), not sqlite on the network volume; login on (tests/test_mlflow_server.py)
    assert (
        mlflow_env["MLFLOW_BACKEND_URI"].startswith("postgresql+psycopg2://") and mlflow_env["MLFLOW_AUTH"] == "basic"
    )
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    # the RayJobs' results outlive their pods: copied to the storage URI (stages/publish_results.py, tested on S3)
    for name in ("rayjob.yaml", "sweep-rayjob.yaml"):
        assert re.search(r"&& python -m stages\.publish_results\b[^&]*$", docs[name]["spec"]["entrypoint"]), name


# ---------------------------------------------------------------------------------------------
# Entrypoints: what the jobs run, checked against params.yaml, the profiles and the Makefile.


def job_script(entrypoint: str) -> str:
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["bash", "-c"] and len(argv) == 3, argv
    subprocess.run(["bash", "-n", "-c", argv[2]], check=True)  # valid shell
    return argv[2]


def profile_overrides(name: str) -> list[str]:
    from stages.profile import profile_args

    args = profile_args(str(INFRA / "profiles" / f"{name}.yaml"), str(ROOT / "params.yaml"))  # validates the merge
    return args[1::2]


def dvc_overrides(command: str) -> list[str]:
    """The ``key=value`` a ``dvc exp run`` command sets: its profile's values
    (``$(python -m stages.profile NAME)``), then its own -S."""
    profile = re.search(r"\$\(python -m stages\.profile (\w+)\)", command)
    if profile:
        assert command.lstrip().startswith("eval "), command  # the profile's values come shell-quoted
    sets = [a.strip("'\"") for a in re.findall(r"(?:^|\s)-S\s+(\S+)", command)]
    return (profile_overrides(profile.group(1)) if profile else []) + sets


@pytest.mark.parametrize("manifest", ["rayjob.yaml", "sweep-rayjob.yaml"])
def test_rayjob_entrypoints_set_only_valid_params(manifest):
    script = job_script(k8s_docs()[manifest]["spec"]["entrypoint"])
    runs = [c for c in re.split(r"\s*&&\s*", script) if "dvc exp run" in c]
    assert runs, script
    for command in runs:
        overrides = dvc_overrides(command)
        assert overrides, command
        params = load_params(ROOT / "params.yaml", overrides)  # raises on an unknown key or a bad value
        assert params.distributed.use_gpu is True, command


def test_sweep_rayjob_sweeps_colorize_on_one_gpu_per_trial_after_training_its_inputs():
    docs = k8s_docs()
    spec = docs["sweep-rayjob.yaml"]["spec"]
    script = job_script(spec["entrypoint"])
    commands = re.split(r"\s*&&\s*", script)
    sweep_at = next(i for i, c in enumerate(commands) if "stages.sweep" in c)
    argv = shlex.split(commands[sweep_at])
    assert argv[:5] == ["python", "-m", "stages.sweep", "--stage", "colorize"], argv
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "-S"]
    assert (
        len(sets) == (len(argv) - 5) / 2 and "sweep.gpus_per_worker=1" in sets and "sweep.workers_per_trial=1" in sets
    )
    # the inputs first: the prepared data and the backbone the sweep's encoder needs, at the same params
    prior = [c for c in commands[:sweep_at] if "dvc exp run" in c]
    assert len(prior) == 1
    raw_dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    base = load_params(ROOT / "params.yaml", dvc_overrides(prior[0]))
    target = re.search(r"dvc exp run (\S+)", prior[0]).group(1)
    stage, _, item = target.partition("@")
    assert item in raw_dvc["stages"][stage]["foreach"] and item == base.sweep.encoder
    outs = [
        (o if isinstance(o, str) else next(iter(o))).replace("${item}", item)
        for o in raw_dvc["stages"][stage]["do"]["outs"]
    ]
    assert f"models/backbone_{item}.pt" in outs  # what the sweep loads (--models models)
    params = load_params(ROOT / "params.yaml", dvc_overrides(prior[0]) + sets)  # what the sweep reads, validated
    assert "colorize" in yaml.safe_load((ROOT / "params.yaml").read_text())["sweep"]["space"]
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    per_worker = int(group["rayStartParams"]["num-gpus"])
    assert params.sweep.gpus_per_worker == per_worker and params.sweep.workers_per_trial == 1
    assert params.sweep.max_concurrent * params.sweep.workers_per_trial <= group["maxReplicas"]
    assert params.sweep.cpus_per_worker <= int(group["rayStartParams"]["num-cpus"])
    published = shlex.split(commands[-1])
    assert published[:3] == ["python", "-m", "stages.publish_results"]
    assert published[3:] and all((ROOT / p).exists() for p in published[3:])  # in the image: no reports/ from a sweep


@pytest.mark.parametrize("manifest", RAY_MANIFESTS)
def test_kuberay_resources_ports_and_versions_agree(manifest):
    spec = ray_cluster_specs()[manifest]
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


# ---------------------------------------------------------------------------------------------
# The image.

DOCKERFILE_INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                           "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}  # fmt: skip


def dockerfile() -> list[tuple[str, str]]:
    """infra/docker/Dockerfile as Docker reads it: (instruction, arguments), continuation lines joined,
    comment lines dropped (also inside a continued instruction, as Docker does)."""
    out, buf = [], ""
    for line in (INFRA / "docker" / "Dockerfile").read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        word, _, args = (buf + s).partition(" ")
        out.append((word, args.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, args in dockerfile():
        if word == "ENV":
            parts = shlex.split(args)
            if "=" in parts[0]:  # ENV key=value ...
                env.update(p.split("=", 1) for p in parts)
            else:  # the legacy ENV key value
                env[parts[0]] = " ".join(parts[1:])
    return env


def lock_install() -> str:
    return next(args for word, args in dockerfile() if word == "RUN" and "-r /tmp/requirements.lock" in args)


def test_every_profile_validates_merged_with_the_params():
    profiles = sorted((INFRA / "profiles").glob("*.yaml"))
    assert {p.stem for p in profiles} >= {"gpu", "seed002"}
    for path in profiles:
        args = profile_overrides(path.stem)
        assert f'tracking.profile="{path.stem}"' in args, path
    seed002 = profile_overrides("seed002")
    assert 'pretrain.arch="resnet50"' in seed002 and 'pretrain.stem="imagenet"' in seed002


def test_every_infra_file_parses():
    for path in INFRA.rglob("*.yaml"):
        assert all(yaml.safe_load_all(path.read_text())), path
    for path in INFRA.rglob("*.json"):
        assert json.loads(path.read_text()), path
    steps = dockerfile()
    assert {word for word, _ in steps} <= DOCKERFILE_INSTRUCTIONS, {w for w, _ in steps} - DOCKERFILE_INSTRUCTIONS
    assert [w for w, _ in steps if w != "ARG"][0] == "FROM"  # only ARGs may come before FROM
    assert (INFRA / "mlflow" / "server.sh").stat().st_mode & 0o111


def test_image_runs_as_app_sees_the_gpu_and_names_no_mlflow_server():
    steps = dockerfile()
    words = [w for w, _ in steps]
    users = [args for w, args in steps if w == "USER"]
    assert users[-1] == "app"
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert "RUN" not in words[last_user:]  # nothing runs as root after
    env = dockerfile_env()
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) >= {"compute", "utility"}
    assert env["HOME"] == "/home/app"  # where the Ray launcher places file_mounts (~)
    # no deployment's MLflow address baked in: each deployment sets its own (KubeRay env, launcher run_options)
    assert not any("MLFLOW_TRACKING_URI" in args for w, args in steps if w in ("ENV", "ARG"))
    assert {"6379", "8265"} <= set(next(args for w, args in steps if w == "EXPOSE").split())


def test_image_takes_the_torch_wheel_index_as_a_build_argument(monkeypatch):
    steps = dockerfile()
    words = [w for w, _ in steps]
    arg = [i for i, (w, args) in enumerate(steps) if w == "ARG" and args.split("=")[0] == "TORCH_INDEX"]
    install = next(i for i, (w, args) in enumerate(steps) if w == "RUN" and "-r /tmp/requirements.lock" in args)
    # declared after FROM (an ARG before FROM is not seen by RUN), before the lock install, empty by default
    assert (
        len(arg) == 1 and words.index("FROM") < arg[0] < install and steps[arg[0]][1] in ("TORCH_INDEX", "TORCH_INDEX=")
    )
    pip, check = re.split(r"\s*&&\s*", lock_install(), maxsplit=1)

    def argv(index: str) -> list[str]:  # the pip command as the image's /bin/sh (dash) expands it
        stub = 'python() { printf "%s\\n" "$@"; }; '
        out = subprocess.run(
            ["sh", "-c", stub + pip], env={**os.environ, "TORCH_INDEX": index}, capture_output=True, text=True
        )
        return out.stdout.splitlines()

    assert argv("") == ["-m", "pip", "install", "--no-cache-dir", "-r", "/tmp/requirements.lock"]
    cu126 = "https://download.pytorch.org/whl/cu126"
    got = argv(cu126)
    assert got[got.index("--extra-index-url") + 1] == cu126 and "--index-url" not in got  # PyPI stays for the rest
    # the build's check of which torch pip installed, run against this environment's torch
    import torch

    code = shlex.split(check)
    assert code[:2] == ["python", "-c"]
    for index, ok in (
        ("", True),
        ("https://mirror.example/simple", True),
        (cu126, torch.__version__.endswith("+cu126")),
    ):
        monkeypatch.setenv("TORCH_INDEX", index)
        if ok:
            exec(code[2], {})
        else:
            with pytest.raises(AssertionError, match="cu126"):
                exec(code[2], {})


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
    steps = dockerfile()
    copies = [i for i, (w, args) in enumerate(steps) if w == "COPY"]
    lock_step = next(i for i, (w, args) in enumerate(steps) if w == "RUN" and "-r /tmp/requirements.lock" in args)
    code_copy = next(i for i in copies if steps[i][1] == "--chown=app:app . .")
    assert steps[copies[0]][1].split()[0] == "infra/docker/requirements.lock" and copies[0] < lock_step < code_copy
    # a code change leaves the dependency layer cached; the code installs without touching it
    assert any(w == "RUN" and "pip install --no-cache-dir --no-deps -e ." in args for w, args in steps[code_copy:])
    locked = lock()
    for name in ("torch", "torchvision", "ray", "mlflow", "dvc"):
        assert locked[name] == pin(name), name  # the lock agrees with pyproject's pins
    assert "boto3" in locked and "pytest" in locked  # the AWS launcher on the head; the suite in the image
    assert pin("ray") == "2.60.0" and pin("torch") == "2.14.1"
    ignored = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ".git" not in ignored and ".dvc/config.local" in ignored  # the jobs' `dvc exp run` needs the repository


# ---------------------------------------------------------------------------------------------
# The Ray cluster launcher (AWS).


def launcher() -> tuple[str, dict]:
    text = (INFRA / "ray" / "cluster.yaml").read_text()
    return text, yaml.safe_load(text)


def test_cluster_launcher_validates_against_rays_schema_with_named_placeholders():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    text, cfg = launcher()
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert all(
        t["node_config"]["ImageId"] == "REPLACE_WITH_DLAMI_ID" for t in types.values()
    )  # the AMI, a named placeholder
    assert types["gpu_worker"]["node_config"]["IamInstanceProfile"]["Arn"].endswith(":instance-profile/ssl-i2i-worker")
    assert types[cfg["head_node_type"]]["node_config"]["IamInstanceProfile"]["Arn"] == (
        "arn:aws:iam::ACCOUNT_ID:instance-profile/ssl-i2i-head"
    )  # set: Ray creates no role of its own for the head
    mount = " ".join(cfg["initialization_commands"])
    assert f"REPLACE_WITH_EFS_ID.efs.{cfg['provider']['region']}." in mount and " /shared" in mount
    assert "-v /shared:/shared" in cfg["docker"]["run_options"]
    assert set(PLACEHOLDER.findall(text)) == {"REPLACE_WITH_DLAMI_ID", "REPLACE_WITH_EFS_ID", "REPLACE_WITH_MLFLOW_HOST",
                                              "ACCOUNT_ID", "REGISTRY", "BUCKET"}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):  # the schema check is a real one
        jsonschema.validate({**cfg, "max_workers": "four"}, schema)
    with pytest.raises(jsonschema.ValidationError):  # so is the per-node-type docker block's
        gpu = {**types["gpu_worker"], "docker": {"run_options": ["--gpus all"]}}
        jsonschema.validate({**cfg, "available_node_types": {**types, "gpu_worker": gpu}}, schema)


def test_cluster_launcher_node_configs_are_ec2_run_instances_requests():
    """node_config goes to EC2 RunInstances as it is (Ray adds MinCount, MaxCount, tags and a subnet):
    every key and the instance profile's must be RunInstances' (botocore's EC2 API model)."""
    import botocore.session

    request = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    _, cfg = launcher()
    for name, node_type in cfg["available_node_types"].items():
        config = node_type["node_config"]
        assert set(config) <= set(request.members) | {"SubnetIds"}, (name, set(config) - set(request.members))
        assert set(config["IamInstanceProfile"]) <= set(request.members["IamInstanceProfile"].members), name
        assert re.fullmatch(
            r"arn:aws:iam::ACCOUNT_ID:instance-profile/[\w+=,.@-]+", config["IamInstanceProfile"]["Arn"]
        )
    group = cfg["provider"]["security_group"]
    assert set(group) <= {"GroupName", "IpPermissions"} and group["GroupName"] == "ssl-i2i-nodes"


def test_cluster_launcher_agrees_with_the_image_and_binds_the_dashboard_locally():
    _, cfg = launcher()
    assert cfg["docker"]["image"] == IMAGE
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "--port=6379" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(cfg["worker_start_ray_commands"])
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"]["GPU"] == 0 and types["gpu_worker"]["resources"]["GPU"] == 1
    assert types["gpu_worker"]["max_workers"] <= cfg["max_workers"]


def test_gpu_workers_containers_are_given_the_gpus():
    _, cfg = launcher()
    for name, node_type in cfg["available_node_types"].items():
        options = " ".join(
            cfg["docker"].get("run_options", []) + node_type.get("docker", {}).get("worker_run_options", [])
        )
        if node_type["resources"].get("GPU", 0):
            assert name != cfg["head_node_type"] and "--gpus all" in options, name
        else:
            assert "--gpus" not in options, name
    env = dockerfile_env()  # what the NVIDIA runtime reads in the container
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and "compute" in env["NVIDIA_DRIVER_CAPABILITIES"]


def test_cluster_launcher_says_where_mlflow_is():
    _, cfg = launcher()
    env = dict(o[3:].split("=", 1) for o in cfg["docker"]["run_options"] if o.startswith("-e "))
    assert env["MLFLOW_TRACKING_URI"] == "http://REPLACE_WITH_MLFLOW_HOST:5000"  # the image names none
    assert env["PIPELINE_CHECKPOINT_STORAGE"].startswith("/shared/")


def test_cluster_launcher_turns_on_token_auth_with_rays_own_token_file():
    from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR, _get_default_token_path

    _, cfg = launcher()
    env = dict(o[3:].split("=", 1) for o in cfg["docker"]["run_options"] if o.startswith("-e "))
    assert (
        AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE" and env["RAY_AUTH_MODE"] == "token"
    )  # on every node (global run_options)
    path = env["RAY_AUTH_TOKEN_PATH"]
    # the token `ray get-auth-token --generate` writes on the laptop, copied to every node into the container
    local = Path(cfg["file_mounts"][path])
    assert local == Path("~") / _get_default_token_path().relative_to(Path.home())
    assert path.startswith(dockerfile_env()["HOME"] + "/")  # the container's user reads it


def test_cluster_launcher_logs_in_then_installs_then_mounts_with_a_bounded_wait():
    _, cfg = launcher()
    commands = cfg["initialization_commands"]
    for command in commands:
        subprocess.run(["bash", "-n", "-c", command], check=True)  # valid shell
    # the registry login first (Ray pulls the image right after these): the image's registry, the provider's region
    registry = cfg["docker"]["image"].split("/")[0]
    login = shlex.split(commands[0].split("|")[1])
    assert commands[0].startswith(f"aws ecr get-login-password --region {cfg['provider']['region']} |")
    assert login[:2] == ["docker", "login"] and login[-1] == registry and "--password-stdin" in login
    joined = "\n".join(commands)
    assert joined.index("apt-get -o DPkg::Lock::Timeout=600 update") < joined.index("install -y -q nfs-common")
    mount = next(c for c in commands if "mount -t nfs4" in c)
    tries = re.search(r"for \w+ in ((?:\d+ )+)?\d+; do", mount)
    assert (
        tries and "timeout " in mount and "exit 1" in mount
    )  # each try bounded, a bounded number, then a clear failure
    options = dict(o.partition("=")[::2] for o in re.search(r"-o (\S+)", mount).group(1).split(","))
    assert options["nfsvers"] == "4.1" and "hard" in options and "retry" in options and "noresvport" in options
    assert "2049" in (INFRA / "README.md").read_text() and cfg["provider"]["security_group"]["GroupName"] in mount


def launcher_job() -> list[str]:
    """The `ray job submit` of cluster.yaml's usage comment, as argv."""
    text, _ = launcher()
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if "ray job submit" in line)
    command = ""
    for line in lines[start:]:
        command += line
        if command.endswith("\\"):
            command = command[:-1] + " "
            continue
        try:
            return shlex.split(command)
        except ValueError:  # inside a quoted string that goes on
            command += "\n"
    raise AssertionError(command)


def test_cluster_launcher_usage_submits_the_gpu_profile_to_the_storage_uri_without_a_venv():
    argv = launcher_job()
    _, cfg = launcher()
    assert argv[:4] == ["RAY_AUTH_MODE=token", "ray", "job", "submit"]
    opts = dict(zip(argv[4 : argv.index("--") : 2], argv[5 : argv.index("--") : 2], strict=True))
    port = re.search(r"--dashboard-port=(\d+)", " ".join(cfg["head_start_ray_commands"])).group(1)
    assert opts["--address"] == f"http://127.0.0.1:{port}" and opts["--working-dir"] == "."
    runtime_env = json.loads(opts["--runtime-env-json"])
    assert set(runtime_env) <= {"env_vars", "excludes"}  # no pip / conda / uv: the image is the environment
    uri = runtime_env["env_vars"]["PIPELINE_STORAGE_URI"]
    assert re.fullmatch(r"s3://BUCKET/[\w-]+", uri)
    shell, script = argv[argv.index("--") + 1 :][:2], argv[-1]
    assert shell == ["bash", "-c"]
    subprocess.run(["bash", "-n", "-c", script], check=True)
    assert not re.search(r"\bmake\b|\bvenv\b|pip install", script)
    # what `make repro PROFILE=gpu` runs, word for word, without stages.with_ray: on a cluster the job joins its Ray
    recipe = re.search(
        r"^\teval python -m stages\.with_ray -- (dvc exp run \$\$\(python -m stages\.profile \$\(PROFILE\)\))$",
        (ROOT / "Makefile").read_text(),
        re.M,
    )
    assert recipe and "eval " + recipe.group(1).replace("$$", "$").replace("$(PROFILE)", "gpu") in script
    params = load_params(ROOT / "params.yaml", dvc_overrides(re.search(r"eval dvc exp run [^&]*", script).group(0)))
    worker = cfg["available_node_types"]["gpu_worker"]
    assert (
        params.distributed.use_gpu
        and params.distributed.num_workers <= worker["max_workers"] * worker["resources"]["GPU"]
    )
    assert params.distributed.cpus_per_worker <= worker["resources"]["CPU"]
    assert script.rstrip().endswith("&& python -m stages.publish_results")  # the results outlive the cluster
    # the head's and workers' roles may write there
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    objects = next(s for s in head_policy()["Statement"] if "s3:PutObject" in s["Action"])
    assert f"arn:aws:s3:::{bucket}/{prefix}/*" in objects["Resource"]


# ---------------------------------------------------------------------------------------------
# The head's IAM policy.

# IAM's policy grammar (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_grammar.html),
# the parts a policy here uses.
IAM_POLICY = {
    "type": "object",
    "required": ["Version", "Statement"],
    "additionalProperties": False,
    "properties": {
        "Version": {"const": "2012-10-17"},
        "Id": {"type": "string"},
        "Statement": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["Effect", "Action", "Resource"],
                "additionalProperties": False,
                "properties": {
                    "Sid": {"type": "string", "pattern": "^[A-Za-z0-9]+$"},
                    "Effect": {"enum": ["Allow", "Deny"]},
                    "Action": {"$ref": "#/$defs/actions"},
                    "Resource": {"$ref": "#/$defs/resources"},
                    "Condition": {
                        "type": "object",
                        "propertyNames": {"pattern": "^(StringEquals|StringLike|ArnEquals|ArnLike|Bool)(IfExists)?$"},
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": {"type": ["string", "array"]},
                        },
                    },
                },
            },
        },
    },
    "$defs": {
        "actions": {"anyOf": [{"$ref": "#/$defs/action"}, {"type": "array", "items": {"$ref": "#/$defs/action"}}]},
        "action": {"type": "string", "pattern": "^[a-z0-9-]+:[A-Za-z0-9*]+$"},
        "resources": {
            "anyOf": [{"$ref": "#/$defs/resource"}, {"type": "array", "items": {"$ref": "#/$defs/resource"}}]
        },
        "resource": {"type": "string", "pattern": r"^(\*|arn:aws:[a-z0-9-]+:[a-z0-9-]*:(ACCOUNT_ID)?:.+)$"},
    },
}
# Actions that are permissions, not API operations (so not in botocore's models).
PERMISSION_ONLY = {"iam:PassRole", "s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject",
                   "s3:DeleteObject", "s3:AbortMultipartUpload"}  # fmt: skip


def head_policy() -> dict:
    return json.loads((INFRA / "ray" / "head-policy.json").read_text())


def as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def test_head_policy_lets_the_autoscaler_launch_workers_pass_their_role_and_use_the_bucket():
    import botocore.session
    import jsonschema

    policy = head_policy()
    jsonschema.validate(policy, IAM_POLICY)
    statements = policy["Statement"]
    assert len({s["Sid"] for s in statements}) == len(statements)  # unique statement ids
    session = botocore.session.get_session()
    operations = {svc: set(session.get_service_model(svc).operation_names) for svc in ("ec2", "ecr")}
    allowed = {}
    for s in statements:
        for action in as_list(s["Action"]):
            service, op = action.split(":")
            assert action in PERMISSION_ONLY or op in operations[service], action  # a real EC2 / ECR operation
            allowed.setdefault(action, []).append(s)
    # what Ray's AWS node provider calls on the head (ray/autoscaler/_private/aws/node_provider.py)
    for action in ("ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:DescribeInstanceTypes",
                   "ec2:TerminateInstances", "iam:PassRole", "ecr:GetAuthorizationToken", "ecr:BatchGetImage"):  # fmt: skip
        assert action in allowed, action
    _, cfg = launcher()
    worker_profile = cfg["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"]["Arn"]
    worker_role = worker_profile.replace(":instance-profile/", ":role/")  # the README names role and profile alike
    (pass_role,) = allowed["iam:PassRole"]
    assert (
        pass_role["Resource"] == worker_role
        and pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
    )
    (terminate,) = allowed["ec2:TerminateInstances"]  # only this cluster's nodes (Ray tags them at launch)
    assert terminate["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == cfg["cluster_name"]
    region = cfg["provider"]["region"]
    repository = cfg["docker"]["image"].split("/", 1)[1].split(":")[0]
    (pull,) = allowed["ecr:BatchGetImage"]
    assert as_list(pull["Resource"]) == [f"arn:aws:ecr:{region}:ACCOUNT_ID:repository/{repository}"]
    assert all(
        f":{region}:" in r
        for s in statements
        for r in as_list(s["Resource"])
        if r.startswith(("arn:aws:ec2", "arn:aws:ecr"))
    )
    # the README derives the workers' bucket policy from the statements named StudyBucket*
    bucket = [s for s in statements if s["Sid"].startswith("StudyBucket")]
    assert {a for s in bucket for a in as_list(s["Action"])} >= {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
    }
    assert set(PLACEHOLDER.findall(json.dumps(policy))) == {"ACCOUNT_ID", "BUCKET"}
    with pytest.raises(jsonschema.ValidationError):  # the grammar check is a real one
        jsonschema.validate({**policy, "Version": "2008-10-17"}, IAM_POLICY)


# ---------------------------------------------------------------------------------------------
# The guide.


def test_infra_guide_lists_every_placeholder_and_goes_in_the_order_a_team_works():
    guide = (INFRA / "README.md").read_text()
    own = [INFRA / "ray" / "cluster.yaml", INFRA / "ray" / "head-policy.json", INFRA / "docker" / "Dockerfile",
           *(INFRA / "k8s" / n for n in (*RAY_MANIFESTS, "serviceaccount.yaml", "storage.yaml"))]  # fmt: skip
    placeholders = {p for path in own for p in PLACEHOLDER.findall(path.read_text())}
    table = set(re.findall(r"^\| `([^|]+)` \|", guide, re.M))
    listed = {p.strip("` ") for row in table for p in row.split(",")}
    assert placeholders <= listed, placeholders - listed
    headings = re.findall(r"^## \d+\. (.+)$", guide, re.M)
    order = ["image", "IAM", "EFS", "placeholders", "Start", "Submit", "Token", "KubeRay", "results"]
    assert [next(i for i, h in enumerate(headings) if word.lower() in h.lower()) for word in order] == sorted(
        range(len(order))
    ), headings
    for fact in (">= 580", "TORCH_INDEX", "2049", "RAY_AUTH_MODE=token", "serviceaccount.yaml", "sweep-rayjob.yaml",
                 "head-policy.json", "ray up infra/ray/cluster.yaml"):  # fmt: skip
        assert fact in guide, fact
    assert " ".join(launcher_job()[:4]) in guide.replace("\\\n", " ")  # the same submit command


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
