"""Shared fixtures: tiny params, tiny prepared data, one in-process Ray instance, a local S3 server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s by default: at test size that wait is most of a
# run. It reaches the controllers of the stages and clusters the tests start through the environment.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# One torch (OpenMP) thread per process: `pytest -n 2` already runs a process per core, and the
# Ray workers the tests start (one thread each, at Ray's niceness 15) share those cores. With
# torch's default of a thread per core the suite took 32 min on 2 cores, with one 16 min
# (`benchmarks/oversubscription.py` shows why). Set before anything imports torch; reaches the
# stages and clusters the tests start through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY = {
    "prepare": {
        "photos": {"max_side": 96, "patches_per_image": 4, "patch_size": 16},
        "probe": {"per_class": 6},
        "digits_lt": {"size": 16, "n_max": 20, "n_min": 2, "test_per_class": 3},
        "simgan_digits": {"size": 16, "synthetic_per_class": 6, "real_train_per_class": 4, "real_test_per_class": 4},
    },
    "distributed": {"num_workers": 2, "max_failures": 1},
    "pretrain": {"width": 4, "crop_size": 16, "epochs": 2, "crops_per_epoch": 16, "batch_size": 8,
                 "baseline_seeds": 2, "bootstrap": 100, "knn_k": 5},
    "simsiam": {"proj_dim": 32, "pred_hidden": 8},
    "swav": {"proj_hidden": 32, "proj_dim": 16, "n_prototypes": 10, "n_small_crops": 2, "small_crop_size": 8},
    "translate": {"seeds": [0, 1], "crop_size": 16, "epochs": 2, "steps_per_epoch": 2, "decoder_width": 4, "disc_width": 4,
                  "kid_subset_size": 4, "kid_subsets": 5},
    "colorize": {"train_fraction": 0.5, "batch_size": 4},
    "stylize": {"steps_per_epoch": 2},
    "munit": {"dim": 4, "style_dim": 4, "n_res": 1, "mlp_dim": 8, "disc_width": 4, "batch_size": 4, "epochs": 2,
              "steps_per_epoch": 2, "diversity_styles": 2},
    "augment": {"threshold": 5, "per_image": 1, "style_guard": False},  # a 4-step MUNIT has no style yet; the guard has its own test
    "classify": {"seeds": [0, 1], "width": 2, "epochs": 3, "batch_size": 8, "warmup_epochs": 1, "decay_epochs": [2],
                 "ekld_draws": 1},
    "ace": {"seeds": [0, 1], "content_dim": 8, "n_res": 1, "style_dim": 4, "mlp_dim": 8, "disc_width": 4, "crop_size": 16, "batch_size": 4,
            "epochs": 2, "steps_per_epoch": 2, "eval_exemplars": 4, "adain_steps": 2, "grid_contents": 2, "grid_styles": 2},
    "ace_finetune": {"batch_size": 4, "epochs": 1, "steps_per_epoch": 2},
    "simgan": {"width": 4, "blocks": 1, "disc_width": 4, "batch_size": 4, "epochs": 2, "steps_per_epoch": 2, "refiner_steps": 1,
               "pretrain_steps": 2, "pretrain_disc_steps": 1, "buffer_size": 8, "classify_seeds": [0, 1], "classify_width": 2,
               "classify_steps": 8, "classify_batch_size": 8, "min_spread": 0.1},
}  # fmt: skip


# The longest tests start first, so that `pytest -n 2` (make test) runs the whole-DAG `dvc repro`
# on one worker while the other works through the rest.
LONGEST_FIRST = ("test_pipeline_dvc.py::test_dvc_repro_end_to_end", "test_sweep.py::test_ray_job_submit", "test_sweep.py::test_an_interrupted", "test_sweep.py",
                 "test_distributed.py")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, key in enumerate(LONGEST_FIRST) if key in item.nodeid), len(LONGEST_FIRST))

    items.sort(key=rank)


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def tiny_raw(**overrides: dict) -> dict:
    """The repo's params.yaml with the tiny sizes (and ``overrides``) merged in."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return deep_update(deep_update(raw, TINY), overrides)


@pytest.fixture(scope="session")
def tiny_params():
    return parse_params(tiny_raw())


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_params) -> Path:
    """data/prepared built at tiny size through the library (no DVC)."""
    from pipeline.data import sources
    from pipeline.data.prepare import build_digits_lt, build_photo_sets, build_probe, build_simgan_digits
    from pipeline.data.shards import write_set

    root = tmp_path_factory.mktemp("prepared")
    p = tiny_params.prepare
    photo = build_photo_sets(p, sources.BadImages("fail"))
    test_full = [sources.NamedImage(r.image, r.source) for r in photo.sets["photos_full"] if r.split == "test"]
    for name, recs in {
        **photo.sets,
        **build_probe(p, test_full).sets,
        **build_digits_lt(p).sets,
        **build_simgan_digits(p).sets,
    }.items():
        write_set(root / name, recs)
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One private in-process Ray instance for the session (never `ray stop`)."""
    import ray

    from pipeline.ray_cluster import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


MOTO = Path(sys.executable).parent / "moto_server"


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A moto S3 server on 127.0.0.1 with the bucket ``study``; the AWS environment points at it
    (in this process and in what it starts). Yields the storage URI and the server's request log."""
    import urllib.request

    from pipeline.ray_cluster import free_port

    port, log = free_port(), tmp_path / "moto.log"
    proc = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(
                    urllib.request.Request(f"http://127.0.0.1:{port}/study", method="PUT"), timeout=2
                )  # create the bucket
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.3)
        yield {"uri": "s3://study/run", "log": log, "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def s3_keys(uri: str) -> list[str]:
    """Every file under ``uri`` (its path in the bucket)."""
    import pyarrow.fs as pafs

    from pipeline import storage

    fs, path = storage.filesystem(uri)
    return sorted(
        i.path
        for i in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        if i.type == pafs.FileType.File
    )
