"""Ray Tune sweeps: search space and errors, the trial records, a seeded rerun, an interrupted sweep
resumed, and a real 2-node cluster that takes a 4-trial colorize sweep through `ray job submit`,
its storage on a local S3 server, and logs to an MLflow server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import storage, sweep
from pipeline.config import parse_params
from pipeline.errors import UserError
from pipeline.model_files import save_backbone
from pipeline.models.resnet import ResNet
from pipeline.ray_cluster import wait_for_cluster

from .cluster import free_port, local_cluster, ray_env, stop_group
from .conftest import ROOT, s3_keys, tiny_raw


def _params(**overrides):
    return parse_params(tiny_raw(**overrides))


def test_search_space_errors_name_the_problem():
    with pytest.raises(
        UserError, match=r"unknown sweep stage 'paint' \(allowed: colorize, cyclegan, munit, classify\)"
    ):
        sweep.search_space(_params(), "paint")
    empty = parse_params({**tiny_raw(), "sweep": {**tiny_raw()["sweep"], "space": {"colorize": {}}}})
    with pytest.raises(UserError, match=r"sweep.space.colorize is empty"):
        sweep.search_space(empty, "colorize")
    with pytest.raises(
        UserError, match=r"colorize: 'lambda' is not a sweepable parameter \(allowed: gan_weight, lambda_l1"
    ):
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


def test_a_sweep_warns_when_its_concurrent_trials_cannot_all_get_their_workers():
    """Tune reserves a trial's driver only: 2 trials of driver 1 + 1 worker on 2 CPUs would each
    hold a driver and wait forever for a worker (seen when a test cluster came up a node short)."""
    sw = parse_params(
        tiny_raw(sweep={"max_concurrent": 2, "trial_cpus": 1.0, "workers_per_trial": 1, "cpus_per_worker": 1.0})
    ).sweep
    assert sweep.capacity_warning(sw, {"CPU": 4.0}) is None
    cpu = sweep.capacity_warning(sw, {"CPU": 2.0})
    assert "need 4 CPU" in cpu and "has 2 now" in cpu and "sweep.max_concurrent: 1" in cpu
    assert "fewer workers" in sweep.capacity_warning(sw, {"CPU": 1.0})
    gpu = parse_params(tiny_raw(sweep={"max_concurrent": 2, "workers_per_trial": 1, "gpus_per_worker": 1})).sweep
    assert sweep.capacity_warning(gpu, {"CPU": 6.0, "GPU": 2.0}) is None
    assert "need 2 GPU" in sweep.capacity_warning(gpu, {"CPU": 6.0, "GPU": 1.0})


def test_set_values_reads_dvc_style_assignments_and_names_what_is_wrong():
    from pipeline.config import set_values

    raw = tiny_raw()
    out = set_values(
        raw, ["sweep.gpus_per_worker=1", "sweep.space.colorize.lambda_l1={uniform: [1, 2]}", "translate.seeds=[3]"]
    )
    assert out["sweep"]["gpus_per_worker"] == 1 and out["translate"]["seeds"] == [3]
    assert out["sweep"]["space"]["colorize"]["lambda_l1"] == {"uniform": [1, 2]}
    assert raw["sweep"]["gpus_per_worker"] == 0.0  # the input is left as it was
    assert parse_params(out).sweep.gpus_per_worker == 1.0
    for bad, message in [("sweep.gpus_per_worker", "expected section.key=value"), ("=1", "expected section.key=value"),
                         ("sweeps.num_samples=2", "sweeps is not a section"), ("sweep.samples=2", "unknown key sweep.samples"),
                         ("sweep.seed=[1", "not a YAML value")]:  # fmt: skip
        with pytest.raises(UserError, match=message):
            set_values(raw, [bad])


def test_a_trial_sets_its_sampled_values_through_the_sections_model(tiny_data):
    """A trial's job is the stage's job with the sampled values set in its params section and
    validated like params.yaml: the rest of the job is untouched, a value out of bounds is one line."""
    from pipeline.invariance import munit

    params = _params()
    job = munit.job_config(params, tiny_data)
    trial = sweep.with_values(job, "munit", {"recon_x": 3.5, "gan": 2})
    assert (trial.munit.recon_x, trial.munit.gan) == (3.5, 2.0) and trial.munit.lr == job.munit.lr
    assert trial.data_root == job.data_root and job.munit.recon_x == params.munit.recon_x  # the base job is frozen
    with pytest.raises(
        UserError, match=r"^sweep trial munit: recon_x: Input should be greater than or equal to 0 \(got -1.0\)$"
    ):
        sweep.with_values(job, "munit", {"recon_x": -1.0})


def test_gpus_per_worker_is_whole_or_a_fraction_for_one_worker():
    assert _params(sweep={"gpus_per_worker": 0.25, "workers_per_trial": 1}).sweep.gpus_per_worker == 0.25
    assert _params(sweep={"gpus_per_worker": 2, "workers_per_trial": 4}).sweep.workers_per_trial == 4
    with pytest.raises(UserError, match=r"gpus_per_worker 0.5 puts 2 workers of a trial on one GPU"):
        _params(sweep={"gpus_per_worker": 0.5, "workers_per_trial": 2})
    with pytest.raises(UserError, match=r"must be a whole number of GPUs, got 1.5"):
        _params(sweep={"gpus_per_worker": 1.5, "workers_per_trial": 1})


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
    backbone = ResNet(4, 3)
    save_backbone(models / "backbone_simsiam.pt", backbone, "simsiam", 0)


def test_cli_errors_are_one_line(tmp_path, tiny_data):
    env = {**ray_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", "PIPELINE_RAY_CONNECT_TIMEOUT_S": "2"}
    good = tmp_path / "p.yaml"
    good.write_text(yaml.safe_dump(tiny_raw()))
    _save_backbone(tmp_path / "models")
    base = [
        sys.executable,
        "-m",
        "stages.sweep",
        "--params",
        str(good),
        "--data",
        str(tiny_data),
        "--models",
        str(tmp_path / "models"),
    ]

    def run(*extra: str, **env_extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*base, *extra], cwd=tmp_path, env={**env, **env_extra}, capture_output=True, text=True, timeout=120
        )

    out = run("--stage", "paint")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown sweep stage 'paint' (allowed: colorize, cyclegan, munit, classify)"
    port = free_port()
    out = run("--stage", "colorize", RAY_ADDRESS=f"127.0.0.1:{port}")
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:{port} after 2 s")
    )
    out = run("--stage", "colorize", "-S", "sweep.gpus_per_worker=0.5", "-S", "sweep.workers_per_trial=2")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: {good} -S sweep.gpus_per_worker=0.5 -S sweep.workers_per_trial=2: sweep: gpus_per_worker 0.5 puts 2 "
        "workers of a trial on one GPU, which NCCL refuses: a fractional GPU needs workers_per_trial: 1"
    )
    out = run("--stage", "colorize", "-S", "sweep.gpus=1")
    assert out.returncode == 2 and out.stderr.strip().startswith(
        "error: -S sweep.gpus=1: unknown key sweep.gpus (allowed: "
    )
    out = run("--stage", "colorize", "--resume", "--storage", str(tmp_path / "nothing"))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: no sweep of colorize to resume under {tmp_path / 'nothing'}"
    assert not (tmp_path / "m.db").exists() or "sweep_colorize" not in (tmp_path / "m.db").read_bytes().decode(
        errors="ignore"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_interrupted_sweep_resumes_where_it_stopped_and_repeats_the_uninterrupted_values(tmp_path, tiny_data):
    """`stages.sweep` stopped by Ctrl-C (SIGINT) while trial 1 trains, then `--resume`: trial 0 is not
    run again, trial 1 goes on from its Ray Train checkpoint, and every report both sweeps made has
    the same value. ASHA's later decisions may differ: a report the trial saved while Tune shut
    down never reached ASHA (README, Sweeps)."""
    import mlflow

    _save_backbone(tmp_path / "models")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw(sweep={"num_samples": 3, "workers_per_trial": 1, "trial_cpus": 0.5},
                                              translate={"epochs": 4, "steps_per_epoch": 2})))  # fmt: skip
    env = {**ray_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}

    def sweep_cli(name: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "stages.sweep", "--stage", "colorize", "--params", str(params), "--data", str(tiny_data),
                "--models", str(tmp_path / "models"), "--storage", str(tmp_path / name), "--metrics", str(tmp_path / name / "metrics"),
                "--plots", str(tmp_path / name / "plots"), *extra]  # fmt: skip

    whole = subprocess.run(sweep_cli("whole"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    log = (tmp_path / "cut.log").open("w")
    cut = subprocess.Popen(sweep_cli("cut"), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "cut").glob("colorize-*_00001/checkpoint_*")):  # trial 1 has reported once
        assert time.monotonic() < deadline and cut.poll() is None, (tmp_path / "cut.log").read_text()[-3000:]
        time.sleep(0.1)
    cut.send_signal(signal.SIGINT)
    assert cut.wait(300) == 2
    out = (tmp_path / "cut.log").read_text()
    assert (
        "error: sweep interrupted with 2 trial(s) unfinished; carry on with: python -m stages.sweep --stage colorize --resume"
        in out
    )
    assert not (tmp_path / "cut" / "metrics" / "sweep_colorize.json").exists()

    resumed = subprocess.run(
        sweep_cli("cut", "--resume"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "whole" / "metrics" / "sweep_colorize.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics" / "sweep_colorize.json").read_text())
    assert b["resumed"] and not a["resumed"] and len(b["trials"]) == 3
    keys = ("config", "status", "reports", "history", "history_reports")
    assert [a["trials"][0][k] for k in keys] == [b["trials"][0][k] for k in keys]  # ended before the cut: kept whole
    for ta, tb in zip(a["trials"], b["trials"], strict=True):
        assert ta["config"] == tb["config"] and tb["status"] in ("FINISHED", "KILLED")
        # deterministic resume on CPU: the same value at every report both sweeps have
        va, vb = dict(zip(ta["history_reports"], ta["history"])), dict(zip(tb["history_reports"], tb["history"]))
        assert va.keys() & vb.keys(), (ta, tb)
        for report in va.keys() & vb.keys():
            assert vb[report] == pytest.approx(va[report], rel=1e-6), (tb["trial"], report)
    assert b["trials"][1]["history_reports"][0] > 1  # the cut trial went on from its checkpoint, not from report 1

    # MLflow: the resumed sweep is its own parent run; trial 0 finished before the cut and is not a child of it
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["ssl-i2i"], output_format="list")
    parents = {r.info.run_id: r for r in runs if r.info.run_name == "sweep_colorize"}
    later = parents[b["parent_run_id"]]
    assert (
        later.data.tags["sweep.resumed"] == "True" and later.data.tags["sweep.tune_experiment"] == b["tune_experiment"]
    )
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == later.info.run_id]
    assert "trial_00" not in {c.info.run_name for c in children} and "trial_01" in {c.info.run_name for c in children}
    assert all(c.data.tags["sweep.resumed"] == "True" for c in children)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ray_job_submit_sweep_on_two_nodes(tmp_path, tiny_data, s3):
    """Head + worker node (`ray start --block`, stopped by pid), an MLflow server and an S3 server
    (moto) on 127.0.0.1, and `ray job submit` of a 4-trial colorize sweep with the storage URI in
    the bucket: trials read the shards from S3, Tune results and the trials' checkpoints land there,
    4 child runs over REST. The worker node advertises 2 GPUs (`--num-gpus`, none real) and the
    sweep asks for one per Train worker (`-S sweep.gpus_per_worker=1`): every trial's workers are
    scheduled there, never on the GPU-less head, and compute on the CPU (PIPELINE_CPU_ON_GPU_NODES)."""
    models = tmp_path / "models"
    _save_backbone(models)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw(sweep={"num_samples": 4, "max_concurrent": 2, "workers_per_trial": 1, "trial_cpus": 1.0},
                                              translate={"epochs": 2, "steps_per_epoch": 2})))  # fmt: skip
    port = free_port()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen([mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--default-artifact-root",
                               str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=(tmp_path / "mlflow.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                _post(f"{api}/experiments/search", {"max_results": 1})
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (tmp_path / "mlflow.log").read_text()[
                    -2000:
                ]
                time.sleep(0.5)
        with local_cluster(num_cpus=2, workers=1, worker_cpus=4, worker_gpus=2) as cluster:
            dashboard = cluster["dashboard"]
            env = {**ray_env(), "RAY_ADDRESS": dashboard}
            runtime_env = {"working_dir": str(ROOT), "excludes": [".venv", ".git", ".dvc/cache", "data", "models", "checkpoints", "mlflow.db", "*.egg-info"],
                           # RAY_ADDRESS for every process of the job: Ray Train's placement-group cleaner looks the
                           # cluster up by "auto", which fails while the suite's in-process instance also runs here
                           "env_vars": {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "RAY_AUTH_MODE": env["RAY_AUTH_MODE"],
                                        "RAY_ADDRESS": cluster["address"], **s3["env"], storage.ENV: s3["uri"],
                                        "PIPELINE_CPU_ON_GPU_NODES": "1"}}  # fmt: skip
            entry = [sys.executable, "-m", "stages.sweep", "--stage", "colorize", "--params", str(params), "--data", str(tiny_data),
                     "--models", str(models), "--storage", str(tmp_path / "sweeps"), "--metrics", str(tmp_path / "metrics"),
                     "--plots", str(tmp_path / "plots"), "-S", "sweep.gpus_per_worker=1"]  # fmt: skip
            ray_bin = str(Path(sys.executable).parent / "ray")
            out = subprocess.run([ray_bin, "job", "submit", "--address", dashboard, "--runtime-env-json", json.dumps(runtime_env), "--", *entry],
                                 env=env, capture_output=True, text=True, timeout=1100)  # fmt: skip
            assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
            assert "dvc exp run -S 'colorize." in out.stdout
            nodes = _node_ids(cluster["address"])
        summary = json.loads((tmp_path / "metrics" / "sweep_colorize.json").read_text())
        used = {n for t in summary["trials"] for n in t["nodes"]}
        gpu_nodes = {n for n, gpus in nodes.items() if gpus > 0}
        assert len(nodes) == 2 and len(gpu_nodes) == 1 and used <= set(nodes), (used, nodes)
        assert all(set(t["worker_nodes"]) == gpu_nodes for t in summary["trials"] if t["reports"]), summary["trials"]
        # the storage URI: shards read from the bucket, Tune's results and the trials' Ray Train checkpoints there
        assert '"GET /study/run/data/' in s3["log"].read_text()
        assert summary["tune_experiment"].startswith("s3://study/run/sweeps/sweep_colorize_")
        stored = s3_keys("s3://study/run")
        tune_files = [k for k in stored if k.startswith(summary["tune_experiment"].removeprefix("s3://"))]
        assert (
            any(k.endswith("/tuner.pkl") for k in tune_files)
            and sum(k.endswith("/progress.csv") for k in tune_files) == 4
        )
        assert any(k.startswith("study/run/checkpoints/sweeps/colorize-") and k.endswith("/state.pt") for k in stored)
        assert (tmp_path / "sweeps" / "REMOTE").read_text().strip() == "s3://study/run/checkpoints/sweeps"

        exp = _get(f"{api}/experiments/get-by-name?experiment_name=ssl-i2i")["experiment"]
        runs = _post(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 50})["runs"]
        parent = next(r for r in runs if r["info"]["run_name"] == "sweep_colorize")
        children = [
            r
            for r in runs
            if any(
                t["key"] == "mlflow.parentRunId" and t["value"] == parent["info"]["run_id"] for t in r["data"]["tags"]
            )
        ]
        assert len(children) == 4
        assert parent["info"]["status"] == "FINISHED"
        assert {c["info"]["status"] for c in children} <= {"FINISHED", "KILLED"}
        for c in children:
            params_ = {p["key"]: p["value"] for p in c["data"]["params"]}
            assert "sweep.lambda_l1" in params_ and "sweep.gan_weight" in params_
            history = _get(f"{api}/metrics/get-history?run_id={c['info']['run_id']}&metric_key=val_l1")["metrics"]
            assert len(history) >= 1 and [m["step"] for m in history] == list(range(1, len(history) + 1))
    finally:
        stop_group(server)


def _node_ids(address: str) -> dict[str, float]:
    """The alive nodes of the cluster at ``address``: node id -> GPUs it advertises."""
    code = "import ray, json; ray.init(); print(json.dumps({n['NodeID']: n['Resources'].get('GPU', 0) for n in ray.nodes() if n['Alive']}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**ray_env(), "RAY_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
