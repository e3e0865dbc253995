"""Ray Tune sweeps: search space and errors, the trial records, a seeded rerun, and a real 2-node
cluster that takes a 4-trial colorize sweep through `ray job submit` and logs to an MLflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import sweep
from pipeline.config import parse_params
from pipeline.distributed import wait_for_cluster
from pipeline.errors import UserError
from pipeline.io import save_torch
from pipeline.models.resnet import ResNet18
from pipeline.tracking import stage_run

from .cluster import free_port, local_cluster, ray_env
from .conftest import ROOT, tiny_raw


def _params(**overrides):
    return parse_params(tiny_raw(**overrides))


def test_search_space_errors_name_the_problem():
    with pytest.raises(UserError, match=r"unknown sweep stage 'paint' \(allowed: colorize, cyclegan, munit, classify\)"):
        sweep.search_space(_params(), "paint")
    empty = parse_params({**tiny_raw(), "sweep": {**tiny_raw()["sweep"], "space": {"colorize": {}}}})
    with pytest.raises(UserError, match=r"sweep.space.colorize is empty"):
        sweep.search_space(empty, "colorize")
    with pytest.raises(UserError, match=r"colorize: 'lambda' is not a sweepable parameter \(allowed: gan_weight, lambda_l1"):
        _params(sweep={"space": {"colorize": {"lambda": {"uniform": [0.0, 1.0]}}}})
    with pytest.raises(UserError, match=r"loguniform must be \[low, high\] with 0 < low < high"):
        _params(sweep={"space": {"munit": {"recon_x": {"loguniform": [0.0, 1.0]}}}})


def test_every_stage_named_in_the_issue_has_a_default_space():
    p = parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert set(sweep.search_space(p, "colorize")) == {"lambda_l1", "gan_weight"}
    assert set(sweep.search_space(p, "cyclegan")) == {"cycle", "identity"}
    assert set(sweep.search_space(p, "munit")) == {"recon_x", "recon_s", "recon_c"}
    assert set(sweep.search_space(p, "classify")) == {"gen_frac"}


def test_best_trial_prefers_the_deepest_rung_then_the_metric():
    recs = [
        {"trial": 0, "history": [(1, 0.30), (2, 0.20)]},
        {"trial": 1, "history": [(1, 0.10)]},  # stopped early: better first report, never promoted
        {"trial": 2, "history": [(1, 0.25), (2, 0.15)]},
        {"trial": 3, "history": []},
    ]
    assert sweep.best_trial(recs, "min")["trial"] == 2
    assert sweep.best_trial(recs, "max")["trial"] == 0
    assert sweep.exp_run_command("colorize", {"lambda_l1": 37.123456789, "gan_weight": 0.5}) == (
        "dvc exp run -S 'colorize.gan_weight=0.5' -S 'colorize.lambda_l1=37.1235'"
    )


def test_unreachable_ray_address_fails_after_a_bounded_wait():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(UserError, match=rf"cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:{port} after 2 s"):
        wait_for_cluster(f"127.0.0.1:{port}", timeout_s=2)
    assert time.monotonic() - t0 < 10
    with pytest.raises(UserError, match="is not host:port"):
        wait_for_cluster("nowhere")


def _save_backbone(models: Path) -> None:
    torch.manual_seed(0)
    backbone = ResNet18(4, 3)
    save_torch(models / "backbone_simsiam.pt", {"state_dict": backbone.state_dict(), "spec": backbone.spec(), "method": "simsiam"})


def test_cli_errors_are_one_line(tmp_path, tiny_data):
    env = {**ray_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", "PIPELINE_RAY_CONNECT_TIMEOUT_S": "2"}
    good = tmp_path / "p.yaml"
    good.write_text(yaml.safe_dump(tiny_raw()))
    _save_backbone(tmp_path / "models")
    base = [sys.executable, "-m", "stages.sweep", "--params", str(good), "--data", str(tiny_data), "--models", str(tmp_path / "models")]

    def run(*extra: str, **env_extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *extra], cwd=tmp_path, env={**env, **env_extra}, capture_output=True, text=True, timeout=120)

    out = run("--stage", "paint")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown sweep stage 'paint' (allowed: colorize, cyclegan, munit, classify)"
    port = free_port()
    out = run("--stage", "colorize", RAY_ADDRESS=f"127.0.0.1:{port}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:{port} after 2 s")
    assert not (tmp_path / "m.db").exists() or "sweep_colorize" not in (tmp_path / "m.db").read_bytes().decode(errors="ignore")


def test_rerun_with_the_same_seed_picks_the_same_trials_and_the_same_best(tmp_path, tiny_data, monkeypatch, ray_local):
    """Three real colorize trials (tiny), twice: same sampled configs, same ASHA decisions, same best."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    _save_backbone(models)
    params = _params(sweep={"num_samples": 3, "workers_per_trial": 1, "trial_cpus": 0.5}, translate={"epochs": 2, "steps_per_epoch": 2})
    summaries = []
    for i in range(2):
        job = sweep.build_job(params, "colorize", tiny_data, models, tmp_path / f"storage{i}")
        with stage_run("sweep_colorize", {}, "sweep-test") as parent:
            summaries.append(sweep.run(params, "colorize", parent, job, tmp_path / f"storage{i}"))
    a, b = summaries
    assert [t["config"] for t in a["trials"]] == [t["config"] for t in b["trials"]]
    assert a["trials"][0]["config"] == {"lambda_l1": 100.0, "gan_weight": 1.0}  # trial 0 = params.yaml
    assert [t["status"] for t in a["trials"]] == [t["status"] for t in b["trials"]]
    assert [t["history"] for t in a["trials"]] == [t["history"] for t in b["trials"]]
    assert a["best"] == b["best"] and a["dvc_exp_run"] == b["dvc_exp_run"]
    assert {t["status"] for t in a["trials"]} <= {"FINISHED", "KILLED"} and "FINISHED" in {t["status"] for t in a["trials"]}


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ray_job_submit_sweep_on_two_nodes(tmp_path, tiny_data):
    """Head + worker node (`ray start --block`, stopped by pid), an MLflow server on 127.0.0.1, and
    `ray job submit` of a 4-trial colorize sweep: trials use both nodes, 4 child runs over REST."""
    models = tmp_path / "models"
    _save_backbone(models)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw(sweep={"num_samples": 4, "max_concurrent": 2, "workers_per_trial": 1, "trial_cpus": 1.0},
                                              translate={"epochs": 2, "steps_per_epoch": 2})))  # fmt: skip
    port = free_port()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen([mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--default-artifact-root",
                               str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=(tmp_path / "mlflow.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                _post(f"{api}/experiments/search", {"max_results": 1})
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "mlflow.log").read_text()[-2000:]
                time.sleep(0.5)
        with local_cluster(num_cpus=2, workers=1, worker_cpus=2) as cluster:
            dashboard = cluster["dashboard"]
            env = {**ray_env(), "RAY_ADDRESS": dashboard}
            runtime_env = {"working_dir": str(ROOT), "excludes": [".venv", ".git", ".dvc/cache", "data", "models", "checkpoints", "mlflow.db", "*.egg-info"],
                           # RAY_ADDRESS for every process of the job: Ray Train's placement-group cleaner looks the
                           # cluster up by "auto", which fails while the suite's in-process instance also runs here
                           "env_vars": {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "RAY_AUTH_MODE": env["RAY_AUTH_MODE"],
                                        "RAY_ADDRESS": cluster["address"]}}  # fmt: skip
            entry = [sys.executable, "-m", "stages.sweep", "--stage", "colorize", "--params", str(params), "--data", str(tiny_data),
                     "--models", str(models), "--storage", str(tmp_path / "sweeps"), "--metrics", str(tmp_path / "metrics"),
                     "--plots", str(tmp_path / "plots")]  # fmt: skip
            ray_bin = str(Path(sys.executable).parent / "ray")
            out = subprocess.run([ray_bin, "job", "submit", "--address", dashboard, "--runtime-env-json", json.dumps(runtime_env), "--", *entry],
                                 env=env, capture_output=True, text=True, timeout=1100)  # fmt: skip
            assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
            assert "dvc exp run -S 'colorize." in out.stdout
            nodes = _node_ids(cluster["address"])
        summary = json.loads((tmp_path / "metrics" / "sweep_colorize.json").read_text())
        used = {n for t in summary["trials"] for n in t["nodes"]}
        assert len(nodes) == 2 and used == nodes, (used, nodes)

        exp = _get(f"{api}/experiments/get-by-name?experiment_name=ssl-i2i")["experiment"]
        runs = _post(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 50})["runs"]
        parent = next(r for r in runs if r["info"]["run_name"] == "sweep_colorize")
        children = [r for r in runs if any(t["key"] == "mlflow.parentRunId" and t["value"] == parent["info"]["run_id"] for t in r["data"]["tags"])]
        assert len(children) == 4
        assert parent["info"]["status"] == "FINISHED"
        assert {c["info"]["status"] for c in children} <= {"FINISHED", "KILLED"}
        for c in children:
            params_ = {p["key"]: p["value"] for p in c["data"]["params"]}
            assert "sweep.lambda_l1" in params_ and "sweep.gan_weight" in params_
            history = _get(f"{api}/metrics/get-history?run_id={c['info']['run_id']}&metric_key=val_l1")["metrics"]
            assert len(history) >= 1 and [m["step"] for m in history] == list(range(1, len(history) + 1))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def _node_ids(address: str) -> set[str]:
    code = "import ray, json; ray.init(); print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    out = subprocess.run([sys.executable, "-c", code], env={**ray_env(), "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))
