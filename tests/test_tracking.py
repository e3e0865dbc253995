import json

import mlflow
import pytest
import torch

from pipeline.tracking import flatten, metrics_path, stage_run


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def test_stage_run_logs_params_history_tags_and_metrics_file(store, tmp_path):
    with stage_run("pretrain@simsiam", {"pretrain": {"width": 8, "scale": [0.1, 1.0]}}, "exp") as run:
        run.log_history([{"epoch": 0, "loss": 1.0, "knn_top1": 0.5}, {"epoch": 1, "loss": 0.5, "knn_top1": 0.6}])
        path = run.finish({"knn_top1": 0.6, "nested": {"a": 2}, "label": "text is kept in the file"})
    assert path.resolve() == tmp_path / "metrics" / "pretrain_simsiam.json"
    assert json.loads(path.read_text())["label"] == "text is kept in the file"
    client = mlflow.MlflowClient(store)
    (found,) = mlflow.search_runs(experiment_names=["exp"], output_format="list")
    assert found.info.status == "FINISHED"
    assert found.info.run_name == "pretrain@simsiam"
    assert found.data.params["pretrain.width"] == "8"
    assert found.data.tags["dvc.stage"] == "pretrain@simsiam" and "git.commit" in found.data.tags
    # float rounding differs between CPU kernel levels: the run says which one computed it
    assert found.data.tags["host.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert found.data.tags["host.torch"] == torch.__version__ and found.data.tags["host.cpu"]
    assert found.data.metrics["nested.a"] == 2.0
    history = client.get_metric_history(found.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5)]
    artifacts = [a.path for a in client.list_artifacts(found.info.run_id)]
    assert "pretrain_simsiam.json" in artifacts
    # MLflow's UI picks its view by this tag: without it the experiment opens on GenAI traces
    assert client.get_experiment_by_name("exp").tags["mlflow.experimentKind"] == "custom_model_development"


def test_failed_stage_run_is_marked_failed(store):
    with pytest.raises(RuntimeError):
        with stage_run("prepare", {}, "exp2"):
            raise RuntimeError("boom")
    (found,) = mlflow.search_runs(experiment_names=["exp2"], output_format="list")
    assert found.info.status == "FAILED"


def test_flatten_and_metrics_path():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": 3}) == {"a.b": 1, "a.c": [1, 2], "d": 3}
    assert metrics_path("pretrain@swav").name == "pretrain_swav.json"


def test_the_default_store_is_the_projects_even_from_a_dvc_temp_workspace(tmp_path, monkeypatch):
    from pipeline.tracking import project_root, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db" and tracking_uri().startswith("sqlite:////")
    workspace = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    workspace.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    assert project_root() == (tmp_path / "repo").resolve()


def test_runs_carry_the_dvc_experiment_name(store, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-lark")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    with stage_run("prepare", {}, "exp3"):
        pass
    (found,) = mlflow.search_runs(experiment_names=["exp3"], output_format="list")
    assert found.data.tags["dvc.exp_name"] == "bushy-lark" and found.data.tags["dvc.baseline_rev"] == "abc123"


def test_an_unreachable_tracking_server_stops_a_stage_at_once_with_one_line_and_writes_nothing(tmp_path):
    """MLflow's client would retry a dead server for about four minutes and end in a traceback;
    the stage asks the server once, before any work, and an existing output stays as it was."""
    import os
    import subprocess
    import sys

    from pipeline.ray_cluster import free_port

    from .conftest import ROOT

    out = tmp_path / "prepared"
    out.mkdir()
    (out / "kept").write_text("from an earlier run")
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PIPELINE_MLFLOW_CONNECT_TIMEOUT_S": "2"}
    proc = subprocess.run([sys.executable, "-m", "stages.prepare", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: cannot reach the MLflow tracking server at MLFLOW_TRACKING_URI={uri} after 2 s "
                                                "(Connection refused)"]  # fmt: skip
    assert [p.name for p in out.iterdir()] == ["kept"] and (out / "kept").read_text() == "from an earlier run"
