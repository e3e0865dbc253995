"""`mlflow ui` as `make ui` starts it (127.0.0.1), read through its REST API, stopped by process id."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.tracking import ChildRuns, stage_run

from .cluster import free_port, stop_group

pytestmark = pytest.mark.slow


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_ui_serves_runs_params_and_metrics_over_rest(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    with stage_run("colorize@simsiam-cgan", {"colorize": {"lambda_l1": 100.0}}, "ui-test") as run:
        run.log_history([{"epoch": 0, "val_l1": 0.2}, {"epoch": 1, "val_l1": 0.15}])
        run.finish({"l1_ab": 0.17})
    with stage_run(
        "sweep_colorize", {"sweep": {"num_samples": 2}}, "ui-test"
    ) as parent:  # a sweep, as pipeline.sweep logs it
        children = ChildRuns(parent)
        for i, (weight, status) in enumerate([(30.0, "FINISHED"), (200.0, "KILLED")]):
            children.start(f"t{i}", f"trial_{i:02d}", {"sweep": {"lambda_l1": weight}})
            children.log_metrics(f"t{i}", {"val_l1": 0.12 + i / 100}, step=1)
            children.end(f"t{i}", status)
    port = free_port()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=(tmp_path / "ui.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.monotonic() + 180
        while True:
            try:
                exps = _post(f"{base}/experiments/search", {"max_results": 10})
                break
            except OSError as exc:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        f"mlflow ui did not answer: {exc}\n{(tmp_path / 'ui.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        exp_id = next(e["experiment_id"] for e in exps["experiments"] if e["name"] == "ui-test")
        runs = _post(f"{base}/runs/search", {"experiment_ids": [exp_id]})["runs"]
        by_name = {r["info"]["run_name"]: r for r in runs}
        sweep_id = by_name["sweep_colorize"]["info"]["run_id"]
        trials = _post(
            f"{base}/runs/search", {"experiment_ids": [exp_id], "filter": f"tags.mlflow.parentRunId = '{sweep_id}'"}
        )["runs"]
        assert sorted((r["info"]["run_name"], r["info"]["status"]) for r in trials) == [
            ("trial_00", "FINISHED"),
            ("trial_01", "KILLED"),
        ]
        weights = sorted(p["value"] for r in trials for p in r["data"]["params"] if p["key"] == "sweep.lambda_l1")
        assert weights == ["200.0", "30.0"]
        assert sorted(
            m["value"] for r in trials for m in r["data"]["metrics"] if m["key"] == "val_l1"
        ) == pytest.approx([0.12, 0.13])
        found = by_name["colorize@simsiam-cgan"]
        params = {p["key"]: p["value"] for p in found["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in found["data"]["metrics"]}
        assert params["colorize.lambda_l1"] == "100.0"
        assert metrics["l1_ab"] == pytest.approx(0.17) and metrics["val_l1"] == pytest.approx(0.15)
        assert found["info"]["status"] == "FINISHED" and found["info"]["run_name"] == "colorize@simsiam-cgan"
    finally:
        stop_group(proc)
