"""The storage URI on a local S3 server (moto, 127.0.0.1): shards uploaded by content and read by
Ray workers through pyarrow's S3 file system, run checkpoints and sweep results in the bucket, a
killed worker resumed from its S3 checkpoint, on a two-node cluster with no shared run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline import storage
from pipeline.data.shards import read_table

from .cluster import local_cluster, ray_env
from .conftest import ROOT, tiny_raw
from .conftest import s3_keys as keys


def test_shards_are_uploaded_once_by_content_and_read_back_from_s3(s3, tiny_data, monkeypatch, tmp_path):
    monkeypatch.setenv(storage.ENV, s3["uri"])
    remote = storage.publish_data(tiny_data, ["photos", "probe"])
    assert remote.startswith("s3://study/run/data/") and storage.is_uri(storage.join(remote, "photos"))
    uploaded = keys(remote)
    assert any(k.endswith("/photos/train-00000.parquet") for k in uploaded) and any(
        k.endswith("/_COMPLETE") for k in uploaded
    )
    assert not any("/digits_lt/" in k for k in uploaded)  # only the sets the run reads
    assert read_table(storage.join(remote, "photos"), "test").equals(read_table(tiny_data / "photos", "test"))
    puts = s3["log"].read_text().count('"PUT ')
    assert (
        storage.publish_data(tiny_data, ["photos", "probe"]) == remote and s3["log"].read_text().count('"PUT ') == puts
    )  # no second upload
    # the checkpoints folder DVC declares still exists, and says where the checkpoints went
    local = tmp_path / "checkpoints" / "pretrain_simsiam"
    assert storage.run_storage(local) == "s3://study/run/checkpoints/pretrain_simsiam"
    assert (local / "REMOTE").read_text().strip() == "s3://study/run/checkpoints/pretrain_simsiam"
    monkeypatch.delenv(storage.ENV)
    assert storage.publish_data(tiny_data, ["photos"]) == str(tiny_data.resolve()) and storage.run_storage(
        local
    ) == str(local.resolve())


def test_publish_results_copies_a_finished_study_to_the_bucket_complete_marker_last(s3, tmp_path):
    study = tmp_path / "study"
    (study / "metrics").mkdir(parents=True)
    (study / "metrics" / "claims.json").write_text('{"claims": []}')
    (study / "reports").mkdir()
    (study / "reports" / "runs.json").write_text('{"prepare": "abc"}')
    (study / "dvc.lock").write_text("schema: '2.0'\n")
    env = {**os.environ, **s3["env"], storage.ENV: s3["uri"], "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "stages.publish_results", "metrics", "reports", "dvc.lock"], cwd=study, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    dest = out.stdout.strip().split(" to ")[-1]
    assert dest.startswith("s3://study/run/results/20")
    stored = keys(dest)
    prefix = dest.removeprefix("s3://")
    assert stored == sorted(
        f"{prefix}/{k}" for k in ["metrics/claims.json", "reports/runs.json", "dvc.lock", storage.COMPLETE]
    )
    fs, path = storage.filesystem(dest)
    with fs.open_input_stream(f"{path}/reports/runs.json") as f:
        assert f.read() == b'{"prepare": "abc"}'
    with fs.open_input_stream(f"{path}/{storage.COMPLETE}") as f:
        assert f.read().decode().split() == ["metrics/claims.json", "reports/runs.json", "dvc.lock"]
    # a path that is not there: one line, nothing written
    before = keys("s3://study/run")
    out = subprocess.run(
        [sys.executable, "-m", "stages.publish_results", "plots"],
        cwd=study,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.strip() == "error: nothing to publish at plots (run the study first)"
    assert keys("s3://study/run") == before


def _train_workers(cluster: dict) -> list[int]:
    """PIDs of the Ray Train workers of this test's cluster: processes descending from its own `ray start`."""
    rows = [
        line.split(None, 2)
        for line in subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()[
            1:
        ]
    ]
    parent = {int(pid): int(ppid) for pid, ppid, *_ in rows}
    roots = {p.pid for p in cluster["procs"]}

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid in roots:
                return True
            pid = parent.get(pid, 1)
        return False

    return [int(pid) for pid, _, *args in rows if args and "RayTrainWorker" in args[0] and ours(int(pid))]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_nodes_read_shards_from_s3_checkpoint_there_and_resume_after_a_kill(s3, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.ENV, s3["uri"])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw(pretrain={"epochs": 8, "crops_per_epoch": 256})))
    driver = tmp_path / "driver"  # the job's own folder: checkpoints/ there holds only the pointer to S3
    driver.mkdir()
    with local_cluster(num_cpus=2, workers=1, worker_cpus=2) as cluster:
        env = {**ray_env(), "RAY_ADDRESS": cluster["dashboard"]}
        runtime_env = {"working_dir": str(ROOT), "excludes": [".venv", ".git", ".dvc/cache", "data", "models", "checkpoints", "mlflow.db", "*.egg-info"],
                       "env_vars": {**s3["env"], storage.ENV: s3["uri"], "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                    "RAY_AUTH_MODE": env["RAY_AUTH_MODE"], "RAY_ADDRESS": cluster["address"]}}  # fmt: skip
        ray_bin = str(Path(sys.executable).parent / "ray")

        def submit(*entry: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
            cmd = [
                ray_bin,
                "job",
                "submit",
                "--address",
                cluster["dashboard"],
                "--runtime-env-json",
                json.dumps(runtime_env),
                "--",
                *entry,
            ]
            if wait:
                return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=driver)
            return subprocess.Popen(
                cmd, env=env, stdout=(tmp_path / "job.log").open("w"), stderr=subprocess.STDOUT, cwd=driver
            )

        stage = (
            f"{sys.executable} -m stages.pretrain simsiam --params {params} --data {tiny_data} --storage {driver / 'checkpoints' / 'pretrain_simsiam'}"
            f" && cp metrics/pretrain_simsiam.json {tmp_path}/"
        )  # the job runs in its own copy of the code
        job = submit("bash", "-c", stage, wait=False)
        # kill -9 one Ray Train worker once the controller has registered a checkpoint (its snapshot is in the bucket)
        ckpt_prefix = "s3://study/run/checkpoints/pretrain_simsiam"
        deadline = time.monotonic() + 600
        while not any(k.endswith("checkpoint_manager_snapshot.json") for k in keys(ckpt_prefix)):
            assert time.monotonic() < deadline and job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(0.2)
        workers = _train_workers(cluster)
        assert workers, "no Ray Train worker found"
        os.kill(workers[-1], signal.SIGKILL)
        assert job.wait(timeout=900) == 0, (tmp_path / "job.log").read_text()[-4000:]

    log = s3["log"].read_text()
    # the workers read the shards from the bucket (the driver reads its local copy only)
    assert '"GET /study/run/data/' in log and "/photos_full/train-00000.parquet" in log
    stored = keys("s3://study/run")
    assert any(
        k.startswith("study/run/checkpoints/pretrain_simsiam/simsiam-") and k.endswith("/state.pt") for k in stored
    )
    assert (driver / "checkpoints" / "pretrain_simsiam" / "REMOTE").read_text().strip() == ckpt_prefix
    assert not list(
        (driver / "checkpoints" / "pretrain_simsiam").glob("simsiam-*")
    )  # nothing of the run on the driver's disk
    metrics = json.loads((tmp_path / "pretrain_simsiam.json").read_text())
    assert (
        metrics["resumed_at_epochs"] and metrics["epochs"] == 8 and metrics["world_size"] == 2
    )  # resumed, then finished all epochs
    assert '"GET /study/run/checkpoints/pretrain_simsiam/' in log  # ... from the checkpoint in the bucket
