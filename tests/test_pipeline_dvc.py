"""End to end through the real clients: `dvc repro`, `dvc exp run`, the MLflow API, Ray Train."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from .conftest import ROOT, tiny_raw

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", RAY_USAGE_STATS_ENABLED="0", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")  # fmt: skip
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(key, None)
    return env


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def copy_repo(dest: Path) -> Path:
    """The project's files (tracked and not ignored) in a fresh git repo at ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/", "models/", "metrics/", "plots/", "checkpoints/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_raw(), sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "tiny"], dest)
    return dest


def test_dvc_repro_end_to_end(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    first = _run(["dvc", "repro"], repo)
    for stage in ("prepare", "pretrain@simsiam", "pretrain@swav"):
        assert f"Running stage '{stage}'" in first.stdout
    for method in ("simsiam", "swav"):
        assert (repo / f"models/backbone_{method}.pt").is_file()
        assert (repo / f"plots/pretrain_{method}.png").is_file()
        m = json.loads((repo / f"metrics/pretrain_{method}.json").read_text())
        for key in ("knn_top1", "knn_chance", "knn_top1_untrained", "z_std", "loss", "images_per_s", "world_size",
                    "knn_gain", "knn_gain_ci95_vs_seed0"):  # fmt: skip
            assert key in m, key
        assert m["world_size"] == 2 and m["knn_chance"] == pytest.approx(0.1)
    prep = json.loads((repo / "metrics/prepare.json").read_text())
    assert prep["counts"]["photos"]["test"] > 0 and len(prep["digits_lt_counts"]) == 10

    # MLflow: one run per stage with params and per-epoch metrics
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["ssl-i2i"], output_format="list")
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"prepare", "pretrain@simsiam", "pretrain@swav"}
    assert all(r.info.status == "FINISHED" for r in runs)
    sim = by_name["pretrain@simsiam"]
    assert sim.data.params["simsiam.proj_dim"] == "32"
    hist = mlflow.MlflowClient(uri).get_metric_history(sim.info.run_id, "knn_top1")
    assert sorted(m.step for m in hist) == [0, 1, 2]  # two epochs, then the final probe

    # nothing changed: nothing runs
    second = _run(["dvc", "repro"], repo)
    assert "Running stage" not in second.stdout
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "lock"], repo)

    # one SimSiam param: only pretrain@simsiam reruns
    exp = _run(["dvc", "exp", "run", "-S", "simsiam.lr=0.1"], repo)
    assert "Running stage 'pretrain@simsiam'" in exp.stdout
    assert "Running stage 'pretrain@swav'" not in exp.stdout and "Running stage 'prepare'" not in exp.stdout


def test_stage_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(tiny_raw(pretrain={"width": -3})))
    out = _run([sys.executable, "-m", "stages.pretrain", "simsiam", "--params", str(bad)], ROOT, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {bad}: pretrain.width: Input should be greater than or equal to 4 (got -3)"]
    out = _run([sys.executable, "-m", "stages.pretrain", "byol"], ROOT, check=False)
    assert out.returncode == 2 and out.stderr.strip() == "error: unknown SSL method 'byol' (allowed: simsiam, swav)"
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_raw()))
    out = _run([sys.executable, "-m", "stages.pretrain", "simsiam", "--params", str(good), "--data", str(tmp_path / "none")], tmp_path, check=False)
    assert out.returncode == 2 and "run the 'prepare' stage first" in out.stderr.strip().splitlines()[-1]


def test_prepare_bad_image_is_one_line_and_keeps_old_output(tmp_path):
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    (photos / "c.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "old.txt").write_text("previous output")
    raw = tiny_raw(prepare={"on_bad_image": "fail", "photos": {"source": "folder", "path": str(photos), "test_sources": ["b.png"]}})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    res = _run([sys.executable, "-m", "stages.prepare", "--params", str(params), "--out", str(out)], tmp_path, check=False)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: bad image {photos / 'c.png'}: ")
    assert line.endswith("(set prepare.on_bad_image: skip to skip such files)")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
