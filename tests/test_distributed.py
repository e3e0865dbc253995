"""Ray Train through pipeline.distributed: all-reduced Sinkhorn, worker failure, resume, determinism."""

from __future__ import annotations

import cloudpickle
import pytest
import torch

from pipeline import distributed
from pipeline.pretrain import job_config, train_loop
from pipeline.ssl.swav import sinkhorn

from . import ray_loops

cloudpickle.register_pickle_by_value(ray_loops)
pytestmark = pytest.mark.slow


def test_sinkhorn_all_reduce_equals_one_big_batch(ray_local, tiny_params, tmp_path):
    torch.manual_seed(0)
    scores = torch.randn(32, 7)
    torch.save(scores, tmp_path / "scores.pt")
    config = {"scores": str(tmp_path / "scores.pt"), "out": str(tmp_path), "epsilon": 0.05, "iters": 3}
    distributed.fit(ray_loops.sinkhorn_shards, config, tiny_params.distributed, "sinkhorn", tmp_path / "runs")
    q = torch.cat([torch.load(tmp_path / f"q{r}.pt", weights_only=True) for r in range(2)])
    torch.testing.assert_close(q, sinkhorn(scores, 0.05, 3), rtol=1e-5, atol=1e-6)
    # without the all-reduce each half would be equipartitioned on its own, which differs
    halves = torch.cat([sinkhorn(s, 0.05, 3) for s in scores.chunk(2)])
    assert not torch.allclose(halves, q, atol=1e-4)


def test_killed_worker_resumes_from_last_checkpoint(ray_local, tiny_params, tiny_data, tmp_path):
    params = tiny_params.model_copy(update={"pretrain": tiny_params.pretrain.model_copy(update={"epochs": 6})})
    config = job_config(params, "simsiam", tiny_data)
    name = "killed"
    config.update(kill_marker=str(tmp_path / "killed"), run_dir=str(tmp_path / "runs" / name))
    state = distributed.fit(ray_loops.pretrain_killed_once, config, params.distributed, name, tmp_path / "runs")
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    assert [r["epoch"] for r in state["history"]] == [0, 1, 2, 3, 4, 5]
    assert len(state["starts"]) == 2 and state["starts"][0] == 0 and state["starts"][1] >= 1
    assert state["world_size"] == 2


def test_same_seed_same_run_and_rerun_resumes(ray_local, tiny_params, tiny_data, tmp_path):
    config = job_config(tiny_params, "swav", tiny_data)
    a = distributed.fit(train_loop, config, tiny_params.distributed, "a", tmp_path / "runs")
    b = distributed.fit(train_loop, config, tiny_params.distributed, "b", tmp_path / "runs")
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # the same run name again: the finished run is picked up, nothing is retrained
    again = distributed.fit(train_loop, config, tiny_params.distributed, "a", tmp_path / "runs")
    assert again["starts"] == a["starts"] == [0]
    assert again["history"] == a["history"]


def test_run_name_follows_config_and_code(tmp_path, monkeypatch):
    assert distributed.run_name("x", {"a": 1}) == distributed.run_name("x", {"a": 1})
    assert distributed.run_name("x", {"a": 1}) != distributed.run_name("x", {"a": 2})
    (tmp_path / "m.py").write_text("x = 1\n")
    before = distributed.code_fingerprint(tmp_path)
    (tmp_path / "m.py").write_text("x = 2\n")
    assert distributed.code_fingerprint(tmp_path) != before
    name = distributed.run_name("x", {"a": 1})
    monkeypatch.setattr(distributed, "code_fingerprint", lambda root=None: "changed code")
    assert distributed.run_name("x", {"a": 1}) != name
