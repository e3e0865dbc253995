"""Ray Train through pipeline.distributed: all-reduced Sinkhorn, worker failure, resume, determinism."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import cloudpickle
import pytest
import torch

from pipeline import distributed, fingerprint, ray_cluster
from pipeline.ssl.pretrain import job_config, train_loop
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


def test_state_api_inside_the_local_instance_finds_it_beside_another_ray_instance(ray_local):
    """Ray Train's placement-group cleaner queries the state API from an actor; with a second Ray
    instance on the machine, resolving "auto" there failed and stopped trials leaked their
    placement groups. The private instance tells its workers its own API server."""
    from .cluster import local_cluster

    @ray_local.remote(num_cpus=0)
    def nodes_seen_by_a_worker() -> list[str]:
        from ray.util.state import list_nodes

        return [n.node_id for n in list_nodes()]

    with local_cluster(num_cpus=1):
        assert ray_local.get(nodes_seen_by_a_worker.remote()) == [ray_local.get_runtime_context().get_node_id()]


def test_placement_groups_whose_creating_actor_died_are_released_and_no_others(ray_local):
    """A Ray Train controller killed with its Tune trial can leave its worker group's placement
    group behind; the sweep releases such groups. A live actor's group and the driver's stay."""
    from ray._private.state import actors
    from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group

    @ray_local.remote(num_cpus=0)
    class Controller:
        def reserve(self) -> str:
            pg = placement_group([{"CPU": 1}])
            ray_local.get(pg.ready())
            return pg.id.hex()

    dying, living = Controller.remote(), Controller.remote()
    orphan, kept = ray_local.get([dying.reserve.remote(), living.reserve.remote()])
    own = placement_group([{"CPU": 0.5}])
    ray_local.get(own.ready())
    try:
        ray_local.kill(dying)
        deadline = time.monotonic() + 60
        while actors(dying._actor_id.hex())["State"] != "DEAD":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert placement_group_table()[orphan]["state"] == "CREATED"  # Ray keeps it for the job's lifetime
        assert ray_cluster.release_orphaned_placement_groups() >= 1
        states = placement_group_table()
        assert (states[orphan]["state"], states[kept]["state"], states[own.id.hex()]["state"]) == (
            "REMOVED",
            "CREATED",
            "CREATED",
        )
        assert ray_cluster.release_orphaned_placement_groups() == 0
    finally:
        for pg in (own, PlacementGroup(ray_local.PlacementGroupID(bytes.fromhex(kept)))):
            remove_placement_group(pg)
        ray_local.kill(living)


def test_killed_worker_resumes_from_last_checkpoint(ray_local, tiny_params, tiny_data, tmp_path):
    params = tiny_params.model_copy(update={"pretrain": tiny_params.pretrain.model_copy(update={"epochs": 6})})
    config = job_config(params, "simsiam", tiny_data)
    name = "killed"
    killed = {
        "job": config,
        "kill_marker": str(tmp_path / "killed"),
        "run_dir": str(tmp_path / "runs" / name),
        "loop": "pretrain",
    }
    state = distributed.fit(ray_loops.killed_once, killed, params.distributed, name, tmp_path / "runs")
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


def test_run_name_follows_config_code_and_data(tmp_path):
    assert fingerprint.run_name("x", {"a": 1}) == fingerprint.run_name("x", {"a": 1})
    assert fingerprint.run_name("x", {"a": 1}) != fingerprint.run_name("x", {"a": 2})
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "train-00000.parquet").write_bytes(b"one")
    name = fingerprint.run_name("x", {"a": 1}, inputs=[tmp_path / "shards"])
    assert fingerprint.run_name("x", {"a": 1}, inputs=[tmp_path / "shards"]) == name
    (tmp_path / "shards" / "train-00000.parquet").write_bytes(b"two")
    assert fingerprint.run_name("x", {"a": 1}, inputs=[tmp_path / "shards"]) != name


def test_code_fingerprint_follows_imported_code_only(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "loop.py").write_text('"""Doc."""\nfrom pkg.sub import helper\n\nX = helper.Y + 1\n')
    (pkg / "sub" / "helper.py").write_text("Y = 1\n")
    (pkg / "other.py").write_text("Z = 1\n")
    before = fingerprint.code_fingerprint("pkg.loop", tmp_path)
    (pkg / "other.py").write_text("Z = 2\n")  # not imported by the loop
    (pkg / "loop.py").write_text(
        '"""Another doc."""\n# a comment\nfrom pkg.sub import helper\n\n\nX = helper.Y + 1  # same code\n'
    )
    assert fingerprint.code_fingerprint("pkg.loop", tmp_path) == before
    (pkg / "sub" / "helper.py").write_text("Y = 2\n")  # imported through `from pkg.sub import helper`
    assert fingerprint.code_fingerprint("pkg.loop", tmp_path) != before


def test_changed_prepare_parameter_retrains_pretrain(ray_local, tiny_params, tiny_data, tmp_path):
    """Same params and code, other prepared photos (prepare.photos.max_side): a new run, not the old backbone
    (that unchanged inputs return the finished run is test_same_seed_same_run_and_rerun_resumes)."""
    import shutil

    from pipeline.data import sources
    from pipeline.data.prepare import build_photo_sets
    from pipeline.data.shards import write_set
    from pipeline.ssl import pretrain

    params = tiny_params.model_copy(update={"pretrain": tiny_params.pretrain.model_copy(update={"epochs": 1}),
                                            "distributed": tiny_params.distributed.model_copy(update={"num_workers": 1})})  # fmt: skip
    root = tmp_path / "prepared"
    shutil.copytree(tiny_data, root)
    [first] = pretrain.pretrain(params, "simsiam", root, tmp_path / "runs")
    prep = params.prepare.model_copy(update={"photos": params.prepare.photos.model_copy(update={"max_side": 80})})
    write_set(root / "photos_full", build_photo_sets(prep, sources.BadImages("fail")).sets["photos_full"])
    [second] = pretrain.pretrain(params, "simsiam", root, tmp_path / "runs")
    assert len(list((tmp_path / "runs").iterdir())) == 2, "the changed data must start a run of its own"
    assert second["starts"] == [0] and second["history"][0]["loss"] != first["history"][0]["loss"]


def _killed_and_clean(loop: str, config, params, tmp_path) -> tuple[dict, dict]:
    """The final state of a run of the job ``config`` whose rank 1 is SIGKILLed once, and of an uninterrupted run."""
    killed = {
        "job": config,
        "kill_marker": str(tmp_path / "killed"),
        "run_dir": str(tmp_path / "runs" / "k"),
        "loop": loop,
    }
    resumed = distributed.fit(ray_loops.killed_once, killed, params.distributed, "k", tmp_path / "runs")
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    clean = distributed.fit(ray_loops.LOOPS[loop], config, params.distributed, "c", tmp_path / "runs")
    return resumed, clean


def test_seeds_in_one_run_resume_inside_the_second_and_repeat_runs_of_their_own(
    ray_local, tiny_params, tiny_data, tmp_path
):
    """fit_seeds: two stylizer seeds in one worker group, rank 1 killed in the middle of the second
    seed, give exactly the weights and losses of two uninterrupted runs of one seed each."""
    from pipeline import translate
    from pipeline.models.resnet import ResNet

    tr = tiny_params.translate.model_copy(update={"epochs": 3, "steps_per_epoch": 2})
    params = tiny_params.model_copy(update={"translate": tr})
    backbone = ResNet(tiny_params.pretrain.width, 3)
    configs = [
        translate.job_config(params, "stylize", "scratch", "cyclegan", tiny_data, backbone, seed) for seed in (0, 1)
    ]
    kill = {"kill_marker": str(tmp_path / "killed"), "run_dir": str(tmp_path / "runs" / "k"), "kill_in_sequence": 1}
    resumed = distributed.fit_seeds(ray_loops.killed_once, [{"job": configs[0], "loop": "translate"}, {"job": configs[1], **kill, "loop": "translate"}],
                                    params.distributed, "k", tmp_path / "runs")  # fmt: skip
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    alone = [
        distributed.fit(translate.train_loop, c, params.distributed, f"s{i}", tmp_path / "runs")
        for i, c in enumerate(configs)
    ]
    assert resumed[0]["starts"] == [0] and len(resumed[1]["starts"]) == 2 and resumed[1]["starts"][1] >= 1, [
        r["starts"] for r in resumed
    ]
    assert alone[0]["history"][0]["loss_g"] != alone[1]["history"][0]["loss_g"], "the seeds must differ"
    for got, want in zip(resumed, alone):
        assert [r["loss_g"] for r in got["history"]] == [r["loss_g"] for r in want["history"]]
        for k, v in want["models"]["G"].items():
            assert torch.equal(got["models"]["G"][k], v), k
        assert "averages" in want  # stylize.ema_decay: the served weights are the moving average
        for k, v in translate.served_weights(want)["G"].items():
            assert torch.equal(translate.served_weights(got)["G"][k], v), k


def test_classifiers_resume_mid_seed_and_repeat_the_uninterrupted_run(ray_local, tiny_params, tiny_data, tmp_path):
    from pipeline.invariance import classify

    cp = tiny_params.classify.model_copy(
        update={"epochs": 4, "decay_epochs": [3], "seeds": [0, 1], "checkpoint_every": 2}
    )
    params = tiny_params.model_copy(update={"classify": cp})
    config = classify.ClassifyJob(method="oracle", data_root=str(tiny_data), augment_root=str(tmp_path / "none"), transform="rot",
                                  classify=cp, cpus_per_worker=1.0, mixed_precision=False)  # fmt: skip
    resumed, clean = _killed_and_clean("classify", config, params, tmp_path)
    assert len(resumed["starts"]) == 2 and sorted(resumed["done"]) == ["0", "1"]
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in clean["history"]]
    for seed in ("0", "1"):
        for k, v in clean["done"][seed].items():
            assert torch.equal(resumed["done"][seed][k], v), (seed, k)


def test_ace_resumes_and_repeats_the_uninterrupted_run(ray_local, tiny_params, tiny_data, tmp_path):
    """Also checks that both ranks train one model: they build the same initial weights and
    average their gradients, so the resumed rank 1 (given rank 0's state) changes nothing."""
    from pipeline import ace
    from pipeline.models.resnet import ResNet

    ac = tiny_params.ace.model_copy(update={"epochs": 3, "steps_per_epoch": 2})
    params = tiny_params.model_copy(update={"ace": ac})
    config = ace.job_config(params, "pretrain", tiny_data, ResNet(tiny_params.pretrain.width, 3))
    resumed, clean = _killed_and_clean("ace", config, params, tmp_path)
    assert [r["loss_recon"] for r in resumed["history"]] == [r["loss_recon"] for r in clean["history"]]
    for k, v in clean["ace"].items():
        assert torch.equal(resumed["ace"][k], v), k


LOOPBACK_PROBE = """
import json, sys, threading, time
import psutil, torch
from pipeline import distributed
from pipeline.config import parse_params
from tests import ray_loops
from tests.conftest import tiny_raw

me, seen, done = psutil.Process(), {}, threading.Event()

def sample():
    while not done.is_set():
        for p in [me, *me.children(recursive=True)]:
            try:
                for c in p.net_connections(kind="inet"):
                    if c.status == psutil.CONN_LISTEN:
                        seen[f"{c.laddr.ip}:{c.laddr.port}"] = p.name()
            except psutil.Error:
                pass
        time.sleep(0.05)

threading.Thread(target=sample, daemon=True).start()
out = sys.argv[1]
torch.save(torch.randn(32, 7), out + "/scores.pt")
config = {"scores": out + "/scores.pt", "out": out, "epsilon": 0.05, "iters": 3}
distributed.fit(ray_loops.sinkhorn_shards, config, parse_params(tiny_raw()).distributed, "loopback", out + "/runs")
time.sleep(1)
done.set()
print(json.dumps(seen))
"""


def test_a_stages_local_ray_instance_listens_on_loopback_only(tmp_path):
    """Every listening socket of the processes a stage's private Ray instance starts (GCS, raylet,
    dashboard and its agent, the Train controller and workers), sampled while a 2-worker Ray Train
    run trains, is on 127.0.0.1: nobody else on the network can submit code to it."""
    import json
    import subprocess
    import sys

    from .conftest import ROOT

    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", LOOPBACK_PROBE, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    names = set(seen.values())
    assert {"gcs_server", "raylet"} <= names and any("DashboardAgent" in n for n in names), (
        seen
    )  # the sampler saw the instance
    exposed = {a: n for a, n in seen.items() if not a.rsplit(":", 1)[0].removeprefix("::ffff:").startswith("127.")}
    assert not exposed, f"listening beyond loopback: {exposed}"


GPU_PROBE = """
import sys, tempfile
import ray
from pipeline import distributed
from pipeline.config import parse_params
from pipeline.errors import UserError
from tests.conftest import tiny_raw

def loop(config, session):
    w = session.worker()
    session.report({"epoch": 0}, {"device": str(w.device)}, w)

ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)  # a GPU this machine lacks
p = parse_params(tiny_raw()).distributed.model_copy(update={"use_gpu": True, "num_workers": 1, "max_failures": 0})
try:
    print("STATE", distributed.fit(loop, {}, p, "gpu", tempfile.mkdtemp()))
except UserError as e:
    print("USERERROR", e)
"""


def test_use_gpu_on_a_node_whose_cuda_is_unusable_stops_with_one_line_naming_driver_and_cuda(tmp_path):
    """A worker that Ray gives a GPU (here one the node only advertises) on a node where CUDA cannot be
    used used to train on the CPU without a word; it stops the run before NCCL, with one line.
    With PIPELINE_CPU_ON_GPU_NODES=1 (the scheduling tests) the same worker trains on the CPU."""
    import os
    import subprocess
    import sys

    import torch

    from .conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def run(**extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", GPU_PROBE],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith(("STATE", "USERERROR"))]
        assert proc.returncode == 0 and lines, proc.stderr[-3000:]
        return lines[-1]

    assert not torch.cuda.is_available()  # the CPU machines this suite runs on
    assert run() == (
        f"USERERROR distributed.use_gpu: this worker holds GPU 0 but CUDA is not usable: NVIDIA driver not loaded, torch "
        f"{torch.__version__} built for CUDA {torch.version.cuda} (CUDA 13 wheels need a driver >= 580; build the image "
        "with TORCH_INDEX for CUDA 12, or set use_gpu: false)"
    )
    assert run(PIPELINE_CPU_ON_GPU_NODES="1") == "STATE {'device': 'cpu'}"


JOIN_PROBE = """
import sys, tempfile, torch, ray
from pipeline import distributed
from pipeline.config import parse_params
from tests import ray_loops
from tests.conftest import tiny_raw

out = tempfile.mkdtemp()
torch.save(torch.randn(32, 7), out + "/scores.pt")
config = {"scores": out + "/scores.pt", "out": out, "epsilon": 0.05, "iters": 3}
distributed.fit(ray_loops.sinkhorn_shards, config, parse_params(tiny_raw()).distributed, "joined", out + "/runs")
print("TRAINED ON", ray.get_runtime_context().gcs_address, flush=True)
"""


def _with_ray(command: str, tmp_path) -> subprocess.Popen:
    import os
    import sys

    from .conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    (tmp_path / "probe.py").write_text(JOIN_PROBE)
    return subprocess.Popen([sys.executable, "-m", "stages.with_ray", "--", "bash", "-c", command], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip


def _descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def test_a_pipeline_run_shares_one_ray_instance_and_stops_it_after_success_failure_or_ctrl_c(tmp_path):
    """`stages.with_ray` (what `make repro` runs) starts one local Ray instance; two training runs
    in its command both train on it; it is stopped, with every process it started, when the command
    succeeds, when a stage fails (its exit status kept), and after Ctrl-C (130)."""
    import sys

    import psutil

    probe = f"{sys.executable} {tmp_path / 'probe.py'}"
    proc = _with_ray(f"{probe} && {probe}", tmp_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    shared = re.search(r"with_ray: a local Ray instance at (\S+) for", out).group(1)
    assert re.findall(r"TRAINED ON (\S+)", out) == [shared, shared]
    assert shared.startswith("127.0.0.1:")

    proc = _with_ray("exit 3", tmp_path)  # a stage that fails
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 3 and "with_ray: a local Ray instance" in out, out[-3000:]

    proc = _with_ray("sleep 300", tmp_path)
    started, seen = time.monotonic(), []
    while time.monotonic() - started < 120:
        seen = _descendants(proc.pid)
        if any(p.name() == "raylet" for p in seen if p.is_running()) and any(
            p.name() == "sleep" for p in seen if p.is_running()
        ):
            break
        time.sleep(0.5)
    assert any(p.name() == "raylet" for p in seen), [p.name() for p in seen]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    gone, alive = psutil.wait_procs(seen, timeout=30)
    assert not alive, [p.name() for p in alive]
